"""Shared fixtures and case generators for the test suite."""

from __future__ import annotations

import numpy as np
import pytest

# Model-sized configurations: (layers, experts, replicas, groups, nodes, gpus).
MODEL_CONFIGS = {
    "deepseek-v3-ep32": (58, 256, 288, 8, 4, 32),
    "deepseek-v3-ep144-global": (58, 256, 288, 8, 18, 144),
    "qwen3-235b-ep16": (94, 128, 144, 8, 2, 16),
    "kimi-k2-ep64": (60, 384, 448, 1, 8, 64),
}

LOAD_KINDS = ("ties", "uniform", "zeros", "onehot", "zipf", "large", "fractional")


def make_loads(rng: np.random.Generator, kind: str, shape) -> np.ndarray:
    """Loads of one ``kind``; every kind but ``fractional`` is integer-valued."""
    layers, experts = shape
    if kind == "ties":
        return rng.integers(0, 4, shape)
    if kind == "uniform":
        return rng.integers(0, 5000, shape)
    if kind == "zeros":
        return np.zeros(shape, dtype=np.int64)
    if kind == "onehot":
        w = np.zeros(shape, dtype=np.int64)
        w[np.arange(layers), rng.integers(0, experts, layers)] = rng.integers(1, 10**6, layers)
        return w
    if kind == "zipf":
        return np.minimum(rng.zipf(1.3, shape), 10**5)
    if kind == "large":
        # Group sums stay below 2**24 for groups of up to 32 experts.
        return rng.integers(0, 2**19, shape)
    if kind == "fractional":
        return np.round(rng.random(shape) * 8, 1)
    raise ValueError(kind)


def random_config(rng: np.random.Generator):
    """A small valid (experts, replicas, groups, nodes, gpus), odd shapes included."""
    nodes = int(rng.integers(1, 5))
    gpus = nodes * int(rng.integers(1, 5))
    groups_per_node = int(rng.integers(1, 4))
    groups = nodes * groups_per_node if rng.random() < 0.7 else int(rng.integers(1, 9))
    group_size = int(rng.integers(1, 7))
    experts = groups * group_size
    per_gpu = -(-experts // gpus) + int(rng.integers(0, 4))
    replicas = gpus * per_gpu
    return experts, replicas, groups, nodes, gpus


@pytest.fixture
def rng():
    return np.random.default_rng(20261128)


def slot_preservation_oracle(new, old, num_gpus):
    """Each GPU's slots of ``new``, every expert that ``old`` had there in its old slot.

    Old slots in order claim a copy of their expert if ``new`` still has one
    on that GPU; the unclaimed experts of ``new`` fill the other slots in order.
    """
    out = new.copy()
    per = new.shape[1] // num_gpus
    for layer in range(new.shape[0]):
        for g in range(num_gpus):
            lo = g * per
            fresh = list(new[layer, lo : lo + per])
            kept = [None] * per
            for s in range(per):
                if old[layer, lo + s] in fresh:
                    fresh.remove(old[layer, lo + s])
                    kept[s] = old[layer, lo + s]
            for s in range(per):
                out[layer, lo + s] = kept[s] if kept[s] is not None else fresh.pop(0)
    return out
