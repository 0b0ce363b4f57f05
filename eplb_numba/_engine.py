"""The engine: allocate outputs and call the kernels, on inputs already checked.

The public functions (``_api.py``, ``_migration.py``), the torch adapter and
the command line call in here; nothing here validates.  Optional kernel
outputs are skipped by passing an array with zero layers (the ``SKIP_*``
sentinels below); the kernels test ``x.shape[0]``, never a flag.
"""

from __future__ import annotations

import numpy as np

from ._jit import run_by_layers
from ._kernels.hierarchical import place_layers
from ._kernels.maps import slot_order_maps
from ._kernels.migration import gather_copies, migration_rows
from ._kernels.movement import (
    NOT_PLANNED,
    OLD_SPLIT,
    REFERENCE_SPLIT,
    RELABELLED_REFERENCE,
    dedupe_layers,
    movement_layers,
)
from ._kernels.slots import preserve_slots as _preserve_slots_kernel
from ._validate import check_placement

__all__ = [
    "NOT_PLANNED",
    "OLD_SPLIT",
    "REFERENCE_SPLIT",
    "RELABELLED_REFERENCE",
    "beyond_reference",
    "empty_maps",
    "maps_in_slot_order",
    "migration_copies",
    "place",
    "policy_shape",
    "preserve_slots",
    "rebalance",
    "ref_plan",
]

# Zero layers: the kernel sums each group's load itself.
SKIP_SUMS = np.empty((0, 0), dtype=np.float32)
# Zero layers: the kernel skips log2phy.
SKIP_LOG2PHY = np.empty((0, 0, 0), dtype=np.int64)
# Zero layers: the kernel skips the replica ranks (log2phy holds them).
SKIP_RANKS = np.empty((0, 0), dtype=np.int64)
# Zero layers: the kernel skips each group's node.
SKIP_SPLIT = np.empty((0, 0), dtype=np.int64)


def place(w, layout, group_sums=None, log2phy=SKIP_LOG2PHY, out=None, ranks=True, split=SKIP_SPLIT):
    """One kernel call for the whole plan; ``out`` takes preallocated (phy2log, logcnt).

    Returns ``(phy2log, phyrank, logcnt)``; ``phyrank`` is None unless ``ranks``.
    ``split`` [layers, groups], if given, receives each group's node.
    """
    groups, nodes, group_sums = policy_shape(layout, group_sums)
    if out is None:
        phy2log = np.empty((layout.num_layers, layout.num_replicas), dtype=np.int64)
        logcnt = np.empty((layout.num_layers, layout.num_logical), dtype=np.int64)
    else:
        phy2log, logcnt = out
    phyrank = np.empty((layout.num_layers, layout.num_replicas), dtype=np.int64) if ranks else SKIP_RANKS
    run_by_layers(place_layers, layout.num_layers,
                  w, group_sums, groups, nodes, layout.num_gpus, phy2log, phyrank, logcnt, log2phy, split)
    return phy2log, phyrank if ranks else None, logcnt


def policy_shape(layout, group_sums):
    """``(groups, nodes, group_sums)`` as the kernels take them."""
    # The global policy is the hierarchical routine with one group, one node.
    if not layout.hierarchical:
        return 1, 1, SKIP_SUMS
    groups, nodes = layout.num_groups, layout.num_nodes
    if group_sums is None or groups == nodes:
        group_sums = SKIP_SUMS
    return groups, nodes, group_sums


def ref_plan(w, layout, group_sums=None):
    """What the movement-aware plan needs of the reference.

    Returns ``(phy2log, logcnt, split)``: the reference's placement, its
    replica counts, and the node of each expert group (``[layers, 1]`` of
    zeros for the global policy).
    """
    groups, _, _ = policy_shape(layout, group_sums)
    split = np.empty((layout.num_layers, groups), dtype=np.int64)
    phy2log, _, logcnt = place(w, layout, group_sums, ranks=False, split=split)
    return phy2log, logcnt, split


def rebalance(w, layout, group_sums=None, out=None):
    """The reference plan (``rebalance_experts``); ``out`` takes preallocated outputs."""
    if out is None:
        max_count = layout.num_replicas - layout.num_logical + 1
        log2phy = np.empty((layout.num_layers, layout.num_logical, max_count), dtype=np.int64)
        phy2log, _, logcnt = place(w, layout, group_sums, log2phy, ranks=False)
    else:
        phy2log, log2phy, logcnt = out
        place(w, layout, group_sums, log2phy, out=(phy2log, logcnt), ranks=False)
    return phy2log, log2phy, logcnt


def maps_in_slot_order(phy2log, num_logical):
    """``(log2phy, logcnt)`` of any placement, replica ranks in slot order (-1 padded).

    For placements other than the reference's own, whose ranks come from
    the order replicas were made.
    """
    log2phy, logcnt = empty_maps(*phy2log.shape, num_logical)
    if phy2log.shape[0]:
        slot_order_maps(phy2log, log2phy, logcnt)
    return log2phy, logcnt


def empty_maps(num_layers, num_phy, num_logical):
    """Uninitialised ``(log2phy, logcnt)`` for a placement of that shape."""
    log2phy = np.empty((num_layers, num_logical, num_phy - num_logical + 1), dtype=np.int64)
    return log2phy, np.empty((num_layers, num_logical), dtype=np.int64)


def preserve_slots(phy2log, old_phy2log, num_gpus, num_logical):
    """Slot-preserving reorder of ``phy2log`` and its ``log2phy``.

    ``old_phy2log`` must already be an int64 array of ``phy2log``'s shape.
    """
    out = np.empty_like(phy2log)
    _preserve_slots_kernel(phy2log, old_phy2log, num_gpus, num_logical, out)
    return out, maps_in_slot_order(out, num_logical)[0]


def beyond_reference(w, layout, group_sums, old_phy2log, max_load_slack, avoid_duplicates):
    """Placement for the opt-in options of float32 loads ``w``.

    ``group_sums`` as for ``place``.  Returns ``(phy2log, log2phy,
    logcnt, how)``; ``how[layer]`` says how the layer was planned: ``OLD_SPLIT``,
    ``REFERENCE_SPLIT``, ``RELABELLED_REFERENCE``, or ``NOT_PLANNED`` without
    an old placement.  ``max_load_slack`` and
    ``avoid_duplicates`` come checked (``as_slack``, ``as_flag``) by the callers.
    """
    slack = max_load_slack
    groups, nodes, _ = policy_shape(layout, group_sums)
    how = np.full(layout.num_layers, NOT_PLANNED, dtype=np.int64)
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



def migration_copies(old, new, num_gpus, num_nodes, num_logical):
    """The copies taking placement ``old`` to ``new`` (checked int64 arrays).

    Returns ``(copies, intra)``: int64 ``copies[6, n]`` (layer, expert, src
    GPU, src slot, dst GPU, dst slot) and how many stay within a node.
    """
    rows = np.empty((new.size, 6), dtype=np.int64)
    counts = np.zeros(new.shape[0], dtype=np.int64)
    if new.size:
        run_by_layers(migration_rows, new.shape[0], old, new, num_gpus, num_nodes, num_logical, rows, counts)
    copies = np.empty((6, int(counts.sum())), dtype=np.int64)
    intra = gather_copies(rows, counts, new.shape[1], num_gpus // num_nodes, copies)
    return copies, intra
