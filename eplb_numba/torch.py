"""Torch adapter: the NumPy kernels behind tensors on any device.

Outputs are int64 tensors on the input's device, in the reference's shapes.
Where the reference computes in torch (the float32 group sums of the
hierarchical policy), so does this adapter, on the same CPU float32 tensor,
so results match the reference on every finite input.
"""

from __future__ import annotations

try:
    import torch as _torch
except ImportError as exc:  # pragma: no cover - exercised in a subprocess test
    raise ImportError(
        "eplb_numba.torch needs PyTorch; install it with `pip install 'eplb-numba[torch]'` "
        "(or `pip install torch`), or use the NumPy API in `eplb_numba`"
    ) from exc

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from . import _api, _engine
from ._elastic import check_budget, check_old_placement
from ._pinned import POOL
from ._validate import as_flag, as_slack, check_dtype, check_layout, check_weight_values
from ._vllm_methods import VllmDefaultMethods, as_width

__all__ = [
    "EplbNumbaMovementPolicy",
    "EplbNumbaQualityPolicy",
    "EplbNumbaPolicy",
    "balanced_packing",
    "rebalance_experts",
    "install_vllm_policy",
    "rebalance_experts_hierarchical",
    "replicate_experts",
]


def _as_tensor(weight, name="weight", dims=(2,)):
    if not isinstance(weight, _torch.Tensor):
        arr = np.asarray(weight)
        check_dtype(arr.dtype, name)
        weight = _torch.from_numpy(np.ascontiguousarray(arr))
    if weight.is_meta:
        raise ValueError(f"{name} is on the meta device and holds no values; pass a tensor of token counts")
    if weight.layout != _torch.strided:
        raise TypeError(f"{name} must be a dense tensor, got layout {weight.layout}; pass {name}.to_dense()")
    if weight.is_quantized:
        raise TypeError(f"{name} is a quantized tensor ({weight.dtype}); pass {name}.dequantize()")
    if weight.is_complex():
        raise TypeError(f"{name} must be real, got complex dtype {weight.dtype}; pass token counts")
    if weight.dtype == _torch.bool:
        raise TypeError(f"{name} must hold numbers, got bool; pass token counts, e.g. {name}.long()")
    if weight.dim() not in dims:
        if 3 in dims:
            raise ValueError(f"{name} must be [steps, layers, experts] or [layers, experts], got shape "
                             f"{tuple(weight.shape)}; for one layer pass {name}[..., None, :]")
        raise ValueError(
            f"{name} must be 2-D [layers, experts], got shape {tuple(weight.shape)}; "
            f"for one layer pass {name}[None, :], for per-step counts sum over steps first"
        )
    return weight.detach()


def _host_float32(weight):
    # Exactly the reference's conversion: cast on the source device, then copy.
    w = weight.float().cpu().contiguous()
    check_weight_values(w.numpy(), "weight")
    return w


