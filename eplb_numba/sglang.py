"""SGLang's EPLB algorithm calls, planned by eplb-numba.

SGLang (``sglang.srt.eplb.eplb_algorithms``) plans with DeepSeek's EPLB in
torch: its dispatcher :func:`rebalance_experts` sums per-step token counts
and calls ``deepseek.rebalance_experts(..., enable_hierarchical)``.  Both
are here with SGLang's signatures and results: the same placements, ties
included, int64 CPU tensors, and ``log2phy`` trimmed to the largest
replica count as SGLang trims it.  DeepSeek's code differs from the
reference (vLLM's copy) in one place: its packing adds loads as float64,
not float32, so the two differ where float32 sums would round (fractional
loads, or packs above 2**24 tokens); the plans here follow DeepSeek's.  :func:`install` makes a
running SGLang plan with them.  Needs PyTorch; SGLang itself only for
:func:`install`.
"""

from __future__ import annotations

import importlib
from typing import Any

from . import _engine
from ._validate import as_count, check_layout

try:
    from . import torch as _eplb_torch
except ImportError as exc:  # pragma: no cover - exercised in a subprocess test
    raise ImportError("eplb_numba.sglang needs PyTorch, as SGLang does; install it with "
                      "`pip install 'eplb-numba[torch]'`") from exc

_torch = _eplb_torch._torch

__all__ = ["choose_algorithm", "deepseek_rebalance_experts", "install", "rebalance_experts"]

# SGLang's algorithm names this module plans; the others (``deepseek_vec*``,
# ``elasticity_aware*``) stay with SGLang.
ALGORITHMS = ("auto", "deepseek", "deepseek_hierarchical")


def choose_algorithm(num_groups: int | None, num_nodes: int) -> str:
    """SGLang's rule for ``auto``: hierarchical where the groups split evenly over the nodes."""
    return "deepseek_hierarchical" if num_groups is not None and num_groups % num_nodes == 0 else "deepseek"


