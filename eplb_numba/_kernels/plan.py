"""Greedy packing and replication, one row at a time.

Each ``*_row`` kernel handles one layer (or one layer-node row) in
preallocated scratch; the ``*_rows`` kernels loop over rows and own the
scratch.  Tie-breaking follows the reference exactly:

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

from .._jit import jit
from .sort import LOW, SORT_SCRATCH_PER_ITEM, SORT_SCRATCH_EXTRA, SORT_STACK_SIZE, argsort_desc

# Up to this many packs a branch-free scan beats a heap.
_SCAN_PACKS = 64
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
def _greedy_heap(packed, weights, num_packs, per_pack, pack_index, rank_in_pack, loads, items, heap):
    # Min-heap keyed on (load, pack index); full packs leave the heap.
    for p in range(num_packs):
        loads[p] = 0
        items[p] = 0
        heap[p] = p
    size = num_packs
    for j in range(packed.shape[0]):
        item = packed[j] & LOW
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
def _greedy_scan_f32(packed, weights, num_packs, per_pack, pack_index, rank_in_pack, loads, items, keys):
    # keys[p] = (bits of float32 load << 32) | p, or _CLOSED once full: the
    # integer minimum is the lightest open pack, lowest index first, and the
    # min-reduction compiles to vector instructions without branches.
    bits = loads.view(np.int32)
    for p in range(num_packs):
        loads[p] = 0
        items[p] = 0
        keys[p] = p
    for j in range(packed.shape[0]):
        item = packed[j] & LOW
        best = keys[0]
        for p in range(1, num_packs):
            best = min(best, keys[p])
        p = best & LOW
        pack_index[item] = p
        rank_in_pack[item] = items[p]
        loads[p] += weights[item]
        items[p] += 1
        if items[p] == per_pack:
            keys[p] = _CLOSED
        else:
            keys[p] = (np.int64(bits[p]) << 32) | p


@jit(inline="always")
def pack_row(keys, weights, num_packs, pack_index, rank_in_pack, packed, loads, items, heap, stack, f32_loads):
    """Balanced packing of one row of ``n`` items into ``num_packs`` equal packs.

    ``keys`` (float32) decide the visiting order and ``weights`` are summed:
    the reference sorts ``weight.float()`` but adds ``weight`` itself.
    ``loads`` has ``weights``' dtype; when that is float32 (``f32_loads``)
    and packs are few, a vectorised scan replaces the heap.
    """
    n = keys.shape[0]
    per_pack = n // num_packs
    if per_pack == 1:
        for i in range(n):
            pack_index[i] = i
            rank_in_pack[i] = 0
        return
    # ``packed`` holds the n sorted pairs, then the sort's scratch.
    argsort_desc(keys, packed[:n], stack, packed[n:])
    if f32_loads and num_packs <= _SCAN_PACKS:
        _greedy_scan_f32(packed[:n], weights, num_packs, per_pack, pack_index, rank_in_pack, loads, items, heap)
    else:
        _greedy_heap(packed[:n], weights, num_packs, per_pack, pack_index, rank_in_pack, loads, items, heap)


@jit(inline="always")
def replicate_row(weights, num_phy, phy2log, rank, logcnt, cntf, ratio, heap):
    """Give ``num_phy - n`` extra replicas to the ``n`` experts of one row.

    ``cntf`` and ``ratio`` are scratch of ``weights``' dtype, ``heap`` int64,
    each at least ``n`` long.
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
        # expert ahead of it to have been picked already.  Keep those k,
        # heaviest first, and scan them for each pick.
        size = 0
        for e in range(num_log):
            w = weights[e]
            if size == extras and not w > weights[heap[size - 1]]:
                continue
            pos = size if size < extras else extras - 1
            while pos > 0 and w > weights[heap[pos - 1]]:
                heap[pos] = heap[pos - 1]
                pos -= 1
            heap[pos] = e
            if size < extras:
                size += 1
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
    """``pack_row`` over every row of 2-D ``keys``/``weights``."""
    rows, n = keys.shape
    packed = np.empty((1 + SORT_SCRATCH_PER_ITEM) * n + SORT_SCRATCH_EXTRA, dtype=np.int64)
    loads = np.empty(num_packs, dtype=weights.dtype)
    items = np.empty(num_packs, dtype=np.int64)
    heap = np.empty(num_packs, dtype=np.int64)
    stack = np.empty(SORT_STACK_SIZE, dtype=np.int64)
    for r in range(rows):
        pack_row(keys[r], weights[r], num_packs, pack_index[r], rank_in_pack[r], packed, loads, items, heap, stack,
                 f32_loads)


@jit
def replicate_rows(weights, num_phy, phy2log, rank, logcnt):
    """``replicate_row`` over every row of 2-D ``weights``."""
    rows, num_log = weights.shape
    cntf = np.empty(num_log, dtype=weights.dtype)
    ratio = np.empty(num_log, dtype=weights.dtype)
    heap = np.empty(num_log, dtype=np.int64)
    for r in range(rows):
        replicate_row(weights[r], num_phy, phy2log[r], rank[r], logcnt[r], cntf, ratio, heap)
