"""Pictures: per-GPU load before and after, and how the hierarchical policy places."""

from __future__ import annotations

import numpy as np

from .._metrics import balancedness, gpu_loads, in_order_loads
from .files import CliError

__all__ = ["plot_balance", "plot_policy", "plot_simulation", "plot_tuning"]


def pyplot():
    try:
        import matplotlib
    except ImportError:
        raise CliError("--plot needs matplotlib: pip install 'eplb-numba[plot]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(plt, fig, path):
    try:
        fig.savefig(path, dpi=110, bbox_inches="tight")
    except OSError as exc:
        raise CliError(f"cannot write {path}: {exc.strerror or exc}") from None
    finally:
        plt.close(fig)


def _integer_ticks(ax, x=True, y=True):
    # GPUs, layers and steps are counted: no tick at GPU 2.5.
    from matplotlib.ticker import MaxNLocator

    if x:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if y:
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))


def plot_balance(path, weight, phy2log, gpus, title=None):
    """Heat maps of GPU load / layer mean, before and after, plus balancedness per layer.

    The two maps have their own colour scales: before on 0 .. its peak, after
    centred on 1 (the layer's mean), so that what balancing leaves is visible.
    """
    plt = pyplot()
    from matplotlib.colors import TwoSlopeNorm

    before = in_order_loads(weight, gpus)
    after = gpu_loads(weight, phy2log, gpus)

    def rel(x):
        mean = x.mean(axis=1, keepdims=True)
        return np.divide(x, mean, out=np.ones_like(x), where=mean > 0)

    rb, ra = rel(before), rel(after)
    fig, axes = plt.subplots(1, 3, figsize=(16, 5.8), gridspec_kw={"width_ratios": [1, 1, 0.7]})
    im = axes[0].imshow(rb, aspect="auto", cmap="magma", vmin=0, vmax=max(rb.max(), 1.0), interpolation="nearest")
    fig.colorbar(im, ax=axes[0], label="GPU load / layer mean")
    axes[0].set_title("before: experts in order, no replicas")
    # Symmetric about the mean, at least +-1% so that a perfect plan is not a blank map.
    spread = max(float(np.abs(ra - 1).max()), 0.01)
    norm = TwoSlopeNorm(vcenter=1.0, vmin=1.0 - spread, vmax=1.0 + spread)
    im = axes[1].imshow(ra, aspect="auto", cmap="RdBu_r", norm=norm, interpolation="nearest")
    fig.colorbar(im, ax=axes[1], label="GPU load / layer mean (white = mean)")
    axes[1].set_title("after: the plan (own scale, centred on the mean)")
    for ax in axes[:2]:
        ax.set_xlabel("GPU")
        ax.set_ylabel("layer")
    layers = np.arange(weight.shape[0])
    axes[2].plot(balancedness(before), layers, label="before", color="tab:red")
    axes[2].plot(balancedness(after), layers, label="after", color="tab:green")
    axes[2].set_ylim(layers[-1] + 0.5 if layers.size else 0.5, -0.5)
    axes[2].set_xlim(0, 1.02)
    axes[2].set_xlabel("balancedness (mean / max GPU load)")
    axes[2].set_ylabel("layer")
    axes[2].set_title("per layer (1 = even)")
    # Below the axes: a legend inside would cover the curves.
    axes[2].legend(loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=2, frameon=False)
    _integer_ticks(axes[0])
    _integer_ticks(axes[1])
    _integer_ticks(axes[2], x=False)
    fig.suptitle(title or f"Per-GPU load of {weight.shape[0]} layers x {weight.shape[1]} experts on {gpus} GPUs, "
                 f"{phy2log.shape[1]} slots")
    _save(plt, fig, path)


