"""Trace replay: rebalance every K steps from a window of past loads, score what follows.

Policies run side by side from the same first placement.  Per rebalance:
imbalance on the steps until the next one, copies (intra/inter-node) to
reach the new placement, planning time, and whether any layer's busiest GPU
(on the window it planned from) exceeded the reference's.
"""

from __future__ import annotations

import time

import numpy as np

from .. import _engine, balance_bound, plan_migration, rebalance_experts
from .._metrics import gpu_loads, imbalance_ratio
from .._validate import check_layout

__all__ = ["POLICIES", "simulate", "format_simulation"]


def _reference(w, cfg, old):
    return rebalance_experts(w, *cfg)[0]


def _reference_slots(w, cfg, old):
    new = rebalance_experts(w, *cfg)[0]
    return _engine.preserve_slots(new, old, cfg[3], w.shape[1])[0]


def _movement(slack, avoid):
    def plan(w, cfg, old):
        return rebalance_experts(w, *cfg, old_phy2log=old, max_load_slack=slack, avoid_duplicates=avoid)[0]

    return plan


def _no_duplicates(w, cfg, old):
    return rebalance_experts(w, *cfg, avoid_duplicates=True)[0]


def _quality(w, cfg, old):
    return rebalance_experts(w, *cfg, quality=True)[0]


def _quality_movement(w, cfg, old):
    return rebalance_experts(w, *cfg, quality=True, old_phy2log=old)[0]


POLICIES = {
    "reference": _reference,
    "reference + slot preservation": _reference_slots,
    "reference, no duplicates": _no_duplicates,
    "movement-aware, slack 0": _movement(0.0, False),
    "movement-aware, slack 1%": _movement(0.01, False),
    "movement-aware, slack 0, no duplicates": _movement(0.0, True),
    "quality": _quality,
    "quality, movement-aware": _quality_movement,
}


def _budgeted(share):
    # The movement-aware plan within ``share`` of the copies the reference's plan would make.
    def plan(w, cfg, old):
        scratch = rebalance_experts(w, *cfg)[0]
        budget = int(share * len(plan_migration(old, scratch, cfg[3], cfg[2]).expert))
        return rebalance_experts(w, *cfg, old_phy2log=old, max_copies=budget)[0]

    return plan


def budget_name(share):
    """The policy name of a copy budget of ``share`` (0.02: 2% of the reference's copies)."""
    return f"movement-aware, {share * 100:.3g}% of ref copies"


def _duplicates(phy2log, gpus):
    per = phy2log.shape[1] // gpus
    s = np.sort(phy2log.reshape(phy2log.shape[0], gpus, per), axis=-1)
    return int(((s[..., 1:] == s[..., :-1]) & (s[..., 1:] >= 0)).sum())


SCENARIOS = ("drift", "lost-gpu", "scale")


def _layouts(scenario, cfg, count, experts, lose_gpu):
    """``(replicas, gpus, failed)`` in service after each of ``count`` rebalances.

    ``lost-gpu``: GPU ``lose_gpu`` is lost from the middle rebalance on;
    ``scale``: 4 GPUs fewer (the same slots per GPU) from the second
    rebalance to the fourth, then back.
    """
    replicas, groups, nodes, gpus = cfg
    per = replicas // gpus
    if scenario == "lost-gpu" and not 0 <= lose_gpu < gpus:
        raise ValueError(f"the GPU to lose ({lose_gpu}) must be one of the {gpus} GPUs (0..{gpus - 1})")
    if scenario == "scale" and ((gpus - 4) < nodes or (gpus - 4) % nodes or per * (gpus - 4) < experts):
        raise ValueError(f"the scale scenario removes 4 of the {gpus} GPUs: the rest must split over the {nodes} "
                         f"nodes and hold the {experts} experts at {per} slots each; use more GPUs or slots")
    out = []
    for i in range(1, count + 1):
        if scenario == "lost-gpu" and i > count // 2:
            out.append((replicas, gpus, (lose_gpu,)))
        elif scenario == "scale" and 2 <= i < 4:
            out.append((per * (gpus - 4), gpus - 4, ()))
        else:
            out.append((replicas, gpus, ()))
    return out


