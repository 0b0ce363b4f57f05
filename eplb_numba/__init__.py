"""eplb-numba: DeepSeek/vLLM's expert-parallelism load balancer as Numba kernels.

``import eplb_numba`` needs NumPy and Numba only; the torch adapter lives in
``eplb_numba.torch``.
"""

from __future__ import annotations

from ._movement import Migration, plan_migration
from ._api import (
    balanced_packing,
    rebalance_experts,
    rebalance_experts_hierarchical,
    replicate_experts,
    warmup,
)

__version__ = "0.1.0"

__all__ = [
    "Migration",
    "__version__",
    "balanced_packing",
    "plan_migration",
    "rebalance_experts",
    "rebalance_experts_hierarchical",
    "replicate_experts",
    "warmup",
]
