"""No state of the compile cache breaks a run, and a compile is never silent.

Each case runs in fresh interpreters, as a user's processes would.  Running
as root, no directory can be made unwritable by permissions, so unwritable
cache locations are made by putting a plain file where the directory would
go: creating the directory then fails for any user, as it does for a
non-root user on a read-only install.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

import eplb_numba
from eplb_numba._jit import compile_notice

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

PLAN = """
import json, numpy as np, eplb_numba
w = (np.arange(6 * 32).reshape(6, 32) * 7919) % 1000
p, l, c = eplb_numba.rebalance_experts(w, 40, 4, 2, 8)
print(json.dumps([p.tolist(), c.tolist()]))
"""


def expected_plan():
    w = (np.arange(6 * 32).reshape(6, 32) * 7919) % 1000
    p, _, c = eplb_numba.rebalance_experts(w, 40, 4, 2, 8)
    return [p.tolist(), c.tolist()]


def run(code, env, cwd=None):
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600,
                          cwd=cwd)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout, [line for line in proc.stderr.splitlines() if line.strip()]


def base_env(**extra):
    # These cases are about compiling, which the kernels shipped with the
    # package skip where they fit: leave them out (tests/test_shipped_cache.py
    # covers them).
    env = {k: v for k, v in os.environ.items() if k not in ("NUMBA_CACHE_DIR", "EPLB_NUMBA_CACHE")}
    env["EPLB_NUMBA_SHIPPED"] = "0"
    env.update(extra)
    return env


def test_damaged_cache_is_dropped_and_rebuilt(tmp_path):
    cache = tmp_path / "cache"
    env = base_env(NUMBA_CACHE_DIR=str(cache))
    first, _ = run(PLAN, env)
    assert json.loads(first) == expected_plan()
    index = sorted(cache.rglob("*.nbi"))
    data = sorted(cache.rglob("*.nbc"))
    assert index and data
    for path in index:  # truncated
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    for path in data:  # overwritten
        path.write_bytes(b"not a cache file")
    out, err = run(PLAN, env)
    assert out == first
    assert len(err) == 1 and "damaged compile cache" in err[0], err
    out, err = run(PLAN, env)  # rebuilt: read back without a word
    assert out == first and err == []


def test_damaged_data_file_alone(tmp_path):
    cache = tmp_path / "cache"
    env = base_env(NUMBA_CACHE_DIR=str(cache))
    first, _ = run(PLAN, env)
    for path in cache.rglob("*.nbc"):
        path.write_bytes(path.read_bytes()[:100])
    out, err = run(PLAN, env)
    assert out == first
    assert len(err) == 1 and "damaged compile cache" in err[0], err


def blocked_install(tmp_path):
    """A copy of the package where no directory Numba caches in can be made."""
    blocker = tmp_path / "blocker"
    blocker.write_text("a file, not a directory")
    site = tmp_path / "site"
    shutil.copytree(os.path.join(ROOT, "eplb_numba"), site / "eplb_numba",
                    ignore=shutil.ignore_patterns("__pycache__"))
    for folder in [site / "eplb_numba", site / "eplb_numba" / "_kernels"]:
        (folder / "__pycache__").write_text("blocks the in-tree cache")
    env = base_env(PYTHONPATH=str(site), NUMBA_CACHE_DIR=str(blocker / "cache"), HOME=str(blocker / "home"),
                   XDG_CACHE_HOME=str(blocker / "xdg"), PYTHONDONTWRITEBYTECODE="1")
    return env, blocker


def test_unwritable_cache_falls_back_to_a_temporary_directory(tmp_path):
    env, _ = blocked_install(tmp_path)
    temp = tmp_path / "tmp"
    temp.mkdir()
    env["TMPDIR"] = str(temp)
    out, err = run(PLAN, env, cwd=str(tmp_path))
    assert json.loads(out) == expected_plan()
    assert len(err) == 1 and "caching in" in err[0], err
    assert list(temp.rglob("*.nbi")), "the fallback directory holds the cache"
    out2, err2 = run(PLAN, env, cwd=str(tmp_path))
    assert out2 == out and len(err2) == 1


def test_no_writable_directory_at_all_compiles_in_memory(tmp_path):
    env, blocker = blocked_install(tmp_path)
    code = f"import tempfile; tempfile.tempdir = {str(blocker / 'tmp')!r}\n" + PLAN
    out, err = run(code, env, cwd=str(tmp_path))
    assert json.loads(out) == expected_plan()
    assert len(err) == 1 and "in memory" in err[0], err


def test_cli_says_when_it_compiles(tmp_path):
    loads = tmp_path / "loads.npy"
    np.save(loads, (np.arange(4 * 32).reshape(4, 32) * 31) % 97)
    env = base_env(NUMBA_CACHE_DIR=str(tmp_path / "cache"))
    argv = [sys.executable, "-m", "eplb_numba", "rebalance", str(loads), "--replicas", "40", "--groups", "4",
            "--nodes", "2", "--gpus", "8"]
    first = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr
    lines = first.stderr.splitlines()
    assert lines[0].startswith("eplb-numba: compiling kernels, first run only"), lines
    assert lines[-1].startswith("eplb-numba: kernels compiled in ") and lines[-1].endswith(" s"), lines
    again = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and again.stderr == "", again.stderr


def test_threads_on_numbas_workqueue_layer(tmp_path):
    # Numba's workqueue layer aborts on concurrent parallel regions; threads
    # here never enter one, so 16 callers at once with 2 threads each work.
    code = """