def rebalance_experts(tokens_per_expert: Any, num_physical_experts: int, num_local_physical_experts: int,
                      num_groups: int | None, num_nodes: int, algorithm: Any = "auto", *, trim: bool = True
                      ) -> tuple[Any, Any, Any]:
    """SGLang's ``eplb_algorithms.rebalance_experts``, planned by eplb-numba.

    Parameters
    ----------
    tokens_per_expert : torch.Tensor or array_like, shape (steps, layers, experts)
        Token counts per step, summed over steps (``(layers, experts)`` is
        taken as one step), as SGLang's expert-distribution recorder dumps them.
    num_physical_experts : int
        Slots in all.
    num_local_physical_experts : int
        Slots per GPU; GPUs = ``num_physical_experts // num_local_physical_experts``.
    num_groups : int or None
        Expert groups; None (a model without groups) plans globally.
    num_nodes : int
        Nodes.
    algorithm : str or SGLang's ``EplbAlgorithm``, optional
        ``"auto"`` (default: SGLang's rule, :func:`choose_algorithm`),
        ``"deepseek"`` (global) or ``"deepseek_hierarchical"``.
    trim : bool, optional
        True (SGLang's width): ``log2phy`` is ``[layers, experts, largest
        replica count]``; False: the reference's ``num_physical_experts -
        experts + 1``.

    Returns
    -------
    tuple of torch.Tensor
        ``(phy2log, log2phy, logcnt)``, int64 on the CPU, as SGLang's.
    """
    tokens = _eplb_torch._as_tensor(tokens_per_expert, "tokens_per_expert", dims=(2, 3))
    weight = tokens.sum(dim=0) if tokens.dim() == 3 else tokens
    num_physical_experts = as_count(num_physical_experts, "num_physical_experts")
    per_gpu = as_count(num_local_physical_experts, "num_local_physical_experts")
    if num_physical_experts % per_gpu:
        raise ValueError(f"num_physical_experts ({num_physical_experts}) must be a multiple of "
                         f"num_local_physical_experts ({per_gpu}), the slots of one GPU")
    name = _algorithm_name(algorithm)
    if name == "auto":
        name = choose_algorithm(num_groups, as_count(num_nodes, "num_nodes"))
    return deepseek_rebalance_experts(weight, num_physical_experts, num_groups, num_nodes,
                                      num_physical_experts // per_gpu, name == "deepseek_hierarchical", trim=trim)


def deepseek_rebalance_experts(weight: Any, num_replicas: int, num_groups: int | None, num_nodes: int,
                               num_gpus: int, enable_hierarchical: bool, *, trim: bool = True
                               ) -> tuple[Any, Any, Any]:
    """SGLang's ``deepseek.rebalance_experts``: the hierarchical policy or, without it, the global one.

    ``weight`` is ``[layers, experts]``; returns ``(phy2log, log2phy,
    logcnt)``, int64 on the CPU, ``log2phy`` trimmed as in
    :func:`rebalance_experts`.  With ``enable_hierarchical`` the groups must
    split evenly over the nodes (SGLang's ``auto`` checks that first).
    """
    if not isinstance(enable_hierarchical, bool):
        raise TypeError(f"enable_hierarchical must be True or False, got {enable_hierarchical!r}")
    w = _eplb_torch._host_float32(_eplb_torch._as_tensor(weight))
    if enable_hierarchical:
        if num_groups is None or as_count(num_groups, "num_groups") % as_count(num_nodes, "num_nodes"):
            raise ValueError(f"the hierarchical algorithm needs num_groups ({num_groups}) to be a multiple of "
                             f"num_nodes ({num_nodes}); use algorithm='auto' or 'deepseek' (global)")
        groups, nodes = num_groups, num_nodes
    else:
        groups, nodes = 1, 1
    layout = check_layout(w.shape, num_replicas, groups, nodes, num_gpus)
    # DeepSeek's packing adds float64 loads (Python floats), the reference's
    # float32s: ``wide`` plans as DeepSeek does.
    planned = _engine.rebalance(w.numpy(), layout, _eplb_torch._group_sums(w, layout), wide=True)
    phy2log, log2phy, logcnt = (_torch.from_numpy(a) for a in planned)
    if trim:
        # Columns past the largest count hold only -1: dropping them is exact.
        log2phy = log2phy[..., :max(int(logcnt.max()), 1) if logcnt.numel() else 1].contiguous()
    return phy2log, log2phy, logcnt


def _algorithm_name(algorithm):
    # A string, or SGLang's EplbAlgorithm member (whose name is the string).
    name = getattr(algorithm, "name", algorithm)
    if name not in ALGORITHMS:
        raise ValueError(f"algorithm must be one of {', '.join(ALGORITHMS)}, got {algorithm!r}; "
                         f"SGLang's own deepseek_vec and elasticity_aware algorithms are not replaced")
    return name


# Where SGLang keeps its DeepSeek algorithm (the second before SGLang 0.5).
_SGLANG_MODULES = ("sglang.srt.eplb.eplb_algorithms.deepseek", "sglang.srt.managers.eplb_algorithms.deepseek")


def install(warm: bool = True) -> None:
    """Make SGLang's ``deepseek`` and ``deepseek_hierarchical`` algorithms plan with eplb-numba.

    Replaces ``rebalance_experts`` of SGLang's ``deepseek`` module in this
    process, which the dispatcher calls for both; run it in every process
    that plans (see ``docs/integrating.md``).  ``warm`` compiles (or loads)
    the kernels now, so that no rebalance waits for the compiler.
    """
    patched = []
    for name in _SGLANG_MODULES:
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        module.rebalance_experts = deepseek_rebalance_experts  # type: ignore[attr-defined]
        patched.append(name)
    if not patched:
        raise ImportError("eplb_numba.sglang.install() needs SGLang (sglang.srt.eplb.eplb_algorithms); "
                          "without SGLang, call eplb_numba.sglang.rebalance_experts directly")
    if warm:
        from ._api import warmup
        from ._jit import compile_notice

        with compile_notice():
            warmup()
