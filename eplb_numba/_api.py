"""The public NumPy functions: check the arguments, then call the engine."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence

import numpy as np
from numpy.typing import ArrayLike, NDArray

from . import _engine
from ._elastic import check_budget, check_old_placement
from ._kernels.packing import SCAN_PACKS, pack_rows, pack_rows_f32
from ._kernels.replication import replicate_rows
from ._validate import F32_MAX, as_count, as_flag, as_slack, as_weight, check_layout, check_output_size

__all__ = [
    "balanced_packing",
    "warmup",
    "rebalance_experts",
    "rebalance_experts_hierarchical",
    "replicate_experts",
]


def rebalance_experts(weight: ArrayLike, num_replicas: int, num_groups: int, num_nodes: int, num_gpus: int, *,
                      old_phy2log: ArrayLike | None = None, max_load_slack: float = 0.0,
                      avoid_duplicates: bool = False, old_num_gpus: int | None = None,
                      rank_mapping: Mapping[int, int] | Sequence[int] | None = None,
                      failed_gpus: Iterable[int] | None = None, max_copies: int | None = None,
                      min_imbalance: float = 0.0, quality: bool = False,
                      ) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.int64]]:
    """Plan replicas and their placement from per-expert loads.

    Bit-identical to vLLM's ``rebalance_experts`` (DeepSeek's EPLB): the
    hierarchical policy when ``num_groups % num_nodes == 0``, the global one
    otherwise.  The keyword options go beyond the reference (see
    ``docs/movement.md``); left at their defaults, nothing changes.

    Parameters
    ----------
    weight : array_like, shape (layers, num_logical)
        Load of every logical expert (token counts), any real numeric dtype;
        read as float32 like the reference.  Finite and non-negative.
    num_replicas : int
        Physical expert slots in all; a multiple of ``num_gpus`` and at least
        ``num_logical``.
    num_groups : int
        Expert groups of the model (``num_logical`` is a multiple of it under
        the hierarchical policy).
    num_nodes : int
        Server nodes; ``num_gpus`` is a multiple of it.
    num_gpus : int
        GPUs (EP ranks) in all.
    old_phy2log : array_like of int, shape (layers, old slots), optional
        The placement in service, -1 for an empty slot.  Given, the plan
        starts from it and moves as few replicas as it can while no GPU of a
        layer ends up busier than the reference's busiest on the new layout
        (times ``1 + max_load_slack``); experts that stay on a GPU keep their
        slot.  Where that search fails, the reference's placement relabelled
        onto the old GPUs is used.  It may come from another GPU count
        (``old_num_gpus``).
    max_load_slack : float, optional
        Tolerated excess over the reference's busiest GPU (0.01 = 1%).
    avoid_duplicates : bool, optional
        Swap away second replicas of an expert on one GPU wherever a swap
        within the node keeps every GPU within that bound.
    old_num_gpus : int, optional
        GPUs of ``old_phy2log`` when it was planned for another GPU count
        (scaling up or down).  Default: ``num_gpus`` where it has
        ``num_replicas`` slots, else its slots over the new slots per GPU.
    rank_mapping : dict or sequence of int, optional
        The new GPU of each old GPU, -1 for one that leaves (vLLM's
        ``rank_mapping``).  Default: old GPU ``g`` stays GPU ``g`` when
        ``g < num_gpus``, and leaves otherwise.
    failed_gpus : iterable of int, optional
        GPUs of the new layout that are lost: their experts must come back
        elsewhere, and their slots are -1 (empty) in the result, which
        plans on the live GPUs (see ``docs/movement.md``).
    max_copies : int, optional
        At most this many expert copies from ``old_phy2log`` (same GPUs),
        over all layers: layers change whole, those whose busiest GPU gets
        lightest per copy first (``layer_gains``); the others keep the old
        placement.
    min_imbalance : float, optional
        Leave alone every layer whose old placement's ``(max - mean) / mean``
        GPU load, on these loads, is at most this (0.05 = 5%).
    quality : bool, optional
        Improve the reference's plan by local search before anything else
        uses it: swaps between GPUs of a node and replica counts moved
        between experts, while the busiest GPU gets lighter (see
        ``docs/quality.md``).  Never worse than the reference on any layer;
        groups stay on their nodes.  With ``old_phy2log`` the improved plan
        is the bound the movement-aware plan must meet.

    Returns
    -------
    phy2log : ndarray of int64, shape (layers, num_replicas)
        Logical expert held by each slot; slots are GPU-major.
    log2phy : ndarray of int64, shape (layers, num_logical, num_replicas - num_logical + 1)
        Slots of each expert's replicas by replica rank, padded with -1.
    logcnt : ndarray of int64, shape (layers, num_logical)
        Number of replicas of each expert.

    A slot of a failed GPU holds -1 in ``phy2log`` and appears in no map.

    Examples
    --------
    >>> import numpy as np
    >>> from eplb_numba import rebalance_experts
    >>> w = np.array([[90, 132, 40, 61, 104, 165, 39, 4, 73, 56, 183, 86]])
    >>> phy2log, log2phy, logcnt = rebalance_experts(w, 16, 4, 2, 8)
    >>> phy2log[0].tolist()
    [5, 6, 5, 7, 8, 4, 3, 4, 10, 9, 10, 2, 0, 1, 11, 1]
    >>> logcnt[0].tolist()
    [1, 2, 1, 1, 2, 2, 1, 1, 1, 1, 2, 1]
    """
    w = as_weight(weight)
    layout = check_layout(w.shape, num_replicas, num_groups, num_nodes, num_gpus)
    # Checked whether or not they are used: a typo must not pass silently.
    max_load_slack = as_slack(max_load_slack)
    avoid_duplicates = as_flag(avoid_duplicates, "avoid_duplicates")
    quality = as_flag(quality, "quality")
    old, change = check_old_placement(old_phy2log, layout, old_num_gpus, rank_mapping, failed_gpus)
    budget = check_budget(max_copies, min_imbalance, old, change)
    if old is None and not avoid_duplicates and not quality:
        return _engine.rebalance(w, layout)
    return _engine.beyond_reference(w, layout, None, old, max_load_slack, avoid_duplicates, change, budget,
                                    quality)[:3]


def rebalance_experts_hierarchical(weight: ArrayLike, num_physical_experts: int, num_groups: int, num_nodes: int,
                                   num_gpus: int) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.int64]]:
    """The reference's hierarchical policy, returning replica ranks.

    Parameters
    ----------
    weight : array_like, shape (layers, num_logical)
        Loads, as for :func:`rebalance_experts`.
    num_physical_experts : int
        Slots in all, a multiple of ``num_gpus``.
    num_groups : int
        Expert groups; a multiple of ``num_nodes`` and a divisor of ``num_logical``.
    num_nodes, num_gpus : int
        Nodes, and GPUs in all (a multiple of ``num_nodes``).

    Returns
    -------
    phy2log : ndarray of int64, shape (layers, num_physical_experts)
        Logical expert of each slot.
    phyrank : ndarray of int64, shape (layers, num_physical_experts)
        Replica rank of each slot (0 for an expert's first replica).
    logcnt : ndarray of int64, shape (layers, num_logical)
        Replicas per expert.
    """
    w = as_weight(weight)
    layout = check_layout(w.shape, num_physical_experts, num_groups, num_nodes, num_gpus, policy="hierarchical")
    return _engine.place(w, layout)


def balanced_packing(weight: ArrayLike, num_packs: int) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Pack each row's ``n`` items into ``num_packs`` packs of ``n // num_packs``.

    Items go heaviest first (torch's sort order, ties included) to the
    lightest pack with room, the lowest pack index on equal load.

    Parameters
    ----------
    weight : array_like, shape (rows, n)
        Item weights.  Sorted as float32; summed as float64 when float64,
        as int64 when integer, float32 otherwise (as the reference does).
    num_packs : int
        Number of packs; must divide ``n``.

    Returns
    -------
    pack_index, rank_in_pack : ndarray of int64, shape (rows, n)
        Pack of each item and its position within the pack.
    """
    w = as_weight(weight, dtype=None)
    num_packs = as_count(num_packs, "num_packs")
    rows, n = w.shape
    if n % num_packs:
        raise ValueError(
            f"num_packs ({num_packs}) must divide the number of items per row "
            f"({n}, weight.shape[1]) so every pack gets the same count"
        )
    if w.dtype == np.float64 and w.size and w.max() > F32_MAX:
        # Sorted as float32 (as the reference sorts): such a load has no float32 value.
        where = tuple(int(i) for i in np.argwhere(w > F32_MAX)[0])
        raise ValueError(f"weight{list(where)} is {w[where].item()!r}, beyond the float32 range (3.4e38) that "
                         f"items are sorted in; rescale the weights")
    pack_index = np.empty((rows, n), dtype=np.int64)
    rank_in_pack = np.empty((rows, n), dtype=np.int64)
    if rows and n:
        if w.dtype == np.float32 and n > num_packs and num_packs <= SCAN_PACKS:
            pack_rows_f32(w, num_packs, pack_index, rank_in_pack)
        else:
            keys = w if w.dtype == np.float32 else w.astype(np.float32)
            pack_rows(keys, w, num_packs, pack_index, rank_in_pack)
    return pack_index, rank_in_pack


def replicate_experts(weight: ArrayLike,
                      num_phy: int) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.int64]]:
    """Add replicas one at a time to the expert with the highest load per replica.

    Parameters
    ----------
    weight : array_like, shape (rows, num_log)
        Expert loads; float64 stays float64, anything else is read as float32.
    num_phy : int
        Replicas per row in all, at least ``num_log``.

    Returns
    -------
    phy2log : ndarray of int64, shape (rows, num_phy)
        Expert of each replica; the first ``num_log`` are the experts in order.
    rank : ndarray of int64, shape (rows, num_phy)
        Replica rank of each replica.
    logcnt : ndarray of int64, shape (rows, num_log)
        Replicas per expert.
    """
    w = as_weight(weight, dtype=None)
    if w.dtype != np.float64:
        w = w.astype(np.float32)
    num_phy = as_count(num_phy, "num_phy")
    rows, num_log = w.shape
    if num_log < 1:
        raise ValueError(f"weight must have at least one expert column, got shape {w.shape}")
    if num_phy < num_log:
        raise ValueError(
            f"num_phy ({num_phy}) must be at least the number of experts ({num_log}, weight.shape[1])"
        )
    check_output_size([("phy2log", (rows, num_phy)), ("rank", (rows, num_phy)), ("logcnt", (rows, num_log))],
                      "num_phy")
    phy2log = np.empty((rows, num_phy), dtype=np.int64)
    rank = np.empty((rows, num_phy), dtype=np.int64)
    logcnt = np.empty((rows, num_log), dtype=np.int64)
    if rows:
        replicate_rows(w, num_phy, phy2log, rank, logcnt)
    return phy2log, rank, logcnt


