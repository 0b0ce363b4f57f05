"""Pictures: per-GPU load before and after, and how the hierarchical policy places."""

from __future__ import annotations

import numpy as np

from ._io import CliError
from ._metrics import balancedness, gpu_loads, in_order_loads

__all__ = ["plot_balance", "plot_policy", "plot_simulation"]


def _pyplot():
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


def plot_balance(path, weight, phy2log, gpus):
    """Heat maps of GPU load / layer mean, before and after, plus balancedness per layer."""
    plt = _pyplot()
    before = in_order_loads(weight, gpus)
    after = gpu_loads(weight, phy2log, gpus)

    def rel(x):
        mean = x.mean(axis=1, keepdims=True)
        return np.divide(x, mean, out=np.ones_like(x), where=mean > 0)

    top = max(rel(before).max(), rel(after).max())
    fig, axes = plt.subplots(1, 3, figsize=(15, 5.5), gridspec_kw={"width_ratios": [1, 1, 0.8]})
    panels = ((axes[0], rel(before), "before: experts in order"), (axes[1], rel(after), "after eplb-numba"))
    for ax, data, title in panels:
        im = ax.imshow(data, aspect="auto", cmap="magma", vmin=0, vmax=top, interpolation="nearest")
        ax.set_title(title)
        ax.set_xlabel("GPU")
        ax.set_ylabel("layer")
    fig.colorbar(im, ax=axes[:2], label="GPU load / layer mean")
    layers = np.arange(weight.shape[0])
    axes[2].plot(balancedness(before), layers, label="before", color="tab:red")
    axes[2].plot(balancedness(after), layers, label="after", color="tab:green")
    axes[2].invert_yaxis()
    axes[2].set_xlim(0, 1.02)
    axes[2].set_xlabel("balancedness (mean / max)")
    axes[2].set_title("per layer")
    axes[2].legend(loc="lower left")
    _save(plt, fig, path)


def plot_policy(path, weight=None, num_replicas=16, num_groups=4, num_nodes=2, num_gpus=8, layer=0):
    """How the hierarchical policy places one layer, in three panels.

    1. groups packed onto nodes by total load; 2. replicas added to the
    hottest experts within each node; 3. replicas packed onto each node's
    GPUs.  The default is the example from DeepSeek's EPLB README.
    """
    from ._api import rebalance_experts_hierarchical

    plt = _pyplot()
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
    ax.set_title("3. replicas packed onto each node's GPUs")
    fig.suptitle(f"Hierarchical EPLB: {experts} experts in {num_groups} groups, {num_nodes} nodes, "
                 f"{num_gpus} GPUs, {num_replicas} slots (colour = group)")
    fig.tight_layout()
    _save(plt, fig, path)


def plot_simulation(path, result):
    """Imbalance and copies per rebalance, one line per policy."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(14, 4.8))
    for name, rows in result["per_rebalance"].items():
        steps = [r["step"] for r in rows]
        axes[0].plot(steps, [r["imbalance"] for r in rows], marker="o", label=name)
        axes[1].plot(steps, [r["intra_node_copies"] + r["inter_node_copies"] for r in rows], marker="o", label=name)
    axes[0].set_title("per-step imbalance after each rebalance")
    axes[0].set_ylabel("(max - mean) / mean GPU load")
    axes[1].set_title("expert copies per rebalance")
    axes[1].set_yscale("symlog")
    for ax in axes:
        ax.set_xlabel("step")
    axes[1].legend(fontsize=8)
    _save(plt, fig, path)
