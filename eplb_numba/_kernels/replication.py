"""Replication (step 2 of the plan): extra replicas to the busiest experts.

Each extra replica goes to the expert with the largest load per replica,
the lowest expert index on equal ratio (the reference's ``max().indices``),
the count cast to the load's dtype before dividing, as the reference does.
"""

from __future__ import annotations

import numpy as np

from .._jit import jit
from .sort import sift_down

# Up to this many extra replicas a scan of the candidates per pick is
# cheaper than a heap.
_SCAN_EXTRAS = 32


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
        sift_down(heap, num_log, ratio, pos)
    top = np.int64(0)
    for i in range(num_log, num_phy):
        e = heap[0]
        phy2log[i] = e
        rank[i] = logcnt[e]
        logcnt[e] += 1
        cntf[e] += 1
        ratio[e] = -(weights[e] / cntf[e])
        sift_down(heap, num_log, ratio, top)


@jit
def replicate_rows(weights, num_phy, phy2log, rank, logcnt):
    """``replicate_row`` over every row of 2-D ``weights``."""
    rows, num_log = weights.shape
    cntf = np.empty(num_log, dtype=weights.dtype)
    ratio = np.empty(num_log, dtype=weights.dtype)
    heap = np.empty(num_log, dtype=np.int64)
    for r in range(rows):
        replicate_row(weights[r], num_phy, phy2log[r], rank[r], logcnt[r], cntf, ratio, heap)
