"""A copy budget spent as swaps: two experts trade GPUs, one pair at a time.

A swap moves expert ``a`` from GPU ``i`` to GPU ``j`` of the same node and
expert ``b`` back in its place, so groups stay on their nodes and replica
counts do not change; it costs the slots whose new expert the old
placement did not have on that GPU.  Swaps are chosen where they lower a
soft maximum of the GPU loads most per copy: the sum of the cubed amounts by
which GPUs exceed the busiest load minus ``width`` times the mean.  Loads
move between steps, so the GPUs just below the busiest are as likely to be
the busiest on the steps that follow; lowering the busiest GPU alone spent
copies on gains the next loads undo (see ``docs/movement.md``).  A swap
lowers that sum only if it narrows the gap between its two GPUs, so no GPU
ever gets busier than the busiest was.
"""

from __future__ import annotations

import numpy as np

from .._jit import jit

# GPUs count toward the soft maximum from this far below the busiest, as a
# share of the mean GPU load (docs/movement.md has the scan that chose it).
SOFT_WIDTH = 0.02
# A swap must lower the soft maximum by at least this share of the mean GPU
# load per copy: below it a large budget would churn copies for nothing.
MIN_GAIN = 1e-6


@jit
def _excess(load, floor):
    d = load - floor
    return d * d * d if d > 0.0 else 0.0


@jit
def best_swap(p, share, loads, old_held, held, touched, num_nodes, width, max_cost, order, near, near_slot):
    """The swap of one layer that lowers its soft maximum most per copy.

    ``p`` [R] is the layer's placement now, ``share`` [E] one replica's
    load per expert, ``loads`` [G] the GPUs' loads; ``old_held[g * E + e]``
    says whether the old placement had expert e on GPU g, ``held`` counts
    it now; ``touched[g]`` is set once a swap changed GPU g.  Only swaps
    costing at most ``max_cost`` copies count, and none that puts a second
    replica of an expert on a GPU; ``order`` [G], ``near`` and
    ``near_slot`` [5] are scratch.  Returns ``(value, cost, slot_a,
    slot_b)``: value is the gain per copy in mean GPU loads (0 and slots -1
    when no swap gains ``MIN_GAIN``).
    """
    num_gpus = loads.shape[0]
    num_logical = share.shape[0]
    per_gpu = p.shape[0] // num_gpus
    gpus_per_node = num_gpus // num_nodes
    top = loads[0]
    total = 0.0
    for g in range(num_gpus):
        top = max(top, loads[g])
        total += loads[g]
    scale = width * total / num_gpus
    if not scale > 0.0:
        return 0.0, 0, -1, -1
    floor = top - scale
    # Gains in mean GPU loads: the soft maximum's units are scale ** 3.
    norm = width / (scale * scale * scale)
    best_v = MIN_GAIN
    best_cost = 0
    best_a = -1
    best_b = -1
    # The busiest GPUs first, so that the bounds below prune early.  A swap
    # of GPUs i and j gains at most excess(li) + excess(lj) - 2 excess of
    # their mean (the soft maximum is convex), and costs two copies where
    # neither GPU was touched (each then holds exactly its old experts),
    # else at least half a copy in ``v``'s divisor.
    for g in range(num_gpus):
        order[g] = g
    for g in range(1, num_gpus):
        k = order[g]
        h = g
        while h > 0 and loads[order[h - 1]] < loads[k]:
            order[h] = order[h - 1]
            h -= 1
        order[h] = k
    for rank in range(num_gpus):
        i = order[rank]
        li = loads[i]
        fi = _excess(li, floor)
        if not 2.0 * fi * norm > best_v:
            break
        node = i // gpus_per_node
        # The least loaded partners first: the bound falls as lj rises.
        for rank_j in range(num_gpus - 1, rank, -1):
            j = order[rank_j]
            lj = loads[j]
            if not lj < li:
                break
            if j // gpus_per_node != node:
                continue
            fj = _excess(lj, floor)
            bound = (fi + fj - 2.0 * _excess(0.5 * (li + lj), floor)) * norm
            if not 2.0 * bound > best_v:
                break
            least = 0.5 if touched[i] or touched[j] else 2.0
            if not bound / least > best_v:
                continue
            # The gain of a swap that moves d from i to j is symmetric about
            # d = (li - lj) / 2 and falls away from it (the soft maximum is
            # convex): per expert a, only the b nearest that d counts among
            # swaps of one cost.  Between untouched GPUs every swap costs two
            # copies: the first loop is the second's case c = 4 without its
            # copy counting (the same swaps; the global 2% plan took 1.46x
            # as long without it).  Otherwise the cost is -2 to 2, and each
            # gets its nearest.
            half = 0.5 * (li - lj)
            if least == 2.0:
                if max_cost < 2:
                    continue
                for qa in range(i * per_gpu, (i + 1) * per_gpu):
                    a = p[qa]
                    if held[j * num_logical + a]:
                        continue
                    sa = share[a]
                    t = half
                    qb = -1
                    for q in range(j * per_gpu, (j + 1) * per_gpu):
                        u = abs(sa - share[p[q]] - half)
                        if u < t and not held[i * num_logical + p[q]]:
                            t = u
                            qb = q
                    if qb < 0:
                        continue
                    d = sa - share[p[qb]]
                    v = (fi + fj - _excess(li - d, floor) - _excess(lj + d, floor)) * norm / 2.0
                    if v > best_v:
                        best_v = v
                        best_cost = 2
                        best_a = qa
                        best_b = qb
                continue
            for qa in range(i * per_gpu, (i + 1) * per_gpu):
                a = p[qa]
                if held[j * num_logical + a]:
                    continue
                sa = share[a]
                # Copies the slots of a and b cost now, and after the swap.
                a_moves = (1 - old_held[j * num_logical + a]) - (1 - old_held[i * num_logical + a])
                for c in range(5):
                    near[c] = half
                    near_slot[c] = -1
                for qb in range(j * per_gpu, (j + 1) * per_gpu):
                    b = p[qb]
                    t = abs(sa - share[b] - half)
                    if t < half and not held[i * num_logical + b]:
                        c = a_moves + (1 - old_held[i * num_logical + b]) - (1 - old_held[j * num_logical + b]) + 2
                        if t < near[c]:
                            near[c] = t
                            near_slot[c] = qb
                for c in range(5):
                    cost = c - 2
                    if near_slot[c] < 0 or cost > max_cost:
                        continue
                    d = sa - share[p[near_slot[c]]]
                    gain = fi + fj - _excess(li - d, floor) - _excess(lj + d, floor)
                    v = gain * norm / max(cost, 0.5)
                    if v > best_v:
                        best_v = v
                        best_cost = cost
                        best_a = qa
                        best_b = near_slot[c]
    if best_a < 0:
        return 0.0, 0, -1, -1
    return best_v, best_cost, best_a, best_b


