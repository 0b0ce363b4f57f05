"""``eplb-numba tune``: choose the window, the interval and the policy from a recorded trace.

Every candidate (a window of past steps each plan sums, an interval between
rebalances, a policy) is replayed over the same steps: its first plan at
step ``start`` (the largest window), then one every interval, each scored
on the steps that follow it until the next.  The score is the per-step
``(max - mean) / mean`` GPU load, averaged over layers and steps; the cost
is the expert copies per 1000 steps (the first plan, which every candidate
makes, is not counted).
"""

from __future__ import annotations

import time

import numpy as np

from .. import plan_migration, rebalance_experts
from .._metrics import gpu_loads, imbalance_ratio
from .simulate import POLICIES

__all__ = ["TUNE_POLICIES", "format_tuning", "recommend", "tune"]


# Each plans from ``old`` (None for the first plan: then from scratch), as in ``simulate``.
TUNE_POLICIES = {
    "reference": POLICIES["reference"],
    "movement-aware": POLICIES["movement-aware, slack 0"],
    "quality": POLICIES["quality, movement-aware"],
}


def _replay(trace, cfg, window, every, plan, start):
    gpus, nodes = cfg[3], cfg[2]
    steps = trace.shape[0]
    placement = plan(trace[start - window:start].sum(axis=0), cfg, None)
    copies = 0
    total = 0.0
    times = []
    for t in range(start, steps, every):
        if t > start:
            began = time.perf_counter()
            new = plan(trace[t - window:t].sum(axis=0), cfg, placement)
            times.append(time.perf_counter() - began)
            copies += len(plan_migration(placement, new, gpus, nodes).expert)
            placement = new
        ahead = trace[t:min(t + every, steps)]
        total += float(imbalance_ratio(gpu_loads(ahead, placement, gpus)).mean(axis=-1).sum())
    scored = steps - start
    return {"imbalance": total / scored, "copies_per_1000_steps": copies * 1000.0 / scored,
            "rebalances": len(range(start, steps, every)) - 1,
            "planning_ms_median": float(np.median(times) * 1e3) if times else 0.0}


def recommend(candidates, tolerance=0.01):
    """The candidate to use: the fewest copies among those within ``tolerance`` of the best imbalance.

    Differences of imbalance that small are within the noise of one trace;
    copies are weights moved while serving.  Ties: the lower imbalance.
    """
    best = min(c["imbalance"] for c in candidates)
    close = [c for c in candidates if c["imbalance"] <= best * (1 + tolerance)]
    return min(close, key=lambda c: (c["copies_per_1000_steps"], c["imbalance"]))


def tune(trace, cfg, windows=(100, 200, 400), intervals=(50, 100, 200), policies=None, tolerance=0.01,
         progress=None):
    """Replay every (window, interval, policy) over ``trace`` [steps, layers, experts]; a JSON-ready dict."""
    names = list(policies or TUNE_POLICIES)
    windows = sorted(set(int(x) for x in windows))
    intervals = sorted(set(int(x) for x in intervals))
    if windows[0] < 1 or intervals[0] < 1:
        raise ValueError("windows and intervals are numbers of steps, each at least 1")
    start = windows[-1]
    if trace.shape[0] - start < intervals[-1]:
        raise ValueError(
            f"a trace of {trace.shape[0]} steps leaves {max(trace.shape[0] - start, 0)} steps to score after the "
            f"largest window ({start}), fewer than the largest interval ({intervals[-1]}); use a longer trace or "
            f"smaller --windows/--intervals"
        )
    # Checked once, before the replays: a bad layout fails here, not halfway.
    rebalance_experts(trace[:1].sum(axis=0), *cfg)
    candidates = []
    grid = [(p, w, e) for p in names for w in windows for e in intervals]
    for i, (name, window, every) in enumerate(grid, 1):
        if progress:
            progress(f"[{i}/{len(grid)}] {name}, window {window}, every {every}")
        row = {"policy": name, "window": window, "every": every}
        row.update(_replay(trace, cfg, window, every, TUNE_POLICIES[name], start))
        candidates.append(row)
    candidates.sort(key=lambda c: (c["imbalance"], c["copies_per_1000_steps"]))
    config = {**dict(zip(("replicas", "groups", "nodes", "gpus"), cfg)),
              "policy": "hierarchical" if cfg[1] % cfg[2] == 0 else "global"}
    return {"config": config, "steps": int(trace.shape[0]), "scored_from_step": start,
            "tolerance": tolerance, "candidates": candidates, "recommended": recommend(candidates, tolerance)}


def format_tuning(result):
    c = result["config"]
    rec = result["recommended"]
    lines = [
        f"tune: {len(result['candidates'])} candidates scored on steps {result['scored_from_step']}-"
        f"{result['steps'] - 1}; {c['replicas']} slots on {c['gpus']} GPUs, {c['policy']} policy",
        "",
        f"  {'policy':16}{'window':>8}{'every':>7}{'imbalance':>11}{'copies/1k steps':>17}{'rebalances':>12}"
        f"{'plan ms':>9}",
    ]
    for r in result["candidates"]:
        mark = "*" if r is rec or r == rec else " "
        lines.append(f"{mark} {r['policy']:16}{r['window']:>8}{r['every']:>7}{r['imbalance']:>11.4f}"
                     f"{r['copies_per_1000_steps']:>17,.0f}{r['rebalances']:>12}{r['planning_ms_median']:>9.2f}")
    lines += [
        "",
        f"recommended (*): policy {rec['policy']}, window {rec['window']} steps, rebalance every {rec['every']} "
        f"steps",
        f"  the fewest copies among candidates within {result['tolerance']:.0%} of the lowest imbalance",
        "",
        "imbalance   per-step (max - mean) / mean GPU load after each rebalance, mean over layers and steps",
        "copies      expert copies per 1000 steps, rebalances after the first",
    ]
    return "\n".join(lines)
