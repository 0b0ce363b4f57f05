"""A descending sort that orders ties exactly as torch's CPU ``sort`` does.

The reference calls ``tensor.sort(-1, descending=True)`` on float32 rows.  On
CPU, torch runs libstdc++'s ``std::sort`` over (value, index) pairs with the
comparator ``a > b``, which is introsort: quicksort with a median-of-three
pivot down to ranges of 16, heapsort once a depth limit runs out, and a final
insertion sort.  Introsort is not stable, and which of two equal loads comes
first decides placements, so this file follows the same steps move for move.
A stable sort would agree only on rows of at most 16 elements.

Each (value, index) pair travels as one int64: the float32's bits in the
high word, the index in the low word.  For non-negative floats the bit
pattern orders like the value, so "value of a > value of b" is the integer
test ``a > (b | LOW)``, which ignores b's index and keeps ties unordered, as
the original comparator does.  Moving one word instead of two halves the
memory traffic of every swap and shift.
"""

from __future__ import annotations

import numpy as np

# Count-zeros intrinsics (LLVM cttz/ctlz); Numba has shipped them for years.
from numba.cpython.unsafe.numbers import leading_zeros, trailing_zeros

from .._jit import jit, unsigned as _u

# libstdc++'s _S_threshold: ranges at most this long are left to the final
# insertion sort (here: a rank sort per range, see sort_desc).
_THRESHOLD = 16

# Pending ranges on the explicit stack have strictly decreasing depth budgets,
# so at most 2 * 63 + 1 are pending for any int64 length; three words each.
SORT_STACK_SIZE = 3 * 130

LOW = np.int64(0xFFFFFFFF)


# Scratch words ``sort_desc`` needs for n elements: SORT_SCRATCH_PER_ITEM * n
# + SORT_SCRATCH_EXTRA (partition stop masks, leaf ranges, a leaf's copy and rank keys).
SORT_SCRATCH_PER_ITEM = 4
SORT_SCRATCH_EXTRA = 2 + 2 * _THRESHOLD


@jit(inline="always")
def pack_keys(keys, out):
    """``out[i]`` = (bits of float32 ``keys[i]`` << 32) | i, for keys >= 0."""
    bits = keys.view(np.int32)
    for i in range(keys.shape[0]):
        b = bits[i]
        if b < 0:  # -0.0 equals 0.0
            b = 0
        out[i] = (np.int64(b) << 32) | i


@jit
def _gt(a, b):
    return a > (b | LOW)


@jit
def _adjust_heap(a, first, hole, length, value):
    # Sift a hole at ``hole`` down to a leaf, then push ``value`` back up:
    # the two-phase heap fix-up libstdc++ uses for make_heap and pop_heap.
    top = hole
    child = hole
    while child < (length - 1) // 2:
        child = 2 * (child + 1)
        if _gt(a[first + child], a[first + child - 1]):
            child -= 1
        a[first + hole] = a[first + child]
        hole = child
    if (length & 1) == 0 and child == (length - 2) // 2:
        child = 2 * (child + 1)
        a[first + hole] = a[first + child - 1]
        hole = child - 1
    parent = (hole - 1) // 2
    while hole > top and _gt(a[first + parent], value):
        a[first + hole] = a[first + parent]
        hole = parent
        parent = (hole - 1) // 2
    a[first + hole] = value


@jit
def heap_sort_desc(a, first, last):
    """Heapsort of ``[first, last)`` as ``std::__partial_sort(first, last, last)``."""
    length = last - first
    if length >= 2:
        parent = (length - 2) // 2
        while True:
            _adjust_heap(a, first, parent, length, a[first + parent])
            if parent == 0:
                break
            parent -= 1
    while last - first > 1:
        last -= 1
        value = a[last]
        a[last] = a[first]
        _adjust_heap(a, first, 0, last - first, value)


