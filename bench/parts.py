"""Where a warm movement-aware plan spends its time: ``python bench/parts.py``.

Times, in one process, on DeepSeek-V3 EP32 loads after a 2% drift (the
movement row of ``bench/run.py``), cycling through several load matrices:

- ``plan``: the reference plan (``rebalance_experts``), maps included;
- ``reference inside movement``: the reference placement the movement-aware
  plan starts from (its bound, counts and split; no maps);
- ``movement, no swaps``: the movement-aware plan with a slack so large that
  no swap runs (keeping, dropping, filling, slot order, maps);
- ``movement``: the same at slack 0 (as users run it);
- ``migration``: ``plan_migration`` of the old placement to the new.

The differences between rows say what each stage costs; run it beside
``bench/ab.py`` to see which stage a change moved.  Medians of per-round
medians, in microseconds; the machine is noisy, so compare rows of one run.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
from harness import drift

import eplb_numba
from eplb_numba import _engine
from eplb_numba._validate import check_layout
from eplb_numba.cli.workload import deepseek_v3_loads


def _median_us(fn, cases, rounds, runs):
    fn(cases[0])
    medians = []
    for _ in range(rounds):
        times = []
        for i in range(runs):
            case = cases[i % len(cases)]
            start = time.perf_counter()
            fn(case)
            times.append(time.perf_counter() - start)
        medians.append(statistics.median(times))
    return statistics.median(medians) * 1e6


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--inputs", type=int, default=8, help="load matrices to cycle through (default 8)")
    p.add_argument("--rounds", type=int, default=9)
    p.add_argument("--runs", type=int, default=30, help="calls per round")
    args = p.parse_args(argv)
    if args.inputs < 1 or args.rounds < 1 or args.runs < 1:
        p.error("--inputs, --rounds and --runs must be at least 1")
    cfg = (288, 8, 4, 32)
    layout = check_layout((58, 256), *cfg)
    rng = np.random.default_rng(7)
    cases = []
    for k in range(args.inputs):
        base = deepseek_v3_loads(58, 256, seed=1 + k)
        drifted = drift(base, rng)
        old = eplb_numba.rebalance_experts(base, *cfg)[0]
        new = eplb_numba.rebalance_experts(drifted, *cfg, old_phy2log=old)[0]
        cases.append((old, drifted, drifted.astype(np.float32), new))
    rows = {
        "plan": lambda c: eplb_numba.rebalance_experts(c[1], *cfg),
        "reference inside movement": lambda c: _engine.ref_plan(c[2], layout),
        "movement, no swaps": lambda c: eplb_numba.rebalance_experts(c[1], *cfg, old_phy2log=c[0],
                                                                     max_load_slack=1.0),
        "movement": lambda c: eplb_numba.rebalance_experts(c[1], *cfg, old_phy2log=c[0]),
        "migration": lambda c: eplb_numba.plan_migration(c[0], c[3], 32, 4),
    }
    print(f"DeepSeek-V3 EP32, 2% drift, {args.inputs} input(s), median of {args.rounds} rounds of {args.runs}")
    for name, fn in rows.items():
        print(f"{name:>26}: {_median_us(fn, cases, args.rounds, args.runs):8,.0f} us")


if __name__ == "__main__":
    main()
