"""Quality mode: other replica counts for a node's hottest experts, each node repacked.

The local search of ``quality.py`` moves one replica at a time and stops
where every single move touches a GPU at the peak.  When an expert is hot
enough that its replicas decide the node's peak, the better count is often
several replicas away (eight replicas for a node of eight GPUs instead of
ten, with the two slots going to the next hottest).  Here each of a node's
hottest experts is tried at the nearby multiples of the node's GPU count
and one replica either side; the slots it frees or takes go to (or come
from) the other experts as the reference's replication would choose; the
node is repacked greedily (heaviest replica first, to the lightest GPU
with a free slot); a candidate is kept if the layer's peak drops.
"""

from __future__ import annotations

import numpy as np

from .._jit import jit
from .quality_moves import insert_ranked
from .repack import busiest

# Hottest experts of the node whose counts are tried, and rounds of tries.
_HOT = 3
_ROUNDS = 4
# A node whose busiest GPU is within this of its mean is left alone (here
# and by quality's fresh start): the moves already balance it, and
# repacking costs more than the layer's plan.
CLOSE = 5e-3


@jit
def _shift(w, cnt, members, lo, hi, e, e2, delta):
    # Give ``delta`` replicas to (delta > 0) or take -delta from the node's
    # experts other than e and e2, one at a time: to the one with the
    # heaviest replica, from the one whose replicas stay lightest.  False if
    # the node has too few spare replicas.
    for _ in range(delta if delta > 0 else -delta):
        pick = -1
        for k in range(lo, hi):
            f = members[k]
            if f in (e, e2):
                continue
            if delta > 0:
                if pick < 0 or w[f] / cnt[f] > w[pick] / cnt[pick]:
                    pick = f
            elif cnt[f] >= 2 and (pick < 0 or w[f] / (cnt[f] - 1) < w[pick] / (cnt[pick] - 1)):
                pick = f
        if pick < 0:
            return False
        cnt[pick] += 1 if delta > 0 else -1
    return True


@jit
def pack_node(w, cnt, members, lo, hi, gpn, per_gpu, out, order, gload, fill):
    """The node's replicas (``cnt`` of each of ``members[lo:hi]``) packed into ``out``; returns its peak.

    Experts by replica load, heaviest first (ties: lower id), each replica
    to the lightest GPU with a free slot (ties: the lower GPU).
    """
    n = hi - lo
    for i in range(n):
        e = members[lo + i]
        j = i
        while j > 0:
            f = order[j - 1]
            if w[f] / cnt[f] > w[e] / cnt[e] or (w[f] / cnt[f] == w[e] / cnt[e] and f < e):
                break
            order[j] = f
            j -= 1
        order[j] = e
    for h in range(gpn):
        gload[h] = 0.0
        fill[h] = 0
    for i in range(n):
        e = order[i]
        share = w[e] / cnt[e]
        for _ in range(cnt[e]):
            best = -1
            for h in range(gpn):
                if fill[h] < per_gpu and (best < 0 or gload[h] < gload[best]):
                    best = h
            out[best * per_gpu + fill[best]] = e
            fill[best] += 1
            gload[best] += share
    return gload[busiest(gload)]


@jit
def _candidate(w, cnt, members, lo, hi, e, te, f, tf, rest, best, gpn, per_gpu, trial, out, order, gload, fill, keep,
               keep_out, keep_load):
    # Counts te for e (and tf for f, unless f < 0), the difference to the
    # node's slots taken from or given to the others, the node repacked;
    # kept in ``keep*`` if the layer's peak drops below ``best``.  Returns
    # the layer's peak then, else ``best``.
    ce = cnt[e]
    cf = cnt[f] if f >= 0 else 0
    if te < 1 or (f >= 0 and tf < 1) or (te == ce and (f < 0 or tf == cf)):
        return best
    for k in range(lo, hi):
        trial[members[k]] = cnt[members[k]]
    trial[e] = te
    if f >= 0:
        trial[f] = tf
    if not _shift(w, trial, members, lo, hi, e, f, ce + cf - te - (tf if f >= 0 else 0)):
        return best
    top = max(pack_node(w, trial, members, lo, hi, gpn, per_gpu, out, order, gload, fill), rest)
    if top >= best:
        return best
    for k in range(lo, hi):
        keep[members[k]] = trial[members[k]]
    for q in range(out.shape[0]):
        keep_out[q] = out[q]
    for h in range(gpn):
        keep_load[h] = gload[h]
    return top