@jit(inline="always")
def _partition_pivot(a, first, last, lefts, rights):
    mid = first + (last - first) // 2
    x = a[_u(first + 1)]
    y = a[_u(mid)]
    z = a[_u(last - 1)]
    # Median of (first + 1, middle, last - 1) moves to ``first``.
    # libstdc++'s branches, as arithmetic on the three outcomes: which of
    # the three is the median is unpredictable, and a mispredicted branch
    # costs more than evaluating all three comparisons.
    xy = _gt(x, y)
    yz = _gt(y, z)
    xz = _gt(x, z)
    # x > y: y if y > z, else z if x > z, else x.
    # else:  x if x > z, else z if y > z, else y.
    pick_y = (xy & yz) | (~xy & ~xz & ~yz)
    pick_z = (xy & ~yz & xz) | (~xy & ~xz & yz)
    m = mid if pick_y else (last - 1 if pick_z else first + 1)
    t = a[_u(first)]
    a[_u(first)] = a[_u(m)]
    a[_u(m)] = t
    # libstdc++'s unguarded Hoare partition of [first + 1, last) around
    # a[first], computed without its data-dependent branches.  The left scan
    # stops at elements not greater than the pivot, the right scan at
    # elements not less; mark both scans' stopping points first (a
    # branch-free pass), then replay the swaps.  After k swaps the left scan
    # also stops at the last right position swapped, and the right scan at
    # the last left one, which is where Hoare's scans cross.
    pivot = a[first]
    pivot_hi = pivot | LOW
    # Stopping points as bit masks, 64 positions a word from first + 1:
    # ``lefts`` for the left scan, ``rights`` for the right one.
    words = (last - first + 62) >> 6
    for wi in range(words):
        base = first + 1 + 64 * wi
        # A view indexed from 0: the loop then reads contiguous words
        # instead of gathering (``a[base + t]`` may be a negative index).
        seg = a[base:min(base + 64, last)]
        lm = np.int64(0)
        rm = np.int64(0)
        for t in range(seg.shape[0]):
            v = seg[t]
            lm |= np.int64(not v > pivot_hi) << t
            rm |= np.int64(not pivot > (v | LOW)) << t
        lefts[wi] = lm
        rights[wi] = rm
    # Replay: the left scan takes stops lowest first, the right scan highest
    # first; a scan with none left runs to the far end.
    lw = 0
    lcur = lefts[0]
    rw = words - 1
    rcur = rights[rw]
    prev_left = first
    prev_right = last
    while True:
        while lcur == 0 and lw < words - 1:
            lw += 1
            lcur = lefts[lw]
        if lcur != 0:
            lo = first + 1 + 64 * lw + trailing_zeros(lcur)
            lcur &= lcur - 1
        else:
            lo = last
        if prev_right < lo:
            lo = prev_right
        while rcur == 0 and rw > 0:
            rw -= 1
            rcur = rights[rw]
        if rcur != 0:
            bit = 63 - leading_zeros(rcur)
            hi = first + 1 + 64 * rw + bit
            rcur &= ~(np.int64(1) << bit)
        else:
            hi = first
        if prev_left > hi:
            hi = prev_left
        if not lo < hi:
            return lo
        t = a[_u(lo)]
        a[_u(lo)] = a[_u(hi)]
        a[_u(hi)] = t
        prev_left = lo
        prev_right = hi


@jit(inline="always")
def _rank_into(a, lo, size, keys, rank_keys, width):
    # keys[t] goes to a[lo + its rank], the rank counted over the first
    # ``width`` rank keys (for the leaves a constant at each call, so the
    # count unrolls).
    for t in range(size):
        v = rank_keys[t]
        r = 0
        for u in range(width):
            r += rank_keys[u] > v
        a[_u(lo + r)] = keys[t]


