"""eplb-numba: DeepSeek/vLLM's expert-parallelism load balancer as Numba kernels.

``import eplb_numba`` needs NumPy and Numba only; the torch adapter lives in
``eplb_numba.torch``.
"""

from __future__ import annotations

from ._api import (
    balanced_packing,
    rebalance_experts,
    rebalance_experts_hierarchical,
    replicate_experts,
    warmup,
)

__version__ = "0.1.0"

__all__ = [
    "LayerGains",
    "Migration",
    "__version__",
    "balance_bound",
    "balanced_packing",
    "layer_gains",
    "plan_migration",
    "rebalance_experts",
    "rebalance_experts_hierarchical",
    "replicate_experts",
    "warmup",
]


# The movement-aware tools (which compile their own kernels) and the bound
# load on first use, so that ``import eplb_numba`` stays fast.
_LAZY = {"balance_bound": "._bound", "LayerGains": "._migration", "Migration": "._migration",
         "layer_gains": "._migration",
         "plan_migration": "._migration"}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'eplb_numba' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
