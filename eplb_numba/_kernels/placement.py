"""The hierarchical placement of the reference, one layer at a time.

Step 1 packs expert groups onto nodes by group load; step 2 replicates
experts within each node; step 3 packs each node's replicas onto its GPUs.
The global policy is the same routine with one group and one node.

Index spaces, as in the reference: ``log`` is a logical expert, ``mlog`` its
position once groups are laid out node by node, ``phy`` a replica in the
order replication made it, and the output position is the replica's slot
after packing onto GPUs (GPU-major).
"""

from __future__ import annotations

import numba
import numpy as np

from .._jit import jit, unsigned as _u
from .plan import LOCKSTEP_ROWS, REPLICATE_SCRATCH_PER_ITEM, greedy_block, pack_block, replicate_row
from .sort import LOW, SORT_SCRATCH_EXTRA, SORT_SCRATCH_PER_ITEM, SORT_STACK_SIZE, argsort_desc, rank_sort_desc

# Rows (layer, node) whose bounds are computed together, one per vector lane.
BOUND_ROWS = 32


@jit(inline="always")
def _group_sums(w, num_groups, out):
    # Sequential float32 sums; exact (so equal to torch's own reduction) for
    # integer-valued loads whose group sums stay below 2**24.
    group_size = w.shape[0] // num_groups
    for g in range(num_groups):
        s = np.float32(0.0)
        for j in range(g * group_size, (g + 1) * group_size):
            s += w[j]
        out[g] = s


