"""Greedy packing, replication and the hierarchical placement, per row.

Each ``*_row`` kernel handles one layer (or one layer-node row) in
preallocated scratch; the ``*_rows`` kernels loop over rows and own the
scratch.  Tie-breaking follows the reference exactly:

* packing visits items in torch's descending sort order (see ``sort.py``) and
  gives each to the lightest pack that still has room, the lowest pack index
  on equal load.  A min-heap keyed on (load, pack index) finds that pack in
  O(log m); full packs leave the heap.
* replication gives each extra replica to the expert with the largest
  load / count, the lowest expert index on equal ratio (``max().indices``).
  A max-heap keyed on (ratio, -index) finds it in O(log n).

Because both heap keys are total orders, the heap's top is the unique item
the reference's linear scan picks, whatever the heap's internal layout.
Loads stay in the weight's dtype (float32 for ``rebalance_experts``) and
accumulate in the reference's order, so every comparison sees the same bits.
"""

from __future__ import annotations

import numpy as np

from .._jit import jit
from .sort import SORT_STACK_SIZE, argsort_desc


@jit
def _pack_before(loads, a, b):
    return loads[a] < loads[b] or (loads[a] == loads[b] and a < b)


@jit
def _sift_down_min(heap, size, loads, pos):
    item = heap[pos]
    while True:
        child = 2 * pos + 1
        if child >= size:
            break
        if child + 1 < size and _pack_before(loads, heap[child + 1], heap[child]):
            child += 1
        if not _pack_before(loads, heap[child], item):
            break
        heap[pos] = heap[child]
        pos = child
    heap[pos] = item


@jit
def _expert_before(ratio, a, b):
    return ratio[a] > ratio[b] or (ratio[a] == ratio[b] and a < b)


@jit
def _sift_down_max(heap, size, ratio, pos):
    item = heap[pos]
    while True:
        child = 2 * pos + 1
        if child >= size:
            break
        if child + 1 < size and _expert_before(ratio, heap[child + 1], heap[child]):
            child += 1
        if not _expert_before(ratio, heap[child], item):
            break
        heap[pos] = heap[child]
        pos = child
    heap[pos] = item


@jit
def pack_row(keys, weights, num_packs, pack_index, rank_in_pack, sort_vals, order, loads, items, heap, stack):
    """Balanced packing of one row of ``n`` items into ``num_packs`` equal packs.

    ``keys`` (float32) decide the visiting order, ``weights`` are accumulated;
    the reference sorts ``weight.float()`` but adds ``weight`` itself.
    """
    n = keys.shape[0]
    per_pack = n // num_packs
    if per_pack == 1:
        for i in range(n):
            pack_index[i] = i
            rank_in_pack[i] = 0
        return
    argsort_desc(keys, order, sort_vals, stack)
    for p in range(num_packs):
        loads[p] = 0
        items[p] = 0
        heap[p] = p
    size = num_packs
    for j in range(n):
        item = order[j]
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


@jit
def replicate_row(weights, num_phy, phy2log, rank, logcnt, cntf, ratio, heap):
    """Give ``num_phy - n`` extra replicas to the ``n`` experts of one row."""
    num_log = weights.shape[0]
    for e in range(num_log):
        phy2log[e] = e
        rank[e] = 0
        logcnt[e] = 1
    if num_phy == num_log:
        return
    for e in range(num_log):
        cntf[e] = 1
        ratio[e] = weights[e] / cntf[e]
        heap[e] = e
    for pos in range(num_log // 2 - 1, -1, -1):
        _sift_down_max(heap, num_log, ratio, pos)
    for i in range(num_log, num_phy):
        e = heap[0]
        phy2log[i] = e
        rank[i] = logcnt[e]
        logcnt[e] += 1
        cntf[e] += 1
        # The reference divides the float load by the count cast to the
        # load's dtype: weights / logcnt with type promotion.
        ratio[e] = weights[e] / cntf[e]
        _sift_down_max(heap, num_log, ratio, 0)


@jit
def pack_rows(keys, weights, num_packs, pack_index, rank_in_pack):
    """``pack_row`` over every row of 2-D ``keys``/``weights``."""
    rows, n = keys.shape
    sort_vals = np.empty(n, dtype=np.float32)
    order = np.empty(n, dtype=np.int64)
    loads = np.empty(num_packs, dtype=weights.dtype)
    items = np.empty(num_packs, dtype=np.int64)
    heap = np.empty(num_packs, dtype=np.int64)
    stack = np.empty(SORT_STACK_SIZE, dtype=np.int64)
    for r in range(rows):
        pack_row(keys[r], weights[r], num_packs, pack_index[r], rank_in_pack[r],
                 sort_vals, order, loads, items, heap, stack)


@jit
def replicate_rows(weights, num_phy, phy2log, rank, logcnt):
    """``replicate_row`` over every row of 2-D ``weights``."""
    rows, num_log = weights.shape
    cntf = np.empty(num_log, dtype=weights.dtype)
    ratio = np.empty(num_log, dtype=weights.dtype)
    heap = np.empty(num_log, dtype=np.int64)
    for r in range(rows):
        replicate_row(weights[r], num_phy, phy2log[r], rank[r], logcnt[r], cntf, ratio, heap)
