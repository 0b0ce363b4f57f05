"""A changed GPU set: an old placement on another GPU count, or GPUs lost.

Checked here and turned into what the kernels already know: the old
placement as it stands on the new GPUs (``on_new_gpus``), -1 in every slot
that holds nothing (a GPU that is new, or whose experts were lost).  The
planners keep what survives and fill the rest; ``plan_migration`` sources
copies only from GPUs that are alive.
"""

from __future__ import annotations

import operator
from collections.abc import Iterable, Mapping
from typing import NamedTuple

import numpy as np

from ._validate import as_count, as_slack, check_old_ids

__all__ = ["GpuChange", "as_gpu_change", "check_budget", "check_old_placement", "gpu_change", "on_new_gpus"]


class GpuChange(NamedTuple):
    """How the old placement's GPUs map onto the new ones, checked."""

    old_num_gpus: int
    # Slots per GPU of the old placement and of the new layout.
    old_per_gpu: int
    new_per_gpu: int
    # old_to_new[g]: the new GPU that old GPU g is (-1: it leaves the group).
    old_to_new: np.ndarray
    # failed[n]: new GPU n is lost; it holds nothing and sends nothing.
    failed: np.ndarray
    # can_send[g]: old GPU g holds its weights still (not lost).
    can_send: np.ndarray

    @property
    def identity(self) -> bool:
        """The same GPUs, none lost: the plain movement-aware case."""
        n = self.failed.shape[0]
        return (self.old_num_gpus == n and self.old_per_gpu == self.new_per_gpu and not self.failed.any()
                and bool((self.old_to_new == np.arange(n)).all()))


def _index(value, name: str) -> int:
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must hold GPU indices (integers), got a bool")
    try:
        return operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must hold GPU indices (integers), got {type(value).__name__} {value!r}") from None


def _old_gpu_count(old_width: int, num_replicas: int, num_gpus: int, old_num_gpus) -> int:
    if old_num_gpus is not None:
        count = _index(old_num_gpus, "old_num_gpus")
        if count < 1 or old_width % count:
            raise ValueError(f"old_num_gpus ({count}) must be at least 1 and divide old_phy2log's {old_width} "
                             f"slots (its GPUs hold the same number of slots each)")
        return count
    if old_width == num_replicas:
        return num_gpus
    per_gpu = num_replicas // num_gpus
    # Elastic scaling keeps the slots per GPU and changes the GPU count;
    # failing that, the same GPUs with another slot count each.
    if old_width % per_gpu == 0:
        return old_width // per_gpu
    if old_width % num_gpus == 0:
        return num_gpus
    raise ValueError(f"old_phy2log has {old_width} slots: neither whole GPUs of {per_gpu} slots (the new "
                     f"layout's) nor {num_gpus} GPUs; pass old_num_gpus, the GPU count it was planned for")


def _mapping(rank_mapping, old_num_gpus: int, num_gpus: int) -> np.ndarray:
    if rank_mapping is None:
        # Scaling keeps the lowest ranks: vLLM's elastic EP removes and adds the highest.
        old_to_new = np.arange(old_num_gpus, dtype=np.int64)
        old_to_new[old_to_new >= num_gpus] = -1
        return old_to_new
    if isinstance(rank_mapping, Mapping):
        old_to_new = np.full(old_num_gpus, -1, dtype=np.int64)
        for key, value in rank_mapping.items():
            g = _index(key, "rank_mapping")
            if not 0 <= g < old_num_gpus:
                raise ValueError(f"rank_mapping has old rank {g}; old ranks are 0..{old_num_gpus - 1}")
            old_to_new[g] = _index(value, "rank_mapping")
    else:
        values = [_index(v, "rank_mapping") for v in rank_mapping]
        if len(values) != old_num_gpus:
            raise ValueError(f"rank_mapping has {len(values)} entries; it needs one per old GPU ({old_num_gpus}), "
                             f"the new rank or -1")
        old_to_new = np.array(values, dtype=np.int64)
    kept = old_to_new[old_to_new != -1]
    if kept.size and (kept.min() < 0 or kept.max() >= num_gpus):
        bad = int(kept[(kept < 0) | (kept >= num_gpus)][0])
        raise ValueError(f"rank_mapping maps an old rank to {bad}; new ranks are 0..{num_gpus - 1}, or -1 for a "
                         f"rank that leaves")
    if np.unique(kept).size != kept.size:
        raise ValueError("rank_mapping maps two old ranks to one new rank; each new rank is one GPU")
    return old_to_new


