"""A copy budget: change only the layers that gain most per expert copy.

A serving engine that moves a few layers per step (vLLM's layer-by-layer
transfer, SGLang's rebalance chunks) wants the layers that lower their
busiest GPU most per copy first, and may want to stop after K copies.  Both
come from one table per layer: the copies that take it from the old
placement to a new one, and how much lower its busiest GPU gets.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numpy.typing import ArrayLike

from ._engine import maps_in_slot_order, migration_copies
from ._validate import as_count, as_ids, as_weight, check_ids_of, check_layout

__all__ = ["LayerGains", "apply_budget", "layer_gains"]


class LayerGains(NamedTuple):
    """Per layer: what changing it costs and gains; ``order`` is the order to move layers in."""

    order: np.ndarray  # layers that gain, largest gain per copy first (ties: lower layer first)
    copies: np.ndarray  # expert copies that take each layer from old to new
    gain: np.ndarray  # old busiest GPU load minus new, on the given loads (float64)
    imbalance: np.ndarray  # old placement's (max - mean) / mean GPU load, per layer


def _peaks_and_imbalance(w, phy2log, num_gpus):
    # Busiest GPU load and (max - mean) / mean per layer, each expert's load
    # split evenly over its replicas (-1 slots hold nothing).
    layers, slots = phy2log.shape
    experts = w.shape[1]
    valid = phy2log >= 0
    ids = np.where(valid, phy2log, 0)
    flat = (np.arange(layers)[:, None] * experts + ids).ravel()
    counts = np.bincount(flat, weights=valid.ravel(), minlength=layers * experts).reshape(layers, experts)
    share = np.take_along_axis(w / np.maximum(counts, 1), ids, axis=1) * valid
    loads = share.reshape(layers, num_gpus, -1).sum(axis=2)
    peak = loads.max(axis=1)
    mean = loads.mean(axis=1)
    return peak, np.divide(peak - mean, mean, out=np.zeros_like(mean), where=mean > 0)


def _gains(w, old, new, num_gpus, num_nodes, num_logical):
    copies, _, _ = migration_copies(old, new, num_gpus, num_nodes, num_logical)
    per_layer = np.bincount(copies[0], minlength=new.shape[0])
    old_peak, imbalance = _peaks_and_imbalance(w, old, num_gpus)
    new_peak, _ = _peaks_and_imbalance(w, new, num_gpus)
    gain = old_peak - new_peak
    moving = np.flatnonzero((per_layer > 0) & (gain > 0))
    # Gain per copy, largest first; a stable sort keeps lower layers first on ties.
    order = moving[np.argsort(-(gain[moving] / per_layer[moving]), kind="stable")]
    return LayerGains(order, per_layer, gain, imbalance)


def layer_gains(weight: ArrayLike, old_phy2log: ArrayLike, new_phy2log: ArrayLike, num_gpus: int,
                num_nodes: int = 1) -> LayerGains:
    """What moving each layer from ``old_phy2log`` to ``new_phy2log`` costs and gains.

    Parameters
    ----------
    weight : array_like, shape (layers, num_logical)
        Loads to judge the placements on (the loads the new plan was made from, or better,
        those that follow it).
    old_phy2log, new_phy2log : array_like of int, shape (layers, num_replicas)
        Placements on the same GPUs, as ``rebalance_experts`` returns them.
    num_gpus, num_nodes : int
        GPUs in all, and nodes (for the copies' sources, as in ``plan_migration``).

    Returns
    -------
    LayerGains
        ``order``: the layers whose busiest GPU gets lighter, largest gain per copy first: the
        order to move layers in, a few at a time.  ``copies``, ``gain`` and ``imbalance``
        (the old placement's) per layer.
    """
    w = as_weight(weight, dtype=np.float64)
    num_gpus = as_count(num_gpus, "num_gpus")
    num_nodes = as_count(num_nodes, "num_nodes")
    new, new_span = as_ids(new_phy2log, "new_phy2log")
    if new.ndim != 2 or new.shape[0] != w.shape[0]:
        raise ValueError(f"new_phy2log must have shape ({w.shape[0]}, num_replicas), one row per layer of "
                         f"weight, got {new.shape}")
    layout = check_layout(w.shape, new.shape[1], 1, num_nodes, num_gpus, maps=False)
    new = check_ids_of(new, new_span, layout, "new_phy2log")
    old, old_span = as_ids(old_phy2log, "old_phy2log")
    old = check_ids_of(old, old_span, layout, "old_phy2log")
    if old.shape != new.shape:
        raise ValueError(f"old_phy2log must have new_phy2log's shape {new.shape}, got {old.shape}; a change of "
                         f"GPUs moves every layer (plan_migration lists those copies)")
    return _gains(w, old, new, num_gpus, num_nodes, layout.num_logical)


def apply_budget(w, layout, old, planned, max_copies, min_imbalance):
    """``planned`` (phy2log, log2phy, logcnt) changed only where the budget allows.

    Layers that must change (an empty slot, an expert without a replica)
    are taken first; then layers whose old imbalance exceeds
    ``min_imbalance``, by gain per copy, while their copies fit in
    ``max_copies``; the others keep the old placement.  Returns the
    budgeted (phy2log, log2phy, logcnt).
    """
    phy2log = planned[0]
    gains = _gains(np.asarray(w, dtype=np.float64), old, phy2log, layout.num_gpus, layout.num_nodes,
                   layout.num_logical)
    # A layer with an empty slot or an expert without a replica must change,
    # whatever it costs: its copies count against the budget first.
    experts = layout.num_logical
    ids = np.where(old >= 0, old, experts)
    flat = (np.arange(layout.num_layers)[:, None] * (experts + 1) + ids).ravel()
    held = np.bincount(flat, minlength=layout.num_layers * (experts + 1)).reshape(layout.num_layers, -1)
    take = (held[:, experts] > 0) | (held[:, :experts] == 0).any(axis=1)
    spent = int(gains.copies[take].sum())
    for layer in gains.order:
        if take[layer]:
            continue
        cost = int(gains.copies[layer])
        # Greedy by gain per copy: a layer that does not fit leaves room for cheaper ones.
        if gains.imbalance[layer] > min_imbalance and spent + cost <= max_copies:
            take[layer] = True
            spent += cost
    if take.all():
        return planned
    out = np.where(take[:, None], phy2log, old)
    log2phy, logcnt = maps_in_slot_order(out, layout.num_logical)
    return out, log2phy, logcnt
