"""The one place that holds every Numba option used by eplb-numba.

Every kernel is decorated with :func:`jit`; nothing else in the package passes
options to Numba.  ``fastmath`` stays off on purpose: placements depend on
exact float32 comparisons and ties, and reassociation would change them.

Compiled kernels are cached on disk, and no state of that cache can break a
call: an unreadable cache file is dropped and the kernel recompiled, and
where no cache directory is writable the cache moves to a private temporary
directory, or to memory.  Each case says so once, in one line on stderr.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import threading
import time
import weakref
from concurrent.futures import ThreadPoolExecutor

import numba
from llvmlite import ir
from numba.core import event, types
from numba.core.caching import CompileResultCacheImpl, FunctionCache, UserProvidedCacheLocator
from numba.extending import intrinsic

__all__ = ["JIT_OPTIONS", "compile_notice", "float32_bits", "jit", "notice", "parallel_threads", "run_by_layers"]


def _cache_enabled() -> bool:
    # Caching compiled kernels on disk makes the first call of a new process
    # cheap.  EPLB_NUMBA_CACHE=0 turns it off (debugging).
    return os.environ.get("EPLB_NUMBA_CACHE", "1").strip().lower() not in {"0", "false", "no", "off"}


JIT_OPTIONS: dict[str, object] = {
    # Kernels run without the GIL so a serving loop keeps running beside them.
    "nogil": True,
    "fastmath": False,
    "boundscheck": False,
    # No ZeroDivisionError checks in the hot loops; every divisor is a replica
    # count, which is at least one.
    "error_model": "numpy",
}

_NOTICED: set[str] = set()


def notice(message: str, *, key: str | None = None) -> None:
    """Write one line to stderr, once per process for each ``key``."""
    if key is not None:
        if key in _NOTICED:
            return
        _NOTICED.add(key)
    try:
        sys.stderr.write(f"eplb-numba: {message}\n")
        sys.stderr.flush()
    except (OSError, ValueError):  # a closed or broken stderr
        pass


class _SafeCache(FunctionCache):
    """Numba's on-disk cache, which treats any file it cannot read as missing."""

    def load_overload(self, sig, target_context):
        try:
            return super().load_overload(sig, target_context)
        except Exception as exc:  # truncated, overwritten, foreign: all the same here
            index = self._cache_file._index_path
            notice(f"warning: ignoring a damaged compile cache file in {self._cache_path} "
                   f"({type(exc).__name__}); recompiling", key="damaged")
            with contextlib.suppress(OSError):
                os.unlink(index)
            return None

    def save_overload(self, sig, data):
        try:
            super().save_overload(sig, data)
        except Exception as exc:
            notice(f"warning: cannot write the compile cache in {self._cache_path} ({exc}); "
                   f"kernels stay compiled in memory only", key="unsaved")


def _fallback_dir() -> str:
    uid = os.getuid() if hasattr(os, "getuid") else "user"
    return os.path.join(tempfile.gettempdir(), f"eplb-numba-cache-{uid}")


class _FallbackLocator(UserProvidedCacheLocator):
    # Numba's own locators, next to the package, in NUMBA_CACHE_DIR or the
    # user's cache directory, all failed: a private temporary directory.
    def __init__(self, py_func, py_file):
        super().__init__(py_func, py_file)
        self._cache_path = os.path.join(_fallback_dir(), self.get_suitable_cache_subpath(py_file))

    def ensure_cache_path(self):
        os.makedirs(self.get_cache_path(), mode=0o700, exist_ok=True)
        super().ensure_cache_path()

    @classmethod
    def from_function(cls, py_func, py_file):
        self = cls(py_func, py_file)
        try:
            self.ensure_cache_path()
        except OSError:
            return None
        return self


class _FallbackImpl(CompileResultCacheImpl):
    _locator_classes = [_FallbackLocator]


class _FallbackCache(_SafeCache):
    _impl_class = _FallbackImpl


def _attach_cache(dispatcher) -> None:
    if not _cache_enabled():
        return
    for cls in (_SafeCache, _FallbackCache):
        try:
            cache = cls(dispatcher.py_func)
        except (RuntimeError, OSError):
            continue
        if cls is _FallbackCache:
            notice(f"warning: no writable compile cache directory next to the package, in "
                   f"NUMBA_CACHE_DIR or in the user's cache; caching in {_fallback_dir()}", key="fallback")
        dispatcher._cache = cache
        return
    notice("warning: no writable directory for the compile cache; kernels are compiled in memory "
           "in every process (set NUMBA_CACHE_DIR to a writable directory)", key="nocache")


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
    _attach_cache(dispatcher)
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


def run_by_layers(kernel, num_layers: int, *args) -> None:
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