@jit
def spend_budget(weight, old, open_layers, num_gpus, num_nodes, budget, width, out):
    """Swaps on the layers with ``open_layers[l]`` set, best gain per copy first, within ``budget`` copies.

    ``weight`` [L, E] float32 loads, ``old`` [L, R] the placement in service
    (no empty slot in an open layer); ``out`` [L, R] starts as a copy of
    ``old`` and takes the swaps.  Across layers the swap with the largest
    gain per copy goes first (the lowest layer on ties).  Returns the
    copies spent.
    """
    num_layers, num_logical = weight.shape
    num_phy = old.shape[1]
    per_gpu = num_phy // num_gpus
    share = np.zeros((num_layers, num_logical))
    loads = np.zeros((num_layers, num_gpus))
    old_held = np.zeros((num_layers, num_gpus * num_logical), dtype=np.uint8)
    held = np.zeros((num_layers, num_gpus * num_logical), dtype=np.uint8)
    touched = np.zeros((num_layers, num_gpus), dtype=np.uint8)
    value = np.zeros(num_layers)
    cost = np.zeros(num_layers, dtype=np.int64)
    slot_a = np.full(num_layers, -1, dtype=np.int64)
    slot_b = np.full(num_layers, -1, dtype=np.int64)
    swaps = np.zeros(num_layers, dtype=np.int64)
    cnt = np.zeros(num_logical, dtype=np.int64)
    order = np.empty(num_gpus, dtype=np.int64)
    near = np.empty(5)
    near_slot = np.empty(5, dtype=np.int64)
    remaining = budget
    for layer in range(num_layers):
        if not open_layers[layer]:
            continue
        cnt[:] = 0
        for q in range(num_phy):
            cnt[old[layer, q]] += 1
        for e in range(num_logical):
            share[layer, e] = np.float64(weight[layer, e]) / max(cnt[e], 1)
        for q in range(num_phy):
            e = old[layer, q]
            g = q // per_gpu
            loads[layer, g] += share[layer, e]
            old_held[layer, g * num_logical + e] = 1
            held[layer, g * num_logical + e] += 1
        value[layer], cost[layer], slot_a[layer], slot_b[layer] = best_swap(
            out[layer], share[layer], loads[layer], old_held[layer], held[layer], touched[layer], num_nodes, width,
            remaining, order, near, near_slot)
    while True:
        pick = -1
        for layer in range(num_layers):
            if slot_a[layer] >= 0 and (pick < 0 or value[layer] > value[pick]):
                pick = layer
        if pick < 0:
            break
        layer = pick
        # A best swap found when more copies were left may no longer fit:
        # then the layer is searched again below (its gain can only drop,
        # so every other layer's stays an upper bound, as the pick needs).
        if cost[layer] <= remaining:
            qa = slot_a[layer]
            qb = slot_b[layer]
            a = out[layer, qa]
            b = out[layer, qb]
            i = qa // per_gpu
            j = qb // per_gpu
            d = share[layer, a] - share[layer, b]
            loads[layer, i] -= d
            loads[layer, j] += d
            held[layer, i * num_logical + a] -= 1
            held[layer, j * num_logical + a] += 1
            held[layer, j * num_logical + b] -= 1
            held[layer, i * num_logical + b] += 1
            out[layer, qa] = b
            out[layer, qb] = a
            touched[layer, i] = 1
            touched[layer, j] = 1
            remaining -= cost[layer]
            swaps[layer] += 1
        # A cap on swaps per layer: each one lowers the layer's soft maximum,
        # so the search ends anyway; this bounds how long it can take.
        if swaps[layer] >= num_phy:
            slot_a[layer] = -1
            continue
        value[layer], cost[layer], slot_a[layer], slot_b[layer] = best_swap(
            out[layer], share[layer], loads[layer], old_held[layer], held[layer], touched[layer], num_nodes, width,
            remaining, order, near, near_slot)
    return budget - remaining
