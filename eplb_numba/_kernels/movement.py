"""Movement-aware placement over layers: the bound, the node split, the fallback.

Per layer: the bound is the reference's busiest GPU (times 1 + slack); the
node split and replica counts come from the old placement where it has a
split, else from the reference relabelled onto the old nodes; the layer is
then planned by ``repack.movement_layer``, and where that misses the bound
the reference's placement relabelled onto the old GPUs is used.
"""

from __future__ import annotations

import numpy as np

from .._jit import jit
from .assign import max_assignment
from .maps import slot_order_layer
from .repack import count_held, dedupe, layer_loads, movement_layer
from .replication import replicate_row
from .slots import keep_slots, preserve_layer

# How ``movement_layers`` planned each layer (its ``how`` output): the old
# placement's groups-to-nodes split kept, the reference's split relabelled
# onto the old nodes, or the reference's placement relabelled onto the old
# GPUs.  NOT_PLANNED marks layers it did not plan (no old placement given).
NOT_PLANNED = 0
OLD_SPLIT = 1
REFERENCE_SPLIT = 2
RELABELLED_REFERENCE = 3


@jit
def node_relabel(old, node_of, num_nodes, perm):
    """``perm[a]``: the old node that takes the reference's node ``a`` (most
    slots kept); ``node_of[e]`` is expert e's node in the reference."""
    per_node = old.shape[0] // num_nodes
    score = np.zeros((num_nodes, num_nodes))
    for q in range(old.shape[0]):
        e = old[q]
        if e >= 0:  # an empty slot (a GPU that is new or was lost) keeps nothing
            score[node_of[e], q // per_node] += 1.0
    max_assignment(score, perm)


@jit
def relabel_layer(old, ref, perm, num_gpus, num_nodes, num_logical, out):
    """The reference placement with its node ``a`` on old node ``perm[a]`` (see
    ``node_relabel``), its GPUs relabelled onto the old ones by optimal
    assignment of shared experts, and experts that stay keeping their slot.
    Shared experts are counted from a table of each old GPU's experts, one
    node at a time: O(GPUs per node * slots of a node)."""
    num_phy = ref.shape[0]
    per_gpu = num_phy // num_gpus
    gpus_per_node = num_gpus // num_nodes
    score = np.zeros((gpus_per_node, gpus_per_node))
    assign = np.empty(gpus_per_node, dtype=np.int64)
    avail = np.zeros(num_logical, dtype=np.int64)
    skip = np.zeros(num_logical, dtype=np.int64)
    held = np.zeros(gpus_per_node * num_logical, dtype=np.int64)
    for a in range(num_nodes):
        b = perm[a]
        node_old = old[b * gpus_per_node * per_gpu:(b + 1) * gpus_per_node * per_gpu]
        count_held(node_old, per_gpu, num_logical, held, np.int64(1))
        for i in range(gpus_per_node):
            src = (a * gpus_per_node + i) * per_gpu
            for j in range(gpus_per_node):
                shared = 0.0
                for q in range(src, src + per_gpu):
                    if held[j * num_logical + ref[q]] > 0:
                        shared += 1.0
                score[i, j] = shared
        count_held(node_old, per_gpu, num_logical, held, np.int64(-1))
        max_assignment(score, assign)
        for i in range(gpus_per_node):
            src = (a * gpus_per_node + i) * per_gpu
            dst = (b * gpus_per_node + assign[i]) * per_gpu
            keep_slots(ref[src:src + per_gpu], old[dst:dst + per_gpu], out[dst:dst + per_gpu], num_logical, avail,
                       skip)


@jit
def _bound(loads, slack):
    # The busiest GPU times 1 + slack.  A relative 1e-12 absorbs float64
    # summation order: the same replicas on a GPU in another slot order must
    # not count as worse.
    top = loads[0]
    for g in range(1, loads.shape[0]):
        top = max(top, loads[g])
    return top * (1.0 + slack) * (1.0 + 1e-12)


@jit
def _shares(w, cnt, share):
    # One replica's load per expert: one division per expert, not per slot.
    for e in range(w.shape[0]):
        share[e] = w[e] / cnt[e]


@jit
def _group_masks(p2l, group_of, num_nodes, masks):
    """``masks[node, k]`` bit ``b``: ``node`` holds an expert of group ``64 k + b``.

    Empty slots (-1) hold no group.
    """
    # An OR-reduction per node and word: no store per slot.
    per_node = p2l.shape[0] // num_nodes
    one = np.uint64(1)
    for node in range(num_nodes):
        for k in range(masks.shape[1]):
            m = np.uint64(0)
            for q in range(node * per_node, (node + 1) * per_node):
                e = p2l[q]
                g = group_of[e] if e >= 0 else -1
                m |= (one << np.uint64(g & 63)) if g >= 0 and g >> 6 == k else np.uint64(0)
            masks[node, k] = m


@jit
def _old_split(masks, num_groups, group_node, per):
    # Whether the node masks of an old placement (``_group_masks``) split the
    # groups: every group on exactly one node, the same number on each.  If
    # so, ``group_node[g]`` is g's node.  ``per`` is scratch, one per node.
    num_nodes = masks.shape[0]
    per[:] = 0
    for g in range(num_groups):
        bit = np.uint64(1) << np.uint64(g & 63)
        owner = -1
        for node in range(num_nodes):
            if masks[node, g >> 6] & bit:
                if owner >= 0:
                    return False
                owner = node
        if owner < 0:
            return False
        group_node[g] = owner
        per[owner] += 1
    for node in range(num_nodes):
        if per[node] != num_groups // num_nodes:
            return False
    return True


@jit
def _same_split(group_node, ref_masks, masks):
    # Whether the split that puts group g on node group_node[g] is the split
    # whose node masks (``_group_masks``) are ``masks``: every node of it
    # holds the groups of some node of the other (both split the groups, so
    # that makes them the same split).  ``ref_masks`` is scratch of masks' shape.
    ref_masks[:, :] = 0
    for g in range(group_node.shape[0]):
        ref_masks[group_node[g], g >> 6] |= np.uint64(1) << np.uint64(g & 63)
    for a in range(ref_masks.shape[0]):
        found = False
        for b in range(masks.shape[0]):
            same = True
            for k in range(masks.shape[1]):
                same = same and ref_masks[a, k] == masks[b, k]
            found = found or same
        if not found:
            return False
    return True


@jit
def _node_counts(w32, node_target, num_nodes, phy_per_node, cnt, members, tokens, phy2log, rank, logcnt, cntf,
                 ratio, heap):
    # The reference's replication (step 2) within each node of a split; the
    # arrays after ``cnt`` are scratch sized for all experts / a node's slots.
    # Every node of a split holds the same number of experts, in index order.
    num_logical = w32.shape[0]
    n = num_logical // num_nodes
    # Bucket the experts by node (logcnt counts them until replication).
    for node in range(num_nodes):
        logcnt[node] = 0
    for e in range(num_logical):
        k = node_target[e] * n + logcnt[node_target[e]]
        members[k] = e
        tokens[k] = w32[e]
        logcnt[node_target[e]] += 1
    for node in range(num_nodes):
        lo = node * n
        replicate_row(tokens[lo:lo + n], phy_per_node, phy2log, rank, logcnt[:n], cntf, ratio, heap)
        for j in range(n):
            cnt[members[lo + j]] = logcnt[j]


@jit
def movement_layers(weight, old, ref, ref_cnt, split, num_groups, num_gpus, num_nodes, slack, avoid_dup, out,
                    log2phy, logcnt, how, lo, hi):
    """Movement-aware placement of layers ``lo:hi`` (see ``movement_layer``).

    ``ref``, ``ref_cnt`` and ``split`` are the reference's placement, replica
    counts and groups' nodes; its busiest GPU (each GPU's replica loads
    summed in slot order), times ``1 + slack``, is the bound.  Tries, in
    order, and keeps the first that meets the bound: (1) the old
    placement's own groups-to-nodes split with the reference's replication
    inside each node, which moves no group between nodes; (2) the
    reference's split relabelled onto the old nodes; (3) the reference's
    placement relabelled onto the old GPUs.  ``how[layer]`` records which
    (``OLD_SPLIT``, ``REFERENCE_SPLIT``, ``RELABELLED_REFERENCE``).
    Experts that stay on a GPU then keep their old slot, and ``log2phy`` and
    ``logcnt`` are written in slot order, layer by layer while it is in cache
    (unless ``log2phy`` has zero layers).
    """
    num_layers, num_logical = weight.shape
    num_phy = ref.shape[1]
    per_gpu = num_phy // num_gpus
    loads = np.empty(num_gpus)
    w = np.empty(num_logical)
    share = np.empty(num_logical)
    ref_share = np.empty(num_logical)
    node_of = np.empty(num_logical, dtype=np.int64)
    node_target = np.empty(num_logical, dtype=np.int64)
    cnt = np.empty(num_logical, dtype=np.int64)
    perm = np.empty(num_nodes, dtype=np.int64)
    members = np.empty(num_logical, dtype=np.int64)
    tokens = np.empty(num_logical, dtype=np.float32)
    scratch_phy = np.empty(num_phy // num_nodes, dtype=np.int64)
    scratch_rank = np.empty(num_phy // num_nodes, dtype=np.int64)
    scratch_cnt = np.empty(num_logical, dtype=np.int64)
    cntf = np.empty(num_logical, dtype=np.float32)
    ratio = np.empty(num_logical, dtype=np.float32)
    heap = np.empty(num_logical, dtype=np.int64)
    group_of = np.empty(num_logical, dtype=np.int64)
    group_size = num_logical // num_groups
    for g in range(num_groups):
        group_of[g * group_size:(g + 1) * group_size] = g
    group_node = np.empty(num_groups, dtype=np.int64)
    per = np.empty(num_nodes, dtype=np.int64)
    words = (num_groups + 63) // 64
    masks = np.empty((num_nodes, words), dtype=np.uint64)
    ref_masks = np.empty((num_nodes, words), dtype=np.uint64)
    fscratch = np.empty(2 * num_phy)
    iscratch = np.empty(num_logical + 3 * num_phy + 3 * num_gpus + 2, dtype=np.int64)
    # Per-GPU counts only for duplicate checks (see moves.movement_layer).
    held = np.zeros(num_gpus * num_logical if avoid_dup else 0, dtype=np.int64)
    mark = np.zeros(num_logical, dtype=np.int64)
    was = np.zeros(num_gpus * num_logical, dtype=np.int64)
    moved = np.empty(num_phy, dtype=np.int64)
    avail = np.zeros(num_logical, dtype=np.int64)
    skip = np.zeros(num_logical, dtype=np.int64)
    for layer in range(lo, hi):
        for e in range(num_logical):
            w[e] = weight[layer, e]
        _shares(w, ref_cnt[layer], ref_share)
        layer_loads(ref[layer], ref_share, per_gpu, loads)
        bound = _bound(loads, slack)
        h = NOT_PLANNED
        if num_nodes > 1:
            _group_masks(old[layer], group_of, num_nodes, masks)
            if _old_split(masks, num_groups, group_node, per):
                for e in range(num_logical):
                    node_target[e] = group_node[group_of[e]]
                if _same_split(split[layer], ref_masks, masks):
                    # The reference's own replica counts (the common case
                    # after a small drift), without replicating again.
                    counts, shares = ref_cnt[layer], ref_share
                else:
                    _node_counts(weight[layer], node_target, num_nodes, num_phy // num_nodes, cnt, members, tokens,
                                 scratch_phy, scratch_rank, scratch_cnt, cntf, ratio, heap)
                    _shares(w, cnt, share)
                    counts, shares = cnt, share
                if movement_layer(shares, old[layer], counts, node_target, num_gpus, num_nodes, bound, avoid_dup,
                                  moved, loads, fscratch, iscratch, held, was, mark):
                    h = OLD_SPLIT
        if h == NOT_PLANNED:
            for e in range(num_logical):
                node_of[e] = split[layer, group_of[e]]
            node_relabel(old[layer], node_of, num_nodes, perm)
            for e in range(num_logical):
                node_target[e] = perm[node_of[e]]
            if movement_layer(ref_share, old[layer], ref_cnt[layer], node_target, num_gpus, num_nodes, bound,
                              avoid_dup, moved, loads, fscratch, iscratch, held, was, mark):
                h = REFERENCE_SPLIT
            else:
                h = RELABELLED_REFERENCE
                relabel_layer(old[layer], ref[layer], perm, num_gpus, num_nodes, num_logical, moved)
                if avoid_dup:
                    layer_loads(moved, ref_share, per_gpu, loads)
                    dedupe(moved, loads, ref_share, num_gpus, num_nodes, per_gpu, bound, held)
        how[layer] = h
        # Swaps can carry an expert off a GPU and another replica of it back
        # in a different slot: put every stayer back in its old slot.
        preserve_layer(moved, old[layer], num_gpus, num_logical, out[layer], avail, skip)
        if log2phy.shape[0]:
            slot_order_layer(out[layer], log2phy[layer], logcnt[layer])


@jit
def dedupe_layers(weight, ref, cnt, num_gpus, num_nodes, slack, out, lo, hi):
    """Layers ``lo:hi`` of the reference placement with avoidable duplicates
    swapped away, no GPU above the reference's busiest (times ``1 + slack``)."""
    num_logical = weight.shape[1]
    per_gpu = ref.shape[1] // num_gpus
    loads = np.empty(num_gpus)
    w = np.empty(num_logical)
    share = np.empty(num_logical)
    held = np.zeros(num_gpus * num_logical, dtype=np.int64)
    for layer in range(lo, hi):
        for e in range(num_logical):
            w[e] = weight[layer, e]
        _shares(w, cnt[layer], share)
        layer_loads(ref[layer], share, per_gpu, loads)
        bound = _bound(loads, slack)
        # A loop: an array-to-array slice assignment compiles Numba's
        # shape-mismatch message, string formatting and all (2 s).
        for q in range(ref.shape[1]):
            out[layer, q] = ref[layer, q]
        dedupe(out[layer], loads, share, num_gpus, num_nodes, per_gpu, bound, held)
