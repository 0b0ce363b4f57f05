"""Quality mode: the reference's placement improved by local search, per layer.

The reference chooses replica counts without looking at how the replicas
fit on GPUs (nine replicas on a node's eight GPUs put two on one), then
packs greedily.  Starting from its plan, the busiest GPU is relieved one
move at a time, while some move leaves every GPU it changes below the
current peak:

- swap: two GPUs of one node exchange the experts of one slot each;
- give: a slot of the busiest GPU that holds one of several replicas of an
  expert becomes a replica of another expert of the node (counts change);
- take: a slot of another GPU of the node that holds one of several
  replicas becomes one more replica of an expert on the busiest GPU.

Each move lowers the peak, or the number of GPUs at it, so the search ends.
Where single moves stall on a node's hottest experts, ``recount.py`` tries
other counts for them and repacks the node, and the moves run again.
Moves stay within a node and every expert keeps a replica, so the
reference's rules (groups on their node, slots per GPU) hold.
"""

from __future__ import annotations

import numpy as np

from .._jit import jit
from .recount import recount
from .repack import count_held, layer_loads

# A move must lower what it touches below the peak by this relative margin:
# no move for a rounding error, and a peak summed in another order (NumPy's
# pairwise sums) still compares the same way.
_MARGIN = 1e-12


# Partners tried first for the busiest GPU: the lightest GPUs of its node.
# The whole node is searched only when none of them offers a move.
_PARTNERS = 4


@jit
def _distinct(p2l, start, s):
    # Whether slot s holds the first replica of its expert among slots start:s.
    for u in range(start, s):
        if p2l[u] == p2l[s]:
            return False
    return True


@jit
def _lightest(loads, first, gpn, g, k, out):
    # The k lightest GPUs of first:first + gpn other than g, lightest first
    # (ties: lower index); returns how many.
    n = 0
    for h in range(first, first + gpn):
        if h == g:
            continue
        i = min(n, k)
        while i > 0 and loads[out[i - 1]] > loads[h]:
            if i < k:
                out[i] = out[i - 1]
            i -= 1
        if i < k:
            out[i] = h
        n = min(n + 1, k)
    return n


@jit
def _gpu_load(p2l, share, per_gpu, g, loads):
    # GPU g's load, its slots summed in order (as layer_loads does).
    total = 0.0
    for q in range(g * per_gpu, (g + 1) * per_gpu):
        total += share[p2l[q]]
    loads[g] = total


