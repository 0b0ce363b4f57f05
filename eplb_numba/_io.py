"""Reading load statistics and writing placements for the command line."""

from __future__ import annotations

import json
import os

import numpy as np

__all__ = ["CliError", "load_loads", "save_placement", "PLACEMENT_NAMES"]

# vLLM's names for the three maps.
PLACEMENT_NAMES = ("physical_to_logical_map", "logical_to_physical_map", "logical_replica_count")
_LOAD_KEYS = ("loads", "weight", "expert_load", "expert_load_window")


class CliError(Exception):
    """A user-facing problem: printed as one line, exit status 2."""


def _pick(mapping, path):
    if len(mapping) == 1:
        return next(iter(mapping.values()))
    for key in _LOAD_KEYS:
        if key in mapping:
            return mapping[key]
    raise CliError(f"{path} holds several arrays ({', '.join(sorted(mapping))}); name the loads one of {', '.join(_LOAD_KEYS)}")


def _torch_or_fail(what):
    try:
        import torch
    except ImportError:
        raise CliError(f"{what} needs PyTorch: pip install 'eplb-numba[torch]'") from None
    return torch


def load_loads(path, keep_steps=False):
    """A 2-D [layers, experts] array of token counts from ``path``.

    ``.npy``, ``.npz``, ``.pt``/``.pth``, ``.csv`` or ``.json``; a 3-D
    [steps, layers, experts] array is summed over steps, or with
    ``keep_steps`` returned as is (and then required).
    """
    if not os.path.exists(path):
        raise CliError(f"no such file: {path}; pass a .npy, .npz, .pt, .csv or .json file of token counts")
    ext = os.path.splitext(path)[1].lower()
    try:
        if ext == ".npy":
            arr = np.load(path, allow_pickle=False)
        elif ext == ".npz":
            with np.load(path, allow_pickle=False) as data:
                arr = _pick({k: data[k] for k in data.files}, path)
        elif ext in (".pt", ".pth"):
            torch = _torch_or_fail(f"reading {ext} files")
            obj = torch.load(path, map_location="cpu", weights_only=True)
            if isinstance(obj, dict):
                obj = _pick(obj, path)
            arr = obj.detach().cpu().numpy() if hasattr(obj, "detach") else np.asarray(obj)
        elif ext == ".csv":
            arr = np.loadtxt(path, delimiter=",", ndmin=2)
        elif ext == ".json":
            with open(path) as f:
                obj = json.load(f)
            if isinstance(obj, dict):
                obj = _pick(obj, path)
            arr = np.asarray(obj)
        else:
            raise CliError(f"cannot read {path}: unknown extension {ext!r}; use .npy, .npz, .pt, .csv or .json")
    except CliError:
        raise
    except Exception as exc:  # parse errors of every format
        raise CliError(f"cannot read {path} as {ext}: {exc}".replace("\n", " ")) from None
    if arr.dtype == object or arr.dtype.kind not in "iuf":
        raise CliError(f"{path} must hold numbers (token counts), got {arr.dtype}; check the file's contents")
    if keep_steps:
        if arr.ndim != 3:
            raise CliError(f"{path} must be a 3-D [steps, layers, experts] trace to replay, got shape {arr.shape}")
        return arr
    if arr.ndim == 3:
        arr = arr.sum(axis=0)
    if arr.ndim != 2:
        raise CliError(
            f"{path} must be 2-D [layers, experts] (or 3-D [steps, layers, experts]), got shape {arr.shape}"
        )
    return arr


def save_placement(path, phy2log, log2phy, logcnt):
    """Write the placement under vLLM's names to ``.npz``, ``.json`` or ``.pt``."""
    ext = os.path.splitext(path)[1].lower()
    arrays = dict(zip(PLACEMENT_NAMES, (phy2log, log2phy, logcnt)))
    try:
        if ext == ".npz":
            np.savez(path, **arrays)
        elif ext == ".json":
            with open(path, "w") as f:
                json.dump({k: v.tolist() for k, v in arrays.items()}, f)
        elif ext in (".pt", ".pth"):
            torch = _torch_or_fail(f"writing {ext} files")
            torch.save({k: torch.from_numpy(v) for k, v in arrays.items()}, path)
        else:
            raise CliError(f"cannot write {path}: unknown extension {ext!r}; use .npz, .json or .pt")
    except OSError as exc:
        raise CliError(f"cannot write {path}: {exc.strerror or exc}") from None
