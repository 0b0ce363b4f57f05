"""Greedy packing and replication over rows of independent problems.

``replicate_row`` handles one row (a layer, or a layer's node) and
``pack_block`` a block of rows, in preallocated scratch; the ``*_rows``
kernels loop over all rows and own the scratch.  Tie-breaking follows the
reference exactly:

* packing visits items in torch's descending sort order (``sort.py``) and
  gives each to the lightest pack that still has room, the lowest pack index
  on equal load;
* replication gives each extra replica to the expert with the largest
  load / count, the lowest expert index on equal ratio (``max().indices``).

Both choices are minima of a total order, so any way of finding them picks
the same item as the reference's linear scan.  Loads stay in the weight's
dtype (float32 for ``rebalance_experts``) and accumulate in the reference's
order, so every comparison sees the same bits.
"""

from __future__ import annotations

import numpy as np

from .._jit import jit, unsigned as _u
from .sort import LOW, SORT_SCRATCH_PER_ITEM, SORT_SCRATCH_EXTRA, SORT_STACK_SIZE, argsort_desc, count_greater, next_place

# Up to this many packs a branch-free scan beats a heap.
_SCAN_PACKS = 256
# Packing problems stepped together (see _greedy_scan_f32).
LOCKSTEP_ROWS = 4
# Up to this many extra replicas (and fewer than the experts), candidates
# are found once and scanned; beyond it a heap over all experts is cheaper.
_SCAN_EXTRAS = 32
_CLOSED = np.int64(0x7FFFFFFFFFFFFFFF)


@jit
def _pack_before(load_a, a, load_b, b):
    # Scalars only: a helper that takes an array is a real call per use.
    return load_a < load_b or (load_a == load_b and a < b)


@jit(inline="always")
def _sift_down_min(heap, size, loads, pos):
    # Min-heap of indices ordered by (loads[i], i).
    item = heap[pos]
    while True:
        child = 2 * pos + 1
        if child >= size:
            break
        c = heap[child]
        if child + 1 < size:
            d = heap[child + 1]
            if _pack_before(loads[d], d, loads[c], c):
                child += 1
                c = d
        if not _pack_before(loads[c], c, loads[item], item):
            break
        heap[pos] = c
        pos = child
    heap[pos] = item


@jit(inline="always")
def _greedy_heap(order, weights, num_packs, per_pack, pack_index, rank_in_pack, loads, items, heap):
    # One row.  Min-heap keyed on (load, pack index); full packs leave it.
    for p in range(num_packs):
        loads[p] = 0
        items[p] = 0
        heap[p] = p
    size = num_packs
    for j in range(order.shape[0]):
        item = order[j] & LOW
        p = heap[0]
        pack_index[item] = p
        rank_in_pack[item] = items[p]
        loads[p] += weights[item]
        items[p] += 1
        if items[p] == per_pack:
            size -= 1
            heap[0] = heap[size]
        if size > 1:
            _sift_down_min(heap, size, loads, 0)


@jit(inline="always")
def _greedy_scan_f32(order, weights, num_packs, per_pack, pack_index, rank_in_pack, loads, items, keys):
    # Every row at once, item by item.  keys[r, p] = (bits of float32 load
    # << 32) | p, or _CLOSED once full: the integer minimum is the lightest
    # open pack, lowest index first, and the min-reduction compiles without
    # branches.  One row's picks form a chain of dependent steps; stepping
    # the rows in turn lets the processor overlap independent chains.
    rows, n = order.shape
    bits = loads.view(np.int32)
    for r in range(rows):
        for p in range(num_packs):
            loads[r, p] = 0
            items[r, p] = 0
            keys[r, p] = p
    for j in range(n):
        for r in range(rows):
            item = order[r, j] & LOW
            best = keys[r, 0]
            for p in range(1, num_packs):
                best = min(best, keys[r, p])
            p = best & LOW
            pack_index[r, item] = p
            rank_in_pack[r, item] = items[r, p]
            loads[r, p] += weights[r, item]
            items[r, p] += 1
            if items[r, p] == per_pack:
                keys[r, p] = _CLOSED
            else:
                keys[r, p] = (np.int64(bits[r, p]) << 32) | p


