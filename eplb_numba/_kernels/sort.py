"""A descending sort that orders ties exactly as torch's CPU ``sort`` does.

The reference calls ``tensor.sort(-1, descending=True)`` on float32 rows.  On
CPU, torch runs libstdc++'s ``std::sort`` over (value, index) pairs with the
comparator ``a > b``, which is introsort: quicksort with a median-of-three
pivot down to ranges of 16, heapsort once a depth limit runs out, and a final
insertion sort.  Introsort is not stable, and which of two equal loads comes
first decides placements, so this file follows the same steps move for move.
A stable sort would agree only on rows of at most 16 elements.

All functions work on two parallel arrays, ``vals`` (the keys) and ``idx``
(what travels with them), over the half-open range ``[first, last)``.
"""

from __future__ import annotations

from .._jit import jit

# libstdc++'s _S_threshold: ranges at most this long are left to the final
# insertion sort.
_THRESHOLD = 16

# Pending ranges on the explicit stack have strictly decreasing depth budgets,
# so at most 2 * 63 + 1 are pending for any int64 length; three words each.
SORT_STACK_SIZE = 3 * 130


@jit
def _swap(vals, idx, i, j):
    v = vals[i]
    vals[i] = vals[j]
    vals[j] = v
    k = idx[i]
    idx[i] = idx[j]
    idx[j] = k


@jit
def _adjust_heap(vals, idx, first, hole, length, val, ix):
    # Sift a hole at ``hole`` down to a leaf, then push (val, ix) back up:
    # the two-phase heap fix-up libstdc++ uses for make_heap and pop_heap.
    top = hole
    child = hole
    while child < (length - 1) // 2:
        child = 2 * (child + 1)
        if vals[first + child] > vals[first + child - 1]:
            child -= 1
        vals[first + hole] = vals[first + child]
        idx[first + hole] = idx[first + child]
        hole = child
    if (length & 1) == 0 and child == (length - 2) // 2:
        child = 2 * (child + 1)
        vals[first + hole] = vals[first + child - 1]
        idx[first + hole] = idx[first + child - 1]
        hole = child - 1
    parent = (hole - 1) // 2
    while hole > top and vals[first + parent] > val:
        vals[first + hole] = vals[first + parent]
        idx[first + hole] = idx[first + parent]
        hole = parent
        parent = (hole - 1) // 2
    vals[first + hole] = val
    idx[first + hole] = ix


@jit
def heap_sort_desc(vals, idx, first, last):
    """Heapsort of ``[first, last)`` as ``std::__partial_sort(first, last, last)``."""
    length = last - first
    if length >= 2:
        parent = (length - 2) // 2
        while True:
            _adjust_heap(vals, idx, first, parent, length, vals[first + parent], idx[first + parent])
            if parent == 0:
                break
            parent -= 1
    while last - first > 1:
        last -= 1
        v = vals[last]
        k = idx[last]
        vals[last] = vals[first]
        idx[last] = idx[first]
        _adjust_heap(vals, idx, first, 0, last - first, v, k)


@jit
def _partition_pivot(vals, idx, first, last):
    mid = first + (last - first) // 2
    a = first + 1
    b = mid
    c = last - 1
    # Median of (first + 1, middle, last - 1) moves to ``first``.
    if vals[a] > vals[b]:
        if vals[b] > vals[c]:
            m = b
        elif vals[a] > vals[c]:
            m = c
        else:
            m = a
    elif vals[a] > vals[c]:
        m = a
    elif vals[b] > vals[c]:
        m = c
    else:
        m = b
    _swap(vals, idx, first, m)
    # Unguarded Hoare partition of [first + 1, last) around vals[first].
    pivot = vals[first]
    lo = first + 1
    hi = last
    while True:
        while vals[lo] > pivot:
            lo += 1
        hi -= 1
        while pivot > vals[hi]:
            hi -= 1
        if not lo < hi:
            return lo
        _swap(vals, idx, lo, hi)
        lo += 1


@jit
def _linear_insert(vals, idx, i):
    v = vals[i]
    k = idx[i]
    j = i - 1
    while v > vals[j]:
        vals[j + 1] = vals[j]
        idx[j + 1] = idx[j]
        j -= 1
    vals[j + 1] = v
    idx[j + 1] = k


@jit
def _insertion_sort(vals, idx, first, last):
    for i in range(first + 1, last):
        v = vals[i]
        if v > vals[first]:
            k = idx[i]
            for j in range(i, first, -1):
                vals[j] = vals[j - 1]
                idx[j] = idx[j - 1]
            vals[first] = v
            idx[first] = k
        else:
            _linear_insert(vals, idx, i)


@jit
def sort_desc(vals, idx, first, last, stack):
    """Sort ``[first, last)`` descending by ``vals``, moving ``idx`` along.

    ``stack`` is int64 scratch of ``SORT_STACK_SIZE`` entries; it replaces
    the recursion of the original on the right-hand parts, which touch
    disjoint ranges, so the order they are finished in does not matter.
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
    while top > 0:
        top -= 1
        lo = stack[3 * top]
        hi = stack[3 * top + 1]
        d = stack[3 * top + 2]
        while hi - lo > _THRESHOLD:
            if d == 0:
                heap_sort_desc(vals, idx, lo, hi)
                break
            d -= 1
            cut = _partition_pivot(vals, idx, lo, hi)
            stack[3 * top] = cut
            stack[3 * top + 1] = hi
            stack[3 * top + 2] = d
            top += 1
            hi = cut
    if n > _THRESHOLD:
        _insertion_sort(vals, idx, first, first + _THRESHOLD)
        for i in range(first + _THRESHOLD, last):
            _linear_insert(vals, idx, i)
    else:
        _insertion_sort(vals, idx, first, last)



@jit
def argsort_desc(keys, out_idx, vals, stack):
    """Indices of ``keys`` in torch's descending order, written to ``out_idx``.

    ``vals`` is scratch of ``keys``' length and dtype.
    """
    n = keys.shape[0]
    for i in range(n):
        vals[i] = keys[i]
        out_idx[i] = i
    sort_desc(vals, out_idx, 0, n, stack)

