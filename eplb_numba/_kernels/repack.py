"""Movement-aware placement of one layer: start from the old placement, change little.

Given replica counts and the node each expert must live on: keep every old
replica that is still wanted where it is, put the missing replicas into the
freed slots (heaviest first, lightest GPU first), then swap replicas between
GPUs of a node only while a swap lowers the busiest GPU, until every GPU is
within ``bound``.  ``movement.py`` chooses the counts and nodes per layer and
falls back to the reference placement where this search misses the bound.

Cost, for R slots on G GPUs (p = R / G per GPU) and E experts: a table
``held[g * E + e]`` (replicas of e on GPU g) answers "does GPU g hold e" in
O(1), and free slots are taken in order from a pointer per GPU, so keeping
and placing cost O(R + missing * GPUs per node).  A swap search compares
distinct experts, not slots (slots of one expert on one GPU are
interchangeable), at O(slots of the node + D_g * D_h) for D distinct experts
per GPU, instead of O(p^2) per pair of GPUs.
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
def busiest(loads):
    """The busiest GPU (the first of equals)."""
    g = 0
    for h in range(1, loads.shape[0]):
        if loads[h] > loads[g]:
            g = h
    return g


# Up to this many slots per GPU, a GPU's experts are mostly distinct, and
# grouping them costs more than comparing every slot.
_GROUP_SLOTS = 32


@jit
def _firsts(out, start, per_gpu, mark, firsts, at):
    # The lowest slot of each distinct expert among out[start:start +
    # per_gpu], in slot order, into firsts[at:]; returns the new end.
    # ``mark`` (one per expert) is zero on entry and on return.  Every slot
    # up to _GROUP_SLOTS a GPU (the same choice, as a swap's merit depends
    # on the two experts alone).
    n = at
    if per_gpu <= _GROUP_SLOTS:
        for q in range(start, start + per_gpu):
            firsts[n] = q
            n += 1
        return n
    for q in range(start, start + per_gpu):
        e = out[q]
        if mark[e] == 0:
            mark[e] = 1
            firsts[n] = q
            n += 1
    for k in range(at, n):
        mark[out[firsts[k]]] = 0
    return n


@jit
def _best_swap(out, slot_load, loads, first_gpu, last_gpu, per_gpu, g, limit, avoid_dup, held, was, num_logical,
               mark, firsts, bounds):
    # Swap of a slot on GPU g with a slot on another GPU of the node that
    # leaves both below ``limit``: of those that add the fewest copies (an
    # expert that lands on a GPU whose old placement held it costs none, one
    # that leaves such a GPU costs one back; ``was`` counts the old
    # placement's replicas per GPU), the one that lowers their larger load
    # the most, the first such (s, h, t) in slot order.  ``slot_load[q]`` is the load of
    # the replica in slot q; it and every check depend only on the two
    # experts, so each GPU's first slot of each expert stands for them all.
    # Scratch: ``mark`` (see _firsts), ``firsts`` (a node's slots), ``bounds`` (GPUs + 2).
    end_g = _firsts(out, g * per_gpu, per_gpu, mark, firsts, np.int64(0))
    end = end_g
    for h in range(first_gpu, last_gpu):
        bounds[h - first_gpu] = end
        if h != g:
            end = _firsts(out, h * per_gpu, per_gpu, mark, firsts, end)
    bounds[last_gpu - first_gpu] = end
    best = np.inf
    best_cost = 3  # above any swap's: at most two copies
    best_s = np.int64(-1)
    best_t = np.int64(-1)
    for a in range(end_g):
        s = firsts[a]
        es = out[s]
        ls = slot_load[s]
        # Moving es off g saves a copy unless g held it before.
        leave_g = 1 if was[g * num_logical + es] > 0 else 0
        for h in range(first_gpu, last_gpu):
            if h == g:
                continue
            base_g = loads[g] - ls
            base_h = loads[h] + ls
            # es arriving on h costs a copy unless h held it before.
            cost_s = (0 if was[h * num_logical + es] > 0 else 1) - (1 - leave_g)
            for b in range(bounds[h - first_gpu], bounds[h - first_gpu + 1]):
                t = firsts[b]
                lt = slot_load[t]
                if lt >= ls:
                    continue
                m = max(base_g + lt, base_h - lt)
                if m >= limit:
                    continue
                # et's move adds at least -1: no lookup where that cannot win.
                if m >= best and cost_s - 1 >= best_cost:
                    continue
                et = out[t]
                if et == es:
                    continue
                cost = (cost_s + (0 if was[g * num_logical + et] > 0 else 1)
                        - (0 if was[h * num_logical + et] > 0 else 1))
                if cost > best_cost or (cost == best_cost and m >= best):
                    continue
                if avoid_dup and (held[g * num_logical + et] > 0 or held[h * num_logical + es] > 0):
                    continue
                best = m
                best_cost = cost
                best_s = s
                best_t = t
    return best_s, best_t


@jit
def _swap_slots(out, loads, per_gpu, s, t, load_s, load_t, held, num_logical):
    # Exchange the replicas of slots s and t (loads ``load_s``, ``load_t``)
    # and move their loads, and counts if ``held`` keeps them, between the
    # two GPUs.
    g = s // per_gpu
    h = t // per_gpu
    loads[g] += load_t - load_s
    loads[h] += load_s - load_t
    e = out[s]
    f = out[t]
    if held.shape[0]:
        held[g * num_logical + e] -= 1
        held[g * num_logical + f] += 1
        held[h * num_logical + f] -= 1
        held[h * num_logical + e] += 1
    out[s] = f
    out[t] = e


@jit
def count_held(out, per_gpu, num_logical, held, sign):
    """Add ``sign`` to ``held[g * E + e]`` for every slot of GPU g holding e (-1 slots skipped)."""
    # A loop per GPU: no 64-bit division per slot to find its GPU.
    for g in range(out.shape[0] // per_gpu):
        base = g * num_logical
        for q in range(g * per_gpu, (g + 1) * per_gpu):
            e = out[q]
            if e >= 0:
                held[base + e] += sign


@jit
def dedupe(out, loads, share, num_gpus, num_nodes, per_gpu, bound, held):
    """Swap away second replicas of an expert on one GPU where a swap within the
    node keeps both GPUs within ``bound`` and creates no other duplicate.

    ``held`` (``num_gpus * len(share)``) is zero on entry and on return.
    """
    num_logical = share.shape[0]
    gpus_per_node = num_gpus // num_nodes
    count_held(out, per_gpu, num_logical, held, np.int64(1))
    for g in range(num_gpus):
        first = (g // gpus_per_node) * gpus_per_node
        for s in range(g * per_gpu, (g + 1) * per_gpu):
            es = out[s]
            if held[g * num_logical + es] < 2:
                continue
            ls = share[es]
            best = np.inf
            best_t = np.int64(-1)
            best_lt = 0.0
            for h in range(first, first + gpus_per_node):
                if h == g or held[h * num_logical + es] > 0:
                    continue
                for t in range(h * per_gpu, (h + 1) * per_gpu):
                    et = out[t]
                    if held[g * num_logical + et] > 0:
                        continue
                    lt = share[et]
                    m = max(loads[g] - ls + lt, loads[h] + ls - lt)
                    if m <= bound and m < best:
                        best = m
                        best_t = t
                        best_lt = lt
            if best_t >= 0:
                _swap_slots(out, loads, per_gpu, s, best_t, ls, best_lt, held, num_logical)
    count_held(out, per_gpu, num_logical, held, np.int64(-1))


@jit
def movement_layer(share, old, cnt, node_target, num_gpus, num_nodes, bound, avoid_dup, out, loads, fscratch,
                   iscratch, held, was, mark):
    """Movement-aware placement of one layer into ``out``; False if ``bound`` is missed.

    ``cnt`` are the replica counts to reach, ``share[e]`` the load of one of
    e's replicas under them (see ``layer_loads``), and ``node_target[e]``
    the node that must hold all of e's replicas.  Scratch: ``fscratch``
    (float64, ``2 * len(old)`` long), ``iscratch`` (int64, ``len(share) +
    3 * len(old) + 3 * num_gpus + 2`` long), ``mark`` (int64, one per
    expert) and, with ``avoid_dup``, ``held`` (int64, ``num_gpus *
    len(share)``; else empty); both zero on entry and on return.  (Without
    duplicate checks no per-GPU counts are needed, and a table that size
    costs more to clear than the layer to plan.)  ``was`` (int64, ``num_gpus
    * len(share)``, zero on entry and on return) is filled here with the
    old placement's counts at the first swap, so that swaps prefer moves
    that copy nothing.
    """
    num_phy = old.shape[0]
    num_logical = share.shape[0]
    per_gpu = num_phy // num_gpus
    gpus_per_node = num_gpus // num_nodes
    slot_load = fscratch[:num_phy]
    need = iscratch[:num_logical]
    todo = iscratch[num_logical:num_logical + num_phy]
    base = num_logical + 2 * num_phy
    free = iscratch[base:base + num_gpus]
    nxt = iscratch[base + num_gpus:base + 2 * num_gpus]
    firsts = iscratch[base + 2 * num_gpus:base + 2 * num_gpus + num_phy]
    bounds = iscratch[base + 2 * num_gpus + num_phy:]
    for e in range(num_logical):
        need[e] = cnt[e]
    for q in range(num_phy):
        out[q] = -1
    # Old replicas of each expert on its node (scratch until the missing
    # replicas are listed).  -1: an empty slot (a GPU that is new, or whose
    # experts were lost).  Loops per node and GPU, so that no slot or GPU
    # pays a 64-bit division for its node.
    cand = todo
    for e in range(num_logical):
        cand[e] = 0
    for node in range(num_nodes):
        for q in range(node * gpus_per_node * per_gpu, (node + 1) * gpus_per_node * per_gpu):
            e = old[q]
            if e >= 0 and node_target[e] == node:
                cand[e] += 1
    # Keep every old replica that is still wanted on its node, and sum each
    # GPU's kept load in slot order; where an expert has more old replicas
    # than it keeps, choose below.
    for node in range(num_nodes):
        for g in range(node * gpus_per_node, (node + 1) * gpus_per_node):
            s = 0.0
            for q in range(g * per_gpu, (g + 1) * per_gpu):
                e = old[q]
                if e < 0 or node_target[e] != node or need[e] == 0 or cand[e] > cnt[e]:
                    continue
                if avoid_dup:
                    # Counted as they are kept: the checks need them now.
                    if held[g * num_logical + e] > 0:
                        continue
                    held[g * num_logical + e] += 1
                out[q] = e
                need[e] -= 1
                s += share[e]
            loads[g] = s
    # An expert with fewer replicas than before keeps those on the lightest
    # GPUs, heaviest experts first: dropping replicas off the busiest GPUs
    # saves the swaps (two copies each) that would unload them later.
    excess = iscratch[num_logical + num_phy:num_logical + 2 * num_phy]
    n_ex = 0
    for e in range(num_logical):
        if cand[e] > cnt[e] and cnt[e] > 0:
            # Insertion by share, heaviest first, equal shares in expert order.
            k = n_ex
            while k > 0 and share[excess[k - 1]] < share[e]:
                excess[k] = excess[k - 1]
                k -= 1
            excess[k] = e
            n_ex += 1
    # Their old slots on their node, listed in slot order by one pass over
    # the slots (``firsts`` is free until the swaps), rather than a scan of
    # the node per kept replica: under the global policy the one node is
    # every slot, and a scale-down leaves many experts with fewer replicas.
    # ``mark[e]`` flags the listed experts; ``cand[e]`` becomes where e's
    # list ends (each list starts where the previous one ends).
    lists = firsts
    at = 0
    for i in range(n_ex):
        e = excess[i]
        mark[e] = 1
        n = cand[e]
        cand[e] = at
        at += n
    if n_ex:
        for node in range(num_nodes):
            for q in range(node * gpus_per_node * per_gpu, (node + 1) * gpus_per_node * per_gpu):
                e = old[q]
                if e >= 0 and mark[e] != 0 and node_target[e] == node:
                    lists[cand[e]] = q
                    cand[e] += 1
    end = 0
    for i in range(n_ex):
        e = excess[i]
        mark[e] = 0
        start = end
        end = cand[e]
        for _ in range(cnt[e]):
            best_q = -1
            best_load = np.inf
            for k in range(start, end):
                q = lists[k]
                if out[q] >= 0:
                    continue
                g = q // per_gpu
                if avoid_dup and held[g * num_logical + e] > 0:
                    continue
                if loads[g] < best_load:
                    best_load = loads[g]
                    best_q = q
            if best_q < 0:
                break
            g = best_q // per_gpu
            out[best_q] = e
            need[e] -= 1
            loads[g] += share[e]
            if avoid_dup:
                held[g * num_logical + e] += 1
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
    dst = iscratch[num_logical + num_phy:num_logical + 2 * num_phy]
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
    if missing:
        # Free slots per GPU, and where the first one is.
        for g in range(num_gpus):
            n = 0
            for q in range(g * per_gpu, (g + 1) * per_gpu):
                n += out[q] < 0
            free[g] = n
            nxt[g] = g * per_gpu
    for k in range(missing):
        e = todo[k]
        node = node_target[e]
        best_g = -1
        best_dup = True
        for g in range(node * gpus_per_node, (node + 1) * gpus_per_node):
            if free[g] == 0:
                continue
            dup = avoid_dup and held[g * num_logical + e] > 0
            if best_g < 0 or (best_dup and not dup) or (dup == best_dup and loads[g] < loads[best_g]):
                best_g = g
                best_dup = dup
        # Free slots fill in order, so a pointer finds the first one.
        q = nxt[best_g]
        while out[q] >= 0:
            q += 1
        out[q] = e
        nxt[best_g] = q + 1
        free[best_g] -= 1
        if avoid_dup:
            held[best_g * num_logical + e] += 1
        loads[best_g] += share[e]
    # Swap only while it lowers the busiest GPU.
    for q in range(num_phy):
        slot_load[q] = share[out[q]]
    swapping = False
    for _ in range(4 * num_phy):
        g = busiest(loads)
        if loads[g] <= bound:
            break
        if not swapping:
            # Built at the first swap: a layer that meets the bound without
            # one (the common case after a small drift) never pays for it.
            count_held(old, per_gpu, num_logical, was, np.int64(1))
            swapping = True
        first = (g // gpus_per_node) * gpus_per_node
        # The lightest GPU of the node almost always offers the best swap:
        # try it alone first, then the whole node.
        light = first
        for h in range(first, first + gpus_per_node):
            if h != g and (light == g or loads[h] < loads[light]):
                light = h
        s, t = _best_swap(out, slot_load, loads, light, light + 1, per_gpu, g, loads[g], avoid_dup, held, was,
                          num_logical, mark, firsts, bounds)
        if s < 0:
            s, t = _best_swap(out, slot_load, loads, first, first + gpus_per_node, per_gpu, g, loads[g], avoid_dup,
                              held, was, num_logical, mark, firsts, bounds)
        if s < 0:
            break
        _swap_slots(out, loads, per_gpu, s, t, slot_load[s], slot_load[t], held, num_logical)
        x = slot_load[s]
        slot_load[s] = slot_load[t]
        slot_load[t] = x
    if avoid_dup:
        # ``held`` back to zero: dedupe counts afresh.
        count_held(out, per_gpu, num_logical, held, np.int64(-1))
        dedupe(out, loads, share, num_gpus, num_nodes, per_gpu, bound, held)
    if swapping:
        count_held(old, per_gpu, num_logical, was, np.int64(-1))
    for g in range(num_gpus):
        if loads[g] > bound:
            return False
    return True