@jit(inline="always")
def sort_desc(a, first, last, stack, scratch):
    """Sort packed pairs ``a[first:last]`` descending by value, as ``std::sort``.

    ``stack`` is int64 scratch of ``SORT_STACK_SIZE`` entries; it replaces
    the recursion of the original on the right-hand parts, which touch
    disjoint ranges, so the order they are finished in does not matter.
    ``scratch`` is int64 of at least ``SORT_SCRATCH_PER_ITEM * (last - first)
    + SORT_SCRATCH_EXTRA`` entries.
    """
    n = last - first
    if n < 2:
        return
    depth = 0
    m = n
    while m > 1:
        m >>= 1
        depth += 1
    stack[0] = first
    stack[1] = last
    stack[2] = 2 * depth
    top = 1
    # Leaves (ranges left for the final insertion sort) are listed in
    # ``scratch`` as (lo, hi) pairs after room for the partition's two stop
    # masks (each at most n words; they need n / 64).
    leaves = 2 * n + 2
    n_leaves = 0
    while top > 0:
        top -= 1
        lo = stack[3 * top]
        hi = stack[3 * top + 1]
        d = stack[3 * top + 2]
        heaped = False
        while hi - lo > _THRESHOLD:
            if d == 0:
                heap_sort_desc(a, lo, hi)
                heaped = True
                break
            d -= 1
            cut = _partition_pivot(a, lo, hi, scratch, scratch[hi - lo:])
            stack[3 * top] = cut
            stack[3 * top + 1] = hi
            stack[3 * top + 2] = d
            top += 1
            hi = cut
        if not heaped:
            scratch[leaves + 2 * n_leaves] = lo
            scratch[leaves + 2 * n_leaves + 1] = hi
            n_leaves += 1
    # libstdc++ ends with one insertion sort over everything.  Partitioning
    # left every key of a range >= every key of the ranges after it, so that
    # pass never moves an element out of its range, and being stable it
    # equals a stable sort of each leaf range (heapsorted ranges are already
    # in order).  That is a rank sort: an element's place is the number of
    # keys that beat it, equal keys before it included.  With the position
    # folded into the low word (earlier = larger) every key is distinct and
    # "beats" is one integer comparison; padded to _THRESHOLD keys with -1,
    # which beats nothing, the count runs over a fixed width that compiles to
    # a few vector compares instead of two data-dependent loops.
    tmp = scratch[4 * n + 2:]
    rank_keys = tmp[_THRESHOLD:]
    for leaf in range(n_leaves):
        lo = scratch[leaves + 2 * leaf]
        hi = scratch[leaves + 2 * leaf + 1]
        size = hi - lo
        for t in range(_THRESHOLD):
            rank_keys[t] = -1
        for t in range(size):
            v = a[_u(lo + t)]
            tmp[t] = v
            rank_keys[t] = (v & ~LOW) | (LOW - t)
        # Four leaves in ten hold at most eight keys (DeepSeek-V3 rows), and
        # their first eight keys are all there is to beat: half the count.
        if size <= _THRESHOLD // 2:
            _rank_into(a, lo, size, tmp, rank_keys, _THRESHOLD // 2)
        else:
            _rank_into(a, lo, size, tmp, rank_keys, _THRESHOLD)


@jit(inline="always")
def argsort_desc(keys, packed, stack, scratch):
    """Sort float32 ``keys`` (non-negative) into ``packed``; index = ``packed & LOW``.

    ``scratch``: int64, at least ``SORT_SCRATCH_PER_ITEM * len(keys) + SORT_SCRATCH_EXTRA``
    entries.
    """
    pack_keys(keys, packed)
    sort_desc(packed, 0, keys.shape[0], stack, scratch)


@jit(inline="always")
def count_greater(keys, counts):
    """``counts[t]``: how many keys exceed ``keys[t]``; ``counts[n:2 n]`` zeroed.

    Branch-free.  The second half is for ``next_place``, which turns the
    counts into places, equal keys in index order.  ``counts``: integer
    scratch of at least ``2 n`` entries, ``n = len(keys)``.
    """
    n = keys.shape[0]
    # Transposed: for each key u, every count at once, so the inner loop is
    # a vector compare and subtract with no reduction.
    for t in range(2 * n):
        counts[t] = 0
    for u in range(n):
        ku = keys[u]
        for t in range(n):
            counts[t] += keys[t] < ku


@jit(inline="always")
def next_place(counts, n, t):
    """Place of key t (taken in index order) in a descending sort of the n keys
    ``count_greater`` counted: equal keys share a count c and take places c,
    c + 1, ... in turn, counted in ``counts[n + c]``."""
    c = counts[t]
    place = c + counts[_u(n + c)]
    counts[_u(n + c)] += 1
    return place


@jit(inline="always")
def rank_sort_desc(keys, packed, tmp):
    """``argsort_desc`` with ties in no particular order, branch-free.

    For callers that only need the sequence of values (a packing's loads do
    not depend on which of two equal items goes first).  ``tmp``: contiguous
    int64 scratch of at least ``len(keys)`` entries, read as twice as many
    int32 counts (twice the vector lanes of int64 ones).
    """
    n = keys.shape[0]
    counts = tmp.view(np.int32)
    count_greater(keys, counts)
    bits = keys.view(np.int32)
    for t in range(n):
        b = bits[t]
        if b < 0:  # -0.0 equals 0.0
            b = 0
        packed[_u(next_place(counts, n, t))] = (np.int64(b) << 32) | t