@jit
def recount(w, cnt, p2l, loads, members, mstart, num_gpus, num_nodes):
    """Try other counts for the hottest experts of the busiest GPU's node (see the module docstring).

    ``cnt`` and ``p2l`` change in place where the layer's peak (``loads``,
    kept up to date) drops; returns whether anything changed.
    """
    num_logical = w.shape[0]
    gpn = num_gpus // num_nodes
    per_gpu = p2l.shape[0] // num_gpus
    per_node = gpn * per_gpu
    trial = np.empty(num_logical, dtype=np.int64)
    keep = np.empty(num_logical, dtype=np.int64)
    out = np.empty(per_node, dtype=np.int64)
    keep_out = np.empty(per_node, dtype=np.int64)
    keep_load = np.empty(gpn)
    order = np.empty(num_logical, dtype=np.int64)
    gload = np.empty(gpn)
    fill = np.empty(gpn, dtype=np.int64)
    hot = np.empty(_HOT, dtype=np.int64)
    # No second expert (see "Integer constants" in __init__.py).
    no_expert = np.int64(-1)
    no_count = np.int64(0)
    changed = False
    for _ in range(_ROUNDS):
        g = busiest(loads)
        peak = loads[g]
        node = g // gpn
        lo = mstart[node]
        hi = mstart[node + 1]
        # The other nodes' peak stays as it is.
        rest = 0.0
        total = 0.0
        for h in range(num_gpus):
            if h // gpn != node:
                rest = max(rest, loads[h])
            else:
                total += loads[h]
        if peak <= total / gpn * (1.0 + CLOSE):
            break
        n_hot = np.int64(0)
        for k in range(lo, hi):
            n_hot = insert_ranked(hot, n_hot, np.int64(_HOT), members[k], w, -1.0)
        # Every candidate of a round starts from the round's counts; the best is kept.
        best = peak * (1.0 - 1e-12)
        found = False
        for i in range(n_hot):
            e = hot[i]
            c = cnt[e]
            # One expert at the node's multiples, or one replica either side.
            for option in range(4):
                if option == 0:
                    target = (c // gpn) * gpn
                elif option == 1:
                    target = (c // gpn + 1) * gpn
                else:
                    target = c - 1 if option == 2 else c + 1
                top = _candidate(w, cnt, members, lo, hi, e, target, no_expert, no_count, rest, best, gpn, per_gpu,
                                 trial, out, order, gload, fill, keep, keep_out, keep_load)
                if top < best:
                    best = top
                    found = True
            # Two experts whose replicas tile the node's GPUs once or twice,
            # split about in proportion to their loads.
            for j in range(i + 1, n_hot):
                f = hot[j]
                for tiles in range(1, 3):
                    span = tiles * gpn
                    even = (span * w[e]) / (w[e] + w[f]) if w[e] + w[f] > 0 else span / 2.0
                    for t in range(max(int(even) - 1, 1), min(int(even) + 2, span)):
                        top = _candidate(w, cnt, members, lo, hi, e, t, f, span - t, rest, best, gpn, per_gpu,
                                         trial, out, order, gload, fill, keep, keep_out, keep_load)
                        if top < best:
                            best = top
                            found = True
        if not found:
            break
        for k in range(lo, hi):
            cnt[members[k]] = keep[members[k]]
        for q in range(per_node):
            p2l[node * per_node + q] = keep_out[q]
        for h in range(gpn):
            loads[node * gpn + h] = keep_load[h]
        changed = True
    return changed
