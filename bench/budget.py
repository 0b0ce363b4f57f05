"""A copy budget on the built-in drifting trace: imbalance gained per copy.

``python bench/budget.py`` replays ``eplb-numba simulate``'s built-in trace
(DeepSeek-V3 EP32, hierarchical; rebalance every 100 steps from the last
200).  At each rebalance it compares, on the steps that follow: the placement
in service left as it is, the reference's plan from scratch, and the
movement-aware plan limited to a share of the from-scratch plan's copies.
It prints, per budget, the copies spent and the share of the from-scratch
plan's imbalance reduction reached (mean over rebalances).
"""

from __future__ import annotations

import numpy as np

import eplb_numba
from eplb_numba._metrics import gpu_loads, imbalance_ratio
from eplb_numba.cli.workload import drifting_trace

CFG = (288, 8, 4, 32)
SHARES = (0.005, 0.01, 0.02, 0.05, 0.1, 1.0)


def run(every=100, window=200):
    trace = drifting_trace()
    points = list(range(window, trace.shape[0] - every + 1, every))
    state = eplb_numba.rebalance_experts(trace[points[0] - window:points[0]].sum(axis=0), *CFG)[0]
    rows = {share: [] for share in SHARES}
    for t in points[1:]:
        w = trace[t - window:t].sum(axis=0)
        ahead = trace[t:t + every]

        def score(p, ahead=ahead):
            return float(imbalance_ratio(gpu_loads(ahead, p, CFG[3])).mean())

        scratch = eplb_numba.rebalance_experts(w, *CFG)[0]
        scratch_copies = len(eplb_numba.plan_migration(state, scratch, CFG[3], CFG[2]).expert)
        reduction = score(state) - score(scratch)
        for share in SHARES:
            budget = int(share * scratch_copies)
            plan = eplb_numba.rebalance_experts(w, *CFG, old_phy2log=state, max_copies=budget)[0]
            spent = len(eplb_numba.plan_migration(state, plan, CFG[3], CFG[2]).expert)
            rows[share].append((spent, scratch_copies, (score(state) - score(plan)) / reduction))
        # The placement in service moves on as the movement-aware plan without a budget would.
        state = eplb_numba.rebalance_experts(w, *CFG, old_phy2log=state)[0]
    return rows


def main():
    rows = run()
    print("| budget (share of from-scratch copies) | copies spent | from-scratch copies | "
          "share of its imbalance reduction |")
    print("| ---: | ---: | ---: | ---: |")
    for share, r in rows.items():
        spent, scratch, got = (np.mean([x[i] for x in r]) for i in range(3))
        print(f"| {share:.1%} | {spent:,.0f} | {scratch:,.0f} | {got:.0%} |")


if __name__ == "__main__":
    main()