@jit(inline="always")
def _top_k(weights, k, cand_w, chunk_max, heap):
    # heap[:k] = the k heaviest of the n weights, heaviest first and the
    # lowest index first on equal weight, without data-dependent branches
    # (an insertion that tested each weight against the lightest kept one
    # took a quarter of the bound's time: its branches follow the data).
    # Chunk j holds the weights j, j + k, j + 2k, ...: its maximum is an
    # expert of its own, so the k chunk maxima are k experts and the k-th
    # heaviest weighs at least the least of them, t0.  The experts from t0
    # up (usually a few more than k; all n when every weight is equal) are
    # kept in index order and ranked against each other by counting
    # (``sort.count_greater``, ``sort.next_place``).  Scratch: ``cand_w``, ``chunk_max`` n
    # long; ``heap`` as ``replicate_row`` needs it.
    n = weights.shape[0]
    for j in range(k):
        chunk_max[j] = weights[j]
    for base in range(k, n, k):
        for j in range(min(k, n - base)):
            chunk_max[j] = max(chunk_max[j], weights[_u(base + j)])
    t0 = chunk_max[0]
    for j in range(1, k):
        t0 = min(t0, chunk_max[j])
    cand = n + 1  # candidates' expert ids in heap[cand:cand + m]
    m = 0
    for e in range(n):
        w = weights[e]
        cand_w[m] = w
        heap[_u(cand + m)] = e
        m += w >= t0
    counts = heap[2 * n + 1:2 * n + 1 + 2 * m]
    count_greater(cand_w[:m], counts)
    for t in range(m):
        # Places from k on go to heap[k], a slot nobody reads.
        heap[_u(min(next_place(counts, m, t), k))] = heap[_u(cand + t)]


@jit(inline="always")
def pack_block(keys, weights, num_packs, pack_index, rank_in_pack, order, loads, items, heap, stack, scratch,
               f32_loads):
    """Balanced packing of each row's ``n`` items into ``num_packs`` equal packs.

    All arrays but ``stack`` and ``scratch`` are 2-D with one row per packing
    problem.  ``keys`` (float32) decide the visiting order and ``weights``
    are summed: the reference sorts ``weight.float()`` but adds ``weight``
    itself.  ``order`` [rows, n] receives the sorted pairs; ``loads`` (of
    ``weights``' dtype), ``items`` and ``heap`` have ``num_packs`` columns.
    When loads are float32 (``f32_loads``) and packs are few, a vectorised
    scan over all rows replaces one heap per row.
    """
    if keys.shape[1] > num_packs:
        for r in range(keys.shape[0]):
            argsort_desc(keys[r], order[r], stack, scratch)
    greedy_block(order, weights, num_packs, pack_index, rank_in_pack, loads, items, heap, f32_loads)


@jit(inline="always")
def greedy_block(order, weights, num_packs, pack_index, rank_in_pack, loads, items, heap, f32_loads):
    """The packing of ``pack_block`` given each row's items in visiting ``order``
    (packed as ``sort.py`` packs them); ``order`` is not read when every pack
    takes one item."""
    rows, n = order.shape
    per_pack = n // num_packs
    if per_pack == 1:
        for r in range(rows):
            for i in range(n):
                pack_index[r, i] = i
                rank_in_pack[r, i] = 0
    elif f32_loads and num_packs <= _SCAN_PACKS:
        _greedy_scan_f32(order, weights, num_packs, per_pack, pack_index, rank_in_pack, loads, items, heap)
    else:
        for r in range(rows):
            _greedy_heap(order[r], weights[r], num_packs, per_pack, pack_index[r], rank_in_pack[r], loads[r],
                         items[r], heap[r])


# Scratch words ``replicate_row`` needs in ``heap`` for n experts: REPLICATE_SCRATCH_PER_ITEM * n + 1.
REPLICATE_SCRATCH_PER_ITEM = 4


