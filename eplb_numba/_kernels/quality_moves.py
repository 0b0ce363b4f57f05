"""Quality mode's moves: the search for the best swap, take or give of the busiest GPU.

See ``quality.py`` for what the moves are and how the search uses them.
Every function here reads a layer's state as ``quality._improve`` keeps
it: ``share``, ``up`` and ``down`` (one replica's load at each expert's
count, one more, one fewer), ``cnt``, ``p2l``, ``loads`` and ``held``
(replicas of expert e on GPU g at ``g * E + e``).
"""

from __future__ import annotations

import numpy as np

from .._jit import jit

__all__ = ["best_give", "distinct", "gpu_load", "lightest", "search", "set_share"]


@jit
def distinct(p2l, start, s):
    # Whether slot s holds the first replica of its expert among slots start:s.
    for u in range(start, s):
        if p2l[u] == p2l[s]:
            return False
    return True


@jit
def insert_ranked(out, n, k, x, keys, sign):
    """Insert ``x`` into ``out[:n]``, kept as the (at most) k smallest by ``sign * keys``.

    Ties keep the earlier one first; returns the new length.  ``sign`` -1.0
    keeps the largest (negation is exact).
    """
    i = min(n, k)
    while i > 0 and sign * keys[out[i - 1]] > sign * keys[x]:
        if i < k:
            out[i] = out[i - 1]
        i -= 1
    if i < k:
        out[i] = x
    return min(n + 1, k)


@jit
def lightest(loads, first, gpn, g, k, out):
    # The k lightest GPUs of first:first + gpn other than g, lightest first
    # (ties: lower index); returns how many.
    n = np.int64(0)
    for h in range(first, first + gpn):
        if h != g:
            n = insert_ranked(out, n, k, h, loads, 1.0)
    return n


@jit
def gpu_load(p2l, share, per_gpu, g, loads):
    # GPU g's load, its slots summed in order (as layer_loads does).
    total = 0.0
    for q in range(g * per_gpu, (g + 1) * per_gpu):
        total += share[p2l[q]]
    loads[g] = total


@jit
def set_share(w, cnt, share, up, down, e):
    # One replica's load of e at its count, at one more and at one fewer.
    c = cnt[e]
    share[e] = w[e] / c
    up[e] = w[e] / (c + 1)
    down[e] = w[e] / (c - 1) if c >= 2 else np.inf


@jit
def _heavier_holders(p2l, loads, held, down, share, cnt, g, first, last, top1, top1_gpu, top2, grow):
    # For every expert b with several replicas on GPUs first:last (a node:
    # all of b's replicas are there): ``grow[b]``, what each of its replicas
    # gains if it loses one, and the two largest loads (on distinct GPUs
    # other than g) its holders would then carry, ``top1`` on GPU
    # ``top1_gpu`` and ``top2``.
    num_logical = share.shape[0]
    per_gpu = p2l.shape[0] // loads.shape[0]
    for q in range(first * per_gpu, last * per_gpu):
        b = p2l[q]
        top1[b] = -np.inf
        top2[b] = -np.inf
        top1_gpu[b] = -1
        grow[b] = down[b] - share[b]
    for x in range(first, last):
        if x == g:
            continue
        for q in range(x * per_gpu, (x + 1) * per_gpu):
            b = p2l[q]
            if cnt[b] < 2 or top1_gpu[b] == x:
                continue
            v = loads[x] + held[x * num_logical + b] * grow[b]
            if v > top1[b]:
                top2[b] = top1[b]
                top1[b] = v
                top1_gpu[b] = x
            elif v > top2[b]:
                top2[b] = v


