"""Greedy packing and replication of one row (a layer, or a layer's node).

Tie-breaking follows the reference exactly:

* packing visits items in torch's descending sort order (``sort.py``) and
  gives each to the lightest pack that still has room, the lowest pack index
  on equal load;
* replication gives each extra replica to the expert with the largest
  load / count, the lowest expert index on equal ratio (``max().indices``).

Both choices are minima of a total order, so a heap picks the same item as
the reference's linear scan.  Loads stay in the weight's dtype (float32 for
``rebalance_experts``) and accumulate in the reference's order, so every
comparison sees the same bits.
"""

from __future__ import annotations

import numpy as np

from .._jit import float32_bits, jit
from .sort import LOW, SORT_STACK_SIZE, argsort_desc

# Up to this many packs a scan of them (greedy_rows_f32), and up to this
# many extra replicas a scan of the candidates per pick, are cheaper than a heap.
SCAN_PACKS = 32
_SCAN_EXTRAS = 32
# A full pack's key in greedy_rows_f32: above every open pack's.
_CLOSED = np.int64(0x7FFFFFFFFFFFFFFF)


@jit
def _sift_down(heap, size, keys, pos):
    # Min-heap of indices ordered by (keys[i], i).
    item = heap[pos]
    key = keys[item]
    while True:
        child = 2 * pos + 1
        if child >= size:
            break
        c = heap[child]
        if child + 1 < size:
            d = heap[child + 1]
            if keys[d] < keys[c] or (keys[d] == keys[c] and d < c):
                child += 1
                c = d
        if not (keys[c] < key or (keys[c] == key and c < item)):
            break
        heap[pos] = c
        pos = child
    heap[pos] = item


@jit
def greedy_pack(order, weights, num_packs, pack_index, rank_in_pack, loads, items, heap):
    """Give the items of one row, in visiting ``order``, to ``num_packs`` equal packs.

    ``order`` holds sort keys (the item is ``key & LOW``); each item goes to
    the lightest pack with room, the lowest index on equal load.  Scratch:
    ``loads`` (``weights``' dtype), ``items`` and ``heap``, ``num_packs`` long.
    With one item per pack the reference keeps items in place, and ``order``
    is not read.
    """
    n = order.shape[0]
    per_pack = n // num_packs
    if per_pack == 1:
        for i in range(n):
            pack_index[i] = i
            rank_in_pack[i] = 0
        return
    for p in range(num_packs):
        loads[p] = 0
        items[p] = 0
        heap[p] = p
    # A min-heap on (load, pack index); full packs leave it.
    size = num_packs
    top = 0
    for j in range(n):
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
            _sift_down(heap, size, loads, top)


@jit
def greedy_rows_f32(order, weights, num_packs, pack_index, rank_in_pack, loads, items, keys):
    """``greedy_pack`` of every row of 2-D float32 ``weights`` at once.

    For at most ``SCAN_PACKS`` packs and more than one item per pack.  Each
    pack has an int64 key, its load's bits << 32 | its index (``_CLOSED``
    once full): the least key is the lightest open pack, the lowest index
    on equal load, and finding it is a fixed, branch-free minimum.  One
    row's items form a chain of dependent steps; stepping the rows in turn
    lets the processor overlap the chains (for DeepSeek-V3's four nodes a
    plan took 0.7x the time of ``greedy_pack`` a row at a time).  Scratch
    ``loads`` (float32), ``items``, ``keys``: ``[rows, num_packs]``.
    """
    rows, n = order.shape
    per_pack = n // num_packs
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
            load = loads[r, p] + weights[r, item]
            loads[r, p] = load
            items[r, p] += 1
            keys[r, p] = _CLOSED if items[r, p] == per_pack else (np.int64(float32_bits(load)) << 32) | p


