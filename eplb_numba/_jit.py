"""The one place that holds every Numba option used by eplb-numba.

Every kernel is decorated with :func:`jit`; nothing else in the package passes
options to Numba.  ``fastmath`` stays off on purpose: placements depend on
exact float32 comparisons and ties, and reassociation would change them.
"""

from __future__ import annotations

import os

import numba
import numpy as np

__all__ = ["JIT_OPTIONS", "jit", "parallel_threads", "run_by_layers", "unsigned"]


def _cache_enabled() -> bool:
    # Caching compiled kernels on disk makes the first call of a new process
    # cheap.  EPLB_NUMBA_CACHE=0 turns it off (read-only installs, debugging).
    return os.environ.get("EPLB_NUMBA_CACHE", "1").strip().lower() not in {"0", "false", "no", "off"}


JIT_OPTIONS: dict[str, object] = {
    "nopython": True,
    # Kernels run without the GIL so a serving loop keeps running beside them.
    "nogil": True,
    "cache": _cache_enabled(),
    "fastmath": False,
    "boundscheck": False,
    # No ZeroDivisionError checks in the hot loops; every divisor is a replica
    # count, which is at least one.
    "error_model": "numpy",
}


# Numba adds a negative-index fix-up (shift, and, add) to every signed
# subscript, which also keeps loops from loading contiguous vectors.
# Kernels cast subscripts they know to be non-negative with this; only the
# subscript itself, since uint64 mixed with int64 arithmetic gives float64.
unsigned = np.uint64


def parallel_threads() -> int:
    """Threads to split layers over; 1 (the default) keeps planning on the caller's thread.

    ``EPLB_NUMBA_THREADS=N`` uses up to N of Numba's threads.  Off by default:
    a planner running beside a serving loop should not take its cores, and
    on the 2-core development machine it only pays at large sizes (see
    ``docs/benchmarks.md``).  Numba's threads need a thread-safe threading
    layer (OpenMP or TBB) for calls from several Python threads at once.
    """
    try:
        wanted = int(os.environ.get("EPLB_NUMBA_THREADS", "1"))
    except ValueError:
        return 1
    return max(1, min(wanted, numba.config.NUMBA_NUM_THREADS))


def run_by_layers(serial, parallel, num_layers, *args):
    """Run a layer kernel: ``parallel(*args, blocks)`` over threads, else ``serial(*args)``.

    Every layer kernel comes as such a pair; nothing runs for zero layers.
    """
    threads = min(parallel_threads(), num_layers)
    if threads > 1:
        parallel(*args, threads)
    elif num_layers:
        serial(*args)


def jit(func=None, **overrides):
    """Compile ``func`` with the package's Numba options.

    Usable bare (``@jit``) or with per-kernel overrides.  The one override in
    use is ``inline="always"`` on helpers called once per row: Numba then
    inlines them at its IR level, saving the call (a dozen array structs
    passed and reference-counted) that LLVM does not remove; measured about
    15% of a DeepSeek-V3 plan.
    """
    options = {**JIT_OPTIONS, **overrides}

    def decorate(f):
        return numba.jit(**options)(f)

    if func is None:
        return decorate
    return decorate(func)
