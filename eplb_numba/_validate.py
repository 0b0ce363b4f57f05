"""Input checks shared by the NumPy API, the torch adapter and the CLI.

Every failure is a ``TypeError`` or ``ValueError`` that names the parameter
and says how to fix it.  Nothing here writes into its arguments.
"""

from __future__ import annotations

import functools
import numbers
import operator
import os
from typing import NamedTuple

import numpy as np

__all__ = ["Layout", "as_count", "as_flag", "as_slack", "as_weight", "check_layout", "check_output_size",
           "check_weight_values", "kernel_array"]

F32_MAX = float(np.finfo(np.float32).max)


def as_count(value, name: str, *, minimum: int = 1) -> int:
    """``value`` as a Python int of at least ``minimum``."""
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be an integer, not a bool; pass e.g. {name}=8")
    try:
        count = operator.index(value)
    except TypeError:
        raise TypeError(
            f"{name} must be an integer, got {type(value).__name__} {value!r}; "
            f"pass a whole number such as {name}=8"
        ) from None
    if count < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {count}")
    return count


def as_flag(value, name: str) -> bool:
    """``value`` as a bool; only ``True``/``False`` (or NumPy's bools) are accepted."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    raise TypeError(f"{name} must be True or False, got {type(value).__name__} {value!r}")


def as_slack(value, name: str = "max_load_slack") -> float:
    """``value`` as a finite float >= 0 (a real number, not a bool or a string)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number such as 0.01 (1%), got {type(value).__name__} {value!r}")
    slack = float(value)
    if not (slack >= 0 and np.isfinite(slack)):
        raise ValueError(f"{name} must be a finite number >= 0 (0.01 means 1%), got {value!r}")
    return slack


@functools.cache
def _physical_memory() -> int | None:
    # Read once: check_layout runs on every plan, and the machine's memory does not change.
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