@jit
def replicate_row(weights, num_phy, phy2log, rank, logcnt, cntf, ratio, heap):
    """Give ``num_phy - n`` extra replicas to the ``n`` experts of one row.

    ``cntf`` and ``ratio`` are scratch of ``weights``' dtype and ``heap``
    int64 scratch, each at least ``n`` long.
    """
    num_log = weights.shape[0]
    extras = num_phy - num_log
    for e in range(num_log):
        phy2log[e] = e
        rank[e] = 0
        logcnt[e] = 1
        cntf[e] = 1
    if extras == 0:
        return
    if extras <= _SCAN_EXTRAS:
        # Within k picks only the k heaviest experts (lowest index first on
        # equal load) can be picked: an expert's first pick needs every
        # expert ahead of it to have been picked already.  Keep those k in
        # ``heap``, heaviest first (an insertion that rarely triggers once
        # the list is full), then scan them for each pick.
        k = min(extras, num_log)
        m = 0
        for e in range(num_log):
            w = weights[e]
            if m == k:
                if not w > weights[heap[k - 1]]:
                    continue
                pos = k - 1
            else:
                pos = m
                m += 1
            while pos > 0 and weights[heap[pos - 1]] < w:
                heap[pos] = heap[pos - 1]
                pos -= 1
            heap[pos] = e
        for c in range(k):
            ratio[c] = weights[heap[c]]
        for i in range(num_log, num_phy):
            best = 0
            for c in range(1, k):
                if ratio[c] > ratio[best] or (ratio[c] == ratio[best] and heap[c] < heap[best]):
                    best = c
            e = heap[best]
            phy2log[i] = e
            rank[i] = logcnt[e]
            logcnt[e] += 1
            cntf[e] += 1
            # weights / logcnt in the reference: the count is cast to the
            # load's dtype before dividing.
            ratio[best] = weights[e] / cntf[e]
        return
    # Many extras: the min-heap on (key, index) with key = -ratio puts the
    # largest ratio first and equal ratios (negation is exact) at the
    # lowest index.
    for e in range(num_log):
        ratio[e] = -weights[e]
        heap[e] = e
    for pos in range(num_log // 2 - 1, -1, -1):
        _sift_down(heap, num_log, ratio, pos)
    top = 0
    for i in range(num_log, num_phy):
        e = heap[0]
        phy2log[i] = e
        rank[i] = logcnt[e]
        logcnt[e] += 1
        cntf[e] += 1
        ratio[e] = -(weights[e] / cntf[e])
        _sift_down(heap, num_log, ratio, top)


@jit
def pack_rows(keys, weights, num_packs, pack_index, rank_in_pack):
    """Balanced packing of every row of 2-D ``weights`` (sorted by float32 ``keys``)."""
    rows, n = keys.shape
    order = np.empty(n, dtype=np.int64)
    loads = np.empty(num_packs, dtype=weights.dtype)
    items = np.empty(num_packs, dtype=np.int64)
    heap = np.empty(num_packs, dtype=np.int64)
    stack = np.empty(SORT_STACK_SIZE + 2 * n, dtype=np.int64)
    for r in range(rows):
        if n > num_packs:
            argsort_desc(keys[r], order, stack)
        greedy_pack(order, weights[r], num_packs, pack_index[r], rank_in_pack[r], loads, items, heap)


# Rows that pack_rows_f32 steps together (see greedy_rows_f32).
LOCKSTEP_ROWS = 4


@jit
def pack_rows_f32(weights, num_packs, pack_index, rank_in_pack):
    """``pack_rows`` of float32 ``weights`` with at most ``SCAN_PACKS`` packs of several items."""
    rows, n = weights.shape
    order = np.empty((LOCKSTEP_ROWS, n), dtype=np.int64)
    loads = np.empty((LOCKSTEP_ROWS, num_packs), dtype=np.float32)
    items = np.empty((LOCKSTEP_ROWS, num_packs), dtype=np.int64)
    keys = np.empty((LOCKSTEP_ROWS, num_packs), dtype=np.int64)
    stack = np.empty(SORT_STACK_SIZE + 2 * n, dtype=np.int64)
    for lo in range(0, rows, LOCKSTEP_ROWS):
        hi = min(lo + LOCKSTEP_ROWS, rows)
        for r in range(lo, hi):
            argsort_desc(weights[r], order[r - lo], stack)
        used = hi - lo
        greedy_rows_f32(order[:used], weights[lo:hi], num_packs, pack_index[lo:hi], rank_in_pack[lo:hi], loads[:used],
                        items[:used], keys[:used])


@jit
def replicate_rows(weights, num_phy, phy2log, rank, logcnt):
    """``replicate_row`` over every row of 2-D ``weights``."""
    rows, num_log = weights.shape
    cntf = np.empty(num_log, dtype=weights.dtype)
    ratio = np.empty(num_log, dtype=weights.dtype)
    heap = np.empty(num_log, dtype=np.int64)
    for r in range(rows):
        replicate_row(weights[r], num_phy, phy2log[r], rank[r], logcnt[r], cntf, ratio, heap)
