"""Optimal assignment (Hungarian algorithm), for relabelling bins to GPUs."""

from __future__ import annotations

import numpy as np

from .._jit import jit


@jit
def max_assignment(score, assign):
    """``assign[i] = j`` maximising ``sum(score[i, assign[i]])`` over permutations.

    ``score`` is a square float64 matrix.  Shortest augmenting paths with
    potentials (Jonker-Volgenant style), O(n^3).
    """
    n = score.shape[0]
    inf = np.inf
    u = np.zeros(n + 1)
    v = np.zeros(n + 1)
    match = np.zeros(n + 1, dtype=np.int64)  # match[j] = row (1-based) given column j
    way = np.zeros(n + 1, dtype=np.int64)
    minv = np.empty(n + 1)
    used = np.empty(n + 1, dtype=np.bool_)
    for i in range(1, n + 1):
        match[0] = i
        j0 = 0
        for j in range(n + 1):
            minv[j] = inf
            used[j] = False
        while True:
            used[j0] = True
            i0 = match[j0]
            delta = inf
            j1 = 0
            for j in range(1, n + 1):
                if not used[j]:
                    cur = -score[i0 - 1, j - 1] - u[i0] - v[j]
                    if cur < minv[j]:
                        minv[j] = cur
                        way[j] = j0
                    if minv[j] < delta:
                        delta = minv[j]
                        j1 = j
            for j in range(n + 1):
                if used[j]:
                    u[match[j]] += delta
                    v[j] -= delta
                else:
                    minv[j] -= delta
            j0 = j1
            if match[j0] == 0:
                break
        while True:
            j1 = way[j0]
            match[j0] = match[j1]
            j0 = j1
            if j0 == 0:
                break
    for j in range(1, n + 1):
        assign[match[j] - 1] = j - 1
