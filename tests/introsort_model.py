"""A plain-Python model of libstdc++'s introsort, used only to build test inputs.

``killer_sequence`` runs the model against M. D. McIlroy's adversary ("A
killer adversary for quicksort", 1999), which fixes element values lazily so
that every pivot is a bad one.  The result drives the real sort past its
depth limit, so the tests reach the heapsort branch.
"""

from __future__ import annotations

import numpy as np


def _introsort(items, less, on_heapsort):
    a = list(items)

    def adjust(first, hole, length, value):
        top = hole
        child = hole
        while child < (length - 1) // 2:
            child = 2 * (child + 1)
            if less(a[first + child], a[first + child - 1]):
                child -= 1
            a[first + hole] = a[first + child]
            hole = child
        if length % 2 == 0 and child == (length - 2) // 2:
            child = 2 * (child + 1)
            a[first + hole] = a[first + child - 1]
            hole = child - 1
        parent = (hole - 1) // 2
        while hole > top and less(a[first + parent], value):
            a[first + hole] = a[first + parent]
            hole = parent
            parent = (hole - 1) // 2
        a[first + hole] = value

    def heapsort(first, last):
        on_heapsort()
        length = last - first
        for parent in range((length - 2) // 2, -1, -1):
            adjust(first, parent, length, a[first + parent])
        while last - first > 1:
            last -= 1
            value = a[last]
            a[last] = a[first]
            adjust(first, 0, last - first, value)

    def loop(first, last, depth):
        while last - first > 16:
            if depth == 0:
                heapsort(first, last)
                return
            depth -= 1
            x, y, z = first + 1, first + (last - first) // 2, last - 1
            if less(a[x], a[y]):
                m = y if less(a[y], a[z]) else (z if less(a[x], a[z]) else x)
            else:
                m = x if less(a[x], a[z]) else (z if less(a[y], a[z]) else y)
            a[first], a[m] = a[m], a[first]
            lo, hi, pivot = first + 1, last, a[first]
            while True:
                while less(a[lo], pivot):
                    lo += 1
                hi -= 1
                while less(pivot, a[hi]):
                    hi -= 1
                if lo >= hi:
                    break
                a[lo], a[hi] = a[hi], a[lo]
                lo += 1
            loop(lo, last, depth)
            last = lo

    n = len(a)
    if n > 1:
        loop(0, n, 2 * (n.bit_length() - 1))
    return a


def killer_sequence(n):
    """Float32 keys of length ``n`` that exhaust introsort's depth budget.

    Returns ``(keys, used_heapsort)``; the sort is descending, so "less" in
    the model means "greater key".
    """
    gas = n
    val = [gas] * n
    state = {"solid": 0, "candidate": 0}

    def adversary_less(x, y):
        if val[x] == gas and val[y] == gas:
            frozen = x if x == state["candidate"] else y
            val[frozen] = state["solid"]
            state["solid"] += 1
        if val[x] == gas:
            state["candidate"] = x
        elif val[y] == gas:
            state["candidate"] = y
        return val[x] < val[y]

    _introsort(range(n), adversary_less, lambda: None)
    keys = np.array([n - v for v in val], dtype=np.float32)
    hits = []
    _introsort(range(n), lambda i, j: keys[i] > keys[j], lambda: hits.append(1))
    return keys, bool(hits)
