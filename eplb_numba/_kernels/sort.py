"""A descending sort that orders ties exactly as torch's CPU ``sort`` does.

The reference calls ``tensor.sort(-1, descending=True)`` on float32 rows.  On
CPU, torch runs libstdc++'s ``std::sort`` over (value, index) pairs with the
comparator ``a > b``, which is introsort: quicksort with a median-of-three
pivot down to ranges of 16, heapsort once a depth limit runs out, and a final
insertion sort.  Introsort is not stable, and which of two equal loads comes
first decides placements, so this file follows the same steps move for move.
A stable sort would agree only on rows of at most 16 elements.

Each (value, index) pair travels as one int64 key: the float32's bits in the high word, the index in the low word.  For
non-negative floats the bit pattern orders like the value, so "value of a >
value of b" is the integer test ``a > (b | LOW)``, which ignores b's index
and keeps ties unordered, as the original comparator does.

The code is plain on purpose: every kernel a user calls compiles these
loops on first use, and branch-free variants of them cost seconds of
compile time for a few microseconds per plan.
"""

from __future__ import annotations

import numpy as np

from .._jit import float32_bits, jit

# libstdc++'s _S_threshold: ranges at most this long are left to the final
# insertion sort.
_THRESHOLD = 16

# Pending ranges on the explicit stack have strictly decreasing depth budgets,
# so at most 2 * 63 + 1 are pending for any int64 length, three words each
# (390 < 16 * 25); then room for one leaf's keys (see argsort_desc).
SORT_STACK_SIZE = _THRESHOLD * 27

LOW = np.int64(0xFFFFFFFF)


@jit
def pack_key(bits, index):
    """The sort key of an item: its value's order-preserving bits above its index."""
    return (np.int64(bits) << 32) | index


@jit
def key_index(key):
    """The item (index) of a sort key made by ``pack_key``."""
    return key & LOW