@jit
def _set_share(w, cnt, share, up, down, e):
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
def _search(share, up, down, cnt, p2l, loads, held, g, n_node, partners, n_partners, best, top1, top1_gpu, top2,
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
        if not _distinct(p2l, gs, s):
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
def _best_give(share, up, down, cnt, p2l, loads, held, members, lo, hi, g, first, gpn, best, move, holders):
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
        if ca < 2 or not _distinct(p2l, gs, s):
            continue
        da = down[a] - share[a]
        base = loads[g] - share[a] + (held[gb + a] - 1) * da
        if base >= best:
            continue
        n_holders = 0
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
                if not _distinct(p2l, gs, gs + k):
                    continue
            else:
                b = p2l[top * per_gpu + k - per_gpu]
                if held[gb + b] > 0 or not _distinct(p2l, top * per_gpu, top * per_gpu + k - per_gpu):
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


@jit
def _improve(w, share, cnt, p2l, loads, held, members, mstart, num_gpus, num_nodes, max_moves):
    """Local search of one layer in place (see the module docstring).

    ``share[e] = w[e] / cnt[e]``; ``loads`` are the GPU loads of ``p2l``;
    ``held[g * E + e]`` counts e's replicas on GPU g; ``members[mstart[n]:
    mstart[n + 1]]`` are the experts of node n.  All are kept up to date.
    Returns the number of moves made.
    """
    num_logical = share.shape[0]
    per_gpu = p2l.shape[0] // num_gpus
    gpn = num_gpus // num_nodes
    top1 = np.empty(num_logical)
    top2 = np.empty(num_logical)
    grow = np.zeros(num_logical)
    top1_gpu = np.empty(num_logical, dtype=np.int64)
    partners = np.empty(gpn, dtype=np.int64)
    holders = np.empty(gpn, dtype=np.int64)
    move = np.zeros(3, dtype=np.int64)
    ready = np.zeros(1, dtype=np.int64)
    # One replica's load at the count, one more and one fewer: divisions
    # made when a count changes, not in the search's inner loops.
    up = np.empty(num_logical)
    down = np.empty(num_logical)
    for e in range(num_logical):
        _set_share(w, cnt, share, up, down, e)
    for moves in range(max_moves):
        g = 0
        for h in range(1, num_gpus):
            if loads[h] > loads[g]:
                g = h
        peak = loads[g]
        node = g // gpn
        first = node * gpn
        gb = g * num_logical
        move[0] = 0
        best = peak * (1.0 - _MARGIN)
        # The lightest GPUs first; gives, and the whole node, only when they offer nothing.
        ready[0] = 0
        n = _lightest(loads, first, gpn, g, _PARTNERS, partners)
        best = _search(share, up, down, cnt, p2l, loads, held, g, gpn, partners, n, best, top1, top1_gpu, top2,
                       grow, move, ready)
        if move[0] == 0:
            best = _best_give(share, up, down, cnt, p2l, loads, held, members, mstart[node], mstart[node + 1], g,
                              first, gpn, best, move, holders)
            if gpn - 1 > _PARTNERS:
                n = _lightest(loads, first, gpn, g, gpn, partners)
                _search(share, up, down, cnt, p2l, loads, held, g, gpn, partners, n, best, top1, top1_gpu, top2,
                        grow, move, ready)
        if move[0] == 0:
            return moves
        s = move[1]
        a = p2l[s]
        if move[0] == 2:
            b = move[2]
            p2l[s] = b
            held[gb + a] -= 1
            held[gb + b] += 1
            cnt[a] -= 1
            cnt[b] += 1
        else:
            t = move[2]
            b = p2l[t]
            h = t // per_gpu
            p2l[t] = a
            held[h * num_logical + b] -= 1
            held[h * num_logical + a] += 1
            if move[0] == 1:
                p2l[s] = b
                held[gb + a] -= 1
                held[gb + b] += 1
            else:
                cnt[a] += 1
                cnt[b] -= 1
        _set_share(w, cnt, share, up, down, a)
        _set_share(w, cnt, share, up, down, b)
        # Summed afresh in slot order (no drift from incremental updates):
        # a swap changes two GPUs, a new count every holder, all on the node.
        if move[0] == 1:
            _gpu_load(p2l, share, per_gpu, g, loads)
            _gpu_load(p2l, share, per_gpu, move[2] // per_gpu, loads)
        else:
            for h in range(first, first + gpn):
                _gpu_load(p2l, share, per_gpu, h, loads)
    return max_moves


@jit
def _peak(loads):
    # A loop, not ndarray.max(): that compiles NumPy's reduction machinery (0.3 s).
    top = loads[0]
    for h in range(1, loads.shape[0]):
        top = max(top, loads[h])
    return top


@jit
def improve_layers(weight, split, num_gpus, num_nodes, out, cnt, lo, hi):
    """Layers ``lo:hi`` of the reference's plan (``out``, ``cnt``) improved in place.

    ``weight`` is float32 [L, E]; ``split`` [L, groups] the node of each
    expert group (one column of zeros for the global policy).  A layer
    whose busiest GPU the search does not lower keeps the reference's
    placement exactly.
    """
    num_logical = weight.shape[1]
    num_phy = out.shape[1]
    num_groups = split.shape[1]
    group_size = num_logical // num_groups
    per_gpu = num_phy // num_gpus
    w = np.empty(num_logical)
    share = np.empty(num_logical)
    c = np.empty(num_logical, dtype=np.int64)
    p2l = np.empty(num_phy, dtype=np.int64)
    loads = np.empty(num_gpus)
    held = np.zeros(num_gpus * num_logical, dtype=np.int64)
    members = np.empty(num_logical, dtype=np.int64)
    mstart = np.empty(num_nodes + 1, dtype=np.int64)
    for layer in range(lo, hi):
        for e in range(num_logical):
            w[e] = weight[layer, e]
            c[e] = cnt[layer, e]
            share[e] = w[e] / c[e]
        # Experts by node: the groups each node holds, in expert order.
        k = 0
        for node in range(num_nodes):
            mstart[node] = k
            for grp in range(num_groups):
                if split[layer, grp] == node:
                    for e in range(grp * group_size, (grp + 1) * group_size):
                        members[k] = e
                        k += 1
        mstart[num_nodes] = k
        for q in range(num_phy):
            p2l[q] = out[layer, q]
        count_held(p2l, per_gpu, num_logical, held, 1)
        layer_loads(p2l, share, per_gpu, loads)
        peak = _peak(loads)
        _improve(w, share, c, p2l, loads, held, members, mstart, num_gpus, num_nodes, 4 * num_phy)
        count_held(p2l, per_gpu, num_logical, held, -1)
        if recount(w, c, p2l, loads, members, mstart, num_gpus, num_nodes):
            # Counts changed: shares, loads and counts per GPU afresh, then the moves again.
            for e in range(num_logical):
                share[e] = w[e] / c[e]
            count_held(p2l, per_gpu, num_logical, held, 1)
            layer_loads(p2l, share, per_gpu, loads)
            _improve(w, share, c, p2l, loads, held, members, mstart, num_gpus, num_nodes, 4 * num_phy)
            count_held(p2l, per_gpu, num_logical, held, -1)
        if _peak(loads) < peak:
            for q in range(num_phy):
                out[layer, q] = p2l[q]
            for e in range(num_logical):
                cnt[layer, e] = c[e]
