"""Shipped kernels against kernels compiled on this machine, A/B in one process.

``python bench/shipped_ab.py`` imports the working tree twice: A without
``_compiled/`` (its kernels compile for this CPU, as Numba does by default)
and B as shipped (its kernels load from ``_compiled/``, x86-64-v2 code), then
alternates rounds of the same call between them and prints the minimum and
lower quartile of the per-round medians and their ratio, B over A.
``--what`` as in ``bench/ab.py``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ab import ROOT, _case  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--what", choices=["full", "movement", "migration"], default="full")
    p.add_argument("--row", default="DeepSeek-V3 EP32")
    p.add_argument("--rounds", type=int, default=21)
    p.add_argument("--runs", type=int, default=40)
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as dest:
        for name, ignore in (("eplb_native", ("_compiled",)), ("eplb_shipped", ())):
            shutil.copytree(os.path.join(ROOT, "eplb_numba"), os.path.join(dest, name),
                            ignore=shutil.ignore_patterns("*.nbi", "*.nbc", "__pycache__", *ignore))
        sys.path.insert(0, dest)
        fns = [_case(name, args.what, args.row) for name in ("eplb_native", "eplb_shipped")]
        shipped = sys.modules["eplb_shipped._cache"].shipped_archive()
        if shipped is None:
            sys.exit("the shipped kernels do not fit this machine: nothing to compare")
        results = [fn() for fn in fns]  # compile A, load B
        medians = [[], []]
        for rnd in range(args.rounds):
            for i in (0, 1) if rnd % 2 == 0 else (1, 0):
                times = []
                for _ in range(args.runs):
                    start = time.perf_counter()
                    fns[i]()
                    times.append(time.perf_counter() - start)
                medians[i].append(statistics.median(times) * 1e6)
    del results
    lows = [min(m) for m in medians]
    quartiles = [sorted(m)[len(m) // 4] for m in medians]
    for label, low, q in zip(("A compiled here", "B shipped"), lows, quartiles):
        print(f"{label}: min of medians {low:,.0f} us, lower quartile {q:,.0f} us")
    print(f"B / A: {lows[1] / lows[0]:.3f} (min), {quartiles[1] / quartiles[0]:.3f} (quartile)  "
          f"[{args.what}, {args.row}, {args.rounds} rounds of {args.runs}]")


if __name__ == "__main__":
    main()
