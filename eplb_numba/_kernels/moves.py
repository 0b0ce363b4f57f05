"""Movement-aware placement: start from the old placement, change little.

Per layer, with the reference's replica counts and its groups-to-nodes split
(relabelled onto the old nodes): keep every old replica that is still wanted
where it is, put the missing replicas into the freed slots (heaviest first,
lightest GPU first), then swap replicas between GPUs of a node only while a
swap lowers the busiest GPU, until every GPU is within ``bound``.  Callers
fall back to the reference placement relabelled onto the old GPUs when the
search cannot meet the bound.
"""

from __future__ import annotations

import numba
import numpy as np

from .._jit import jit
from .assign import max_assignment
from .plan import replicate_row


@jit
def layer_loads(w, p2l, cnt, per_gpu, loads):
    """GPU loads (float64) of one layer's placement with replica counts ``cnt``."""
    for g in range(loads.shape[0]):
        s = 0.0
        for q in range(g * per_gpu, (g + 1) * per_gpu):
            e = p2l[q]
            s += w[e] / cnt[e]
        loads[g] = s


@jit
def _holds(p2l, start, per_gpu, e, skip):
    for q in range(start, start + per_gpu):
        if q != skip and p2l[q] == e:
            return True
    return False


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
def _best_swap(out, slot_load, loads, first_gpu, last_gpu, per_gpu, g, limit, avoid_dup):
    # Swap of a slot on GPU g with a slot on another GPU of the node that
    # leaves both below ``limit`` and lowers their larger load the most.
    # ``slot_load[q]`` is the load of the replica in slot q.
    best = np.inf
    best_s = -1
    best_t = -1
    for s in range(g * per_gpu, (g + 1) * per_gpu):
        es = out[s]
        ls = slot_load[s]
        for h in range(first_gpu, last_gpu):
            if h == g:
                continue
            base_g = loads[g] - ls
            base_h = loads[h] + ls
            for t in range(h * per_gpu, (h + 1) * per_gpu):
                lt = slot_load[t]
                if lt >= ls:
                    continue
                m = max(base_g + lt, base_h - lt)
                if m >= limit or m >= best:
                    continue
                et = out[t]
                if et == es:
                    continue
                if avoid_dup and (_holds(out, g * per_gpu, per_gpu, et, s) or _holds(out, h * per_gpu, per_gpu, es, t)):
                    continue
                best = m
                best_s = s
                best_t = t
    return best_s, best_t


