"""The engine: allocate outputs and call the kernels, on inputs already checked.

The public functions (``_api.py``, ``_migration.py``), the torch adapter and
the command line call in here; nothing here validates.  Optional kernel
outputs are skipped by passing an array with zero layers (the ``SKIP_*``
sentinels below); the kernels test ``x.shape[0]``, never a flag.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import numpy as np

from ._elastic import on_new_gpus
from ._jit import run_by_layers
from ._kernels.budget import SOFT_WIDTH, spend_budget
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
from ._kernels.quality import improve_layers
from ._kernels.slots import preserve_slots as _preserve_slots_kernel
from ._metrics import gpu_loads, imbalance_ratio, replica_counts
from ._validate import check_layout

__all__ = [
    "NOT_PLANNED",
    "OLD_SPLIT",
    "REFERENCE_SPLIT",
    "RELABELLED_REFERENCE",
    "LayerGains",
    "beyond_reference",
    "empty_maps",
    "layer_table",
    "live_gpus",
    "maps_in_slot_order",
    "migration_copies",
    "place",
    "policy_shape",
    "preserve_slots",
    "quality_plan",
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
# Zero layers: the kernel skips the replica counts (with log2phy).
SKIP_COUNTS = np.empty((0, 0), dtype=np.int64)
# The dtype packs add loads in (place_layers' pack_dtype): the reference's
# float32, or DeepSeek's float64 (``wide``).
REFERENCE_PACKS = np.empty(0, dtype=np.float32)
DEEPSEEK_PACKS = np.empty(0, dtype=np.float64)


def place(w, layout, group_sums=None, log2phy=SKIP_LOG2PHY, out=None, ranks=True, split=SKIP_SPLIT, wide=False):
    """One kernel call for the whole plan; ``out`` takes preallocated (phy2log, logcnt), or
    (phy2log, logcnt, phyrank) for the replica ranks too.

    Returns ``(phy2log, phyrank, logcnt)``; ``phyrank`` is None unless ``ranks``.
    ``split`` [layers, groups], if given, receives each group's node.
    ``wide``: packs add float64 loads, as DeepSeek's own EPLB (and SGLang) do.
    """
    groups, nodes, group_sums = policy_shape(layout, group_sums)
    phyrank = SKIP_RANKS
    if out is None:
        phy2log = np.empty((layout.num_layers, layout.num_replicas), dtype=np.int64)
        logcnt = np.empty((layout.num_layers, layout.num_logical), dtype=np.int64)
    elif len(out) == 3:
        phy2log, logcnt, phyrank = out
    else:
        phy2log, logcnt = out
    if ranks and not phyrank.shape[0]:
        phyrank = np.empty((layout.num_layers, layout.num_replicas), dtype=np.int64)
    run_by_layers(place_layers, layout.num_layers,
                  w, group_sums, groups, nodes, layout.num_gpus, phy2log, phyrank, logcnt, log2phy, split,
                  DEEPSEEK_PACKS if wide else REFERENCE_PACKS)
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


def rebalance(w, layout, group_sums=None, out=None, wide=False):
    """The reference plan (``rebalance_experts``); ``out`` takes preallocated outputs, ``wide`` as for ``place``."""
    if out is None:
        max_count = layout.num_replicas - layout.num_logical + 1
        log2phy = np.empty((layout.num_layers, layout.num_logical, max_count), dtype=np.int64)
        phy2log, _, logcnt = place(w, layout, group_sums, log2phy, ranks=False, wide=wide)
    else:
        phy2log, log2phy, logcnt = out
        place(w, layout, group_sums, log2phy, out=(phy2log, logcnt), ranks=False, wide=wide)
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


def beyond_reference(w, layout, group_sums, old, max_load_slack, avoid_duplicates, change=None, budget=None,
                     quality=False):
    """Placement for the opt-in options of float32 loads ``w``.

    ``group_sums`` as for ``place``; ``old`` is None or the checked old
    placement (``check_old_ids``), on the GPUs ``change`` describes
    (``_elastic.as_gpu_change``; None: the same GPUs).  Returns ``(phy2log,
    log2phy, logcnt, how)``; ``how[layer]`` says how the layer was planned:
    ``OLD_SPLIT``, ``REFERENCE_SPLIT``, ``RELABELLED_REFERENCE``, or
    ``NOT_PLANNED`` without an old placement.  ``max_load_slack`` and
    ``avoid_duplicates`` come checked (``as_slack``, ``as_flag``) by the
    callers, ``budget`` (``(max_copies, min_imbalance)``, same GPUs only)
    by ``_elastic.check_budget``.  ``quality``: the reference's plan
    improved by local search (``quality_plan``) takes its place, as the
    plan and as the bound.
    """
    if old is not None and change is not None and not change.identity:
        return _replan(w, layout, group_sums, old, change, max_load_slack, avoid_duplicates, quality)
    if budget is None:
        return _plan(w, layout, group_sums, old, max_load_slack, avoid_duplicates, quality=quality)
    return _within_budget(w, layout, group_sums, old, max_load_slack, avoid_duplicates, *budget, quality)


def quality_plan(w, layout, group_sums=None):
    """``ref_plan`` improved by local search (``_kernels/quality.py``): ``(phy2log, logcnt, split)``.

    Never worse than the reference on any layer; a layer it cannot improve
    is the reference's, unchanged.
    """
    phy2log, logcnt, split = ref_plan(w, layout, group_sums)
    run_by_layers(improve_layers, layout.num_layers, w, split, layout.num_gpus,
                  policy_shape(layout, group_sums)[1], phy2log, logcnt)
    return phy2log, logcnt, split


def _plan(w, layout, group_sums, old, slack, avoid_duplicates, maps=True, quality=False):
    # beyond_reference on one set of GPUs; ``old`` (or None) has the new shape.
    # ``maps=False``: no log2phy and logcnt (None), for a caller that makes its own.
    if old is not None and old.shape != (layout.num_layers, layout.num_replicas):
        # The kernels index old by the new layout's slots: never let another shape through.
        raise ValueError(f"internal error: an old placement of shape {old.shape} reached the planner for "
                         f"{(layout.num_layers, layout.num_replicas)}; please report it")
    groups, nodes, _ = policy_shape(layout, group_sums)
    how = np.full(layout.num_layers, NOT_PLANNED, dtype=np.int64)
    ref, ref_cnt, split = (quality_plan if quality else ref_plan)(w, layout, group_sums)
    out = np.empty_like(ref)
    if old is not None:
        # The kernel writes the maps too, each layer while it is in cache.
        if maps:
            log2phy, logcnt = empty_maps(layout.num_layers, layout.num_replicas, layout.num_logical)
        else:
            log2phy, logcnt = SKIP_LOG2PHY, SKIP_COUNTS
        run_by_layers(movement_layers, layout.num_layers, w, old, ref, ref_cnt, split, groups, layout.num_gpus, nodes,
                      slack, bool(avoid_duplicates), out, log2phy, logcnt, how)
        return (out, log2phy, logcnt, how) if maps else (out, None, None, how)
    if avoid_duplicates:
        run_by_layers(dedupe_layers, layout.num_layers, w, ref, ref_cnt, layout.num_gpus, nodes, slack, out)
    else:
        out[...] = ref
    if not maps:
        return out, None, None, how
    # Counted afresh: they differ from the reference's where the old split was kept.
    log2phy, logcnt = maps_in_slot_order(out, layout.num_logical)
    return out, log2phy, logcnt, how


def _replan(w, layout, group_sums, old, change, slack, avoid_duplicates, quality):
    # From an old placement on another GPU set: what survives, as it stands
    # on the new GPUs, is the old placement of an ordinary movement-aware plan.
    stands = on_new_gpus(old, change)
    if not change.failed.any():
        return _plan(w, layout, group_sums, stands, slack, avoid_duplicates, quality=quality)
    # Lost GPUs hold nothing: plan on the live ones, then put their slots back in place.
    live_layout, slots = live_gpus(layout, change.failed)
    sums = group_sums if live_layout.num_nodes == layout.num_nodes else None
    phy2log, _, _, how = _plan(w, live_layout, sums, np.ascontiguousarray(stands[:, slots]), slack,
                               avoid_duplicates, maps=False, quality=quality)
    full = np.full((layout.num_layers, layout.num_replicas), -1, dtype=np.int64)
    full[:, slots] = phy2log
    # Live slots keep their order in the full layout, so the full placement's
    # own slot-order maps (empty slots skipped) are the live plan's maps with
    # its slots renumbered: made once, here, not for the live layout first.
    return (full, *maps_in_slot_order(full, layout.num_logical), how)


def live_gpus(layout, failed):
    """The layout of the live GPUs and their slots' indices in the full layout.

    Under the hierarchical policy the live GPUs keep it where every node lost
    as many GPUs as the others (each node is then one node of the smaller
    layout); otherwise they plan under the global policy, which is what the
    reference requires (and vLLM does) when GPUs do not split evenly over nodes.
    """
    per_gpu = layout.num_replicas // layout.num_gpus
    live = np.flatnonzero(~failed)
    slots = (live[:, None] * per_gpu + np.arange(per_gpu)).ravel()
    lost = failed.reshape(layout.num_nodes, -1).sum(axis=1)
    if layout.hierarchical and (lost == lost[0]).all():
        groups, nodes = layout.num_groups, layout.num_nodes
    else:
        groups, nodes = 1, 1
    if live.size * per_gpu < layout.num_logical:
        raise ValueError(f"the {live.size} live GPUs hold {live.size * per_gpu} slots, fewer than the "
                         f"{layout.num_logical} experts: no placement keeps every expert on a live GPU; "
                         f"fewer failed_gpus, or more slots per GPU")
    live_layout = check_layout((layout.num_layers, layout.num_logical), live.size * per_gpu, groups, nodes,
                               int(live.size))
    return live_layout, slots


class LayerGains(NamedTuple):
    """Per layer: what changing it costs and gains; ``order`` is the order to move layers in."""

    order: np.ndarray  # layers that gain, largest gain per copy first (ties: lower layer first)
    copies: np.ndarray  # expert copies that take each layer from old to new
    gain: np.ndarray  # old busiest GPU load minus new, on the given loads (float64)
    imbalance: np.ndarray  # old placement's (max - mean) / mean GPU load, per layer


def layer_table(w, old, new, num_gpus, num_nodes, num_logical):
    """``LayerGains`` of placements ``old`` and ``new`` (checked, the same shape) on loads ``w``."""
    copies, _, _ = migration_copies(old, new, num_gpus, num_nodes, num_logical)
    per_layer = np.bincount(copies[0], minlength=new.shape[0])
    old_loads = gpu_loads(w, old, num_gpus)
    gain = old_loads.max(axis=1) - gpu_loads(w, new, num_gpus).max(axis=1)
    moving = np.flatnonzero((per_layer > 0) & (gain > 0))
    # Gain per copy, largest first; a stable sort keeps lower layers first on ties.
    order = moving[np.argsort(-(gain[moving] / per_layer[moving]), kind="stable")]
    return LayerGains(order, per_layer, gain, imbalance_ratio(old_loads))


def _within_budget(w, layout, group_sums, old, slack, avoid_duplicates, max_copies, min_imbalance, quality):
    # The old placement, changed only as far as the budget allows.  Layers
    # that must change (an empty slot, an expert without a replica) take the
    # movement-aware plan first, whatever it costs.  Of the others, only
    # those whose old imbalance exceeds ``min_imbalance`` may change: without
    # ``max_copies`` they take the plan; with it, the copies are spent as
    # swaps (``_kernels/budget.py``), and only if the swaps stop for want of
    # gain, not of copies, are the rest offered to whole layers of the plan.
    how = np.full(layout.num_layers, NOT_PLANNED, dtype=np.int64)
    must = (old < 0).any(axis=1) | (replica_counts(old, layout.num_logical) == 0).any(axis=1)
    eligible = ~must & (imbalance_ratio(gpu_loads(w, old, layout.num_gpus)) > min_imbalance)
    out = old.copy()
    spent = _take_plan(w, layout, group_sums, old, slack, avoid_duplicates, np.flatnonzero(must), out, how, quality)
    if max_copies == float("inf"):
        # Every eligible layer that the plan balances better takes it.
        left = max_copies
    else:
        left = max(int(max_copies) - spent, 0)
        left -= spend_budget(w, old, eligible, layout.num_gpus, layout.num_nodes, left, SOFT_WIDTH, out)
    if left >= 2 and eligible.any():
        _whole_layers(w, layout, group_sums, old, slack, avoid_duplicates, eligible, left, out, how, quality)
    return (out, *maps_in_slot_order(out, layout.num_logical), how)


def _take_plan(w, layout, group_sums, old, slack, avoid_duplicates, rows, out, how, quality):
    # The movement-aware plan of layers ``rows`` into ``out`` (and ``how``);
    # returns the copies it takes from ``old``.
    if not rows.size:
        return 0
    sums = None if group_sums is None else group_sums[rows]
    sub = layout._replace(num_layers=int(rows.size))
    planned, _, _, sub_how = _plan(np.ascontiguousarray(w[rows]), sub, sums, np.ascontiguousarray(old[rows]), slack,
                                   avoid_duplicates, maps=False, quality=quality)
    out[rows] = planned
    how[rows] = sub_how
    return migration_copies(old[rows], planned, layout.num_gpus, layout.num_nodes, layout.num_logical)[0].shape[1]


def _whole_layers(w, layout, group_sums, old, slack, avoid_duplicates, eligible, left, out, how, quality):
    # Layers of ``out`` (swapped) that the movement-aware plan balances
    # better take it, largest gain per extra copy first, while the extra
    # copies fit in ``left``.
    rows = np.flatnonzero(eligible)
    planned = out.copy()
    plan_how = how.copy()
    _take_plan(w, layout, group_sums, old, slack, avoid_duplicates, rows, planned, plan_how, quality)
    busiest = gpu_loads(w, out, layout.num_gpus).max(axis=1)
    gain = busiest - gpu_loads(w, planned, layout.num_gpus).max(axis=1)
    better = np.flatnonzero(eligible & (gain > 0))
    if not better.size:
        return
    copies = (migration_copies(old, p, layout.num_gpus, layout.num_nodes, layout.num_logical)[0][0]
              for p in (planned, out))
    extra = np.subtract(*(np.bincount(c, minlength=out.shape[0]) for c in copies))
    # A stable sort keeps lower layers first on ties.
    order = better[np.argsort(-(gain[better] / np.maximum(extra[better], 0.5)), kind="stable")]
    for layer in order:
        if extra[layer] <= left:
            out[layer] = planned[layer]
            how[layer] = plan_how[layer]
            left -= int(extra[layer])


def migration_copies(old, new, num_gpus, num_nodes, num_logical, change=None, old_empty=True, new_empty=True):
    """The copies taking placement ``old`` to ``new`` (checked int64 arrays).

    ``change`` (``_elastic.as_gpu_change``) says how old GPUs became the new
    ones; None: the same GPUs.  ``old_empty``/``new_empty`` False say an
    array holds no empty slot (-1), which saves a pass over it.  Returns ``(copies, intra, storage)``: int64
    ``copies[6, n]`` (layer, expert, src GPU, src slot, dst GPU, dst slot),
    how many stay within a node, and how many no live GPU can source.
    """
    gpus_per_node = num_gpus // num_nodes
    if change is None:
        holder, src_node = _same_gpus(num_gpus, gpus_per_node)
        old_gpus = num_gpus
    else:
        old_gpus = change.old_num_gpus
        holder = np.full(num_gpus, -1, dtype=np.int64)
        sending = (change.old_to_new >= 0) & change.can_send
        holder[change.old_to_new[sending]] = np.flatnonzero(sending)
        src_node = np.where(change.old_to_new >= 0, change.old_to_new // gpus_per_node, -1)
        if not change.can_send.all():
            # A lost GPU's slots hold nothing that can be sent.
            old = old.reshape(old.shape[0], old_gpus, -1).copy()
            old[:, ~change.can_send] = -1
            old = old.reshape(old.shape[0], -1)
            old_empty = True
    # The kernel reads an empty slot as expert ``num_logical`` (see migration_rows).
    if old_empty:
        old = _empty_as(old, num_logical)
    if new_empty:
        new = _empty_as(new, num_logical)
    rows = np.empty((new.size, 6), dtype=np.int64)
    counts = np.zeros(new.shape[0], dtype=np.int64)
    if new.size:
        run_by_layers(migration_rows, new.shape[0], old, new, old_gpus, num_gpus, holder, src_node, num_nodes,
                      num_logical, rows, counts)
    copies = np.empty((6, int(counts.sum())), dtype=np.int64)
    intra, storage = gather_copies(rows, counts, new.shape[1], src_node, gpus_per_node, copies)
    return copies, intra, storage


@functools.lru_cache(maxsize=16)
def _same_gpus(num_gpus, gpus_per_node):
    # (holder, src_node) when every old GPU is its new self: made once per
    # GPU count, not on every migration plan.  Left writable (nothing writes
    # them): a read-only array is another type to Numba, and the kernel
    # would compile twice.
    holder = np.arange(num_gpus, dtype=np.int64)
    return holder, holder // gpus_per_node


def _empty_as(ids, num_logical):
    # ``ids`` with every -1 replaced by ``num_logical`` (a copy only where there is one).
    if ids.size and ids.min() < 0:
        return np.where(ids < 0, num_logical, ids)
    return ids