@jit
def place_range(weight, group_sums, num_groups, num_nodes, num_gpus, phy2log, phyrank, logcnt, log2phy, bounds, split,
                lo, hi):
    """Hierarchical placement of layers ``lo:hi`` of float32 ``weight`` [L, E].

    ``group_sums`` [L, num_groups] holds precomputed group loads, or has zero
    rows to have them summed here.  Writes ``logcnt`` [L, E], and ``phy2log``
    [L, R], ``phyrank`` [L, R] (replica ranks) and ``log2phy`` [L, E, R - E +
    1] unless they have zero layers (``phy2log`` still has R columns).
    Scratch is allocated once per call, not per layer.

    Given ``bounds`` [L] and ``split`` [L, num_groups] (else zero layers),
    writes instead of a placement the busiest GPU's load (float64, each
    replica ``weight / logcnt``, summed in slot order) and each group's
    node.  Those do not depend on the order of equal loads, so the replicas
    are then sorted without the reference's tie order, where that gives
    the same sums.
    """
    num_layers, num_log = weight.shape
    num_phy = phy2log.shape[1]
    group_size = num_log // num_groups
    groups_per_node = num_groups // num_nodes
    log_per_node = num_log // num_nodes
    phy_per_node = num_phy // num_nodes
    gpus_per_node = num_gpus // num_nodes
    slots_per_gpu = phy_per_node // gpus_per_node
    have_sums = group_sums.shape[0] == num_layers
    want_log2phy = log2phy.shape[0] == num_layers
    want_phyrank = phyrank.shape[0] == num_layers
    want_bounds = bounds.shape[0] == num_layers
    # Layers are planned a block at a time so that the greedy packing steps
    # about LOCKSTEP_ROWS independent (layer, node) rows together; in bounds
    # mode BOUND_ROWS, the rows being the vector lanes of _busiest_rows.
    block = max(1, (BOUND_ROWS if want_bounds else LOCKSTEP_ROWS) // num_nodes)
    rows = block * num_nodes

    packs = max(num_nodes, gpus_per_node)
    loads = np.empty((rows, packs), dtype=np.float32)
    items = np.empty((rows, packs), dtype=np.int64)
    heap = np.empty((rows, packs), dtype=np.int64)
    stack = np.empty(SORT_STACK_SIZE, dtype=np.int64)
    scratch = np.empty(SORT_SCRATCH_PER_ITEM * max(num_groups, phy_per_node) + SORT_SCRATCH_EXTRA, dtype=np.int64)

    sums = np.empty((block, num_groups), dtype=np.float32)
    group_order = np.empty((block, num_groups), dtype=np.int64)
    group_node = np.empty((block, num_groups), dtype=np.int64)
    group_rank = np.empty((block, num_groups), dtype=np.int64)
    log2mlog = np.empty((block, num_log), dtype=np.int64)
    mlog2log = np.empty((block, num_log), dtype=np.int64)
    mlogcnt = np.empty((block, num_log), dtype=np.int64)
    tokens = np.empty(log_per_node, dtype=np.float32)
    cntf = np.empty(log_per_node, dtype=np.float32)
    ratio = np.empty(log_per_node, dtype=np.float32)
    candidates = np.empty(REPLICATE_SCRATCH_PER_ITEM * log_per_node + 1, dtype=np.int64)
    phy2mlog = np.empty((rows, phy_per_node), dtype=np.int64)
    rank = np.empty((rows, phy_per_node), dtype=np.int64)
    phy_load = np.empty((rows, phy_per_node), dtype=np.float32)
    order = np.empty((rows, phy_per_node), dtype=np.int64)
    # The placement's GPU and slot of each replica; bounds mode keeps sums only.
    placed = 0 if want_bounds else rows
    gpu = np.empty((placed, phy_per_node), dtype=np.int64)
    gpu_rank = np.empty((placed, phy_per_node), dtype=np.int64)
    share = np.empty((rows, phy_per_node)) if want_bounds else np.empty((0, phy_per_node))
    expert_share = np.empty(log_per_node)
    # Bounds mode: each row's replicas in visiting order, rows last (the
    # vector lanes of _busiest_rows).
    lanes = rows if want_bounds else 0
    visit_w = np.empty((phy_per_node, lanes), dtype=np.float32)
    visit_s = np.empty((phy_per_node, lanes))
    gpu_w = np.empty((gpus_per_node, lanes), dtype=np.float32)
    gpu_items = np.empty((gpus_per_node, lanes), dtype=np.int32)
    gpu_s = np.empty((gpus_per_node, lanes))
    picks = np.empty((phy_per_node, lanes), dtype=np.int32)
    pick_w = np.empty(lanes, dtype=np.float32)
    top = np.empty(lanes)

    for first in range(lo, hi, block):
        nb = min(block, hi - first)
        # Step 1: groups to nodes.
        if groups_per_node == 1:
            for b in range(nb):
                for g in range(num_groups):
                    group_node[b, g] = g
                    group_rank[b, g] = 0
        else:
            for b in range(nb):
                if have_sums:
                    for g in range(num_groups):
                        sums[b, g] = group_sums[first + b, g]
                else:
                    _group_sums(weight[first + b], num_groups, sums[b])
            pack_block(sums[:nb], sums[:nb], num_nodes, group_node[:nb], group_rank[:nb], group_order[:nb],
                       loads[:nb], items[:nb], heap[:nb], stack, scratch, True)
        for b in range(nb):
            # Nested loops rather than e // group_size: a 64-bit division per
            # expert cost more than the rest of this mapping.
            for g in range(num_groups):
                base_m = (group_node[b, g] * groups_per_node + group_rank[b, g]) * group_size
                for j in range(group_size):
                    e = g * group_size + j
                    log2mlog[b, e] = base_m + j
                    mlog2log[b, _u(base_m + j)] = e
            # Step 2: replicas within each node.
            w = weight[first + b]
            for node in range(num_nodes):
                row = b * num_nodes + node
                base = node * log_per_node
                for j in range(log_per_node):
                    tokens[j] = w[_u(mlog2log[b, _u(base + j)])]
                cnt = mlogcnt[b, base:base + log_per_node]
                replicate_row(tokens, phy_per_node, phy2mlog[row], rank[row], cnt, cntf, ratio, candidates)
                for k in range(phy_per_node):
                    m = _u(phy2mlog[row, k])
                    phy_load[row, k] = tokens[m] / np.float32(cnt[m])
                if want_bounds:
                    for j in range(log_per_node):
                        expert_share[j] = np.float64(tokens[j]) / cnt[j]
                    for k in range(phy_per_node):
                        share[row, k] = expert_share[_u(phy2mlog[row, k])]
        # Step 3: each node's replicas to its GPUs.
        used = nb * num_nodes
        for b in range(nb):
            for e in range(num_log):
                logcnt[first + b, e] = mlogcnt[b, _u(log2mlog[b, e])]
        # One call of the exact sort for both modes: it is inlined, and
        # compiling it twice costs seconds.
        if slots_per_gpu > 1:
            for row in range(used):
                if not (want_bounds and _sorted_for_sums(phy_load[row], share[row], order[row], scratch)):
                    argsort_desc(phy_load[row], order[row], stack, scratch)
        if want_bounds:
            for row in range(used):
                if slots_per_gpu > 1:
                    for k in range(phy_per_node):
                        t = _u(order[row, k] & LOW)
                        visit_w[k, row] = phy_load[row, t]
                        visit_s[k, row] = share[row, t]
                else:
                    # One replica per GPU: any order packs the same.
                    for k in range(phy_per_node):
                        visit_w[k, row] = phy_load[row, k]
                        visit_s[k, row] = share[row, k]
            _busiest_rows(visit_w, visit_s, used, slots_per_gpu, gpu_w, gpu_items, gpu_s, picks, pick_w, top)
            for b in range(nb):
                busiest = 0.0
                for node in range(num_nodes):
                    busiest = max(busiest, top[b * num_nodes + node])
                bounds[first + b] = busiest
                for g in range(num_groups):
                    split[first + b, g] = group_node[b, g]
            continue
        greedy_block(order[:used], phy_load[:used], gpus_per_node, gpu[:used], gpu_rank[:used], loads[:used],
                     items[:used], heap[:used], True)
        for b in range(nb):
            layer = first + b
            if want_log2phy:
                clear_table(log2phy[layer])
            for node in range(num_nodes):
                row = b * num_nodes + node
                base = node * log_per_node
                out = node * phy_per_node
                for k in range(phy_per_node):
                    slot = out + gpu[row, k] * slots_per_gpu + gpu_rank[row, k]
                    e = mlog2log[b, _u(base + phy2mlog[row, k])]
                    phy2log[layer, _u(slot)] = e
                    if want_log2phy:
                        log2phy[layer, _u(e), _u(rank[row, k])] = slot
                    if want_phyrank:
                        phyrank[layer, _u(slot)] = rank[row, k]


@jit(inline="always")
def _sorted_for_sums(keys, share, packed, scratch):
    # The branch-free sort; False where two equal keys have different
    # float64 shares (distinct loads that round to one float32), whose order
    # would change the sums: then only the reference's order will do.
    rank_sort_desc(keys, packed, scratch)
    # Checked without branches (``&``, not ``and``): equal neighbours, the
    # replicas of one expert among them, come at unpredictable places.
    clash = False
    for k in range(1, keys.shape[0]):
        a = packed[k - 1]
        b = packed[k]
        clash = clash | (((a ^ b) & ~LOW == 0) & (share[_u(a & LOW)] != share[_u(b & LOW)]))
    return not clash


@jit
def _busiest_rows(visit_w, visit_s, rows, per_gpu, gpu_w, gpu_items, gpu_s, picks, pick_w, top):
    """``top[r]``: the busiest GPU of row r's greedy packing, as the placement holds it.

    Row r's replicas are visited in the order of ``visit_w[:, r]`` (float32
    loads, which the packing compares) and ``visit_s[:, r]`` (float64 shares,
    summed per GPU in the order it receives them, i.e. slot order).  Each
    goes to the GPU of least float32 load among those with room, the lowest
    index on equal load.  The first ``rows`` rows step together, the rows
    being the vector lanes, and each choice is a select rather than a
    branch.  Scratch: ``gpu_w``, ``gpu_items`` (int32), ``gpu_s`` [GPUs,
    rows], ``picks`` [replicas, rows] (int32), ``pick_w`` [rows].
    """
    num_gpus = gpu_w.shape[0]
    for g in range(num_gpus):
        for r in range(rows):
            gpu_w[g, r] = 0  # set to inf once the GPU is full: never lighter
            gpu_items[g, r] = 0
            gpu_s[g, r] = 0
    inf = np.float32(np.inf)
    # Each loop writes few arrays, and loads every value it chooses from
    # first: the vectoriser gives up on loops that need many overlap checks
    # between arrays, and a load inside one arm of a choice stays a branch.
    for k in range(visit_w.shape[0]):
        pick = picks[k]
        for r in range(rows):
            pick_w[r] = inf
            pick[r] = 0
        for g in range(num_gpus):
            g32 = np.int32(g)
            for r in range(rows):
                load = gpu_w[g, r]
                best = pick_w[r]
                best_g = pick[r]
                # Strictly lighter, in index order: the lowest index wins ties.
                lighter = load < best
                pick_w[r] = load if lighter else best
                pick[r] = g32 if lighter else best_g
        for g in range(num_gpus):
            g32 = np.int32(g)
            for r in range(rows):
                n = gpu_items[g, r]
                n_new = n + np.int32(1)
                gpu_items[g, r] = n_new if pick[r] == g32 else n
            for r in range(rows):
                w = gpu_w[g, r]
                w_new = w + visit_w[k, r]
                w = w_new if pick[r] == g32 else w
                gpu_w[g, r] = inf if gpu_items[g, r] == per_gpu else w
    # The shares, each GPU summed in the order it received them.
    for k in range(visit_w.shape[0]):
        for r in range(rows):
            gpu_s[_u(picks[k, r]), r] += visit_s[k, r]
    for r in range(rows):
        top[r] = 0.0
    for g in range(num_gpus):
        for r in range(rows):
            top[r] = max(top[r], gpu_s[g, r])


@jit
def place_layers(weight, group_sums, num_groups, num_nodes, num_gpus, phy2log, phyrank, logcnt, log2phy, bounds, split):
    """``place_range`` over every layer, on the calling thread."""
    place_range(weight, group_sums, num_groups, num_nodes, num_gpus, phy2log, phyrank, logcnt, log2phy, bounds, split,
                0, weight.shape[0])


@jit(parallel=True)
def place_layers_parallel(weight, group_sums, num_groups, num_nodes, num_gpus, phy2log, phyrank, logcnt, log2phy,
                          bounds, split, blocks):
    """``place_range`` over ``blocks`` contiguous blocks of layers, in parallel."""
    num_layers = weight.shape[0]
    for b in numba.prange(blocks):
        place_range(weight, group_sums, num_groups, num_nodes, num_gpus, phy2log, phyrank, logcnt, log2phy, bounds,
                    split, b * num_layers // blocks, (b + 1) * num_layers // blocks)


@jit(inline="always")
def clear_table(table):
    """Every entry of 2-D ``table`` -1 (no replica)."""
    # Plain loops: Numba's broadcast assignment to a 2-D view is several
    # times slower than writing the rows out.
    for e in range(table.shape[0]):
        for k in range(table.shape[1]):
            table[e, k] = -1


@jit
def slot_order_maps(phy2log, log2phy, logcnt):
    """``log2phy`` and ``logcnt`` of any placement, replica ranks in slot order.

    For placements other than the reference's own, whose ranks come from the
    order replication made the replicas.
    """
    for layer in range(phy2log.shape[0]):
        slot_order_layer(phy2log[layer], log2phy[layer], logcnt[layer])


@jit(inline="always")
def slot_order_layer(phy2log, table, counts):
    """One layer of ``slot_order_maps``: ``table[e, r]`` the slot of e's r-th replica."""
    clear_table(table)
    counts[:] = 0
    # Each replica's rank is its expert's count so far, used at once: no
    # second pass over the slots.
    for q in range(phy2log.shape[0]):
        e = _u(phy2log[q])
        r = counts[e]
        counts[e] = r + 1
        table[e, _u(r)] = q
