"""A lower bound on the busiest GPU of any placement under the reference's rules.

Plain NumPy over all layers at once (a few milliseconds at DeepSeek-V3's
size); not on the planning path.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ._validate import as_weight, check_layout

__all__ = ["balance_bound"]

# Bisection steps: the interval ends 2**-64 of the largest load wide.
_STEPS = 64


def _smallest_others(values: np.ndarray, k: int) -> np.ndarray:
    """Per row and column j: the sum of the k smallest values of the row other than ``values[:, j]``."""
    if k == 0:
        return np.zeros_like(values)
    order = np.argsort(values, axis=1, kind="stable")
    ranked = np.take_along_axis(values, order, axis=1)
    first_k = ranked[:, :k].sum(axis=1, keepdims=True)
    first_k1 = ranked[:, :k + 1].sum(axis=1, keepdims=True)
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.arange(values.shape[1])[None], axis=1)
    # A column among the k smallest is replaced by the (k+1)-th.
    return np.where(rank < k, first_k1 - values, first_k)


def _node_bound(sums: np.ndarray, per_node: int) -> np.ndarray:
    """Per layer, a load that the busiest node's groups reach under any split of the groups.

    Exact for two groups a node: pairing the heaviest with the lightest,
    the next with the next, minimises the heaviest pair.  Otherwise a node
    holds some group and at least the lightest others a node takes.
    """
    if per_node == 2:
        ranked = np.sort(sums, axis=1)
        return (ranked + ranked[:, ::-1]).max(axis=1)
    return (sums + _smallest_others(sums, per_node - 1)).max(axis=1)


def _replica_bound(w: np.ndarray, num_groups: int, groups_per_node: int, gpus_per_node: int,
                   slots_per_node: int, num_slots: int) -> np.ndarray:
    """Per layer, the least x such that some replica counts could keep every expert's heaviest GPU at x.

    Expert e with c replicas on the g GPUs of its node has ``ceil(c / g)`` of
    them on one GPU, carrying ``w_e * ceil(c / g) / c >= w_e / g``; at or
    below x it needs ``c >= ceil(w_e / x)``, possible only for x >= w_e / g.
    Counts must fit the slots: all of them in ``num_slots``, and a group's
    with the fewest its node partners need in ``slots_per_node``.  Found by
    bisection; the returned value is one that fails (so below the least).
    """
    layers, experts = w.shape
    top = w.max(axis=1)
    lo = np.zeros(layers)
    hi = top.copy()  # one replica each always fits
    floor = top / gpus_per_node
    for _ in range(_STEPS):
        x = (lo + hi) / 2
        safe = np.where(x > 0, x, 1.0)[:, None]
        need = np.maximum(np.ceil(w / safe), 1.0)
        groups = need.reshape(layers, num_groups, -1).sum(axis=2)
        per_node = groups + _smallest_others(groups, groups_per_node - 1)
        ok = ((x >= floor) & (groups.sum(axis=1) <= num_slots) & (per_node.max(axis=1) <= slots_per_node)
              & (x > 0))
        hi = np.where(ok, x, hi)
        lo = np.where(ok, lo, x)
    return lo


def balance_bound(weight: ArrayLike, num_replicas: int, num_groups: int, num_nodes: int,
                  num_gpus: int) -> NDArray[np.float64]:
    """Per layer, a load that no placement's busiest GPU can go below.

    Valid for every placement under the reference's rules with these
    arguments (the hierarchical policy: each expert group on one node, the
    same number of groups and slots on every node; the global policy: any
    expert anywhere), whatever its replica counts.  The busiest GPU of the
    reference's plan, or of ``quality=True``, divided by this bound says how
    far from the best that plan can be.

    It is the largest of three bounds:

    - the mean: the layer's load over the GPUs;
    - the nodes (hierarchical policy): the busiest node's groups under the
      best split of groups over nodes (exact for two groups a node; else a
      node holds a group and at least the lightest others a node takes),
      spread evenly over its GPUs;
    - the replicas: an expert with c replicas on a node's g GPUs puts
      ``ceil(c / g)`` on one, and the counts must fit the slots (all slots,
      and a node's slots beside the fewest its partner groups need).

    Parameters
    ----------
    weight, num_replicas, num_groups, num_nodes, num_gpus
        As for ``rebalance_experts``.

    Returns
    -------
    ndarray of float64, shape (layers,)
        Loads are read as float32, as the plans read them.

    Examples
    --------
    >>> import numpy as np
    >>> from eplb_numba import balance_bound
    >>> w = np.array([[90, 10, 10, 10], [40, 30, 20, 10]])
    >>> balance_bound(w, 4, 1, 1, 4).round(3).tolist()  # no slot spare for a second replica of 90
    [90.0, 40.0]
    >>> balance_bound(w, 8, 1, 1, 4).round(3).tolist()  # slots to spare: the means
    [30.0, 25.0]
    """
    w32 = as_weight(weight)
    layout = check_layout(w32.shape, num_replicas, num_groups, num_nodes, num_gpus, maps=False)
    w = w32.astype(np.float64)
    layers = w.shape[0]
    if not layers:
        return np.zeros(0)
    if layout.hierarchical:
        groups, nodes = layout.num_groups, layout.num_nodes
    else:
        groups, nodes = 1, 1
    gpus_per_node = num_gpus // nodes
    groups_per_node = groups // nodes
    mean = w.sum(axis=1) / num_gpus
    sums = w.reshape(layers, groups, -1).sum(axis=2)
    node = _node_bound(sums, groups_per_node) / gpus_per_node
    replicas = _replica_bound(w, groups, groups_per_node, gpus_per_node, num_replicas // nodes, num_replicas)
    # The bisection's value fails its test by construction; 1e-12 below it
    # absorbs a test that failed by one rounding of w / x.
    return np.maximum(np.maximum(mean, node), replicas * (1.0 - 1e-12))
