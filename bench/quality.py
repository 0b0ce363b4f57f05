"""Quality mode against the reference and the balance bound: ``python bench/quality.py [--plot FILE]``.

58 x 256 loads of six kinds (the built-in DeepSeek-V3 shape, lognormal
sigma 0.5 / 1.0 / 1.5, Zipf 1.0 / 1.2 with experts in random order), under
four layouts.  Prints, per kind and layout, how far the busiest GPU is
above ``balance_bound`` (mean over layers and worst layer) for the
reference and for ``quality=True``; the median time of each plan at
DeepSeek-V3 EP32; and, out of sample, the imbalance of both plans on the
same loads after a 2% drift (what the GPUs see until the next rebalance),
averaged over five drifts.
"""

from __future__ import annotations

import argparse

import numpy as np
from harness import drift, median_ms

import eplb_numba
from eplb_numba import balance_bound
from eplb_numba._metrics import gpu_loads, imbalance_ratio
from eplb_numba.cli.workload import deepseek_v3_loads

LAYOUTS = {
    "hierarchical 32 GPUs": (288, 8, 4, 32),
    "global 32 GPUs": (288, 1, 1, 32),
    "hierarchical 64 GPUs / 320": (320, 8, 4, 64),
    "global 64 GPUs / 320": (320, 1, 1, 64),
}
KINDS = ("DeepSeek-V3 shape", "lognormal 0.5", "lognormal 1.0", "lognormal 1.5", "Zipf 1.0", "Zipf 1.2")


def loads(kind, rng):
    if kind == "DeepSeek-V3 shape":
        return deepseek_v3_loads(58, 256, seed=1)
    name, value = kind.split()
    if name == "lognormal":
        return np.round(rng.lognormal(0.0, float(value), (58, 256)) * 1000).astype(np.int64)
    ranks = np.arange(1, 257) ** -float(value)
    return np.round(np.stack([rng.permutation(ranks) for _ in range(58)]) * 1e5).astype(np.int64)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--plot", metavar="FILE.png", help="draw the gaps to the bound (needs matplotlib)")
    args = p.parse_args()
    rng = np.random.default_rng(0)
    weights = {kind: loads(kind, rng) for kind in KINDS}
    gaps = {}
    print("busiest GPU above the balance bound: mean over layers / worst layer")
    print(f"{'loads':20}{'layout':28}{'reference':>18}{'quality':>18}")
    for kind, w in weights.items():
        for name, cfg in LAYOUTS.items():
            bound = balance_bound(w, *cfg)
            row = []
            for quality in (False, True):
                peak = gpu_loads(w, eplb_numba.rebalance_experts(w, *cfg, quality=quality)[0], cfg[3]).max(axis=1)
                gap = peak / bound - 1
                row.append(gap)
                gaps[kind, name, quality] = gap
            print(f"{kind:20}{name:28}" + "".join(f"{g.mean():>9.2%}{g.max():>9.2%}" for g in row))
    print("\nmedian ms per plan, DeepSeek-V3 shape (58 x 256)")
    w = weights["DeepSeek-V3 shape"]
    for name, cfg in LAYOUTS.items():
        ref = median_ms(lambda cfg=cfg: eplb_numba.rebalance_experts(w, *cfg), runs=21)
        q = median_ms(lambda cfg=cfg: eplb_numba.rebalance_experts(w, *cfg, quality=True), runs=21)
        print(f"  {name:28} reference {ref:6.2f}   quality {q:6.2f}   ({q / ref:.1f}x)")
    print("\nout of sample: imbalance (max - mean) / mean on the loads after a 2% drift, mean over layers and five "
          "drifts")
    print(f"{'loads':20}{'layout':28}{'reference':>11}{'quality':>11}")
    drift_rng = np.random.default_rng(7)
    for kind, w in weights.items():
        after = np.stack([drift(w, drift_rng) for _ in range(5)])
        for name in ("hierarchical 32 GPUs", "global 32 GPUs"):
            cfg = LAYOUTS[name]
            out = [imbalance_ratio(gpu_loads(after, eplb_numba.rebalance_experts(w, *cfg, quality=q)[0],
                                             cfg[3])).mean() for q in (False, True)]
            print(f"{kind:20}{name:28}{out[0]:>11.4f}{out[1]:>11.4f}")
    if args.plot:
        _plot(args.plot, gaps)


def _plot(path, gaps):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(LAYOUTS), figsize=(18, 4.8), sharey=True)
    x = np.arange(len(KINDS))
    for ax, name in zip(axes, LAYOUTS):
        for k, (quality, label) in enumerate(((False, "reference"), (True, "quality=True"))):
            mean = [gaps[kind, name, quality].mean() * 100 for kind in KINDS]
            worst = [gaps[kind, name, quality].max() * 100 for kind in KINDS]
            ax.bar(x + (k - 0.5) * 0.38, mean, 0.38, label=f"{label}, mean over layers")
            ax.scatter(x + (k - 0.5) * 0.38, worst, marker="v", color="black" if k else "grey", zorder=3,
                       label=f"{label}, worst layer")
        ax.set_title(name)
        ax.set_xticks(x, KINDS, rotation=35, ha="right", fontsize=8)
        ax.set_yscale("symlog", linthresh=1)
    axes[0].set_ylabel("% above the balance bound (log above 1%)")
    axes[0].legend(fontsize=7)
    fig.suptitle("Quality mode: distance to the balance bound, 58 layers x 256 experts")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    main()
