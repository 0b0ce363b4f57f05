"""The classmethods of vLLM's ``DefaultEplbPolicy``, for ``eplb_numba.torch.EplbNumbaPolicy``.

vLLM's default policy has had two sets of return values (read in vLLM's
wheels, 0.14 to 0.34):

- 0.14 to 0.18 (the "tuple API"): ``replicate_experts`` returns
  ``(phy2log, replica_idx, logcnt)``, ``rebalance_experts_hierarchical``
  the same three, and ``preserve_intragpu_slots(phy2log, replica_idx,
  num_ranks, old)`` returns ``(phy2log, replica_idx)``;
- 0.19 and later: ``replicate_experts`` returns ``(phy2log, logcnt)``,
  ``rebalance_experts_hierarchical`` returns ``phy2log`` alone, and
  ``preserve_intragpu_slots(phy2log, num_ranks, old)`` returns ``phy2log``.

The methods here follow the installed vLLM (its ``AbstractEplbPolicy``
declares which), or ``VLLM_TUPLE_API`` where a subclass sets it; without
vLLM, the newer set.  All take and return NumPy arrays, as vLLM's do; the
plans are the reference's (the seed's torch algorithm, ties included), not
vLLM 0.19's NumPy rewrite (see ``docs/compatibility.md``).  Nothing here
imports torch.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

from . import _api

__all__ = ["VllmDefaultMethods", "as_width", "declares_tuple"]


def declares_tuple(base: type) -> bool:
    """Whether ``base.rebalance_experts`` declares a tuple return (vLLM 0.13 to 0.18)."""
    annotation = getattr(getattr(base, "rebalance_experts", None), "__annotations__", {}).get("return")
    return "tuple" in str(annotation).lower()


class VllmDefaultMethods:
    """``balanced_packing``, ``replicate_experts``, ``rebalance_experts_hierarchical`` and
    ``preserve_intragpu_slots`` with the signatures and return values of vLLM's default policy."""

    # None: as the installed vLLM's AbstractEplbPolicy declares (the newer
    # set without vLLM); True or False: the tuple API or the newer one.
    VLLM_TUPLE_API: bool | None = None

    @classmethod
    def _tuple_api(cls) -> bool:
        if cls.VLLM_TUPLE_API is not None:
            return bool(cls.VLLM_TUPLE_API)
        for base in cls.__mro__:
            if base.__module__.startswith("vllm."):
                return declares_tuple(base)
        return False

    @classmethod
    def balanced_packing(cls, weight: ArrayLike, num_packs: int) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
        """``(pack_index, rank_in_pack)`` of each row's items in ``num_packs`` equal packs."""
        return _api.balanced_packing(_host(weight), num_packs)

    @classmethod
    def replicate_experts(cls, weight: ArrayLike, num_phy: int) -> tuple[NDArray[np.int64], ...]:
        """``(phy2log, logcnt)``; with the tuple API ``(phy2log, replica_idx, logcnt)``."""
        phy2log, rank, logcnt = _api.replicate_experts(_host(weight), num_phy)
        return (phy2log, rank, logcnt) if cls._tuple_api() else (phy2log, logcnt)

    @classmethod
    def rebalance_experts_hierarchical(cls, weight: ArrayLike, num_physical_experts: int, num_groups: int,
                                       num_nodes: int, num_gpus: int
                                       ) -> NDArray[np.int64] | tuple[NDArray[np.int64], ...]:
        """``phy2log``; with the tuple API ``(phy2log, replica_idx, logcnt)``."""
        phy2log, rank, logcnt = _api.rebalance_experts_hierarchical(_host(weight), num_physical_experts, num_groups,
                                                                    num_nodes, num_gpus)
        return (phy2log, rank, logcnt) if cls._tuple_api() else phy2log

    @classmethod
    def preserve_intragpu_slots(cls, phy2log: ArrayLike, *args: object
                                ) -> NDArray[np.int64] | tuple[NDArray[np.int64], NDArray[np.int64]]:
        """Experts that stay on a GPU keep their old slot there; the others fill the rest in order.

        Called as ``(phy2log, num_ranks, old_phy2log)`` (vLLM 0.19 and later;
        returns the reordered ``phy2log``) or ``(phy2log, replica_idx,
        num_ranks, old_phy2log)`` (vLLM 0.14 to 0.18; returns it and
        ``replica_idx`` reordered alike).  Per GPU, each old slot in turn
        takes the first new entry of its expert not yet taken; the entries
        left fill the free slots, both in slot order.  Unchanged where the
        slots do not split evenly over ``num_ranks``.
        """
        if len(args) == 3:
            replica_idx, num_ranks, old = args
        elif len(args) == 2:
            replica_idx, (num_ranks, old) = None, args
        else:
            raise TypeError("preserve_intragpu_slots takes (phy2log, num_ranks, old_phy2log), or "
                            "(phy2log, replica_idx, num_ranks, old_phy2log) as in vLLM 0.14 to 0.18")
        new = np.asarray(_host(phy2log))
        if new.ndim != 2:
            raise ValueError(f"phy2log must be 2-D [layers, slots], got shape {new.shape}; for one layer pass "
                             f"phy2log[None, :]")
        src = _kept_slots(new, as_width(np.asarray(_host(old)), new.shape), int(num_ranks))  # type: ignore[call-overload]
        out = np.take_along_axis(new, src, axis=1)
        if replica_idx is None:
            return out
        return out, np.take_along_axis(np.asarray(_host(replica_idx)), src, axis=1)


