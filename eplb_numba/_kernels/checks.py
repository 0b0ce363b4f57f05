"""Single-pass checks of input arrays, for the validating wrappers."""

from __future__ import annotations

import numpy as np

from .._jit import jit


@jit
def first_invalid(w):
    """Flat index of the first NaN, infinite or negative entry of 2-D ``w``, or -1."""
    rows, cols = w.shape
    # A branch-free pass first (it vectorises); NaN fails both comparisons.
    ok = True
    for r in range(rows):
        for c in range(cols):
            x = w[r, c]
            ok &= (x >= 0) & (x < np.inf)
    if ok:
        return -1
    for r in range(rows):
        for c in range(cols):
            x = w[r, c]
            if not (x >= 0 and x < np.inf):
                return r * cols + c
    return -1


@jit
def id_span(a):
    """``(min, max)`` of 2-D int64 ``a`` in one pass; ``(0, -1)`` when it is empty."""
    rows, cols = a.shape
    if rows * cols == 0:
        return 0, -1
    lo = a[0, 0]
    hi = lo
    for r in range(rows):
        for c in range(cols):
            x = a[r, c]
            lo = min(lo, x)
            hi = max(hi, x)
    return lo, hi


@jit
def to_float32(w, out):
    """``out[...] = float32(w)`` for 2-D ``w``; then ``first_invalid(out)``.

    For the usual input, integer token counts: numpy's int64 to float32
    cast alone took longer than this kernel.  The conversion rounds as
    numpy's does (to nearest), and the check sees the converted loads, so a
    float64 load beyond float32's range counts as infinite.
    """
    rows, cols = w.shape
    for r in range(rows):
        for c in range(cols):
            out[r, c] = np.float32(w[r, c])
    return first_invalid(out)
