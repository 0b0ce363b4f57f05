"""``plan_migration``: the expert copies that take one placement to another."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numpy.typing import ArrayLike

from ._engine import migration_copies
from ._validate import as_count, as_ids, check_ids, check_layout

__all__ = ["Migration", "plan_migration"]


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


def plan_migration(old_phy2log: ArrayLike, new_phy2log: ArrayLike, num_gpus: int, num_nodes: int = 1,
                   expert_bytes: int = 0) -> Migration:
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
    check_ids(new, new_span, layout, "new_phy2log")
    check_ids(old, old_span, layout, "old_phy2log")
    copies, intra = migration_copies(old, new, num_gpus, num_nodes, layout.num_logical)
    n = copies.shape[1]
    layer, expert, src_gpu, src_slot, dst_gpu, dst_slot = copies
    return Migration(layer, expert, src_gpu, src_slot, dst_gpu, dst_slot, intra, n - intra, n * expert_bytes)
