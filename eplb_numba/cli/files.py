"""Reading load statistics and writing placements for the command line.

Every problem with a user's file is a :class:`CliError`: one line naming the
file (or the flag) and what to do.  Nothing here writes over a file the user
did not ask to have written.
"""

from __future__ import annotations

import json
import os
import tempfile
import warnings
import zipfile

import numpy as np

from .._validate import check_weight_values

__all__ = ["CliError", "PLACEMENT_NAMES", "check_output", "load_loads", "save_placement"]

# vLLM's names for the three maps.
PLACEMENT_NAMES = ("physical_to_logical_map", "logical_to_physical_map", "logical_replica_count")
# "logical_count": the per-step counts SGLang's expert-distribution recorder dumps ("stat" mode).
_LOAD_KEYS = ("loads", "weight", "expert_load", "expert_load_window", "logical_count")
_READ = ".npy, .npz, .pt, .csv or .json"
_WRITE = {".npz", ".json", ".pt", ".pth"}


class CliError(Exception):
    """A user-facing problem: printed as one line, exit status 2."""


def _pick_name(names, path):
    names = list(names)
    if not names:
        raise CliError(f"{path} holds no arrays; save the loads into it, e.g. numpy.savez(path, loads=loads)")
    if len(names) == 1:
        return names[0]
    for key in _LOAD_KEYS:
        if key in names:
            return key
    raise CliError(f"{path} holds several arrays ({', '.join(sorted(map(str, names)))}); "
                   f"name the loads one of {', '.join(_LOAD_KEYS)}")


def _torch_or_fail(what):
    try:
        import torch
    except ImportError:
        raise CliError(f"{what} needs PyTorch: pip install 'eplb-numba[torch]'") from None
    return torch


def _npz_member(path):
    # Decide from the members' names and .npy headers, before decompressing
    # anything, and read the one member that holds the loads.
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile:
        raise CliError(f"{path} is not a .npz archive (not a zip file); save it with numpy.savez") from None
    with archive:
        members = {n[:-4]: n for n in archive.namelist() if n.endswith(".npy")}
        name = members[_pick_name(members, path)]
        with archive.open(name) as f:
            try:
                version = np.lib.format.read_magic(f)
                header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                          else np.lib.format.read_array_header_2_0)
                shape, _, dtype = header(f)
            except ValueError as exc:
                raise CliError(f"{path}: member {name} is not a valid .npy array ({exc})") from None
        _check_kind(dtype, path)
        _check_ndim(shape, path)
        with archive.open(name) as f:
            try:
                return np.lib.format.read_array(f, allow_pickle=False)
            except ValueError as exc:
                raise CliError(f"{path}: member {name} cannot be read ({exc})") from None


def _check_kind(dtype, path):
    if dtype.hasobject or dtype.kind not in "iuf":
        raise CliError(f"{path} must hold numbers (token counts), got {dtype}; check the file's contents")


def _check_ndim(shape, path, keep_steps=False):
    if keep_steps and len(shape) != 3:
        raise CliError(f"{path} must be a 3-D [steps, layers, experts] trace to replay, got shape {tuple(shape)}")
    if len(shape) not in (2, 3):
        raise CliError(f"{path} must be 2-D [layers, experts] (or 3-D [steps, layers, experts]), got shape "
                       f"{tuple(shape)}")


def _read(path, ext):
    if ext == ".npy":
        with open(path, "rb") as f:
            magic = f.read(6)
        # Without NumPy's header np.load takes a file for a pickle and
        # suggests allow_pickle, wrong advice for a file of loads.
        if magic != b"\x93NUMPY":
            raise CliError(f"cannot read {path} as .npy: it is not a NumPy .npy file (no .npy header); "
                           f"save the loads with numpy.save")
        try:
            return np.load(path, allow_pickle=False)
        except ValueError as exc:
            if "pickle" in str(exc):
                raise CliError(f"{path} is not a numeric .npy array (it holds Python objects); save the loads "
                               f"with numpy.save") from None
            raise
    if ext == ".npz":
        return _npz_member(path)
    if ext in (".pt", ".pth"):
        torch = _torch_or_fail(f"reading {ext} files")
        obj = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(obj, dict):
            obj = obj[_pick_name(obj, path)]
        if hasattr(obj, "detach"):
            if obj.is_sparse or obj.is_quantized or obj.is_complex():
                raise CliError(f"{path} holds a {obj.layout} {obj.dtype} tensor; save dense real token counts")
            if obj.dtype.is_floating_point and obj.dtype not in (torch.float16, torch.float32, torch.float64):
                obj = obj.float()  # bfloat16, float8: NumPy has no such dtype
            return obj.detach().cpu().numpy()
        return np.asarray(obj)
    if ext == ".csv":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "input contained no data": said below
            arr = np.loadtxt(path, delimiter=",", ndmin=2)
        if arr.size == 0:
            raise CliError(f"{path} holds no numbers; write one row of token counts per layer")
        return arr
    if ext == ".json":
        with open(path) as f:
            obj = json.load(f)
        if isinstance(obj, dict):
            obj = obj[_pick_name(obj, path)]
        return np.asarray(obj)
    raise CliError(f"cannot read {path}: unknown extension {ext!r}; use {_READ}")