@jit
def argsort_desc(keys, a, stack):
    """Sort float32 ``keys`` (non-negative) descending into ``a``, exactly as ``std::sort``.

    ``a`` receives the sorted keys packed as described above (the index is
    ``a[i] & LOW``).  ``stack`` is int64 scratch of ``SORT_STACK_SIZE + 2 *
    len(keys)`` entries; it replaces the recursion of the original on the
    right-hand parts, which touch disjoint ranges, so the order they are
    finished in does not matter.
    """
    n = keys.shape[0]
    for i in range(n):
        # -0.0 has the sign bit set; it equals 0.0.
        a[i] = pack_key(max(float32_bits(keys[i]), 0), i)
    if n < 2:
        return
    depth = 0
    m = n
    while m > 1:
        m >>= 1
        depth += 1
    # After the pending ranges: a leaf's keys while it is sorted, then the
    # partition's stops.
    leaf = SORT_STACK_SIZE - 2 * _THRESHOLD
    stops = SORT_STACK_SIZE
    stack[0] = 0
    stack[1] = n
    stack[2] = 2 * depth
    top = 1
    while top > 0:
        top -= 1
        first = stack[3 * top]
        last = stack[3 * top + 1]
        d = stack[3 * top + 2]
        while last - first > _THRESHOLD and d > 0:
            d -= 1
            # Median of (first + 1, middle, last - 1) moves to first; "x
            # beats y" (x's value > y's) is ``x > (y | LOW)``.
            x = a[first + 1]
            y = a[first + (last - first) // 2]
            z = a[last - 1]
            if x > (y | LOW):
                if y > (z | LOW):
                    med = first + (last - first) // 2
                elif x > (z | LOW):
                    med = last - 1
                else:
                    med = first + 1
            elif x > (z | LOW):
                med = first + 1
            elif y > (z | LOW):
                med = last - 1
            else:
                med = first + (last - first) // 2
            pivot = a[med]
            a[med] = a[first]
            a[first] = pivot
            # libstdc++'s unguarded Hoare partition of [first + 1, last)
            # around the pivot, without its data-dependent branches (which
            # mispredict, and cost most of a sort that runs between other
            # work).  The left scan stops at keys not beating the pivot, the
            # right scan at keys the pivot does not beat: list both scans'
            # stops first (a branch-free pass), then replay the swaps.  After
            # a swap the left scan also stops at the position the right scan
            # just swapped, and the right scan at the left one's, which is
            # where Hoare's scans cross.
            pivot_hi = pivot | LOW
            n_left = 0
            n_right = 0
            for i in range(first + 1, last):
                v = a[i]
                stack[stops + n_left] = i
                n_left += not v > pivot_hi
                stack[stops + n + n_right] = i
                n_right += not pivot > (v | LOW)
            # A scan with no stop left runs to the far end (the right one
            # stops at the pivot itself, in ``first``).
            left = 0
            right = n_right - 1
            lo = first
            hi = last
            while True:
                next_lo = stack[stops + left] if left < n_left else last
                next_hi = stack[stops + n + right] if right >= 0 else first
                left += 1
                right -= 1
                next_lo = min(next_lo, hi)
                next_hi = max(next_hi, lo)
                if not next_lo < next_hi:
                    lo = next_lo
                    break
                lo = next_lo
                hi = next_hi
                t = a[lo]
                a[lo] = a[hi]
                a[hi] = t
            stack[3 * top] = lo
            stack[3 * top + 1] = last
            stack[3 * top + 2] = d
            top += 1
            last = lo
        if last - first > _THRESHOLD:
            # The depth budget ran out: heapsort, as std::__partial_sort(first,
            # last, last).  That is libstdc++'s make_heap then pop_heap, both
            # built on one two-phase fix-up (sift a hole down to a leaf, then
            # push a value back up), written once: the first ``builds``
            # steps make the heap, the rest pop it.
            length = last - first
            builds = (length - 2) // 2 + 1
            for step in range(builds + length - 1):
                if step < builds:
                    hole = builds - 1 - step
                    size = length
                    value = a[first + hole]
                else:
                    size = length - (step - builds) - 1
                    value = a[first + size]
                    a[first + size] = a[first]
                    hole = 0
                root = hole
                child = hole
                while child < (size - 1) // 2:
                    child = 2 * (child + 1)
                    if a[first + child] > (a[first + child - 1] | LOW):
                        child -= 1
                    a[first + hole] = a[first + child]
                    hole = child
                if (size & 1) == 0 and child == (size - 2) // 2:
                    child = 2 * (child + 1)
                    a[first + hole] = a[first + child - 1]
                    hole = child - 1
                parent = (hole - 1) // 2
                while hole > root and a[first + parent] > (value | LOW):
                    a[first + hole] = a[first + parent]
                    hole = parent
                    parent = (hole - 1) // 2
                a[first + hole] = value
            continue
        # libstdc++ ends with one insertion sort over everything.
        # Partitioning left every key of a range >= every key of the ranges
        # after it, so that pass never moves a key out of its range, and
        # being stable it equals a stable sort of each range.  Here that is
        # a rank sort: with the position folded into the low word (earlier
        # = larger) every key is distinct, and a key's place is how many
        # keys beat it; the count has no data-dependent branch, unlike an
        # insertion sort's loop.
        size = last - first
        for t in range(size):
            v = a[first + t]
            stack[leaf + t] = v
            stack[leaf + _THRESHOLD + t] = (v & ~LOW) | (LOW - t)
        for t in range(size):
            v = stack[leaf + _THRESHOLD + t]
            r = 0
            for u in range(size):
                r += stack[leaf + _THRESHOLD + u] > v
            a[first + r] = stack[leaf + t]


@jit
def sift_down(heap, size, keys, pos):
    """Restore the min-heap ``heap[:size]`` of indices ordered by ``(keys[i], i)`` below ``pos``."""
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
