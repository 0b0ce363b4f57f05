"""Benchmark eplb-numba against the torch reference: ``python bench/run.py``.

Prints a table and writes ``bench/results/benchmarks.{json,md}``, which
``docs/benchmarks.md`` quotes.  ``--quick`` skips the scaling sweep and the
cold-start measurements.
"""

from __future__ import annotations

import argparse
import os
import sys

from eplb_numba._bench import run


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--quick", action="store_true", help="model rows only; no sweep, no cold start")
    p.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results"))
    p.add_argument("--docs", action="store_true", help="also put the table into docs/benchmarks.md")
    args = p.parse_args(argv)
    _, text = run(out_dir=args.out, sweep=not args.quick, cold=not args.quick,
                  progress=lambda msg: print(msg, file=sys.stderr, flush=True))
    print(text)
    if args.docs:
        from _docs import update

        update("cpu-results", text, "python bench/run.py --docs")


if __name__ == "__main__":
    main()
