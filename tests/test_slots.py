"""Slot preservation (``keep_slots`` per GPU) against a plain-Python oracle."""

from __future__ import annotations

import numpy as np

from eplb_numba._kernels.slots import preserve_slots

from .conftest import slot_preservation_oracle


def changed_copy(rng, old, experts):
    """``old`` with a few slots changed: new experts, moves within a GPU, repeats."""
    new = old.copy()
    for _ in range(int(rng.integers(0, 4))):
        layer, q = int(rng.integers(new.shape[0])), int(rng.integers(new.shape[1]))
        if rng.random() < 0.5:
            new[layer, q] = rng.integers(experts)
        else:
            new[layer, q] = new[layer, int(rng.integers(new.shape[1]))]
    return new


def test_matches_oracle_on_thousands_of_cases(rng):
    # Mostly small changes (the movement-aware case, where most GPUs are
    # left as they were), with repeated experts and ids outside the model.
    for _ in range(3000):
        gpus, per, layers = int(rng.integers(1, 6)), int(rng.integers(1, 6)), int(rng.integers(1, 3))
        experts = int(rng.integers(1, 3 * per * gpus))
        old = rng.integers(0, experts, (layers, gpus * per))
        if rng.random() < 0.2:
            old[rng.random(old.shape) < 0.2] = rng.choice([-1, experts])
        new = changed_copy(rng, np.clip(old, 0, experts - 1), experts)
        if rng.random() < 0.2:
            new = new[:, rng.permutation(new.shape[1])]
        out = np.empty_like(new)
        preserve_slots(new, old, gpus, experts, out)
        np.testing.assert_array_equal(out, slot_preservation_oracle(new, old, gpus))
