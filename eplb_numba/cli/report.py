"""The balance report of ``eplb-numba rebalance``: figures and a terminal table."""

from __future__ import annotations

import numpy as np

from .._metrics import balancedness, gpu_loads, imbalance_ratio, in_order_loads

__all__ = ["build_report", "format_report"]


def build_report(weight, phy2log, logcnt, config, elapsed_s, trace=None, source="", worst=5, hottest=5,
                 bound=None, quality=False):
    """Figures of a placement as a JSON-ready dict.

    ``weight`` [layers, experts] is what was planned from; ``trace``
    [steps, layers, experts], when given, also scores each step.
    ``bound`` (``balance_bound``), when given, says how far each layer's
    busiest GPU is above the least any placement can reach.
    """
    gpus = config["gpus"]
    before = balancedness(in_order_loads(weight, gpus))
    loads = gpu_loads(weight, phy2log, gpus)
    after = balancedness(loads)
    order = np.argsort(after, kind="stable")[:worst]
    flat = np.argsort(-np.asarray(weight, dtype=np.float64), axis=None, kind="stable")[:hottest]
    totals = np.maximum(np.asarray(weight, dtype=np.float64).sum(axis=1), 1e-300)
    report = {
        "source": source,
        "config": dict(config),
        "layers": int(weight.shape[0]),
        "experts": int(weight.shape[1]),
        "policy": "hierarchical" if config["groups"] % config["nodes"] == 0 else "global",
        "quality": bool(quality),
        "planning_time_us": elapsed_s * 1e6,
        "balancedness": {
            "before_mean": float(before.mean()),
            "after_mean": float(after.mean()),
            "before_min": float(before.min()),
            "after_min": float(after.min()),
        },
        "per_layer": {"before": before.round(6).tolist(), "after": after.round(6).tolist()},
        "worst_layers": [
            {"layer": int(i), "before": float(before[i]), "after": float(after[i])} for i in order
        ],
        "hottest_experts": [
            {
                "layer": int(layer),
                "expert": int(expert),
                "share_of_layer": float(weight[layer, expert] / totals[layer]),
                "replicas": int(logcnt[layer, expert]),
            }
            for layer, expert in zip(*np.unravel_index(flat, weight.shape))
        ],
    }
    if bound is not None:
        peak = loads.max(axis=1)
        gap = np.divide(peak, bound, out=np.ones_like(peak), where=bound > 0) - 1
        report["above_bound"] = {"mean": float(gap.mean()), "max": float(gap.max()),
                                 "per_layer": gap.round(6).tolist()}
    if trace is not None:
        report["per_step_imbalance"] = {
            "before": float(imbalance_ratio(in_order_loads(trace, gpus)).mean()),
            "after": float(imbalance_ratio(gpu_loads(trace, phy2log, gpus)).mean()),
        }
    return report


def format_report(r):
    c = r["config"]
    b = r["balancedness"]
    lines = [
        f"loads: {r['source']} ({r['layers']} layers x {r['experts']} experts)",
        f"plan:  {c['replicas']} slots, {c['groups']} groups, {c['nodes']} nodes, {c['gpus']} GPUs "
        f"({r['policy']} policy{', quality mode' if r.get('quality') else ''}) in {r['planning_time_us']:,.0f} us",
        "",
        "balancedness (mean / max GPU load; 1.0 is perfect)",
        f"  {'':24}{'before':>10}{'after':>10}",
        f"  {'mean over layers':24}{b['before_mean']:>10.3f}{b['after_mean']:>10.3f}",
        f"  {'worst layer':24}{b['before_min']:>10.3f}{b['after_min']:>10.3f}",
    ]
    if "per_step_imbalance" in r:
        s = r["per_step_imbalance"]
        lines.append(f"  {'per-step (max-mean)/mean':24}{s['before']:>10.3f}{s['after']:>10.3f}")
    if "above_bound" in r:
        a = r["above_bound"]
        lines += ["", f"busiest GPU above the balance bound (no placement goes below it): {a['mean']:.2%} mean "
                      f"over layers, {a['max']:.2%} worst layer"]
    lines += ["", "worst layers after balancing", f"  {'layer':>7}{'before':>10}{'after':>10}"]
    lines += [f"  {w['layer']:>7}{w['before']:>10.3f}{w['after']:>10.3f}" for w in r["worst_layers"]]
    lines += ["", "hottest experts", f"  {'layer':>7}{'expert':>8}{'share':>9}{'replicas':>10}"]
    lines += [
        f"  {h['layer']:>7}{h['expert']:>8}{h['share_of_layer']:>9.1%}{h['replicas']:>10}" for h in r["hottest_experts"]
    ]
    return "\n".join(lines)
