"""Beyond the reference: movement-aware plans, no wasted duplicates, migration plans.

Opt-in only; ``rebalance_experts`` without these options stays bit-identical
to the reference.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ._api import _policy_shape, empty_maps, maps_in_slot_order, ref_plan
from ._jit import run_by_layers
from ._kernels.migration import gather_copies, migration_rows
from ._kernels.movement import dedupe_layers, movement_layers
from ._validate import as_count, check_layout, kernel_array

__all__ = ["Migration", "plan_migration"]


def _as_ids(value, name):
    """``value`` as a C-contiguous int64 array and ``(lo, max)``, or a TypeError.

    ``lo`` is negative when some id is, else 0; ``(0, -1)`` for no ids.
    """
    arr = np.asarray(value)
    if arr.dtype.kind not in "iu":
        raise TypeError(f"{name} must hold integer expert ids, got dtype {arr.dtype}; pass the current phy2log")
    if arr.dtype.kind == "u" and arr.size and arr.max() > np.iinfo(np.int64).max:
        raise ValueError(f"{name} holds expert {int(arr.max())}; it must come from a placement of the same model")
    arr = kernel_array(arr, np.int64)
    if not arr.size:
        return arr, (0, -1)
    # One pass: viewed unsigned, a negative id wraps above every valid one.
    top = int(arr.view(np.uint64).max())
    if top > np.iinfo(np.int64).max:
        return arr, (-1, int(arr.max()))
    return arr, (0, top)


def _check_ids(arr, span, layout, name):
    expected = (layout.num_layers, layout.num_replicas)
    if arr.shape != expected:
        raise ValueError(
            f"{name} must have shape {expected} (layers, num_replicas), got {arr.shape}; "
            f"pass the placement currently deployed for the same model and slot count"
        )
    if span[0] < 0 or span[1] >= layout.num_logical:
        bad = arr[(arr < 0) | (arr >= layout.num_logical)][0]
        raise ValueError(
            f"{name} holds expert {int(bad)}, outside 0..{layout.num_logical - 1}; "
            f"it must come from a placement of the same model"
        )


def check_placement(old, layout, name="old_phy2log"):
    """``old`` as a C-contiguous int64 [layers, num_replicas] array of valid experts."""
    arr, span = _as_ids(old, name)
    _check_ids(arr, span, layout, name)
    return arr


def beyond_reference(w, layout, group_sums, old_phy2log, max_load_slack, avoid_duplicates):
    """Placement for the opt-in options of float32 loads ``w``.

    ``group_sums`` as for ``_api._place``.  Returns ``(phy2log, log2phy,
    logcnt, how)``; ``how[layer]`` is 1 where the old groups-to-nodes split
    was kept, 2 where the reference's split was, 3 where the relabelled
    reference placement was used, 0 otherwise.  ``max_load_slack`` and
    ``avoid_duplicates`` come checked (``as_slack``, ``as_flag``) by the callers.
    """
    slack = max_load_slack
    groups, nodes, _ = _policy_shape(layout, group_sums)
    how = np.zeros(layout.num_layers, dtype=np.int64)
    old = None if old_phy2log is None else check_placement(old_phy2log, layout)
    ref, ref_cnt, split = ref_plan(w, layout, group_sums)
    out = np.empty_like(ref)
    if old is not None:
        # The kernel writes the maps too, each layer while it is in cache.
        log2phy, logcnt = empty_maps(layout.num_layers, layout.num_replicas, layout.num_logical)
        run_by_layers(movement_layers, layout.num_layers, w, old, ref, ref_cnt, split, groups, layout.num_gpus, nodes,
                      slack, bool(avoid_duplicates), out, log2phy, logcnt, how)
        return out, log2phy, logcnt, how
    if avoid_duplicates:
        run_by_layers(dedupe_layers, layout.num_layers, w, ref, ref_cnt, layout.num_gpus, nodes, slack, out)
    else:
        out[...] = ref
    # Counted afresh: they differ from the reference's where the old split was kept.
    log2phy, logcnt = maps_in_slot_order(out, layout.num_logical)
    return out, log2phy, logcnt, how


class Migration(NamedTuple):
    """The copies that take one placement to another (one row per copy)."""

    layer: np.ndarray
    expert: np.ndarray
    src_gpu: np.ndarray  # -1: the expert was on no GPU (load it from storage)
    src_slot: np.ndarray
    dst_gpu: np.ndarray
    dst_slot: np.ndarray
    intra_node: int
    inter_node: int
    bytes: int


def plan_migration(old_phy2log, new_phy2log, num_gpus, num_nodes=1, expert_bytes=0):
    """The expert copies that turn placement ``old_phy2log`` into ``new_phy2log``.

    One copy per slot whose new expert is not already on that GPU, sourced
    from a GPU on the destination's node when one holds the expert, and
    otherwise from any GPU holding it; among equal candidates the source
    with the fewest sends so far, so sends spread over sources.

    Parameters
    ----------
    old_phy2log, new_phy2log : array_like of int, shape (layers, num_replicas)
        Placements, slots GPU-major (as ``rebalance_experts`` returns them).
    num_gpus, num_nodes : int
        GPUs in all, and nodes (``num_gpus`` is a multiple of it).
    expert_bytes : int, optional
        Size of one expert's weights in one layer, for ``Migration.bytes``.

    Returns
    -------
    Migration
        Arrays ``layer, expert, src_gpu, src_slot, dst_gpu, dst_slot`` (int64,
        one entry per copy), and ``intra_node``/``inter_node`` copy counts and
        ``bytes`` moved.

    Examples
    --------
    >>> m = plan_migration([[0, 1, 2, 3]], [[0, 3, 2, 1]], num_gpus=2)
    >>> list(zip(m.expert.tolist(), m.src_gpu.tolist(), m.dst_gpu.tolist()))
    [(3, 1, 0), (1, 0, 1)]
    >>> m.intra_node, m.inter_node
    (2, 0)
    """
    num_gpus = as_count(num_gpus, "num_gpus")
    num_nodes = as_count(num_nodes, "num_nodes")
    expert_bytes = as_count(expert_bytes, "expert_bytes", minimum=0)
    new, new_span = _as_ids(new_phy2log, "new_phy2log")
    if new.ndim != 2:
        raise ValueError(f"new_phy2log must be 2-D (layers, num_replicas), got shape {new.shape}")
    old, old_span = _as_ids(old_phy2log, "old_phy2log")
    num_logical = int(max(new_span[1], old_span[1])) + 1
    if new.shape[1] < num_logical:
        culprit = "old_phy2log" if old_span[1] > new_span[1] else "new_phy2log"
        raise ValueError(f"{culprit} holds expert {num_logical - 1}, more experts than new_phy2log has slots "
                         f"({new.shape[1]}); pass placements (an expert per slot), not maps")
    layout = check_layout((new.shape[0], max(num_logical, 1)), new.shape[1], 1, num_nodes, num_gpus, maps=False)
    _check_ids(new, new_span, layout, "new_phy2log")
    _check_ids(old, old_span, layout, "old_phy2log")
    rows = np.empty((new.size, 6), dtype=np.int64)
    counts = np.zeros(new.shape[0], dtype=np.int64)
    if new.size:
        run_by_layers(migration_rows, new.shape[0], old, new, num_gpus, num_nodes, layout.num_logical, rows, counts)
    copies = np.empty((6, int(counts.sum())), dtype=np.int64)
    intra = gather_copies(rows, counts, new.shape[1], num_gpus // num_nodes, copies)
    n = copies.shape[1]
    return Migration(*copies, intra, n - intra, n * expert_bytes)
