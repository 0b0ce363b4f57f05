"""Movement-aware placement over layers: the bound, the node split, the fallback.

Per layer: the bound is the reference's busiest GPU (times 1 + slack); the
node split and replica counts come from the old placement where it has a
split, else from the reference relabelled onto the old nodes; the layer is
then planned by ``moves.movement_layer``, and where that misses the bound
the reference's placement relabelled onto the old GPUs is used.
"""

from __future__ import annotations

import numba
import numpy as np

from .._jit import jit, unsigned as _u
from .assign import max_assignment
from .moves import _holds, dedupe, layer_loads, movement_layer
from .plan import replicate_row
from .slots import keep_slots


@jit
def node_relabel(old, ref, num_nodes, num_logical, perm):
    """``perm[a]``: the old node that takes the reference's node ``a`` (most slots kept)."""
    num_phy = ref.shape[0]
    per_node = num_phy // num_nodes
    node_of = np.empty(num_logical, dtype=np.int64)
    for q in range(num_phy):
        node_of[ref[q]] = q // per_node
    score = np.zeros((num_nodes, num_nodes))
    for q in range(num_phy):
        score[node_of[old[q]], q // per_node] += 1.0
    max_assignment(score, perm)
    return node_of


@jit
def relabel_layer(old, ref, perm, num_gpus, num_nodes, num_logical, out):
    """The reference placement with its node ``a`` on old node ``perm[a]`` (see
    ``node_relabel``), its GPUs relabelled onto the old ones by optimal
    assignment of shared experts, and experts that stay keeping their slot."""
    num_phy = ref.shape[0]
    per_gpu = num_phy // num_gpus
    gpus_per_node = num_gpus // num_nodes
    score = np.zeros((gpus_per_node, gpus_per_node))
    assign = np.empty(gpus_per_node, dtype=np.int64)
    avail = np.zeros(num_logical, dtype=np.int64)
    skip = np.zeros(num_logical, dtype=np.int64)
    for a in range(num_nodes):
        b = perm[a]
        for i in range(gpus_per_node):
            src = (a * gpus_per_node + i) * per_gpu
            for j in range(gpus_per_node):
                dst = (b * gpus_per_node + j) * per_gpu
                shared = 0.0
                for q in range(src, src + per_gpu):
                    if _holds(old, dst, per_gpu, ref[q], -1):
                        shared += 1.0
                score[i, j] = shared
        max_assignment(score, assign)
        for i in range(gpus_per_node):
            src = (a * gpus_per_node + i) * per_gpu
            dst = (b * gpus_per_node + assign[i]) * per_gpu
            keep_slots(ref[src:src + per_gpu], old[dst:dst + per_gpu], out[dst:dst + per_gpu], num_logical, avail,
                       skip)


@jit
def _bound(w, ref, cnt, per_gpu, slack, loads):
    layer_loads(w, ref, cnt, per_gpu, loads)
    # A relative 1e-12 absorbs float64 summation order: the same replicas on
    # a GPU in another slot order must not count as worse.
    return loads.max() * (1.0 + slack) * (1.0 + 1e-12)


@jit
def _old_split(old, group_of, num_groups, num_nodes, node_target, group_node, per):
    # The old placement's groups-to-nodes split, if it keeps every group on
    # one node with the same number of groups on each; else False.
    # ``group_of[e]`` is e's group; ``group_node`` and ``per`` are scratch
    # (num_groups and num_nodes long).
    per_node = old.shape[0] // num_nodes
    group_node[:] = -1
    for node in range(num_nodes):
        for q in range(node * per_node, (node + 1) * per_node):
            g = group_of[_u(old[q])]
            if group_node[g] < 0:
                group_node[g] = node
            elif group_node[g] != node:
                return False
    per[:] = 0
    for g in range(num_groups):
        if group_node[g] < 0:
            return False
        per[group_node[g]] += 1
    for node in range(num_nodes):
        if per[node] != num_groups // num_nodes:
            return False
    for e in range(node_target.shape[0]):
        node_target[e] = group_node[group_of[e]]
    return True


@jit
def _same_split(ref, group_of, num_nodes, group_node):
    # Whether the reference's placement puts the same groups together on a
    # node as ``group_node`` (the old split) does, whatever the node labels.
    # A node of either holds the same number of groups, so it is enough that
    # all of a reference node's experts sit on one old node.
    per_node = ref.shape[0] // num_nodes
    for node in range(num_nodes):
        seen = group_node[group_of[ref[node * per_node]]]
        for q in range(node * per_node, (node + 1) * per_node):
            if group_node[group_of[ref[q]]] != seen:
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
def movement_range(weight, old, ref, ref_cnt, num_groups, num_gpus, num_nodes, slack, avoid_dup, out, how, lo, hi):
    """Movement-aware placement of layers ``lo:hi`` (see ``movement_layer``).

    Tries, in order, and keeps the first that meets the bound: (1) the old
    placement's own groups-to-nodes split with the reference's replication
    inside each node, which moves no group between nodes; (2) the
    reference's split relabelled onto the old nodes; (3) the reference's
    placement relabelled onto the old GPUs.  ``how[layer]`` records 1, 2 or 3.
    """
    num_layers, num_logical = weight.shape
    num_phy = ref.shape[1]
    per_gpu = num_phy // num_gpus
    loads = np.empty(num_gpus)
    w = np.empty(num_logical)
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
    fscratch = np.empty(num_logical + 2 * num_phy)
    iscratch = np.empty(num_logical + 2 * num_phy, dtype=np.int64)
    for layer in range(lo, hi):
        for e in range(num_logical):
            w[e] = weight[layer, e]
        bound = _bound(w, ref[layer], ref_cnt[layer], per_gpu, slack, loads)
        how[layer] = 0
        if num_nodes > 1 and _old_split(old[layer], group_of, num_groups, num_nodes, node_target, group_node, per):
            if _same_split(ref[layer], group_of, num_nodes, group_node):
                # The reference's own replica counts (the common case after
                # a small drift), without replicating again.
                cnt[:] = ref_cnt[layer]
            else:
                _node_counts(weight[layer], node_target, num_nodes, num_phy // num_nodes, cnt, members, tokens,
                             scratch_phy, scratch_rank, scratch_cnt, cntf, ratio, heap)
            if movement_layer(w, old[layer], cnt, node_target, num_gpus, num_nodes, bound, avoid_dup,
                              out[layer], loads, fscratch, iscratch):
                how[layer] = 1
                continue
        node_of = node_relabel(old[layer], ref[layer], num_nodes, num_logical, perm)
        for e in range(num_logical):
            node_target[e] = perm[node_of[e]]
        if movement_layer(w, old[layer], ref_cnt[layer], node_target, num_gpus, num_nodes, bound, avoid_dup,
                          out[layer], loads, fscratch, iscratch):
            how[layer] = 2
            continue
        how[layer] = 3
        relabel_layer(old[layer], ref[layer], perm, num_gpus, num_nodes, num_logical, out[layer])
        if avoid_dup:
            layer_loads(w, out[layer], ref_cnt[layer], per_gpu, loads)
            dedupe(out[layer], loads, w, ref_cnt[layer], num_gpus, num_nodes, per_gpu, bound)


@jit
def movement_layers(weight, old, ref, ref_cnt, num_groups, num_gpus, num_nodes, slack, avoid_dup, out, how):
    """``movement_range`` over every layer, on the calling thread."""
    movement_range(weight, old, ref, ref_cnt, num_groups, num_gpus, num_nodes, slack, avoid_dup, out, how,
                   0, weight.shape[0])


@jit(parallel=True)
def movement_layers_parallel(weight, old, ref, ref_cnt, num_groups, num_gpus, num_nodes, slack, avoid_dup, out,
                             how, blocks):
    """``movement_range`` over ``blocks`` contiguous blocks of layers, in parallel."""
    num_layers = weight.shape[0]
    for b in numba.prange(blocks):
        movement_range(weight, old, ref, ref_cnt, num_groups, num_gpus, num_nodes, slack, avoid_dup, out, how,
                       b * num_layers // blocks, (b + 1) * num_layers // blocks)


@jit
def dedupe_layers(weight, ref, cnt, num_gpus, num_nodes, slack, out):
    """The reference placement with avoidable duplicates swapped away, no GPU above
    the reference's busiest (times ``1 + slack``)."""
    num_layers, num_logical = weight.shape
    per_gpu = ref.shape[1] // num_gpus
    loads = np.empty(num_gpus)
    w = np.empty(num_logical)
    for layer in range(num_layers):
        for e in range(num_logical):
            w[e] = weight[layer, e]
        bound = _bound(w, ref[layer], cnt[layer], per_gpu, slack, loads)
        out[layer, :] = ref[layer]
        dedupe(out[layer], loads, w, cnt[layer], num_gpus, num_nodes, per_gpu, bound)