def plot_policy(path, weight=None, num_replicas=16, num_groups=4, num_nodes=2, num_gpus=8, layer=0):
    """How the hierarchical policy places one layer, in three panels.

    1. groups packed onto nodes by total load; 2. replicas added to the
    hottest experts within each node; 3. replicas packed onto each node's
    GPUs.  The default is the example from DeepSeek's EPLB README.
    """
    from .. import rebalance_experts_hierarchical

    plt = pyplot()
    if weight is None:
        weight = np.array([[90, 132, 40, 61, 104, 165, 39, 4, 73, 56, 183, 86]])
    w = np.asarray(weight, dtype=np.float64)[layer]
    experts = w.shape[0]
    group_size = experts // num_groups
    phy2log, _, logcnt = rebalance_experts_hierarchical(weight, num_replicas, num_groups, num_nodes, num_gpus)
    slots = phy2log[layer]
    per_gpu = num_replicas // num_gpus
    gpus_per_node = num_gpus // num_nodes
    node_of_slot = np.arange(num_replicas) // (num_replicas // num_nodes)
    node_of_group = {int(slots[s]) // group_size: int(node_of_slot[s]) for s in range(num_replicas)}
    colors = plt.get_cmap("tab10")
    fig, axes = plt.subplots(1, 3, figsize=(16, 5))

    ax = axes[0]
    for node in range(num_nodes):
        bottom = 0.0
        for g in sorted(k for k, v in node_of_group.items() if v == node):
            load = w[g * group_size:(g + 1) * group_size].sum()
            ax.bar(node, load, bottom=bottom, color=colors(g), edgecolor="white")
            ax.text(node, bottom + load / 2, f"group {g}\n{load:.0f}", ha="center", va="center", fontsize=9)
            bottom += load
    ax.set_xticks(range(num_nodes), [f"node {n}" for n in range(num_nodes)])
    ax.set_ylabel("tokens")
    ax.set_title("1. groups packed onto nodes")

    ax = axes[1]
    order = sorted(range(experts), key=lambda e: (node_of_group[e // group_size], e))
    for x, e in enumerate(order):
        count = int(logcnt[layer, e])
        for r in range(count):
            ax.bar(x, w[e] / count, bottom=r * w[e] / count, color=colors(e // group_size), edgecolor="white")
        ax.text(x, w[e] + 3, f"x{count}" if count > 1 else "", ha="center", fontsize=9)
    ax.set_xticks(range(experts), [str(e) for e in order])
    ax.set_xlabel("expert (grouped by node)")
    ax.set_ylabel("tokens (stacked: one block per replica)")
    ax.set_title("2. hottest experts replicated within nodes")

    ax = axes[2]
    for gpu in range(num_gpus):
        bottom = 0.0
        for s in range(gpu * per_gpu, (gpu + 1) * per_gpu):
            e = int(slots[s])
            load = w[e] / logcnt[layer, e]
            ax.bar(gpu, load, bottom=bottom, color=colors(e // group_size), edgecolor="white")
            ax.text(gpu, bottom + load / 2, str(e), ha="center", va="center", fontsize=9)
            bottom += load
    for node in range(1, num_nodes):
        ax.axvline(node * gpus_per_node - 0.5, color="gray", linestyle="--")
    ax.set_xticks(range(num_gpus), [f"GPU {g}" for g in range(num_gpus)], rotation=45)
    ax.set_ylabel("tokens per GPU (a replica's share each)")
    ax.set_title("3. replicas packed onto each node's GPUs")
    fig.suptitle(f"Hierarchical EPLB: {experts} experts in {num_groups} groups, {num_nodes} nodes, "
                 f"{num_gpus} GPUs, {num_replicas} slots (colour = group)")
    fig.tight_layout()
    _save(plt, fig, path)


def plot_simulation(path, result):
    """Imbalance and copies per rebalance, one line per planner.

    Planners often coincide (slot preservation moves no fewer copies than the
    reference): each gets its own marker and dash, drawn thinner than the one
    before, and the legend names the planner it coincides with.
    """
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(14, 5.6))
    styles = ["-", "--", "-.", ":"]
    markers = ["o", "s", "^", "D", "v", "x", "P", "*"]
    seen = []
    for i, (name, rows) in enumerate(result["per_rebalance"].items()):
        steps = [r["step"] for r in rows]
        copies = [r["intra_node_copies"] + r["inter_node_copies"] + r["from_storage"] for r in rows]
        series = ([r["imbalance"] for r in rows], copies)
        label = name
        for other, other_series in seen:
            if other_series == series:
                label = f"{name} (same as {other})"
                break
        seen.append((name, series))
        style = {"linestyle": styles[i % len(styles)], "marker": markers[i % len(markers)],
                 "linewidth": max(3.0 - 0.4 * i, 1.0), "markersize": max(9 - i, 4)}
        axes[0].plot(steps, series[0], label=label, **style)
        axes[1].plot(steps, series[1], **style)
    axes[0].set_title("imbalance on the steps after each rebalance")
    axes[0].set_ylabel("per-step (max - mean) / mean GPU load")
    axes[1].set_title("expert copies per rebalance")
    axes[1].set_ylabel("copies, all layers (log scale)")
    axes[1].set_yscale("symlog")
    for ax in axes:
        ax.set_xlabel("step")
    for ax in axes:
        _integer_ticks(ax, y=False)
    c = result["config"]
    policy = c.get("policy", "hierarchical" if c["groups"] % c["nodes"] == 0 else "global")
    fig.suptitle(f"Trace replay: rebalance every {result['every']} steps from the last {result['window']}; "
                 f"{c['replicas']} slots on {c['gpus']} GPUs, {c['nodes']} nodes, {policy} policy"
                 + ("" if result.get("scenario", "drift") == "drift" else f"; scenario {result['scenario']}"))
    # One legend for both panels, below them: inside, it covered the lines.
    fig.legend(loc="lower center", ncol=3, frameon=False, fontsize=9)
    fig.tight_layout(rect=(0, 0.12, 1, 1))
    _save(plt, fig, path)


def plot_tuning(path, result):
    """Imbalance against copies per 1000 steps, one marker per policy, each point labelled window/interval."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(9, 6))
    markers = {"reference": "o", "movement-aware": "s", "quality": "^"}
    by_policy = {}
    for r in result["candidates"]:
        by_policy.setdefault(r["policy"], []).append(r)
    for name, rows in by_policy.items():
        xs = [r["copies_per_1000_steps"] for r in rows]
        ys = [r["imbalance"] for r in rows]
        ax.scatter(xs, ys, marker=markers.get(name, "o"), s=60, label=name, alpha=0.8)
        for r, x, y in zip(rows, xs, ys):
            ax.annotate(f"{r['window']}/{r['every']}", (x, y), fontsize=7, xytext=(4, 3), textcoords="offset points")
    rec = result["recommended"]
    ax.scatter([rec["copies_per_1000_steps"]], [rec["imbalance"]], s=300, facecolors="none", edgecolors="red",
               linewidths=2, label=f"recommended: {rec['policy']}, window {rec['window']}, every {rec['every']}")
    ax.set_xscale("symlog", linthresh=100)
    ax.set_xlabel("expert copies per 1000 steps (log scale)")
    ax.set_ylabel("per-step (max - mean) / mean GPU load, after each rebalance")
    c = result["config"]
    ax.set_title(f"tune: window/interval per point; {c['replicas']} slots on {c['gpus']} GPUs, {c['policy']} policy")
    ax.legend(fontsize=8)
    fig.tight_layout()
    _save(plt, fig, path)