import json, numpy as np, eplb_numba
from concurrent.futures import ThreadPoolExecutor
rng = np.random.default_rng(3)
loads = [rng.integers(0, 1000, (9, 64)) for _ in range(16)]
old = eplb_numba.rebalance_experts(loads[0], 80, 8, 2, 16)[0]
def plan(w):
    p = eplb_numba.rebalance_experts(w, 80, 8, 2, 16)[0]
    m = eplb_numba.rebalance_experts(w, 80, 8, 2, 16, old_phy2log=old, avoid_duplicates=True)[0]
    return [p.tolist(), m.tolist(), eplb_numba.plan_migration(old, m, 16, 2).expert.tolist()]
with ThreadPoolExecutor(16) as pool:
    print(json.dumps(list(pool.map(plan, loads))))
"""
    # About threads, not compiling: the shipped kernels may serve it.
    env = base_env(NUMBA_CACHE_DIR=str(tmp_path / "cache"), NUMBA_THREADING_LAYER="workqueue", EPLB_NUMBA_SHIPPED="1")
    serial, _ = run(code, {**env, "EPLB_NUMBA_THREADS": "1"})
    threaded, _ = run(code, {**env, "EPLB_NUMBA_THREADS": "2"})
    assert threaded == serial


@pytest.fixture(scope="module")
def warmed():
    eplb_numba.warmup()


def test_after_warmup_no_input_kind_compiles(warmed, tmp_path, rng):
    w = rng.integers(0, 1000, (5, 32))
    path = tmp_path / "w.npy"
    np.save(path, w)
    mapped = np.load(path, mmap_mode="r")  # read-only
    frozen = w.astype(np.float64)
    frozen.flags.writeable = False
    strided = np.asfortranarray(w.astype(np.int32))
    old = eplb_numba.rebalance_experts(w, 40, 4, 2, 8)[0]
    old_ro = old.copy()
    old_ro.flags.writeable = False
    with compile_notice(message=None) as listener:
        for weight in (mapped, frozen, strided, w[:, ::-1], w.astype(np.uint16), w.astype(np.float16), w.tolist()):
            eplb_numba.rebalance_experts(weight, 40, 4, 2, 8)
            eplb_numba.rebalance_experts(weight, 40, 4, 2, 8, avoid_duplicates=True)
            eplb_numba.rebalance_experts(weight, 40, 4, 2, 8, old_phy2log=old_ro, avoid_duplicates=True)
            eplb_numba.rebalance_experts(weight, 40, 3, 2, 8, old_phy2log=old[:, ::-1], max_load_slack=0.1)
            eplb_numba.rebalance_experts(weight, 40, 4, 2, 8, old_phy2log=old_ro, max_copies=6, min_imbalance=0.01)
            eplb_numba.rebalance_experts(weight, 40, 4, 2, 8, quality=True)
            eplb_numba.rebalance_experts(weight, 40, 4, 2, 8, quality=True, old_phy2log=old_ro)
            eplb_numba.rebalance_experts_hierarchical(weight, 40, 4, 2, 8)
            eplb_numba.plan_migration(old_ro, old[:, ::-1], 8, 2)
            for dtype in (np.float32, np.float64, np.int64, np.int32):
                eplb_numba.balanced_packing(np.asarray(weight).astype(dtype), 4)
                eplb_numba.balanced_packing(np.asarray(weight).astype(dtype), 32)
                eplb_numba.replicate_experts(np.asarray(weight).astype(dtype), 40)
        try:
            import torch

            from eplb_numba import sglang
        except ImportError:
            pass
        else:
            for weight in (torch.from_numpy(w), torch.from_numpy(w).float()[None]):
                sglang.rebalance_experts(weight, 40, 5, 4, 2)
                sglang.rebalance_experts(weight, 40, 5, None, 2)
    assert listener.started is None, "a call after warmup() compiled a kernel"
