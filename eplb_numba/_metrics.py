"""Balance figures of a placement (plain NumPy; not on the hot path)."""

from __future__ import annotations

import numpy as np

__all__ = ["gpu_loads", "balancedness", "identity_placement"]


def gpu_loads(weight, phy2log, num_gpus):
    """Load of every GPU, [layers, num_gpus]: each expert's load split evenly over its replicas."""
    w = np.asarray(weight, dtype=np.float64)
    p2l = np.asarray(phy2log)
    layers = w.shape[0]
    counts = np.zeros_like(w)
    rows = np.repeat(np.arange(layers), p2l.shape[1]).reshape(p2l.shape)
    np.add.at(counts, (rows, p2l), 1.0)
    per_slot = np.take_along_axis(w, p2l, axis=1) / np.take_along_axis(counts, p2l, axis=1)
    return per_slot.reshape(layers, num_gpus, -1).sum(axis=2)


def balancedness(loads):
    """mean / max of GPU loads per layer (1.0 is perfect; 1.0 for an idle layer)."""
    loads = np.asarray(loads, dtype=np.float64)
    peak = loads.max(axis=1)
    mean = loads.mean(axis=1)
    return np.divide(mean, peak, out=np.ones_like(mean), where=peak > 0)


def identity_placement(num_layers, num_logical):
    """Experts in order, one replica each: the placement before any balancing."""
    return np.tile(np.arange(num_logical, dtype=np.int64), (num_layers, 1))