def _size(nbytes: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if nbytes < 1024 or unit == "PiB":
            return f"{nbytes:.3g} {unit}"
        nbytes /= 1024
    raise AssertionError("unreachable")


def check_output_size(arrays, what: str) -> None:
    """Refuse up front outputs that cannot fit in this machine's memory.

    ``arrays`` holds ``(name, shape)`` pairs of int64 outputs.
    """
    total = 0
    for _, shape in arrays:
        count = 1
        for n in shape:
            count *= int(n)
        total += 8 * count
    memory = _physical_memory()
    if memory is not None and total > memory:
        shapes = ", ".join(f"{name} {list(shape)}" for name, shape in arrays)
        raise ValueError(f"the outputs would take {_size(total)} ({shapes}, int64), more than this machine's "
                         f"{_size(memory)} of memory; check {what}")


def kernel_array(arr, dtype) -> np.ndarray:
    """``arr`` as a writable, aligned, C-contiguous ndarray of ``dtype`` (a copy only where needed).

    The kernels then always see one array type: a read-only, misaligned or
    strided input would make Numba compile them again.
    """
    out = np.asarray(arr, dtype=dtype, order="C")
    if not (out.flags.writeable and out.flags.aligned):
        out = np.array(out, dtype=dtype, order="C")
    return out


def check_dtype(dtype: np.dtype, name: str) -> None:
    if dtype.kind == "c":
        raise TypeError(f"{name} must be real, got complex dtype {dtype}; pass token counts as ints or floats")
    if dtype.kind == "b":
        raise TypeError(f"{name} must hold numbers, got bool; pass token counts, e.g. {name}.astype(int)")
    if dtype.kind not in "iuf":
        raise TypeError(
            f"{name} must be a real numeric array (int or float), got dtype {dtype}; "
            f"convert it with numpy.asarray({name}, dtype=float)"
        )


def _item(arr: np.ndarray, where) -> str:
    return repr(arr[where].item())


def check_weight_values(w: np.ndarray, name: str, source: np.ndarray | None = None) -> None:
    """Reject NaN, infinite and negative loads in an already-converted array.

    ``source``, the array before conversion, names values that only
    overflowed in the conversion.
    """
    # Two reductions decide the common case; NaN fails both comparisons.
    if w.size == 0 or (w.min() >= 0 and w.max() < np.inf):
        return
    if w.dtype.kind == "f":
        finite = np.isfinite(w)
        if not finite.all():
            where = tuple(int(i) for i in np.argwhere(~finite)[0])
            if source is not None and source.shape == w.shape and np.isfinite(source[where]):
                raise ValueError(
                    f"{name}{list(where)} is {_item(source, where)}, beyond the float32 range (3.4e38) that "
                    f"loads are read in, as the reference reads them; rescale the loads"
                )
            raise ValueError(
                f"{name} must be finite, but {name}{list(where)} is {_item(w, where)}; "
                f"replace NaN/inf loads before balancing"
            )
    if w.min() < 0:
        where = tuple(int(i) for i in np.argwhere(w < 0)[0])
        raise ValueError(
            f"{name} must be non-negative token counts, but {name}{list(where)} is {_item(w, where)}; "
            f"clip or fix the negative loads"
        )


def as_weight(weight, name: str = "weight", *, dtype=np.float32) -> np.ndarray:
    """``weight`` as a C-contiguous 2-D array of ``dtype`` (a copy if needed).

    ``dtype=None`` keeps float64 as float64 and turns other numbers into
    ``float32`` (floats) or ``int64`` (integers), for the helpers whose
    reference arithmetic follows the input's dtype.
    """
    try:
        arr = np.asarray(weight)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{name} must be a rectangular 2-D array of loads: {exc}") from None
    check_dtype(arr.dtype, name)
    if arr.ndim != 2:
        raise ValueError(
            f"{name} must be 2-D [layers, experts], got {arr.ndim}-D with shape {arr.shape}; "
            f"for one layer pass {name}[None, :], for per-step counts sum over steps first"
        )
    if dtype is None:
        if arr.dtype == np.float64:
            dtype = np.float64
        elif arr.dtype.kind == "f":
            dtype = np.float32
        else:
            dtype = np.int64
    if arr.dtype == np.uint64 and np.dtype(dtype) == np.int64 and arr.size and arr.max() > np.iinfo(np.int64).max:
        where = tuple(int(i) for i in np.argwhere(arr > np.iinfo(np.int64).max)[0])
        raise ValueError(f"{name}{list(where)} is {int(arr[where])}, beyond int64 (2**63 - 1); rescale the loads")
    with np.errstate(over="ignore", invalid="ignore"):
        out = kernel_array(arr, dtype)
    check_weight_values(out, name, arr)
    return out


class Layout(NamedTuple):
    """Validated sizes of one placement problem."""

    num_layers: int
    num_logical: int
    num_replicas: int
    num_groups: int
    num_nodes: int
    num_gpus: int
    hierarchical: bool


def check_layout(shape, num_replicas, num_groups, num_nodes, num_gpus, *, policy: str = "auto",
                 maps: bool = True) -> Layout:
    """Check the counts against ``weight``'s shape and pick the policy.

    ``policy="auto"`` is the reference's rule: hierarchical when
    ``num_groups % num_nodes == 0``, global otherwise.  ``"hierarchical"``
    insists on the hierarchical one (``rebalance_experts_hierarchical``).
    ``maps`` checks that the placement's outputs fit in memory.
    """
    num_layers, num_logical = (int(s) for s in shape)
    num_replicas = as_count(num_replicas, "num_replicas")
    num_groups = as_count(num_groups, "num_groups")
    num_nodes = as_count(num_nodes, "num_nodes")
    num_gpus = as_count(num_gpus, "num_gpus")
    if num_logical < 1:
        raise ValueError("weight must have at least one expert column, got shape " f"{tuple(shape)}")
    if num_replicas < num_logical:
        raise ValueError(
            f"num_replicas ({num_replicas}) must be at least the number of logical experts "
            f"({num_logical}, weight.shape[1]): every expert needs a replica"
        )
    if num_replicas % num_gpus:
        raise ValueError(
            f"num_replicas ({num_replicas}) must be a multiple of num_gpus ({num_gpus}) so every GPU "
            f"holds the same number of slots; e.g. num_replicas={_round_up(num_replicas, num_gpus)}"
        )
    if num_gpus % num_nodes:
        raise ValueError(
            f"num_gpus ({num_gpus}) must be a multiple of num_nodes ({num_nodes}): every node holds "
            f"the same number of GPUs"
        )
    if policy == "hierarchical" and num_groups % num_nodes:
        raise ValueError(
            f"num_groups ({num_groups}) must be a multiple of num_nodes ({num_nodes}) for the "
            f"hierarchical policy; use rebalance_experts, which falls back to the global policy"
        )
    hierarchical = num_groups % num_nodes == 0
    outputs: list[tuple[str, tuple[int, ...]]] = [("phy2log", (num_layers, num_replicas)),
                                                ("logcnt", (num_layers, num_logical))]
    if policy == "hierarchical":
        outputs.append(("phyrank", (num_layers, num_replicas)))
    else:
        outputs.append(("log2phy", (num_layers, num_logical, num_replicas - num_logical + 1)))
    if maps:
        check_output_size(outputs, "num_replicas")
    if hierarchical and num_logical % num_groups:
        raise ValueError(
            f"the number of logical experts ({num_logical}, weight.shape[1]) must be a multiple of "
            f"num_groups ({num_groups}) for the hierarchical policy; pass the model's real group "
            f"count, or num_groups=1 to put the experts in one group"
        )
    return Layout(num_layers, num_logical, num_replicas, num_groups, num_nodes, num_gpus, hierarchical)


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def as_ids(value, name):
    """``value`` as a C-contiguous int64 array and ``(lo, max)``, or a TypeError.

    ``lo`` is negative when some id is, else 0; ``(0, -1)`` for no ids.
    """
    arr = np.asarray(value)
    if arr.dtype.kind not in "iu":
        raise TypeError(f"{name} must hold integer expert ids, got dtype {arr.dtype}; pass the current phy2log")
    if arr.dtype.kind == "u" and arr.size and arr.max() > np.iinfo(np.int64).max:
        raise ValueError(f"{name} holds expert {int(arr.max())}; it must come from a placement of the same model")
    arr = kernel_array(arr, np.int64)
    if not arr.size:
        return arr, (0, -1)
    # One pass: viewed unsigned, a negative id wraps above every valid one.
    top = int(arr.view(np.uint64).max())
    if top > np.iinfo(np.int64).max:
        return arr, (-1, int(arr.max()))
    return arr, (0, top)


def check_old_ids(old, layout, name="old_phy2log"):
    """``old`` as a C-contiguous int64 ``[layers, slots]`` array of experts, -1 for an empty slot.

    Any slot count: an old placement may come from another GPU count
    (``_elastic.as_gpu_change`` checks that it fits).
    """
    arr, span = as_ids(old, name)
    return check_ids_of(arr, span, layout, name)


def check_ids_of(arr, span, layout, name):
    """``check_old_ids`` of an array ``as_ids`` returned, with its ``span``."""
    if arr.ndim != 2 or arr.shape[0] != layout.num_layers or arr.shape[1] < 1:
        raise ValueError(
            f"{name} must have shape ({layout.num_layers}, slots) (layers, the old placement's slots), got "
            f"{arr.shape}; pass the placement currently deployed for the same model"
        )
    if span[0] < 0 and arr.min() < -1 or span[1] >= layout.num_logical:
        bad = arr[(arr < -1) | (arr >= layout.num_logical)][0]
        raise ValueError(
            f"{name} holds expert {int(bad)}, outside 0..{layout.num_logical - 1} (or -1 for an empty slot); "
            f"it must come from a placement of the same model"
        )
    return arr
