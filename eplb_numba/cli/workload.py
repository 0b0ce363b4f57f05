"""Built-in workloads: deterministic, generated, no download.

The default is shaped like the DeepSeek-R1 routing statistics published with
TensorRT-LLM's expert-parallel load-balancer example: 58 MoE layers x 256
experts in 8 groups, counted per step over 100 steps, 1024 routed tokens per
rank per step on 32 ranks, top-8 routing.

Calibration: each layer's expert popularity is log-normal with spread
``sigma`` in a random order, and each step routes
``1024 * 32 * 8`` assignments by a multinomial draw over it.  ``sigma`` was
chosen (by bisection, then the nearest value on a 0.002 grid) so that, as
published, the per-step imbalance ratio ``(max - mean) / mean`` of rank loads,
with experts in order on 32 ranks and no redundancy, averages about 1.56 over
steps and layers; seed 0 and ``sigma = 1.09`` give 1.556.
"""

from __future__ import annotations

import numpy as np

__all__ = ["DEFAULT_SIGMA", "default_loads", "default_trace", "deepseek_v3_loads", "drifting_trace"]

DEFAULT_SIGMA = 1.09


def default_trace(steps=100, layers=58, experts=256, ranks=32, tokens_per_rank=1024, top_k=8,
                  sigma=DEFAULT_SIGMA, seed=0):
    """Per-step token counts, int64 [steps, layers, experts] (see the module doc)."""
    rng = np.random.default_rng(seed)
    assignments = tokens_per_rank * ranks * top_k
    out = np.empty((steps, layers, experts), dtype=np.int64)
    for layer in range(layers):
        popularity = rng.lognormal(0.0, sigma, experts)
        out[:, layer, :] = rng.multinomial(assignments, popularity / popularity.sum(), size=steps)
    return out


def default_loads():
    """The default trace summed over steps: int64 [58, 256]."""
    return default_trace().sum(axis=0)


def deepseek_v3_loads(num_layers=58, num_experts=256, seed=0, tokens=32 * 1024 * 8 * 100, skew=1.0):
    """One draw of token counts [layers, experts] with log-normal popularity (benchmarks)."""
    rng = np.random.default_rng(seed)
    out = np.empty((num_layers, num_experts), dtype=np.int64)
    for layer in range(num_layers):
        popularity = rng.lognormal(0.0, skew, num_experts)
        out[layer] = rng.multinomial(tokens, popularity / popularity.sum())
    return out


def drifting_trace(steps=800, layers=58, experts=256, ranks=32, tokens_per_rank=1024, top_k=8,
                   sigma=DEFAULT_SIGMA, drift=0.004, seed=0):
    """The default workload with popularity that drifts: int64 [steps, layers, experts].

    Each layer's log-popularity starts as in :func:`default_trace` and takes
    a Gaussian random-walk step of ``drift`` per step, so experts heat up and
    cool down over hundreds of steps (the default drifts window totals by a
    few percent between rebalances every 100 steps).
    """
    rng = np.random.default_rng(seed)
    assignments = tokens_per_rank * ranks * top_k
    out = np.empty((steps, layers, experts), dtype=np.int64)
    for layer in range(layers):
        z = sigma * rng.standard_normal(experts)
        walk = np.cumsum(drift * rng.standard_normal((steps, experts)), axis=0)
        for step in range(steps):
            p = np.exp(z + walk[step])
            out[step, layer] = rng.multinomial(assignments, p / p.sum())
    return out
