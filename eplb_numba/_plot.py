"""Pictures: per-GPU load before and after, and how the hierarchical policy places."""

from __future__ import annotations

import numpy as np

from ._io import CliError
from ._metrics import balancedness, gpu_loads, in_order_loads

__all__ = ["plot_balance"]


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise CliError("--plot needs matplotlib: pip install 'eplb-numba[plot]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


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
    for ax, data, title in ((axes[0], rel(before), "before: experts in order"), (axes[1], rel(after), "after eplb-numba")):
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
    try:
        fig.savefig(path, dpi=110, bbox_inches="tight")
    except OSError as exc:
        raise CliError(f"cannot write {path}: {exc.strerror or exc}") from None
    finally:
        plt.close(fig)