def _host(value):
    # vLLM passes NumPy arrays; a (CPU) torch tensor reads the same.
    return value.cpu().numpy() if hasattr(value, "cpu") else value


def as_width(old, shape, name="old_phy2log"):
    """``old`` as an int64 map of ``shape``, for slot-by-slot comparison as vLLM's default policy makes it.

    After a scaling event vLLM's old map is wider (the ranks that stay
    first) or narrower: it is cut, or read as empty (-1) beyond its end.
    """
    if old.ndim != 2 or old.shape[0] != shape[0]:
        raise ValueError(f"{name} must have shape ({shape[0]}, slots), got {tuple(old.shape)}; pass the "
                         f"current physical_to_logical_map")
    if old.shape == tuple(shape):
        return np.ascontiguousarray(old, dtype=np.int64)
    out = np.full(shape, -1, dtype=np.int64)
    keep = min(shape[1], old.shape[1])
    out[:, :keep] = old[:, :keep]
    return out


def _kept_slots(new, old, num_ranks):
    """``src[l, q]``: the slot of ``new`` whose entry slot q takes (see ``preserve_intragpu_slots``)."""
    layers, slots = new.shape
    src = np.broadcast_to(np.arange(slots), (layers, slots)).copy()
    if num_ranks <= 0 or slots % num_ranks:
        return src
    per = slots // num_ranks
    rows = np.arange(layers)
    for lo in range(0, slots, per):
        block_new, block_old = new[:, lo:lo + per], old[:, lo:lo + per]
        taken = np.zeros((layers, per), dtype=bool)  # entries of new already placed
        kept = np.full((layers, per), -1)  # the entry each old slot keeps
        for q in range(per):
            match = (block_new == block_old[:, q, None]) & ~taken
            found = rows[match.any(axis=1)]
            first = match[found].argmax(axis=1)
            kept[found, q] = first
            taken[found, first] = True
        # The entries left, in order, into the free slots, in order: a stable
        # sort puts each row's free slots (and its untaken entries) first.
        free = np.argsort(kept >= 0, axis=1, kind="stable")
        left = np.argsort(taken, axis=1, kind="stable")
        fill = np.arange(per) < (kept < 0).sum(axis=1, keepdims=True)
        np.put_along_axis(kept, free, np.where(fill, left, np.take_along_axis(kept, free, axis=1)), axis=1)
        src[:, lo:lo + per] = lo + kept
    return src
