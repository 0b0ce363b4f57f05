"""Greedy packing of rows of items into equal packs (steps 1 and 3 of the plan).

Items are visited in torch's descending sort order (``sort.py``) and each
goes to the lightest pack that still has room, the lowest pack index on
equal load, as in the reference.  That choice is the minimum of a total
order, so a heap (or a scan of a few packs) picks the same pack as the
reference's linear search.  Loads stay in the weight's dtype and
accumulate in the reference's order, so every comparison sees its bits.
"""

from __future__ import annotations

import numpy as np

from .._jit import float32_bits, jit
from .sort import SORT_STACK_SIZE, argsort_desc, key_index, pack_key, sift_down

# Up to this many packs a scan of them (greedy_rows_f32) is cheaper than a heap.
SCAN_PACKS = 32
# A full pack's key in greedy_rows_f32: above every open pack's.
_CLOSED = np.int64(0x7FFFFFFFFFFFFFFF)


@jit
def greedy_pack(order, weights, num_packs, pack_index, rank_in_pack, loads, items, heap):
    """Give the items of one row, in visiting ``order``, to ``num_packs`` equal packs.

    ``order`` holds sort keys (``key_index`` gives the item); each item goes to
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
    top = np.int64(0)
    for j in range(n):
        item = key_index(order[j])
        p = heap[0]
        pack_index[item] = p
        rank_in_pack[item] = items[p]
        loads[p] += weights[item]
        items[p] += 1
        if items[p] == per_pack:
            size -= 1
            heap[0] = heap[size]
        if size > 1:
            sift_down(heap, size, loads, top)


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
            item = key_index(order[r, j])
            best = keys[r, 0]
            for p in range(1, num_packs):
                best = min(best, keys[r, p])
            p = key_index(best)
            pack_index[r, item] = p
            rank_in_pack[r, item] = items[r, p]
            load = loads[r, p] + weights[r, item]
            loads[r, p] = load
            items[r, p] += 1
            keys[r, p] = _CLOSED if items[r, p] == per_pack else pack_key(float32_bits(load), p)


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