def _from_scratch(w, groups, nodes, lay):
    # The reference's plan on the layout in service (on the live GPUs, -1 on lost ones).
    replicas, gpus, failed = lay
    if not failed:
        return rebalance_experts(w, replicas, groups, nodes, gpus)[0]
    layout = check_layout(w.shape, replicas, groups, nodes, gpus)
    live, slots = _engine.live_gpus(layout, np.isin(np.arange(gpus), failed))
    out = np.full((w.shape[0], replicas), -1, dtype=np.int64)
    out[:, slots] = rebalance_experts(w, live.num_replicas, live.num_groups, live.num_nodes, live.num_gpus)[0]
    return out


def _scenario_plans(groups, nodes):
    def movement(slack):
        def plan(w, lay, old):
            replicas, gpus, failed = lay
            return rebalance_experts(w, replicas, groups, nodes, gpus, old_phy2log=old, failed_gpus=failed or None,
                                     max_load_slack=slack)[0]
        return plan

    return {"reference": lambda w, lay, old: _from_scratch(w, groups, nodes, lay),
            "movement-aware, slack 0": movement(0.0), "movement-aware, slack 1%": movement(0.01)}


def simulate(trace, cfg, every=100, window=200, expert_bytes=0, policies=None, progress=None, budgets=(),
             scenario="drift", lose_gpu=5):
    """Replay ``trace`` [steps, layers, experts] under each policy; a JSON-ready dict.

    ``budgets`` adds a movement-aware policy per share (0.02: at most 2% of
    the copies the reference's plan makes at that rebalance).  ``scenario``
    ``lost-gpu`` or ``scale`` changes the GPUs mid-trace (see ``_layouts``)
    and replays the reference from scratch beside the movement-aware plans.
    """
    replicas, groups, nodes, gpus = cfg
    points = list(range(window, trace.shape[0] - every + 1, every))
    if len(points) < 2:
        raise ValueError(
            f"a trace of {trace.shape[0]} steps leaves fewer than two rebalances with window={window} and "
            f"every={every}; use a longer trace or smaller --window/--every"
        )
    if scenario == "drift":
        named = {**POLICIES, **{budget_name(share): _budgeted(share) for share in budgets}}
        plans = {name: (lambda w, lay, old, f=f: f(w, cfg, old)) for name, f in named.items()}
        names = list(policies or POLICIES) + [budget_name(share) for share in budgets]
    else:
        plans = _scenario_plans(groups, nodes)
        names = list(plans)
    layouts = _layouts(scenario, cfg, len(points) - 1, trace.shape[-1], lose_gpu)
    first = rebalance_experts(trace[points[0] - window:points[0]].sum(axis=0), *cfg)[0]
    state = {name: first for name in names}
    rows = {name: [] for name in names}
    for i, t in enumerate(points[1:], 1):
        if progress:
            progress(f"[{i}/{len(points) - 1}] rebalance at step {t}")
        w = trace[t - window:t].sum(axis=0)
        ahead = trace[t:t + every]
        lay = layouts[i - 1]
        layout_gpus, failed = lay[1], list(lay[2])
        live = np.delete(np.arange(layout_gpus), failed)
        ref_peak = gpu_loads(w, _from_scratch(w, groups, nodes, lay), layout_gpus).max(axis=1)
        # The bound of the layout in service (a lost GPU's layout: the live GPUs planned globally).
        bound = balance_bound(w, len(live) * (lay[0] // layout_gpus), groups if not failed else 1,
                              nodes if not failed else 1, len(live))
        for name in names:
            start = time.perf_counter()
            new = plans[name](w, lay, state[name])
            elapsed = time.perf_counter() - start
            m = plan_migration(state[name], new, layout_gpus, nodes, expert_bytes, failed_gpus=failed or None)
            peak = gpu_loads(w, new, layout_gpus).max(axis=1)
            rows[name].append({
                "step": t,
                "gpus": int(live.size),
                "imbalance": float(imbalance_ratio(gpu_loads(ahead, new, layout_gpus)[..., live]).mean()),
                "intra_node_copies": m.intra_node,
                "inter_node_copies": m.inter_node,
                "from_storage": m.from_storage,
                "bytes": m.bytes,
                "planning_ms": elapsed * 1e3,
                "duplicates": _duplicates(new, layout_gpus),
                "layers_above_reference_peak": int((peak > ref_peak * (1 + 1e-9)).sum()),
                "above_bound": float((np.divide(peak, bound, out=np.ones_like(peak), where=bound > 0) - 1).mean()),
            })
            state[name] = new
    summary = {}
    for name in names:
        r = rows[name]
        summary[name] = {
            "imbalance": float(np.mean([x["imbalance"] for x in r])),
            "copies_per_rebalance": float(np.mean([x["intra_node_copies"] + x["inter_node_copies"]
                                                   + x["from_storage"] for x in r])),
            "inter_node_copies_per_rebalance": float(np.mean([x["inter_node_copies"] for x in r])),
            "planning_ms_median": float(np.median([x["planning_ms"] for x in r])),
            "duplicates": float(np.mean([x["duplicates"] for x in r])),
            "layers_above_reference_peak": int(sum(x["layers_above_reference_peak"] for x in r)),
            "above_bound": float(np.mean([x["above_bound"] for x in r])),
        }
    ref = summary.get("reference")
    if ref:
        for name in names:
            copies = summary[name]["copies_per_rebalance"]
            fewer = ref["copies_per_rebalance"] / copies if copies else float("inf")
            summary[name]["fewer_copies_than_reference"] = fewer
    config = {**dict(zip(("replicas", "groups", "nodes", "gpus"), cfg)),
              "policy": "hierarchical" if groups % nodes == 0 else "global"}
    return {"config": config, "every": every, "window": window, "scenario": scenario,
            "rebalances": len(points) - 1, "summary": summary, "per_rebalance": rows}


def format_simulation(result):
    c = result["config"]
    # The reference's rule: hierarchical where the groups split evenly over the nodes.
    policy = c.get("policy", "hierarchical" if c["groups"] % c["nodes"] == 0 else "global")
    where = f"{c['groups']} groups on {c['nodes']} nodes" if policy == "hierarchical" else "groups ignored"
    scenario = {"drift": "", "lost-gpu": "; a GPU lost at the middle rebalance",
                "scale": "; 4 GPUs fewer from the 2nd rebalance to the 4th"}[result.get("scenario", "drift")]
    lines = [
        f"replay: {result['rebalances']} rebalances, every {result['every']} steps from the last "
        f"{result['window']}; {c['replicas']} slots on {c['gpus']} GPUs, {policy} policy ({where}){scenario}",
        "",
        f"{'planner':40}{'imbalance':>10}{'copies':>9}{'inter-node':>11}{'vs ref':>8}{'dups':>7}{'plan ms':>9}"
        f"{'over peak':>10}{'> bound':>9}",
    ]
    for name, s in result["summary"].items():
        ratio = s.get("fewer_copies_than_reference")
        ratio_text = "-" if ratio is None else ("inf" if ratio == float("inf") else f"{ratio:.1f}x")
        lines.append(
            f"{name:40}{s['imbalance']:>10.3f}{s['copies_per_rebalance']:>9.0f}{s['inter_node_copies_per_rebalance']:>11.0f}"
            f"{ratio_text:>8}{s['duplicates']:>7.0f}{s['planning_ms_median']:>9.2f}{s['layers_above_reference_peak']:>10}"
            f"{s['above_bound']:>9.2%}"
        )
    lines += [
        "",
        "imbalance   per-step (max - mean) / mean GPU load over the steps after each rebalance (0 = even)",
        "copies      slots whose expert was not already on their GPU, per rebalance (all layers)",
        "inter-node  those copies that come from a GPU on another node",
        "vs ref      the reference's copies divided by this policy's",
        "dups        second replicas of an expert on the same GPU, per rebalance (all layers): wasted slots",
        "plan ms     median time to plan one rebalance (all layers), this machine; a budget row's includes",
        "            planning the reference, which sizes the budget",
        "over peak   layers, over all rebalances, whose busiest GPU exceeded the reference plan's busiest",
        "> bound     busiest GPU above the balance bound on the loads planned from (mean over layers and",
        "            rebalances): how far from the best any placement could do (docs/quality.md)",
    ]
    return "\n".join(lines)