def _warmup_steps():
    """``(what, call)`` pairs that between them compile every kernel, for ``warmup``.

    Inputs of every kind reach the kernels as the same array types (the
    wrappers copy what is read-only, strided or of another dtype), so one
    call per kernel and dtype covers them; threads run the same kernels.
    """
    from ._migration import plan_migration

    w = np.arange(2 * 16, dtype=np.float32).reshape(2, 16)
    layout = check_layout(w.shape, 24, 4, 2, 8)
    sums = w.reshape(2, 4, 4).sum(-1)
    # A valid placement that is not the plan's: every expert, in reverse order.
    old = np.concatenate([np.arange(16)[::-1], np.arange(8)])[None].repeat(2, 0)
    p2l = old[:, ::-1].copy()

    def movement():
        for nodes, gpus in ((2, 8), (3, 6)):  # hierarchical and global
            moved = rebalance_experts(w, 24, 4, nodes, gpus, old_phy2log=old, avoid_duplicates=True)[0]
            plan_migration(old, moved, gpus, nodes)
            rebalance_experts(w, 24, 4, nodes, gpus, old_phy2log=old, max_copies=4)

    return [
        ("plan", lambda: (rebalance_experts(w, 24, 4, 2, 8), _engine.rebalance(w, layout, sums),
                          rebalance_experts_hierarchical(w, 24, 4, 2, 8))),
        ("packing and replication helpers", lambda: [
            (balanced_packing(w.astype(dt), 4), balanced_packing(w.astype(dt), 16),
             replicate_experts(w.astype(dt), 20))
            for dt in (np.float32, np.float64, np.int64)]),
        ("slot preservation", lambda: _engine.preserve_slots(p2l, old, 8, 16)),
        ("movement-aware plans and migration", movement),
        ("duplicate avoidance", lambda: rebalance_experts(w, 24, 4, 2, 8, avoid_duplicates=True)),
        ("quality mode", lambda: rebalance_experts(w, 24, 4, 2, 8, quality=True)),
        # The SGLang adapter's plans: DeepSeek's float64 pack sums.
        ("DeepSeek's packing (SGLang)", lambda: _engine.rebalance(w, layout, sums, wide=True)),
    ]


def warmup(parallel: bool | None = None,
           progress: Callable[[int, int, str, float], object] | None = None) -> float:
    """Compile (or load from the on-disk cache) every kernel.

    Call it before serving starts so that no plan pays a compile; it covers
    every input kind and option (threads run the same kernels).

    Parameters
    ----------
    parallel : bool, optional
        Ignored; kept for callers of earlier versions, whose threaded plans
        had kernels of their own.
    progress : callable, optional
        Called as ``progress(step, steps, what, seconds)`` after each step.

    Returns
    -------
    float
        Seconds taken (see ``docs/benchmarks.md`` for cold figures; well
        under a second from the cache).
    """
    import time

    start = time.perf_counter()
    steps = _warmup_steps()
    for i, (what, call) in enumerate(steps):
        t = time.perf_counter()
        call()
        if progress is not None:
            progress(i + 1, len(steps), what, time.perf_counter() - t)
    return time.perf_counter() - start
