"""Where compiled kernels are kept, so that no process compiles twice and no cache state breaks a call.

A kernel is looked up, in order:

1. in Numba's own on-disk cache (next to the package, in ``NUMBA_CACHE_DIR``
   or in the user's cache directory);
2. among the kernels shipped with the package (``_compiled/``), where they
   fit this machine;
3. otherwise it is compiled, and saved in the first cache.

No state of the cache can break a call: an unreadable cache file is dropped
and the kernel recompiled, and where no cache directory is writable the
cache moves to a private temporary directory, or to memory.  Each case says
so once, in one line on stderr.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import json
import os
import pickle
import platform
import sys
import tempfile
import zipfile

import numba
from llvmlite.binding import get_host_cpu_features
from numba.core.caching import CompileResultCacheImpl, FunctionCache, IndexDataCacheFile, UserProvidedCacheLocator

__all__ = ["PORTABLE_CPU", "SHIPPED_DIR", "attach_cache", "kernel_sources_digest", "notice", "shipped_archive",
           "shipped_archive_name", "shipped_manifest"]

_HERE = os.path.dirname(os.path.abspath(__file__))

# The kernels shipped with the package (``tools/ship_cache.py`` builds them):
# Numba's cache files of code for x86-64-v2, the baseline of x86-64 CPUs
# since 2009, one archive per Python version.  In one process that code
# planned at 0.99x of code tuned to the development machine's CPU, where
# plain "generic" x86-64 took 1.16x (bench/shipped_ab.py, 2-core development machine).
SHIPPED_DIR = os.path.join(_HERE, "_compiled")
PORTABLE_CPU = "x86-64-v2"
_PORTABLE_FEATURES = ("cx16", "popcnt", "sahf", "sse3", "sse4.1", "sse4.2", "ssse3")

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


def _env_on(name: str) -> bool:
    return os.environ.get(name, "1").strip().lower() not in {"0", "false", "no", "off"}


@functools.cache
def kernel_sources_digest() -> str:
    """SHA-256 of every source file whose code the compiled kernels hold.

    Numba checks only a kernel's own file, so a callee or a constant from
    another file could go stale unnoticed.  The digest is part of every
    cache key (``_SafeCache._index_key``), on disk and shipped: a kernel is
    served only while every one of these files is the one it was built from.
    Read once per process.
    """
    kernels = os.path.join(_HERE, "_kernels")
    paths = [os.path.join(_HERE, "_jit.py")]
    paths += sorted(os.path.join(kernels, f) for f in os.listdir(kernels) if f.endswith(".py"))
    digest = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as f:
            digest.update(os.path.basename(path).encode() + b"\0" + f.read() + b"\0")
    return digest.hexdigest()


def shipped_manifest() -> dict[str, str]:
    """What shipped kernels must have been built for: Numba, Python, machine, CPU, sources."""
    return {"numba": numba.__version__, "python": f"{sys.version_info[0]}.{sys.version_info[1]}",
            "machine": platform.machine(), "cpu": PORTABLE_CPU, "sources": kernel_sources_digest()}


def shipped_archive_name() -> str:
    """The shipped archive for this Python, as ``kernels-py311.zip``."""
    return f"kernels-py{sys.version_info[0]}{sys.version_info[1]}.zip"


@functools.cache
def shipped_archive() -> zipfile.ZipFile | None:
    """The open archive of shipped kernels, or None where they do not fit this process."""
    if not _env_on("EPLB_NUMBA_SHIPPED"):
        return None  # EPLB_NUMBA_SHIPPED=0: compile on this machine, as without them
    if getattr(numba.config, "CPU_NAME", None) not in (None, PORTABLE_CPU):
        return None  # the user asked Numba for code for some other CPU
    try:
        archive = zipfile.ZipFile(os.path.join(SHIPPED_DIR, shipped_archive_name()))
        built = json.loads(archive.read("MANIFEST.json"))
        host = get_host_cpu_features()
        if built == shipped_manifest() and all(host.get(f, False) for f in _PORTABLE_FEATURES):
            return archive
        archive.close()
    except (OSError, KeyError, ValueError, RuntimeError, zipfile.BadZipFile):
        pass  # none for this Python, or unreadable: compile
    return None


class _ShippedIndex(IndexDataCacheFile):
    # Numba's index and data files, read from the archive instead of a folder.
    def __init__(self, archive, filename_base, source_stamp):
        super().__init__(SHIPPED_DIR, filename_base, source_stamp)
        self._archive = archive

    def _load_index(self):
        try:
            stream = io.BytesIO(self._archive.read(self._index_name))
        except KeyError:
            return {}
        if pickle.load(stream) != self._version:
            return {}
        stamp, overloads = pickle.loads(stream.read())
        return overloads if stamp == self._source_stamp else {}

    def _load_data(self, name):
        try:
            return pickle.loads(self._archive.read(name))
        except KeyError as exc:
            raise OSError(name) from exc  # a miss to Numba's load()


class _SafeCache(FunctionCache):
    """Numba's on-disk cache, which treats any file it cannot read as missing.

    A kernel that is not in it is looked up among the shipped kernels before
    it is compiled.
    """

    def _index_key(self, sig, codegen):
        # Numba's key hashes the kernel's own bytecode only; a kernel that
        # calls an edited kernel in another file would load stale code.
        key = super()._index_key(sig, codegen)
        return (key[0], key[1], (*key[2], kernel_sources_digest()))

    def load_overload(self, sig, target_context):
        try:
            data = super().load_overload(sig, target_context)
        except Exception as exc:  # truncated, overwritten, foreign: all the same here
            index = self._cache_file._index_path
            notice(f"warning: ignoring a damaged compile cache file in {self._cache_path} "
                   f"({type(exc).__name__}); recompiling", key="damaged")
            with contextlib.suppress(OSError):
                os.unlink(index)
            data = None
        if data is None and self._enabled:
            archive = shipped_archive()
            if archive is not None:
                data = self._load_shipped(archive, sig, target_context)
        return data

    def _load_shipped(self, archive, sig, target_context):
        # The index key of Numba's own cache, but for the portable CPU: its
        # code runs on any CPU that has the x86-64-v2 features.
        key = self._index_key(sig, target_context.codegen())
        key = (key[0], (key[1][0], PORTABLE_CPU, ""), key[2])
        shipped = _ShippedIndex(archive, self._impl.filename_base, self._impl.locator.get_source_stamp())
        try:
            data = shipped.load(key)
            return None if data is None else self._impl.rebuild(target_context, data)
        except Exception as exc:  # never let a shipped file stop a call: compile instead
            notice(f"warning: ignoring a damaged shipped kernel in {SHIPPED_DIR} ({type(exc).__name__}); "
                   f"compiling", key="shipped")
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
    _impl_class = _FallbackImpl  # type: ignore[assignment]  # numba's stub types the base's as None


def attach_cache(dispatcher) -> None:
    """Give a kernel's dispatcher the package's cache (none with ``EPLB_NUMBA_CACHE=0``)."""
    # Caching compiled kernels on disk makes the first call of a new process
    # cheap; EPLB_NUMBA_CACHE=0 turns it off (debugging).
    if not _env_on("EPLB_NUMBA_CACHE"):
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
