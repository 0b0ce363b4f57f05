"""Numba kernels: plain loops over preallocated arrays, no validation.

Everything under this package is ``@jit`` code.  Callers (``eplb_numba._api``
and ``eplb_numba.torch``) validate, convert and allocate before calling in.
"""
