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
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ab import ROOT, _case, alternate, report  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--what", choices=["full", "movement", "migration"], default="full")
    p.add_argument("--row", default="DeepSeek-V3 EP32")
    p.add_argument("--rounds", type=int, default=21)
    p.add_argument("--runs", type=int, default=40)
    p.add_argument("--inputs", type=int, default=1, help="cycle through this many load matrices (see bench/ab.py)")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as dest:
        for name, ignore in (("eplb_native", ("_compiled",)), ("eplb_shipped", ())):
            shutil.copytree(os.path.join(ROOT, "eplb_numba"), os.path.join(dest, name),
                            ignore=shutil.ignore_patterns("*.nbi", "*.nbc", "__pycache__", *ignore))
        sys.path.insert(0, dest)
        fns = [_case(name, args.what, args.row, args.inputs) for name in ("eplb_native", "eplb_shipped")]
        if sys.modules["eplb_shipped._cache"].shipped_archive() is None:
            sys.exit("the shipped kernels do not fit this machine: nothing to compare")
        medians = alternate(fns, args.rounds, args.runs)  # the first calls compile A and load B
    report(("A compiled here", "B shipped"), medians,
           f"{args.what}, {args.row}, {args.rounds} rounds of {args.runs}, {args.inputs} input(s)")

if __name__ == "__main__":
    main()
