"""Built-in synthetic workloads (deterministic, no download)."""

from __future__ import annotations

import numpy as np

__all__ = ["deepseek_v3_loads"]


def deepseek_v3_loads(num_layers=58, num_experts=256, seed=0, tokens=32 * 1024 * 8 * 100, skew=1.0):
    """Token counts [layers, experts] shaped like DeepSeek-V3 routing statistics.

    Each layer draws expert popularity from a log-normal with sigma ``skew``
    in a random order, then routes ``tokens`` top-8 assignments by a
    multinomial draw.  Seeded, so the same arguments give the same counts.
    """
    rng = np.random.default_rng(seed)
    out = np.empty((num_layers, num_experts), dtype=np.int64)
    for layer in range(num_layers):
        popularity = rng.lognormal(0.0, skew, num_experts)
        out[layer] = rng.multinomial(tokens, popularity / popularity.sum())
    return out