@jit
def search(share, up, down, cnt, p2l, loads, held, g, n_node, partners, n_partners, best, top1, top1_gpu, top2,
            grow, move, ready):
    # The best swap or take between the busiest GPU g and the GPUs
    # ``partners[:n_partners]``, if better than ``best``: written to
    # ``move`` as (kind, s, t); returns the new best.  ``top1``, ``top1_gpu``,
    # ``top2`` and ``grow`` (``_heavier_holders``, over g's node of ``n_node``
    # GPUs) are filled at first need, when ``ready[0]`` is 0.
    num_logical = share.shape[0]
    per_gpu = p2l.shape[0] // loads.shape[0]
    gs = g * per_gpu
    gb = g * num_logical
    for s in range(gs, gs + per_gpu):
        a = p2l[s]
        sa = share[a]
        # Swap: a for a lighter replica of another GPU.
        for i in range(n_partners):
            h = partners[i]
            bg = loads[g] - sa
            bh = loads[h] + sa
            for t in range(h * per_gpu, (h + 1) * per_gpu):
                sb = share[p2l[t]]
                if sb >= sa:
                    continue
                m = max(bg + sb, bh - sb)
                if m < best:
                    best = m
                    move[0] = 1
                    move[1] = s
                    move[2] = t
    # Takes after every swap, so that the best swap prunes them.
    for s in range(gs, gs + per_gpu):
        a = p2l[s]
        sa = share[a]
        if not distinct(p2l, gs, s):
            continue
        # Take: one more replica of a, in a slot of another GPU holding b.
        na = up[a]
        da = na - sa
        new_g = loads[g] + held[gb + a] * da
        if new_g >= best:
            continue
        for i in range(n_partners):
            h = partners[i]
            hb = h * num_logical
            bh = loads[h] + held[hb + a] * da + na
            for t in range(h * per_gpu, (h + 1) * per_gpu):
                b = p2l[t]
                if b == a or cnt[b] < 2:
                    continue
                db = down[b] - share[b]
                m = max(bh - share[b] + (held[hb + b] - 1) * db, new_g)
                if m >= best:
                    continue
                if ready[0] == 0:
                    first = (g // n_node) * n_node
                    _heavier_holders(p2l, loads, held, down, share, cnt, g, first, first + n_node, top1, top1_gpu,
                                     top2, grow)
                    ready[0] = 1
                if held[gb + b] > 0:
                    m = max(m, new_g + held[gb + b] * db)
                # b's replicas elsewhere get heavier.  Their heaviest holder
                # first, counting a's replicas there as they are: an
                # estimate from above, summed exactly only where it blocks.
                est = top2[b] if top1_gpu[b] == h else top1[b]
                if max(m, est) < best:
                    m = max(m, est)
                else:
                    for x in range(loads.shape[0]):
                        n = held[x * num_logical + b]
                        if x != h and x != g and n > 0:
                            m = max(m, loads[x] + held[x * num_logical + a] * da + n * db)
                            if m >= best:
                                break
                if m < best:
                    best = m
                    move[0] = 3
                    move[1] = s
                    move[2] = t
    return best


@jit
def _give_gain(share, up, loads, held, g, a, b, base, da, holders, n_holders, best):
    # The peak over GPU g and a's other holders (``holders[:n_holders]``)
    # once a slot of g holding a becomes one more replica of b, or a value
    # at least ``best`` as soon as it cannot be lower: ``base`` is g's load
    # without b's part, ``da`` what each replica of a gains.
    num_logical = share.shape[0]
    nb = held[g * num_logical + b]
    sb = up[b]
    db = sb - share[b]
    m = base + (nb + 1) * sb - nb * share[b]
    for i in range(n_holders):
        if m >= best:
            return m
        h = holders[i]
        m = max(m, loads[h] + held[h * num_logical + a] * da + held[h * num_logical + b] * db)
    return m


@jit
def best_give(share, up, down, cnt, p2l, loads, held, members, lo, hi, g, first, gpn, best, move, holders):
    # The best give of GPU g, if better than ``best`` (written to ``move`` as
    # (2, s, b)); ``members[lo:hi]`` are the experts of g's node.  For each
    # expert a on g, b is tried among: the expert whose next replica is
    # lightest (the second lightest where that is a), the experts on g, and
    # those on a's heaviest other holder (whose load b's second replica
    # lowers).  Returns the new best.
    num_logical = share.shape[0]
    per_gpu = p2l.shape[0] // loads.shape[0]
    gs = g * per_gpu
    gb = g * num_logical
    cold = -1
    cold2 = -1
    for k in range(lo, hi):
        b = members[k]
        if held[gb + b] == 0:
            v = up[b]
            if cold < 0 or v < up[cold]:
                cold2 = cold
                cold = b
            elif cold2 < 0 or v < up[cold2]:
                cold2 = b
    for s in range(gs, gs + per_gpu):
        a = p2l[s]
        ca = cnt[a]
        if ca < 2 or not distinct(p2l, gs, s):
            continue
        da = down[a] - share[a]
        base = loads[g] - share[a] + (held[gb + a] - 1) * da
        if base >= best:
            continue
        n_holders = np.int64(0)
        top = -1
        for h in range(first, first + gpn):
            if h != g and held[h * num_logical + a] > 0:
                holders[n_holders] = h
                n_holders += 1
                if top < 0 or loads[h] + held[h * num_logical + a] * da > loads[top] + held[top * num_logical + a] * da:
                    top = h
        # Candidates: the coldest expert, then the slots of g and of the top holder.
        n_slots = per_gpu if top < 0 else 2 * per_gpu
        for k in range(-1, n_slots):
            if k < 0:
                b = cold if cold != a else cold2
            elif k < per_gpu:
                b = p2l[gs + k]
                if not distinct(p2l, gs, gs + k):
                    continue
            else:
                b = p2l[top * per_gpu + k - per_gpu]
                if held[gb + b] > 0 or not distinct(p2l, top * per_gpu, top * per_gpu + k - per_gpu):
                    continue  # tried with g's slots
            if b < 0 or b == a:
                continue
            m = _give_gain(share, up, loads, held, g, a, b, base, da, holders, n_holders, best)
            if m < best:
                best = m
                move[0] = 2
                move[1] = s
                move[2] = b
    return best
