"""Balance figures of a placement (plain NumPy; not on the hot path).

Used by the copy budget and by the command line's reports, plots and replays.
"""

from __future__ import annotations

import numpy as np

__all__ = ["balancedness", "gpu_loads", "imbalance_ratio", "in_order_loads", "replica_counts"]


def replica_counts(phy2log, num_logical):
    """Replicas of each expert in a placement, int64 [layers, num_logical]."""
    p2l = np.asarray(phy2log)
    layers = p2l.shape[0]
    valid = p2l >= 0  # -1: an empty slot (a lost GPU's)
    offsets = (np.arange(layers, dtype=np.int64) * num_logical)[:, None]
    counts = np.bincount((np.where(valid, p2l, 0) + offsets).ravel(), weights=valid.ravel(),
                         minlength=layers * num_logical)
    return counts.reshape(layers, num_logical).astype(np.int64)


def gpu_loads(weight, phy2log, num_gpus):
    """GPU loads [..., layers, num_gpus]; an expert's load is split evenly over its replicas.

    ``weight`` is [layers, experts] or [steps, layers, experts]; ``phy2log``
    is [layers, slots] with slots GPU-major, -1 for an empty slot.
    """
    w = np.asarray(weight, dtype=np.float64)
    p2l = np.asarray(phy2log)
    counts = replica_counts(p2l, w.shape[-1])
    # One replica's load: the load over the count, each expert divided once.
    # Empty slots (-1) carry none.
    per_replica = w / np.maximum(counts, 1)
    ids = np.where(p2l >= 0, p2l, 0)
    per_slot = np.take_along_axis(per_replica, np.broadcast_to(ids, w.shape[:-1] + ids.shape[-1:]), axis=-1)
    per_slot = per_slot * (p2l >= 0)
    return per_slot.reshape(w.shape[:-1] + (num_gpus, -1)).sum(axis=-1)


def balancedness(loads):
    """mean / max of GPU loads along the last axis (1.0 is perfect; 1.0 for an idle layer)."""
    loads = np.asarray(loads, dtype=np.float64)
    peak = loads.max(axis=-1)
    mean = loads.mean(axis=-1)
    return np.divide(mean, peak, out=np.ones_like(mean), where=peak > 0)


def imbalance_ratio(loads):
    """(max - mean) / mean of GPU loads along the last axis (0.0 is perfect)."""
    loads = np.asarray(loads, dtype=np.float64)
    mean = loads.mean(axis=-1)
    return np.divide(loads.max(axis=-1) - mean, mean, out=np.zeros_like(mean), where=mean > 0)


def in_order_loads(weight, num_gpus):
    """GPU loads with experts in order and no redundancy: the placement before balancing.

    Experts are split into ``num_gpus`` contiguous runs, as even as possible.
    """
    w = np.asarray(weight, dtype=np.float64)
    bounds = np.linspace(0, w.shape[-1], num_gpus + 1).round().astype(np.int64)
    csum = np.concatenate([np.zeros(w.shape[:-1] + (1,)), np.cumsum(w, axis=-1)], axis=-1)
    return csum[..., bounds[1:]] - csum[..., bounds[:-1]]