def _failed(failed_gpus: Iterable | None, num_gpus: int) -> np.ndarray:
    failed = np.zeros(num_gpus, dtype=bool)
    if failed_gpus is None:
        return failed
    if isinstance(failed_gpus, (str, bytes)) or not isinstance(failed_gpus, Iterable):
        raise TypeError(f"failed_gpus must be a list of GPU indices, got {type(failed_gpus).__name__}")
    for value in np.asarray(list(failed_gpus), dtype=object).ravel().tolist():
        n = _index(value, "failed_gpus")
        if not 0 <= n < num_gpus:
            raise ValueError(f"failed_gpus holds GPU {n}; GPUs are 0..{num_gpus - 1} (the new layout's)")
        failed[n] = True
    if failed.all():
        raise ValueError(f"failed_gpus lists all {num_gpus} GPUs; at least one must be alive to plan for")
    return failed


def as_gpu_change(old_width: int, num_replicas: int, num_gpus: int, old_num_gpus=None, rank_mapping=None,
                  failed_gpus=None) -> GpuChange:
    """Check how the old placement's GPUs (``old_width`` slots) become the new ``num_gpus``."""
    count = _old_gpu_count(old_width, num_replicas, num_gpus, old_num_gpus)
    old_to_new = _mapping(rank_mapping, count, num_gpus)
    failed = _failed(failed_gpus, num_gpus)
    can_send = np.ones(count, dtype=bool)
    mapped = old_to_new >= 0
    can_send[mapped] = ~failed[old_to_new[mapped]]
    return GpuChange(count, old_width // count, num_replicas // num_gpus, old_to_new, failed, can_send)


def gpu_change(old_width: int, num_replicas: int, num_gpus: int, old_num_gpus=None, rank_mapping=None,
               failed_gpus=None) -> GpuChange | None:
    """``as_gpu_change``, or None for the same GPUs described by no argument (no work on every plan)."""
    if old_num_gpus is None and rank_mapping is None and failed_gpus is None and old_width == num_replicas:
        return None
    return as_gpu_change(old_width, num_replicas, num_gpus, old_num_gpus, rank_mapping, failed_gpus)


def on_new_gpus(old: np.ndarray, change: GpuChange) -> np.ndarray:
    """The old placement as it stands on the new GPUs: ``[layers, new slots]``, -1 where nothing is.

    A GPU keeps its slots in order (up to the new slots per GPU); a GPU that
    leaves or fails keeps nothing; a new GPU starts empty.
    """
    per_new, per_old = change.new_per_gpu, change.old_per_gpu
    keep = min(per_new, per_old)
    out = np.full((old.shape[0], change.failed.shape[0] * per_new), -1, dtype=np.int64)
    for g in range(change.old_num_gpus):
        n = int(change.old_to_new[g])
        if n >= 0 and change.can_send[g]:
            out[:, n * per_new:n * per_new + keep] = old[:, g * per_old:g * per_old + keep]
    return out


def check_old_placement(old_phy2log, layout, old_num_gpus=None, rank_mapping=None, failed_gpus=None):
    """``(old, change)``: the checked old placement and its GPUs' change; ``(None, None)`` without one."""
    if old_phy2log is None:
        for name, value in (("old_num_gpus", old_num_gpus), ("rank_mapping", rank_mapping),
                            ("failed_gpus", failed_gpus)):
            if value is not None:
                raise ValueError(f"{name} describes the old placement's GPUs: pass old_phy2log with it")
        return None, None
    old = check_old_ids(old_phy2log, layout)
    return old, gpu_change(old.shape[1], layout.num_replicas, layout.num_gpus, old_num_gpus, rank_mapping,
                           failed_gpus)


def check_budget(max_copies, min_imbalance, old, change):
    """``(max_copies, min_imbalance)`` checked, or None where no budget applies."""
    min_imbalance = as_slack(min_imbalance, "min_imbalance")
    if max_copies is None and min_imbalance == 0:
        return None
    budget = float("inf") if max_copies is None else as_count(max_copies, "max_copies", minimum=0)
    if old is None:
        raise ValueError("max_copies and min_imbalance limit the change from the placement in service: pass "
                         "old_phy2log with them")
    if change is not None and not change.identity:
        raise ValueError("max_copies and min_imbalance apply to the same GPUs; after a change of GPUs every "
                         "layer must move (plan without them, then order the layers with layer_gains)")
    return budget, min_imbalance
