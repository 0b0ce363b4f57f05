"""Build the compiled kernels that ship with the package (``eplb_numba/_compiled``).

For each Python interpreter given (default: this one), this runs
``eplb_numba.warmup()`` in a child process of that interpreter with
``NUMBA_CPU_NAME`` set to the package's portable CPU (``x86-64-v2``: code
for any x86-64 CPU since 2009, not tuned to this one) and an empty
``NUMBA_CACHE_DIR``, then writes the cache files it left and a
``MANIFEST.json`` of what they fit (Numba and Python versions, machine, CPU,
a digest of the kernel sources) to ``eplb_numba/_compiled/kernels-pyXY.zip``.
A process that matches a manifest loads those kernels instead of compiling;
anything else (another Numba, Python or architecture, or an edited kernel)
ignores them and compiles as before.

Run it after changing any file under ``eplb_numba/_kernels`` or
``eplb_numba/_jit.py``, with every interpreter the package ships for (each
with the same Numba installed)::

    python tools/ship_cache.py --python python3.10 python3.11 python3.12 python3.13

``tests/test_shipped_cache.py`` fails until you do.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import subprocess
import sys
import tempfile
import zipfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEST = os.path.join(ROOT, "eplb_numba", "_compiled")
sys.path.insert(0, ROOT)
from eplb_numba._cache import PORTABLE_CPU  # noqa: E402

_CHILD = """
import json, sys
import eplb_numba
from eplb_numba import _cache
assert eplb_numba.__file__.startswith(sys.argv[1]), eplb_numba.__file__
eplb_numba.warmup()
print(json.dumps([_cache.shipped_archive_name(), _cache.shipped_manifest()]))
"""


def build(python: str) -> str:
    """Compile every kernel with ``python`` and write its archive; returns the archive's path."""
    with tempfile.TemporaryDirectory() as cache:
        # EPLB_NUMBA_SHIPPED=0: nothing may come from an archive built before.
        env = dict(os.environ, NUMBA_CPU_NAME=PORTABLE_CPU, NUMBA_CPU_FEATURES="", NUMBA_CACHE_DIR=cache,
                   PYTHONPATH=ROOT, EPLB_NUMBA_SHIPPED="0")
        env.pop("EPLB_NUMBA_CACHE", None)
        out = subprocess.run([python, "-c", _CHILD, os.path.join(ROOT, "eplb_numba")], env=env, check=True,
                             stdout=subprocess.PIPE, text=True, cwd=tempfile.gettempdir()).stdout
        name, manifest = json.loads(out.strip().splitlines()[-1])
        files = sorted(glob.glob(os.path.join(cache, "*", "*.nb[ic]")))
        os.makedirs(DEST, exist_ok=True)
        path = os.path.join(DEST, name)
        with zipfile.ZipFile(path + ".tmp", "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
            archive.writestr("MANIFEST.json", json.dumps(manifest, indent=1, sort_keys=True) + "\n")
            for file in files:
                archive.write(file, os.path.basename(file))
        os.replace(path + ".tmp", path)
    print(f"{path}: {len(files)} cache files, {os.path.getsize(path) / 1e6:.2f} MB (Python {manifest['python']}, "
          f"Numba {manifest['numba']})")
    return path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--python", nargs="+", default=[sys.executable], help="interpreters to build for")
    args = p.parse_args(argv)
    for python in args.python:
        build(python)
    return 0


if __name__ == "__main__":
    sys.exit(main())
