"""Movement-aware placement of one layer: start from the old placement, change little.

Given replica counts and the node each expert must live on: keep every old
replica that is still wanted where it is, put the missing replicas into the
freed slots (heaviest first, lightest GPU first), then swap replicas between
GPUs of a node only while a swap lowers the busiest GPU, until every GPU is
within ``bound``.  ``movement.py`` chooses the counts and nodes per layer and
falls back to the reference placement where this search misses the bound.
"""

from __future__ import annotations

import numpy as np

from .._jit import jit

@jit
def layer_loads(p2l, share, per_gpu, loads):
    """GPU loads (float64) of one layer's placement; ``share[e]`` is a replica
    of e's load (its load over its replica count)."""
    for g in range(loads.shape[0]):
        s = 0.0
        for q in range(g * per_gpu, (g + 1) * per_gpu):
            s += share[p2l[q]]
        loads[g] = s


@jit
def _holds(p2l, start, per_gpu, e, skip):
    for q in range(start, start + per_gpu):
        if q != skip and p2l[q] == e:
            return True
    return False


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
def dedupe(out, loads, share, num_gpus, num_nodes, per_gpu, bound):
    """Swap away second replicas of an expert on one GPU where a swap within the
    node keeps both GPUs within ``bound`` and creates no other duplicate."""
    gpus_per_node = num_gpus // num_nodes
    for g in range(num_gpus):
        first = (g // gpus_per_node) * gpus_per_node
        for s in range(g * per_gpu, (g + 1) * per_gpu):
            es = out[s]
            if not _holds(out, g * per_gpu, per_gpu, es, s):
                continue
            ls = share[es]
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
                    lt = share[et]
                    m = max(loads[g] - ls + lt, loads[h] + ls - lt)
                    if m <= bound and m < best:
                        best = m
                        best_t = t
                        best_lt = lt
            if best_t >= 0:
                _swap_slots(out, loads, per_gpu, s, best_t, ls, best_lt)


@jit
def movement_layer(share, old, cnt, node_target, num_gpus, num_nodes, bound, avoid_dup, out, loads, fscratch,
                   iscratch):
    """Movement-aware placement of one layer into ``out``; False if ``bound`` is missed.

    ``cnt`` are the replica counts to reach, ``share[e]`` the load of one of
    e's replicas under them (see ``layer_loads``), and ``node_target[e]``
    the node that must hold all of e's replicas.  Scratch: ``fscratch``
    (float64, ``2 * len(old)`` long) and ``iscratch`` (int64, ``len(share) +
    2 * len(old)`` long).
    """
    num_phy = old.shape[0]
    num_logical = share.shape[0]
    per_gpu = num_phy // num_gpus
    gpus_per_node = num_gpus // num_nodes
    slot_load = fscratch[:num_phy]
    need = iscratch[:num_logical]
    todo = iscratch[num_logical:num_logical + num_phy]
    for e in range(num_logical):
        need[e] = cnt[e]
    for q in range(num_phy):
        out[q] = -1
    # Keep every old replica that is still wanted on its node, and sum each
    # GPU's kept load in slot order.  (Loops per node and GPU, so that no
    # slot or GPU pays a 64-bit division for its node.)
    for node in range(num_nodes):
        for g in range(node * gpus_per_node, (node + 1) * gpus_per_node):
            s = 0.0
            for q in range(g * per_gpu, (g + 1) * per_gpu):
                e = old[q]
                if node_target[e] != node or need[e] == 0:
                    continue
                if avoid_dup and _holds(out, g * per_gpu, per_gpu, e, q):
                    continue
                out[q] = e
                need[e] -= 1
                s += share[e]
            loads[g] = s
    # Missing replicas, heaviest first, each to the lightest GPU with room.
    # After a small drift few experts miss one: find them a block at a time
    # (``need`` is never negative, so an OR tells whether a block has any).
    missing = 0
    for lo in range(0, num_logical, 64):
        hi = min(lo + 64, num_logical)
        wanted = 0
        for e in range(lo, hi):
            wanted |= need[e]
        if wanted == 0:
            continue
        for e in range(lo, hi):
            for _ in range(need[e]):
                todo[missing] = e
                missing += 1
    # A stable merge sort, bottom up, heaviest first: replicas of equal
    # load keep expert order.
    src = todo
    dst = iscratch[num_logical + num_phy:]
    width = 1
    while width < missing:
        for lo in range(0, missing, 2 * width):
            mid = min(lo + width, missing)
            hi = min(lo + 2 * width, missing)
            i = lo
            j = mid
            for k in range(lo, hi):
                if j >= hi or (i < mid and not share[src[j]] > share[src[i]]):
                    dst[k] = src[i]
                    i += 1
                else:
                    dst[k] = src[j]
                    j += 1
        src, dst = dst, src
        width *= 2
    todo = src
    for k in range(missing):
        e = todo[k]
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
        _swap_slots(out, loads, per_gpu, s, t, slot_load[s], slot_load[t])
        x = slot_load[s]
        slot_load[s] = slot_load[t]
        slot_load[t] = x
    if avoid_dup:
        dedupe(out, loads, share, num_gpus, num_nodes, per_gpu, bound)
    for g in range(num_gpus):
        if loads[g] > bound:
            return False
    return True