@jit
def _swap_slots(out, loads, per_gpu, s, t, load_s, load_t):
    # Exchange the replicas of slots s and t (loads ``load_s``, ``load_t``)
    # and move their loads between the two GPUs.
    loads[s // per_gpu] += load_t - load_s
    loads[t // per_gpu] += load_s - load_t
    e = out[s]
    out[s] = out[t]
    out[t] = e


@jit
def _swap_with_loads(out, slot_load, loads, per_gpu, s, t):
    _swap_slots(out, loads, per_gpu, s, t, slot_load[s], slot_load[t])
    x = slot_load[s]
    slot_load[s] = slot_load[t]
    slot_load[t] = x


@jit
def dedupe(out, loads, w, cnt, num_gpus, num_nodes, per_gpu, bound):
    """Swap away second replicas of an expert on one GPU where a swap within the
    node keeps both GPUs within ``bound`` and creates no other duplicate."""
    gpus_per_node = num_gpus // num_nodes
    for g in range(num_gpus):
        first = (g // gpus_per_node) * gpus_per_node
        for s in range(g * per_gpu, (g + 1) * per_gpu):
            es = out[s]
            if not _holds(out, g * per_gpu, per_gpu, es, s):
                continue
            ls = w[es] / cnt[es]
            best = np.inf
            best_t = -1
            best_lt = 0.0
            for h in range(first, first + gpus_per_node):
                if h == g or _holds(out, h * per_gpu, per_gpu, es, -1):
                    continue
                for t in range(h * per_gpu, (h + 1) * per_gpu):
                    et = out[t]
                    if _holds(out, g * per_gpu, per_gpu, et, -1):
                        continue
                    lt = w[et] / cnt[et]
                    m = max(loads[g] - ls + lt, loads[h] + ls - lt)
                    if m <= bound and m < best:
                        best = m
                        best_t = t
                        best_lt = lt
            if best_t >= 0:
                _swap_slots(out, loads, per_gpu, s, best_t, ls, best_lt)


@jit
def movement_layer(w, old, cnt, node_target, num_gpus, num_nodes, bound, avoid_dup, out, loads, fscratch, iscratch):
    """Movement-aware placement of one layer into ``out``; False if ``bound`` is missed.

    ``cnt`` are the replica counts to reach and ``node_target[e]`` the node
    that must hold all of expert ``e``'s replicas.  Scratch: ``fscratch``
    (float64) and ``iscratch`` (int64), each ``len(w) + 2 * len(old)`` long.
    """
    num_phy = old.shape[0]
    num_logical = w.shape[0]
    per_gpu = num_phy // num_gpus
    gpus_per_node = num_gpus // num_nodes
    # A replica's load, w / cnt, once per expert (divisions are the slow part).
    share = fscratch[:num_logical]
    slot_load = fscratch[num_logical:num_logical + num_phy]
    key = fscratch[num_logical + num_phy:]
    need = iscratch[:num_logical]
    todo = iscratch[num_logical:num_logical + num_phy]
    for e in range(num_logical):
        share[e] = w[e] / cnt[e]
        need[e] = cnt[e]
    for q in range(num_phy):
        out[q] = -1
    # Keep every old replica that is still wanted on its node.  (Loops per
    # GPU: a 64-bit division per slot cost more than the rest of the pass.)
    for g in range(num_gpus):
        node = g // gpus_per_node
        for q in range(g * per_gpu, (g + 1) * per_gpu):
            e = old[q]
            if node_target[e] != node or need[e] == 0:
                continue
            if avoid_dup and _holds(out, g * per_gpu, per_gpu, e, q):
                continue
            out[q] = e
            need[e] -= 1
    for g in range(num_gpus):
        s = 0.0
        for q in range(g * per_gpu, (g + 1) * per_gpu):
            if out[q] >= 0:
                s += share[out[q]]
        loads[g] = s
    # Missing replicas, heaviest first, each to the lightest GPU with room.
    missing = 0
    for e in range(num_logical):
        for _ in range(need[e]):
            todo[missing] = e
            key[missing] = -share[e]
            missing += 1
    order = np.argsort(key[:missing], kind="mergesort")
    for k in range(missing):
        e = todo[order[k]]
        node = node_target[e]
        best_g = -1
        best_dup = True
        for g in range(node * gpus_per_node, (node + 1) * gpus_per_node):
            if not _holds(out, g * per_gpu, per_gpu, -1, -1):
                continue
            dup = avoid_dup and _holds(out, g * per_gpu, per_gpu, e, -1)
            if best_g < 0 or (best_dup and not dup) or (dup == best_dup and loads[g] < loads[best_g]):
                best_g = g
                best_dup = dup
        for q in range(best_g * per_gpu, (best_g + 1) * per_gpu):
            if out[q] < 0:
                out[q] = e
                break
        loads[best_g] += share[e]
    # Swap only while it lowers the busiest GPU.
    for q in range(num_phy):
        slot_load[q] = share[out[q]]
    for _ in range(4 * num_phy):
        g = 0
        for h in range(num_gpus):
            if loads[h] > loads[g]:
                g = h
        if loads[g] <= bound:
            break
        first = (g // gpus_per_node) * gpus_per_node
        # The lightest GPU of the node almost always offers the best swap:
        # try it alone first, then the whole node.
        light = first
        for h in range(first, first + gpus_per_node):
            if h != g and (light == g or loads[h] < loads[light]):
                light = h
        s, t = _best_swap(out, slot_load, loads, light, light + 1, per_gpu, g, loads[g], avoid_dup)
        if s < 0:
            s, t = _best_swap(out, slot_load, loads, first, first + gpus_per_node, per_gpu, g, loads[g], avoid_dup)
        if s < 0:
            break
        _swap_with_loads(out, slot_load, loads, per_gpu, s, t)
    if avoid_dup:
        dedupe(out, loads, w, cnt, num_gpus, num_nodes, per_gpu, bound)
    for g in range(num_gpus):
        if loads[g] > bound:
            return False
    return True


@jit
def relabel_layer(old, ref, perm, num_gpus, num_nodes, out):
    """The reference placement with its node ``a`` on old node ``perm[a]`` (see
    ``node_relabel``), its GPUs relabelled onto the old ones by optimal
    assignment of shared experts, and experts that stay keeping their slot."""
    num_phy = ref.shape[0]
    per_gpu = num_phy // num_gpus
    gpus_per_node = num_gpus // num_nodes
    score = np.zeros((gpus_per_node, gpus_per_node))
    assign = np.empty(gpus_per_node, dtype=np.int64)
    used = np.empty(per_gpu, dtype=np.bool_)
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
            for k in range(per_gpu):
                used[k] = False
                out[dst + k] = -1
            # Experts that stay keep their old slot; the rest fill in order.
            for k in range(per_gpu):
                for q in range(per_gpu):
                    if not used[q] and ref[src + q] == old[dst + k]:
                        used[q] = True
                        out[dst + k] = old[dst + k]
                        break
            q = 0
            for k in range(per_gpu):
                if out[dst + k] >= 0:
                    continue
                while used[q]:
                    q += 1
                out[dst + k] = ref[src + q]
                used[q] = True


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
            g = group_of[old[q]]
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
        relabel_layer(old[layer], ref[layer], perm, num_gpus, num_nodes, out[layer])
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
