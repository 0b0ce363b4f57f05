"""Numba kernels: plain loops over preallocated arrays, no validation.

Everything in this package is ``@jit`` code (the options live in
``eplb_numba._jit``).  ``eplb_numba._engine`` allocates and calls in, on
inputs the public functions have checked (``eplb_numba._validate``).

What lives where
----------------
``sort.py``
    torch's descending sort, ties included; the packed sort keys; a heap.
``packing.py``
    greedy packing of a row's items into equal packs (the plan's steps 1, 3).
``replication.py``
    extra replicas to the busiest experts (step 2).
``hierarchical.py``
    the reference's whole plan per layer (groups to nodes, replication,
    replicas to GPUs); the global policy is its one-group, one-node case.
``maps.py``
    ``log2phy`` and ``logcnt`` of any placement, replica ranks in slot order.
``slots.py``
    experts that stay on a GPU keep their old slot.
``movement.py``
    movement-aware plans over layers: the bound, the node split, the fallback.
``repack.py``
    one layer of those: keep what stays, fill freed slots, swap to the bound.
``budget.py``
    a copy budget spent as swaps of two experts between GPUs of a node.
``quality.py``
    quality mode: the reference's plan improved by local search per layer;
    ``quality_moves.py`` searches its moves, ``recount.py`` recounts a
    node's hottest experts and repacks the node.
``assign.py``
    optimal assignment (relabelling nodes and GPUs onto the old ones).
``migration.py``
    the copies that take one placement to another.

Conventions, stated here once
-----------------------------
Packed keys
    A (float32 value, index) pair travels as one int64: the value's
    order-preserving bits above, the index in the low 32 bits
    (``sort.pack_key``, ``sort.key_index``).  One integer comparison then
    orders by value; ``a > (b | LOW)`` compares values alone.
Unsigned subscripts
    Numba adds a negative-index fix-up to every signed subscript.  Hot loops
    that index by ids known to be non-negative view the id array as uint64
    once (one typed local), never cast at each subscript.
Output sentinels
    An optional output is skipped by passing an array with zero layers
    (``_engine.SKIP_*``); kernels test ``x.shape[0]``.
Integer constants
    A constant passed to another kernel, or a variable that starts as one
    (``top = 0``), is typed as that literal value, and Numba compiles the
    callee a second time for it (2.7 s of ``warmup`` before this rule).
    Such values go through ``np.int64(...)`` once, where they are made.
Named codes
    Codes a kernel writes for Python to read are module constants
    (``movement.OLD_SPLIT`` ...), imported by name on both sides.
Ranges of layers
    Kernels that take ``lo, hi`` plan layers ``lo:hi``, so that
    ``eplb_numba._jit.run_by_layers`` can split layers over threads.
"""
