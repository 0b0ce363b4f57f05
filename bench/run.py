"""Benchmark eplb-numba against the torch reference: ``python bench/run.py``.

Prints a table and writes ``bench/results/benchmarks.{json,md}``, which
``docs/benchmarks.md`` quotes.  ``--quick`` skips the scaling sweep and the
cold-start measurements.  Needs a source checkout: the torch reference is
``tests/oracle.py``.
"""

from __future__ import annotations

import argparse
import os
import sys

from harness import run


def _check_out(out, force):
    """Refuse before any work: a file as --out, a missing parent, results that --force does not allow replacing."""
    if os.path.exists(out) and not os.path.isdir(out):
        sys.exit(f"bench/run.py: error: --out {out} is a file; --out names a directory for benchmarks.json "
                 f"and benchmarks.md")
    parent = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(parent):
        sys.exit(f"bench/run.py: error: --out {out}: no such directory {parent}; create it first")
    for name in ("benchmarks.json", "benchmarks.md"):
        if os.path.exists(os.path.join(out, name)) and not force:
            sys.exit(f"bench/run.py: error: --out {out} already holds {name}; pass --force to replace it")


def main(argv=None):
    default_out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--quick", action="store_true", help="model rows only; no sweep, no cold start")
    p.add_argument("--out", default=None, help=f"directory for benchmarks.json/.md (default {default_out})")
    p.add_argument("--only", metavar="TEXT", help="only the rows whose name contains TEXT")
    p.add_argument("--force", action="store_true", help="replace results already in --out")
    p.add_argument("--docs", action="store_true", help="also put the table into docs/benchmarks.md")
    args = p.parse_args(argv)
    # The default directory holds the results the docs quote: replacing them is the point.
    out = args.out or default_out
    _check_out(out, args.force or args.out is None)
    try:
        _, text = run(out_dir=out, sweep=not args.quick, cold=not args.quick, only=args.only,
                      progress=lambda msg: print(msg, file=sys.stderr, flush=True))
    except ValueError as exc:
        sys.exit(f"bench/run.py: error: {exc}")
    print(text)
    if args.docs:
        from _docs import update

        update("cpu-results", text, "python bench/run.py --docs")


if __name__ == "__main__":
    main()
