"""The one place that holds every Numba option used by eplb-numba.

Every kernel is decorated with :func:`jit`; nothing else in the package passes
options to Numba.  ``fastmath`` stays off on purpose: placements depend on
exact float32 comparisons and ties, and reassociation would change them.
Where compiled kernels are cached, and the ones shipped with the package,
is ``_cache.py``'s business.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
import weakref
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numba
from llvmlite import ir
from numba.core import event, types
from numba.extending import intrinsic

from ._cache import attach_cache, notice

__all__ = ["JIT_OPTIONS", "compile_notice", "float32_bits", "jit", "notice", "parallel_threads", "run_by_layers"]


JIT_OPTIONS: dict[str, object] = {
    # Kernels run without the GIL so a serving loop keeps running beside them.
    "nogil": True,
    "fastmath": False,
    "boundscheck": False,
    # No ZeroDivisionError checks in the hot loops; every divisor is a replica
    # count, which is at least one.
    "error_model": "numpy",
}

@intrinsic
def float32_bits(typingctx, x):
    """The bits of float32 ``x`` as an int32 (in kernels only).

    One instruction, where ``array.view(np.int32)`` compiles a helper of its
    own (a third of a second on first use).
    """
    sig = types.int32(types.float32)

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(32))

    return sig, codegen


# Every kernel of the package, for compile_notice.
_KERNELS: weakref.WeakSet = weakref.WeakSet()


def jit(func):
    """Compile ``func`` with the package's Numba options, cached on disk."""
    dispatcher = numba.njit(**JIT_OPTIONS)(func)
    attach_cache(dispatcher)
    _KERNELS.add(dispatcher)
    return dispatcher


class _CompileListener(event.Listener):
    # Sees Numba's compile events (a cache hit raises none) and reports the
    # first of the package's, once, with the time the compiles took.
    def __init__(self, message):
        self.message = message
        self.depth = 0
        self.started = None
        self.seconds = 0.0

    def on_start(self, ev):
        if ev.data["dispatcher"] not in _KERNELS:
            return
        if self.depth == 0:
            if self.started is None and self.message:
                notice(self.message)
            self.begin = time.perf_counter()
            self.started = self.started or self.begin
        self.depth += 1

    def on_end(self, ev):
        if ev.data["dispatcher"] not in _KERNELS:
            return
        self.depth -= 1
        if self.depth == 0:
            self.seconds += time.perf_counter() - self.begin


@contextlib.contextmanager
def compile_notice(message="compiling kernels, first run only (they are cached afterwards) ..."):
    """Say on stderr when the block compiles a kernel, and how long compiling took.

    Yields the listener; its ``seconds`` is the compile time so far.
    """
    listener = _CompileListener(message)
    with event.install_listener("numba:compile", listener):
        yield listener
    if listener.started is not None and message:
        notice(f"kernels compiled in {listener.seconds:.1f} s")


def parallel_threads() -> int:
    """Threads to split layers over; 1 (the default) keeps planning on the caller's thread.

    ``EPLB_NUMBA_THREADS=N`` uses up to N threads (at most the CPU count).
    Off by default: a planner running beside a serving loop should not take
    its cores, and on the 2-core development machine it only pays at large
    sizes (see ``docs/benchmarks.md``).
    """
    try:
        wanted = int(os.environ.get("EPLB_NUMBA_THREADS", "1"))
    except ValueError:
        return 1
    return max(1, min(wanted, _CPUS))


# Read once: os.cpu_count() takes several microseconds, a tenth of a migration plan.
_CPUS = os.cpu_count() or 1
_POOL: list[ThreadPoolExecutor] = []
_POOL_LOCK = threading.Lock()


def _pool(workers: int) -> ThreadPoolExecutor:
    with _POOL_LOCK:
        if not _POOL or _POOL[0]._max_workers < workers:
            if _POOL:
                _POOL.pop().shutdown(wait=False)
            _POOL.append(ThreadPoolExecutor(max_workers=workers, thread_name_prefix="eplb-numba"))
        return _POOL[0]


def run_by_layers(kernel: Callable[..., object], num_layers: int, *args: object) -> None:
    """``kernel(*args, lo, hi)`` over all layers, split into blocks over ``parallel_threads()``.

    Kernels release the GIL, so plain Python threads run the blocks in
    parallel; Numba's own threading layers (and their compile time, and
    their limits on concurrent callers) are not involved.  The caller's
    thread runs the first block.
    """
    threads = min(parallel_threads(), num_layers)
    if threads <= 1:
        if num_layers:
            kernel(*args, 0, num_layers)
        return
    cuts = [b * num_layers // threads for b in range(threads + 1)]
    pool = _pool(threads - 1)
    futures = [pool.submit(kernel, *args, cuts[b], cuts[b + 1]) for b in range(1, threads)]
    try:
        kernel(*args, cuts[0], cuts[1])
    finally:
        for f in futures:
            f.result()
