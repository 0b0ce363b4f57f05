"""Two placements compared: the expert copies between them (``plan_migration``) and what each
layer's change costs and gains (``layer_gains``, for a copy budget and layer-by-layer transfer)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import NamedTuple

import numpy as np
from numpy.typing import ArrayLike

from ._elastic import gpu_change
from ._engine import LayerGains, layer_table, migration_copies
from ._validate import as_count, as_ids, as_weight, check_ids_of, check_layout

__all__ = ["LayerGains", "Migration", "layer_gains", "plan_migration"]


class Migration(NamedTuple):
    """The copies that take one placement to another (one row per copy)."""

    layer: np.ndarray
    expert: np.ndarray
    src_gpu: np.ndarray  # old placement's GPU; -1: no live GPU holds the expert (load it from storage)
    src_slot: np.ndarray
    dst_gpu: np.ndarray
    dst_slot: np.ndarray
    intra_node: int
    inter_node: int
    bytes: int
    from_storage: int = 0  # copies with no live source: load from host memory or disk


def plan_migration(old_phy2log: ArrayLike, new_phy2log: ArrayLike, num_gpus: int, num_nodes: int = 1,
                   expert_bytes: int = 0, *, old_num_gpus: int | None = None,
                   rank_mapping: Mapping[int, int] | Sequence[int] | None = None,
                   failed_gpus: Iterable[int] | None = None) -> Migration:
    """The expert copies that turn placement ``old_phy2log`` into ``new_phy2log``.

    One copy per slot whose new expert is not already on that GPU, sourced
    from a GPU on the destination's node when one holds the expert, and
    otherwise from any GPU holding it; among equal candidates the source
    with the fewest sends so far, so sends spread over sources.

    Parameters
    ----------
    old_phy2log, new_phy2log : array_like of int, shape (layers, slots)
        Placements, slots GPU-major (as ``rebalance_experts`` returns them),
        -1 for an empty slot; ``old_phy2log`` may have another slot count
        (another GPU count, ``old_num_gpus``).
    num_gpus, num_nodes : int
        GPUs in all, and nodes (``num_gpus`` is a multiple of it).
    expert_bytes : int, optional
        Size of one expert's weights in one layer, for ``Migration.bytes``.
    old_num_gpus, rank_mapping, failed_gpus : optional
        The old placement's GPU count, its GPUs' new indices, and the lost
        GPUs of the new layout, as for :func:`rebalance_experts`.  A lost
        GPU never sends; ``new_phy2log`` must leave its slots empty (-1).

    Returns
    -------
    Migration
        Arrays ``layer, expert, src_gpu, src_slot, dst_gpu, dst_slot`` (int64,
        one entry per copy; ``src_gpu`` and ``src_slot`` number the old
        placement's GPUs and slots, -1 where no live GPU holds the expert),
        the counts of GPU-to-GPU copies within a node (``intra_node``) and
        across nodes (``inter_node``) and of experts to load from host
        memory or disk (``from_storage``), and ``bytes`` moved in all.

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
    new, new_span = as_ids(new_phy2log, "new_phy2log")
    if new.ndim != 2:
        raise ValueError(f"new_phy2log must be 2-D (layers, num_replicas), got shape {new.shape}")
    old, old_span = as_ids(old_phy2log, "old_phy2log")
    num_logical = int(max(new_span[1], old_span[1])) + 1
    if new.shape[1] < num_logical:
        culprit = "old_phy2log" if old_span[1] > new_span[1] else "new_phy2log"
        raise ValueError(f"{culprit} holds expert {num_logical - 1}, more experts than new_phy2log has slots "
                         f"({new.shape[1]}); pass placements (an expert per slot), not maps")
    layout = check_layout((new.shape[0], max(num_logical, 1)), new.shape[1], 1, num_nodes, num_gpus, maps=False)
    new = check_ids_of(new, new_span, layout, "new_phy2log")
    old = check_ids_of(old, old_span, layout, "old_phy2log")
    change = gpu_change(old.shape[1], new.shape[1], num_gpus, old_num_gpus, rank_mapping, failed_gpus)
    if change is not None:
        per_gpu = new.shape[1] // num_gpus
        on_failed = new.reshape(new.shape[0], num_gpus, per_gpu)[:, change.failed] >= 0
        if on_failed.any():
            layer, gpu, _ = (int(i[0]) for i in np.nonzero(on_failed))
            gpu = int(np.flatnonzero(change.failed)[gpu])
            raise ValueError(f"new_phy2log places experts on failed GPU {gpu} (layer {layer}); a lost GPU "
                             f"holds nothing: plan with rebalance_experts(..., failed_gpus=...)")
    copies, intra, storage = migration_copies(old, new, num_gpus, num_nodes, layout.num_logical, change,
                                              old_span[0] < 0, new_span[0] < 0)
    n = copies.shape[1]
    layer, expert, src_gpu, src_slot, dst_gpu, dst_slot = copies
    return Migration(layer, expert, src_gpu, src_slot, dst_gpu, dst_slot, intra, n - intra - storage,
                     n * expert_bytes, storage)


def layer_gains(weight: ArrayLike, old_phy2log: ArrayLike, new_phy2log: ArrayLike, num_gpus: int,
                num_nodes: int = 1) -> LayerGains:
    """What moving each layer from ``old_phy2log`` to ``new_phy2log`` costs and gains.

    Parameters
    ----------
    weight : array_like, shape (layers, num_logical)
        Loads to judge the placements on (the loads the new plan was made from, or better,
        those that follow it).
    old_phy2log, new_phy2log : array_like of int, shape (layers, num_replicas)
        Placements on the same GPUs, as ``rebalance_experts`` returns them.
    num_gpus, num_nodes : int
        GPUs in all, and nodes (for the copies' sources, as in ``plan_migration``).

    Returns
    -------
    LayerGains
        ``order``: the layers whose busiest GPU gets lighter, largest gain per copy first: the
        order to move layers in, a few at a time.  ``copies``, ``gain`` and ``imbalance``
        (the old placement's) per layer.
    """
    w = as_weight(weight, dtype=np.float64)
    num_gpus = as_count(num_gpus, "num_gpus")
    num_nodes = as_count(num_nodes, "num_nodes")
    new, new_span = as_ids(new_phy2log, "new_phy2log")
    if new.ndim != 2 or new.shape[0] != w.shape[0]:
        raise ValueError(f"new_phy2log must have shape ({w.shape[0]}, num_replicas), one row per layer of "
                         f"weight, got {new.shape}")
    layout = check_layout(w.shape, new.shape[1], 1, num_nodes, num_gpus, maps=False)
    new = check_ids_of(new, new_span, layout, "new_phy2log")
    old, old_span = as_ids(old_phy2log, "old_phy2log")
    old = check_ids_of(old, old_span, layout, "old_phy2log")
    if old.shape != new.shape:
        raise ValueError(f"old_phy2log must have new_phy2log's shape {new.shape}, got {old.shape}; a change of "
                         f"GPUs moves every layer (plan_migration lists those copies)")
    return layer_table(w, old, new, num_gpus, num_nodes, layout.num_logical)