@jit(inline="always")
def replicate_row(weights, num_phy, phy2log, rank, logcnt, cntf, ratio, heap):
    """Give ``num_phy - n`` extra replicas to the ``n`` experts of one row.

    ``cntf`` and ``ratio`` are scratch of ``weights``' dtype, at least ``n``
    long; ``heap`` int64 scratch, at least ``REPLICATE_SCRATCH_PER_ITEM * n +
    1`` long.
    """
    num_log = weights.shape[0]
    extras = num_phy - num_log
    for e in range(num_log):
        phy2log[e] = e
        rank[e] = 0
        logcnt[e] = 1
    if extras == 0:
        return
    if extras <= _SCAN_EXTRAS and extras < num_log:
        # Within k picks only the k heaviest experts (lowest index first on
        # equal load) can be picked: an expert's first pick needs every
        # expert ahead of it to have been picked already.  Find those k,
        # heaviest first, then scan them for each pick.
        _top_k(weights, extras, cntf, ratio, heap)
        for c in range(extras):
            e = heap[c]
            cntf[c] = 1
            ratio[c] = weights[e]
        for i in range(num_log, num_phy):
            best = 0
            for c in range(1, extras):
                if ratio[c] > ratio[best] or (ratio[c] == ratio[best] and heap[c] < heap[best]):
                    best = c
            e = heap[best]
            phy2log[i] = e
            rank[i] = logcnt[e]
            logcnt[e] += 1
            cntf[best] += 1
            # weights / logcnt in the reference: the count is cast to the
            # load's dtype before dividing.
            ratio[best] = weights[e] / cntf[best]
        return
    # Many extras: a heap over all experts.  The packing heap's min-order on
    # (key, index) serves with key = -ratio: the largest ratio comes first
    # and equal ratios (negation is exact) go to the lowest index.
    for e in range(num_log):
        cntf[e] = 1
        ratio[e] = -weights[e]
        heap[e] = e
    for pos in range(num_log // 2 - 1, -1, -1):
        _sift_down_min(heap, num_log, ratio, pos)
    for i in range(num_log, num_phy):
        e = heap[0]
        phy2log[i] = e
        rank[i] = logcnt[e]
        logcnt[e] += 1
        cntf[e] += 1
        ratio[e] = -(weights[e] / cntf[e])
        _sift_down_min(heap, num_log, ratio, 0)


@jit
def pack_rows(keys, weights, num_packs, pack_index, rank_in_pack, f32_loads):
    """``pack_block`` over every row of 2-D ``keys``/``weights``, LOCKSTEP_ROWS at a time."""
    rows, n = keys.shape
    block = max(1, min(rows, LOCKSTEP_ROWS))
    order = np.empty((block, n), dtype=np.int64)
    loads = np.empty((block, num_packs), dtype=weights.dtype)
    items = np.empty((block, num_packs), dtype=np.int64)
    heap = np.empty((block, num_packs), dtype=np.int64)
    stack = np.empty(SORT_STACK_SIZE, dtype=np.int64)
    scratch = np.empty(SORT_SCRATCH_PER_ITEM * n + SORT_SCRATCH_EXTRA, dtype=np.int64)
    for lo in range(0, rows, block):
        hi = min(lo + block, rows)
        pack_block(keys[lo:hi], weights[lo:hi], num_packs, pack_index[lo:hi], rank_in_pack[lo:hi], order[:hi - lo],
                   loads[:hi - lo], items[:hi - lo], heap[:hi - lo], stack, scratch, f32_loads)


@jit
def replicate_rows(weights, num_phy, phy2log, rank, logcnt):
    """``replicate_row`` over every row of 2-D ``weights``."""
    rows, num_log = weights.shape
    cntf = np.empty(num_log, dtype=weights.dtype)
    ratio = np.empty(num_log, dtype=weights.dtype)
    heap = np.empty(REPLICATE_SCRATCH_PER_ITEM * num_log + 1, dtype=np.int64)
    for r in range(rows):
        replicate_row(weights[r], num_phy, phy2log[r], rank[r], logcnt[r], cntf, ratio, heap)
