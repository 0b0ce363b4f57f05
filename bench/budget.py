"""A copy budget on the built-in drifting trace: imbalance gained per copy.

``python bench/budget.py [--plot docs/img/budget.png]`` replays ``eplb-numba
simulate``'s built-in trace (DeepSeek-V3 EP32, hierarchical and global
policies; rebalance every 100 steps from the last 200).  At each
rebalance it compares, on the steps that follow: the placement in service
left as it is, the reference's plan from scratch, and the
movement-aware plan limited to a share of the from-scratch plan's copies.
It prints, per budget, the copies spent, the share of the from-scratch
plan's imbalance reduction reached (mean over rebalances) and the median
time of the budgeted plan plus its migration plan (first rebalance); ``--plot`` draws
that share against the budget (the curve in ``docs/movement.md``).
"""

from __future__ import annotations

import argparse

import numpy as np
from harness import median_ms

import eplb_numba
from eplb_numba._metrics import gpu_loads, imbalance_ratio
from eplb_numba.cli.workload import drifting_trace

POLICIES = {"hierarchical": (288, 8, 4, 32), "global": (288, 1, 1, 32)}
SHARES = (0.0025, 0.005, 0.01, 0.02, 0.03, 0.05, 0.1, 1.0)


def run(cfg, every=100, window=200):
    trace = drifting_trace()
    points = list(range(window, trace.shape[0] - every + 1, every))
    state = eplb_numba.rebalance_experts(trace[points[0] - window:points[0]].sum(axis=0), *cfg)[0]
    rows = {share: [] for share in SHARES}
    for t in points[1:]:
        w = trace[t - window:t].sum(axis=0)
        ahead = trace[t:t + every]

        def score(p, ahead=ahead):
            return float(imbalance_ratio(gpu_loads(ahead, p, cfg[3])).mean())

        scratch = eplb_numba.rebalance_experts(w, *cfg)[0]
        scratch_copies = len(eplb_numba.plan_migration(state, scratch, cfg[3], cfg[2]).expert)
        reduction = score(state) - score(scratch)
        for share in SHARES:
            budget = int(share * scratch_copies)

            def planned(budget=budget, state=state, w=w):
                plan = eplb_numba.rebalance_experts(w, *cfg, old_phy2log=state, max_copies=budget)[0]
                return plan, eplb_numba.plan_migration(state, plan, cfg[3], cfg[2])

            plan, moved = planned()
            ms = median_ms(planned, warm_up=False) if t == points[1] else np.nan
            rows[share].append((len(moved.expert), scratch_copies, (score(state) - score(plan)) / reduction, ms))
        # The placement in service moves on as the movement-aware plan without a budget would.
        state = eplb_numba.rebalance_experts(w, *cfg, old_phy2log=state)[0]
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--plot", metavar="PNG", help="also draw the share of the reduction against the budget")
    args = p.parse_args(argv)
    curves = {}
    for policy, cfg in POLICIES.items():
        print(f"\n{policy} policy")
        curves[policy] = run(cfg)
        table(curves[policy])
    if args.plot:
        plot(curves, args.plot)


def plot(curves, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for policy, rows in curves.items():
        shares = [s for s in rows if s < 1]
        got = [100 * np.mean([x[2] for x in rows[s]]) for s in shares]
        ax.plot([100 * s for s in shares], got, marker="o", label=f"{policy} policy")
    ax.axhline(100, color="grey", lw=0.8, ls="--")
    ax.axhline(80, color="grey", lw=0.8, ls=":")
    ax.set_xscale("log")
    ax.set_xticks([0.25, 0.5, 1, 2, 3, 5, 10], ["0.25", "0.5", "1", "2", "3", "5", "10"])
    ax.set_xlabel("copy budget, % of the from-scratch plan's copies")
    ax.set_ylabel("% of the from-scratch imbalance reduction")
    ax.set_title("DeepSeek-V3 EP32, built-in drifting trace, loads after each rebalance", fontsize=9)
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"wrote {path}")


def table(rows):
    print("| budget (share of from-scratch copies) | copies spent | from-scratch copies | "
          "share of its imbalance reduction | plan + migration ms |")
    print("| ---: | ---: | ---: | ---: | ---: |")
    for share, r in rows.items():
        spent, scratch, got, ms = (np.nanmean([x[i] for x in r]) for i in range(4))
        print(f"| {100 * share:g}% | {spent:,.0f} | {scratch:,.0f} | {got:.1%} | {ms:.2f} |")


if __name__ == "__main__":
    main()