def _sum_steps(arr, path):
    """A trace in a dtype whose sums over steps cannot overflow: int64 or float64."""
    if arr.dtype.kind == "f":
        return arr.astype(np.float64)
    # Integers: the largest total any expert reaches, computed without
    # wrapping, must fit int64 (a uint64 above 2**63 does not either).
    totals = arr.sum(axis=0, dtype=np.float64)
    if totals.size and totals.max() >= 2.0**63:
        raise CliError(f"{path}: token counts summed over steps exceed int64 (up to {totals.max():.3g}); "
                       f"rescale the trace")
    return arr.astype(np.int64)


def load_loads(path, keep_steps=False):
    """A 2-D [layers, experts] array of token counts from ``path``.

    ``.npy``, ``.npz``, ``.pt``/``.pth``, ``.csv`` or ``.json``; a 3-D
    [steps, layers, experts] array is summed over steps (in int64 for
    integers, float64 for floats), or with ``keep_steps`` returned in that
    dtype as is (and then required).
    """
    if os.path.isdir(path):
        raise CliError(f"{path} is a directory; pass a {_READ} file of token counts")
    if not os.path.exists(path):
        raise CliError(f"no such file: {path}; pass a {_READ} file of token counts")
    ext = os.path.splitext(path)[1].lower()
    if ext not in (".npy", ".npz", ".pt", ".pth", ".csv", ".json"):
        raise CliError(f"cannot read {path}: unknown extension {ext!r}; use {_READ}")
    if os.path.getsize(path) == 0:
        raise CliError(f"{path} is empty; pass a {_READ} file of token counts")
    try:
        arr = _read(path, ext)
    except CliError:
        raise
    except Exception as exc:  # parse errors of every format
        detail = str(exc).replace("\n", " ") or "no detail given"
        raise CliError(f"cannot read {path} as {ext}: {type(exc).__name__}: {detail}") from None
    _check_kind(arr.dtype, path)
    _check_ndim(arr.shape, path, keep_steps)
    # Every value, before any sum can hide one (inf - inf) or warn.
    check_weight_values(arr, path)
    if arr.ndim == 3:
        arr = _sum_steps(arr, path)
        if not keep_steps:
            arr = arr.sum(axis=0)
    if arr.shape[-2] == 0 or arr.shape[-1] == 0:
        raise CliError(f"{path} holds no loads (shape {arr.shape}); it needs at least one layer and one expert")
    return arr


def check_output(path, flag, *, inputs=(), force=False, exts=None):
    """Check before any work that ``path`` can be written; returns it.

    ``path`` must not be one of ``inputs``, ever, nor an existing file
    without ``force``, and its directory must exist.  ``exts``, if given,
    are the extensions the writer knows.
    """
    ext = os.path.splitext(path)[1].lower()
    for source in inputs:
        if source and os.path.exists(source) and os.path.exists(path) and os.path.samefile(source, path):
            raise CliError(f"{flag} {path} is the input file; write the result to another file")
    if os.path.isdir(path):
        raise CliError(f"{flag} {path} is a directory; name a file")
    if exts is not None and ext not in exts:
        raise CliError(f"{flag} {path}: unknown extension {ext!r}; use {', '.join(sorted(exts))}")
    if os.path.exists(path) and not force:
        raise CliError(f"{flag} {path} already exists; pass --force to overwrite it, or name another file")
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise CliError(f"{flag} {path}: no such directory {parent}; create it first")
    if not os.access(parent, os.W_OK):
        raise CliError(f"{flag} {path}: cannot write in {parent}")
    if ext in (".pt", ".pth"):
        _torch_or_fail(f"{flag} {ext}")
    return path


def _replace_atomically(path, write):
    # Write beside the target and rename: an interrupted run leaves the old
    # file (if --force was given) or nothing, never half a file.
    parent = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=parent, prefix=".eplb-numba-", suffix=os.path.splitext(path)[1])
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def save_placement(path, phy2log, log2phy, logcnt):
    """Write the placement under vLLM's names to ``.npz``, ``.json`` or ``.pt`` (checked by ``check_output``)."""
    ext = os.path.splitext(path)[1].lower()
    arrays = dict(zip(PLACEMENT_NAMES, (phy2log, log2phy, logcnt)))

    def write(tmp):
        if ext == ".npz":
            with open(tmp, "wb") as f:
                np.savez(f, **arrays)
        elif ext == ".json":
            with open(tmp, "w") as f:
                json.dump({k: v.tolist() for k, v in arrays.items()}, f)
        else:
            torch = _torch_or_fail(f"writing {ext} files")
            torch.save({k: torch.from_numpy(v) for k, v in arrays.items()}, tmp)

    if ext not in _WRITE:
        raise CliError(f"cannot write {path}: unknown extension {ext!r}; use .npz, .json or .pt")
    try:
        _replace_atomically(path, write)
    except OSError as exc:
        raise CliError(f"cannot write {path}: {exc.strerror or exc}") from None