def _group_sums(w, layout):
    """Group loads where the hierarchical policy sorts groups, else None.

    torch's own float32 reduction on the same CPU tensor, as the reference
    sums groups, so the order of summation (and every rounding) matches.
    """
    if not layout.hierarchical or layout.num_groups == layout.num_nodes or not layout.num_layers:
        return None
    return w.unflatten(-1, (layout.num_groups, layout.num_logical // layout.num_groups)).sum(-1).numpy()


def _to_device(arrays, device) -> Any:
    out = tuple(_torch.from_numpy(a) for a in arrays)
    if device.type == "cpu":
        return out
    if device.type != "cuda":
        return tuple(t.to(device) for t in out)
    # Pinned staging lets the copies run asynchronously on the current stream.
    return tuple(t.pin_memory().to(device, non_blocking=True) for t in out)


def rebalance_experts(weight: _torch.Tensor, num_replicas: int, num_groups: int, num_nodes: int, num_gpus: int, *,
                      old_phy2log: _torch.Tensor | Sequence | None = None, max_load_slack: float = 0.0,
                      avoid_duplicates: bool = False, old_num_gpus: int | None = None,
                      rank_mapping: Mapping[int, int] | Sequence[int] | None = None,
                      failed_gpus: Iterable[int] | None = None, max_copies: int | None = None,
                      min_imbalance: float = 0.0, quality: bool = False,
                      ) -> tuple[_torch.Tensor, _torch.Tensor, _torch.Tensor]:
    """:func:`eplb_numba.rebalance_experts` over a tensor on any device.

    Returns ``(phy2log, log2phy, logcnt)`` as int64 tensors on
    ``weight.device``; see the NumPy function for shapes and for the
    keyword options (``old_phy2log`` may be a tensor on any device).  For a
    CUDA input the loads come over and the plan goes back through pinned
    host buffers reused between calls, on the caller's current stream; the
    results may still be in flight when this returns, as for any CUDA op.
    """
    weight = _as_tensor(weight)
    device = weight.device
    cuda = device.type == "cuda"
    w = _cuda_float32(weight) if cuda else _host_float32(weight)
    try:
        layout = check_layout(w.shape, num_replicas, num_groups, num_nodes, num_gpus)
        # Checked whether or not they are used, as in the NumPy function.
        max_load_slack = as_slack(max_load_slack)
        avoid_duplicates = as_flag(avoid_duplicates, "avoid_duplicates")
        quality = as_flag(quality, "quality")
        sums = _group_sums(w, layout)
        old_ids = old_phy2log.detach().cpu().numpy() if isinstance(old_phy2log, _torch.Tensor) else old_phy2log
        old, change = check_old_placement(old_ids, layout, old_num_gpus, rank_mapping, failed_gpus)
        budget = check_budget(max_copies, min_imbalance, old, change)
        if old is not None or avoid_duplicates or quality:
            out = _engine.beyond_reference(w.numpy(), layout, sums, old, max_load_slack, avoid_duplicates, change,
                                           budget, quality)[:3]
            return _to_device(out, device)
        if cuda:
            return _plan_to_cuda(w, layout, sums, device)
        phy2log, log2phy, logcnt = _engine.rebalance(w.numpy(), layout, sums)
        if device.type == "cpu":
            return _torch.from_numpy(phy2log), _torch.from_numpy(log2phy), _torch.from_numpy(logcnt)
        return _to_device((phy2log, log2phy, logcnt), device)
    finally:
        if cuda:
            POOL.give((w,), None)


def _cuda_float32(weight):
    # The reference's conversion (cast on the GPU, then copy), through a
    # pinned buffer: the copy runs at full speed and waits only for the
    # caller's stream.
    src = weight.float()
    (host,), _ = POOL.take(((tuple(src.shape), _torch.float32),))
    host.copy_(src, non_blocking=True)
    _torch.cuda.current_stream(src.device).synchronize()
    try:
        check_weight_values(host.numpy(), "weight")
    except Exception:
        POOL.give((host,), None)
        raise
    return host


def _plan_to_cuda(w, layout, sums, device):
    # The plan into one pinned buffer, copied over on the caller's stream in
    # one piece: phy2log, logcnt, and each slot's place in log2phy (from its
    # replica rank).  log2phy itself is made on the GPU from those (the
    # same table), so its -1 padding, most of the result, never crosses the
    # bus; and every CUDA call saved counts where a call costs tens of us.
    layers, experts, slots = layout.num_layers, layout.num_logical, layout.num_replicas
    width = slots - experts + 1
    n_map, n_cnt = layers * slots, layers * experts
    (host,), copied = POOL.take((((2 * n_map + n_cnt,), _torch.int64),), device)
    flat = host.numpy()
    phy2log = flat[:n_map].reshape(layers, slots)
    logcnt = flat[n_map:n_map + n_cnt].reshape(layers, experts)
    place_in = flat[n_map + n_cnt:].reshape(layers, slots)
    _engine.place(w.numpy(), layout, sums, out=(phy2log, logcnt, place_in))
    place_in += phy2log * width
    on_gpu = host.to(device, non_blocking=True)
    stream = _torch.cuda.current_stream(device)
    if copied is None:
        copied = _torch.cuda.Event()
    copied.record(stream)
    POOL.give((host,), copied, device)
    log2phy = _torch.full((layers, experts, width), -1, dtype=_torch.int64, device=device)
    log2phy.view(layers, experts * width).scatter_(1, on_gpu[n_map + n_cnt:].view(layers, slots),
                                                   _slot_ids(device, slots).expand(layers, slots))
    return on_gpu[:n_map].view(layers, slots), log2phy, on_gpu[n_map:n_map + n_cnt].view(layers, experts)


_SLOT_IDS: dict[tuple[Any, int], Any] = {}


def _slot_ids(device, slots):
    # arange(slots) on the device, made once per device and size (and
    # finished before any stream reads it).
    key = (device, slots)
    ids = _SLOT_IDS.get(key)
    if ids is None:
        ids = _torch.arange(slots, device=device)
        _torch.cuda.current_stream(device).synchronize()
        _SLOT_IDS[key] = ids
    return ids


def rebalance_experts_hierarchical(weight: _torch.Tensor, num_physical_experts: int, num_groups: int, num_nodes: int,
                                   num_gpus: int) -> tuple[_torch.Tensor, _torch.Tensor, _torch.Tensor]:
    """:func:`eplb_numba.rebalance_experts_hierarchical` over a tensor (read as float32)."""
    weight = _as_tensor(weight)
    w = _host_float32(weight)
    layout = check_layout(w.shape, num_physical_experts, num_groups, num_nodes, num_gpus, policy="hierarchical")
    sums = _group_sums(w, layout)
    return _to_device(_engine.place(w.numpy(), layout, sums), weight.device)


def _host_numpy(weight):
    weight = _as_tensor(weight)
    if weight.dtype.is_floating_point and weight.dtype not in (_torch.float32, _torch.float64):
        weight = weight.float()  # float16, bfloat16, float8: read as float32, as the reference reads them
    return weight.cpu().numpy(), weight.device


def balanced_packing(weight: _torch.Tensor, num_packs: int) -> tuple[_torch.Tensor, _torch.Tensor]:
    """:func:`eplb_numba.balanced_packing` over a tensor; int64 results on its device."""
    w, device = _host_numpy(weight)
    return _to_device(_api.balanced_packing(w, num_packs), device)


def replicate_experts(weight: _torch.Tensor, num_phy: int) -> tuple[_torch.Tensor, _torch.Tensor, _torch.Tensor]:
    """:func:`eplb_numba.replicate_experts` over a tensor; int64 results on its device."""
    w, device = _host_numpy(weight)
    return _to_device(_api.replicate_experts(w, num_phy), device)


def _keep_old_slots(phy2log, old, num_gpus, num_logical):
    old = _as_tensor(old, "old_global_expert_indices")
    # Slot by slot, as vLLM's default policy compares them: an expert keeps
    # a slot only where the same GPU held it there (see as_width for old
    # maps of another width, after a scaling event).
    old_np = as_width(old.cpu().to(_torch.int64).numpy(), tuple(phy2log.shape), "old_global_expert_indices")
    return _to_device(_engine.preserve_slots(phy2log.cpu().numpy(), old_np, num_gpus, num_logical), phy2log.device)


def _policy_base():
    try:
        from vllm.distributed.eplb.policy.abstract import AbstractEplbPolicy
    except Exception:  # vLLM absent, or a version without the policy interface
        return object
    return AbstractEplbPolicy


# vLLM's AbstractEplbPolicy where vLLM is installed, else object: typed as Any.
_PolicyBase: Any = _policy_base()


class EplbNumbaPolicy(VllmDefaultMethods, _PolicyBase):
    """vLLM EPLB policy running the bit-identical Numba planner.

    Matches ``AbstractEplbPolicy.rebalance_experts``: a classmethod taking
    ``(weight, num_replicas, num_groups, num_nodes, num_ranks,
    old_global_expert_indices=None)``.  Given the old placement, experts that
    stay on a GPU keep their slot (as vLLM's default policy does).  It also
    has the default policy's other classmethods (``balanced_packing``,
    ``replicate_experts``, ``rebalance_experts_hierarchical``,
    ``preserve_intragpu_slots``), with the return values of the installed
    vLLM (``VLLM_TUPLE_API`` overrides; see ``eplb_numba._vllm_methods``).
    """

    @classmethod
    def rebalance_experts(
        cls,
        weight: _torch.Tensor,
        num_replicas: int,
        num_groups: int,
        num_nodes: int,
        num_ranks: int,
        old_global_expert_indices: _torch.Tensor | None = None,
    ) -> tuple[_torch.Tensor, _torch.Tensor, _torch.Tensor] | _torch.Tensor:
        if cls._tuple_api():
            # vLLM 0.13 to 0.18 return the maps on the loads' device.
            return cls._plan(weight, num_replicas, num_groups, num_nodes, num_ranks, old_global_expert_indices)
        # vLLM 0.19 and later plan from ``weight.cpu()`` and return a CPU map
        # whatever the loads' device (its callers assert so): plan on the host.
        weight = _as_tensor(weight).cpu()
        return cls._plan(weight, num_replicas, num_groups, num_nodes, num_ranks, old_global_expert_indices)[0]

    @classmethod
    def _plan(cls, weight, num_replicas, num_groups, num_nodes, num_ranks, old):
        phy2log, log2phy, logcnt = rebalance_experts(weight, num_replicas, num_groups, num_nodes, num_ranks)
        if old is not None:
            phy2log, log2phy = _keep_old_slots(phy2log, old, num_ranks, logcnt.shape[1])
        return phy2log, log2phy, logcnt


class EplbNumbaMovementPolicy(EplbNumbaPolicy):
    """vLLM EPLB policy that moves few expert weights (opt-in; not bit-identical).

    Given ``old_global_expert_indices`` it plans with
    ``rebalance_experts(..., old_phy2log=old, max_load_slack=MAX_LOAD_SLACK,
    avoid_duplicates=AVOID_DUPLICATES)``: no layer's busiest GPU ends up
    busier than the reference's (times ``1 + MAX_LOAD_SLACK``).  Subclass to
    change the two settings.
    """

    MAX_LOAD_SLACK = 0.0
    AVOID_DUPLICATES = True
    # A copy budget per rebalance (None: none) and the imbalance under which
    # a layer is left alone; see rebalance_experts.
    MAX_COPIES: int | None = None
    MIN_IMBALANCE = 0.0
    # The reference's plan improved by local search (docs/quality.md).
    QUALITY = False

    @classmethod
    def _plan(cls, weight, num_replicas, num_groups, num_nodes, num_ranks, old):
        weight = _as_tensor(weight)
        if old is not None:
            # After a scaling event the old map is wider (scale-down: the
            # leaving ranks are the highest) or has -1 in the new slots
            # (scale-up); rebalance_experts reads both (old_num_gpus from its
            # width).
            old = _as_tensor(old, "old_global_expert_indices")
        return rebalance_experts(weight, num_replicas, num_groups, num_nodes, num_ranks, old_phy2log=old,
                                 max_load_slack=cls.MAX_LOAD_SLACK, avoid_duplicates=cls.AVOID_DUPLICATES,
                                 quality=cls.QUALITY, **cls._budget(old, num_replicas))

    @classmethod
    def _budget(cls, old, num_replicas):
        # From a placement of the same width only: after a scaling event every
        # layer moves.  (Layers with empty slots move whatever the budget.)
        if old is None or old.ndim != 2 or old.shape[1] != num_replicas:
            return {}
        return {"max_copies": cls.MAX_COPIES, "min_imbalance": cls.MIN_IMBALANCE}


class EplbNumbaQualityPolicy(EplbNumbaMovementPolicy):
    """vLLM EPLB policy that balances better than the reference (opt-in).

    The movement-aware policy with ``quality=True``: the reference's plan
    improved by local search is the plan, and with an old map the bound
    that a plan moving few weights must meet.
    """

    QUALITY = True


def install_vllm_policy(policy: type | None = None) -> None:
    """Make vLLM's ``default`` EPLB policy run ``policy`` in this process.

    vLLM's ``--eplb-config '{"policy": ...}'`` accepts only its own names,
    so the policy is swapped in under ``default``.  It must run in every
    vLLM process; setting ``EPLB_NUMBA_VLLM_POLICY=1`` (exact) or
    ``=movement`` (:class:`EplbNumbaMovementPolicy`) or ``=quality``
    (:class:`EplbNumbaQualityPolicy`) does that through the
    ``vllm.general_plugins`` entry point this package declares.
    """
    if policy is None:
        policy = EplbNumbaPolicy
    try:
        from vllm.distributed.eplb import policy as vllm_policy
    except ImportError as exc:
        raise ImportError(
            "install_vllm_policy needs vLLM 0.13 or later (with vllm.distributed.eplb.policy); "
            "for older vLLM, patch vllm.distributed.eplb.rebalance_algo.rebalance_experts "
            "with eplb_numba.torch.rebalance_experts"
        ) from exc
    vllm_policy.EPLB_POLICIES["default"] = policy


def _vllm_plugin() -> None:
    # Entry point for vllm.general_plugins: opt-in, so installing eplb-numba
    # never changes a vLLM deployment by itself.
    import os

    choice = os.environ.get("EPLB_NUMBA_VLLM_POLICY", "").strip().lower()
    if choice in {"1", "true", "yes", "on", "exact"}:
        install_vllm_policy(EplbNumbaPolicy)
    elif choice == "movement":
        install_vllm_policy(EplbNumbaMovementPolicy)
    elif choice == "quality":
        install_vllm_policy(EplbNumbaQualityPolicy)
    else:
        return
    # Compile (or load from the cache) now, at process start, so that no
    # rebalance inside the serving loop waits for the compiler.
    from ._jit import compile_notice

    with compile_notice():
        _api.warmup()
