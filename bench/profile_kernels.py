"""Where warm time goes, kernel by kernel: run under ``perf record``, read with ``perf report``.

``perf`` cannot name Numba's compiled code: it lives in anonymous memory.
This script compiles (or loads) the kernels, writes ``/tmp/perf-<pid>.map``
(the file ``perf report`` reads for JIT code: start, size and name of every
compiled function, callees included), then runs one workload in a loop::

    perf record -D 40000 -o perf.data python bench/profile_kernels.py --what movement --seconds 20
    perf report -i perf.data --sort symbol

``--what``: ``plan`` (the reference), ``movement`` (movement-aware plan and
migration after a 2% drift, the ``bench/ab.py`` row), or ``quality``.
DeepSeek-V3 EP32 loads.  ``NRT_incref``/``NRT_decref`` in the report are
array reference counts: arrays handed to a kernel that is not inlined.

Kernels loaded from a cache keep no object code to read sizes from, so the
script compiles them afresh, in a temporary cache, without the shipped
kernels (20 s to 30 s before the loop starts; ``-D`` above skips it, or
read only the kernels' rows).

Measured this way (movement, 2-core VM), the kernels' time splits as: the
reference inside the plan (``argsort_desc``, ``replicate_row``,
``greedy_rows_f32``, ``place_layers``) about half; ``movement_layer`` and
``_best_swap`` a fifth; reference counts (``NRT_*``) a tenth; and libc's
``memset``, which the loops clearing ``log2phy`` compile to, an eighth
more.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import tempfile
import time

# Before Numba is imported (harness imports eplb_numba).
os.environ["NUMBA_CACHE_DIR"] = tempfile.mkdtemp(prefix="eplb-profile-")
os.environ["EPLB_NUMBA_SHIPPED"] = "0"

import numpy as np  # noqa: E402
from harness import drift  # noqa: E402

import eplb_numba  # noqa: E402
from eplb_numba import _jit  # noqa: E402
from eplb_numba.cli.workload import deepseek_v3_loads  # noqa: E402


def _workload(what):
    w0 = deepseek_v3_loads(58, 256, seed=1)
    cfg = (288, 8, 4, 32)
    if what == "plan":
        return lambda: eplb_numba.rebalance_experts(w0, *cfg)
    if what == "quality":
        return lambda: eplb_numba.rebalance_experts(w0, *cfg, quality=True)
    w = drift(w0, np.random.default_rng(7))
    old = eplb_numba.rebalance_experts(w0, *cfg)[0]
    return lambda: eplb_numba.plan_migration(old, eplb_numba.rebalance_experts(w, *cfg, old_phy2log=old)[0], 32, 4)


def _symbols():
    """``(address, size, name)`` of every compiled function of the package's kernels."""
    rows = set()
    with tempfile.TemporaryDirectory() as tmp:
        obj_path = os.path.join(tmp, "kernel.o")
        for dispatcher in list(_jit._KERNELS):
            for cres in dispatcher.overloads.values():
                library = cres.library
                # The module as the JIT compiled it; nm gives each function's size.
                with open(obj_path, "wb") as f:
                    f.write(library._codegen._tm.emit_object(library._final_module))
                listing = subprocess.run(["nm", "-S", obj_path], capture_output=True, text=True).stdout
                for line in listing.splitlines():
                    parts = line.split()
                    if len(parts) != 4 or parts[2] not in "TtWw":
                        continue
                    try:
                        address = library.get_pointer_to_function(parts[3])
                    except Exception:  # not resolvable in this library
                        continue
                    if address:
                        rows.add((address, int(parts[1], 16), _short(parts[3])))
    return sorted(rows)


def _short(mangled):
    # "_ZN10eplb_numba8_kernels6repack10count_heldB3v36..." -> "repack.count_held"
    body = mangled.split("B3v")[0].removeprefix("_ZN").removeprefix("7cpython")
    names = []
    while body and body[0].isdigit():
        digits = len(body) - len(body.lstrip("0123456789"))
        n = int(body[:digits])
        names.append(body[digits:digits + n])
        body = body[digits + n:]
    return ".".join(names[-2:]) if names else mangled[:60]


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--what", choices=("plan", "movement", "quality"), default="movement")
    p.add_argument("--seconds", type=float, default=8.0)
    args = p.parse_args()
    run = _workload(args.what)
    run()  # compile or load every kernel it uses
    symbols = _symbols()
    path = f"/tmp/perf-{os.getpid()}.map"
    with open(path, "w") as f:
        for address, size, name in symbols:
            f.write(f"{address:x} {size:x} {name}\n")
    print(f"{len(symbols)} compiled functions named in {path}; running {args.what} for {args.seconds:g} s")
    end = time.perf_counter() + args.seconds
    calls = 0
    while time.perf_counter() < end:
        run()
        calls += 1
    print(f"{calls} calls")


if __name__ == "__main__":
    main()
