"""The compiled kernels shipped in ``eplb_numba/_compiled``.

Where they fit (this Numba, Python and machine, a CPU with x86-64-v2 and
the kernel sources they were built from) a fresh install plans without
compiling; anywhere else they are ignored and the kernels compile as
without them, to the same results.  Each case runs in fresh interpreters.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import sys
import zipfile

import numpy as np
import pytest

import eplb_numba
from eplb_numba import _cache

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ARCHIVES = sorted(glob.glob(os.path.join(_cache.SHIPPED_DIR, "kernels-py*.zip")))


def manifest(path):
    with zipfile.ZipFile(path) as archive:
        return json.loads(archive.read("MANIFEST.json"))


_HERE = _cache.shipped_manifest()
_OURS = os.path.join(_cache.SHIPPED_DIR, _cache.shipped_archive_name())
BUILT = manifest(_OURS) if os.path.exists(_OURS) else {}
fits_here = pytest.mark.skipif(
    any(BUILT.get(k) != _HERE[k] for k in ("numba", "python", "machine")),
    reason=f"no shipped kernels for {_HERE['machine']}, Python {_HERE['python']}, Numba {_HERE['numba']}")

# Counts compile events of the package's kernels (a cache hit raises none).
PLAN = """
import json, sys, numpy as np, eplb_numba
from eplb_numba._jit import compile_notice
assert eplb_numba.__file__.startswith(sys.argv[1]), eplb_numba.__file__
w = (np.arange(58 * 256).reshape(58, 256) * 7919) % 1000
with compile_notice(message=None) as listener:
    p, l, c = eplb_numba.rebalance_experts(w, 288, 8, 4, 32)
    m = eplb_numba.rebalance_experts(w[::-1], 288, 8, 4, 32, old_phy2log=p, avoid_duplicates=True)[0]
    moves = eplb_numba.plan_migration(p, m, 32, 4)
print(json.dumps({"compiled": listener.started is not None, "plan": [p.tolist(), l.tolist(), c.tolist()],
                  "moved": m.tolist(), "moves": moves.expert.tolist()}))
"""
# The first plan alone: what the cases that must compile need (and compile quickly).
_MOVES = PLAN[PLAN.index("    m = eplb_numba"):PLAN.index("print(")]
FIRST_PLAN = PLAN.replace(_MOVES, "").replace(""",
                  "moved": m.tolist(), "moves": moves.expert.tolist()}""", "}")


def run(env, package_root=ROOT, code=PLAN):
    env = {k: v for k, v in {**os.environ, **env}.items() if k not in ("EPLB_NUMBA_CACHE",)}
    # Ahead of any PYTHONPATH already set (where Numba itself may come from).
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH")) if p)
    proc = subprocess.run([sys.executable, "-c", code, os.path.join(package_root, "eplb_numba")], env=env,
                          capture_output=True, text=True, timeout=600, cwd=os.path.dirname(package_root))
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout), [line for line in proc.stderr.splitlines() if line.strip()]


def test_every_shipped_archive_matches_the_sources():
    # One archive per Python version, all from these sources and one Numba.
    assert [os.path.basename(p) for p in ARCHIVES] == [f"kernels-py3{v}.zip" for v in (10, 11, 12, 13)]
    built = [manifest(path) for path in ARCHIVES]
    assert len({b["numba"] for b in built}) == 1, "build every archive with the same Numba"
    for path, b in zip(ARCHIVES, built):
        assert os.path.basename(path) == f"kernels-py{b['python'].replace('.', '')}.zip"
        assert b["sources"] == _HERE["sources"], (
            f"{os.path.basename(path)}: a kernel source changed since it was built; run tools/ship_cache.py "
            f"for every Python (see its docstring)")
        assert (b["machine"], b["cpu"]) == ("x86_64", _cache.PORTABLE_CPU)


def expected():
    w = (np.arange(58 * 256).reshape(58, 256) * 7919) % 1000
    p, log2phy, c = eplb_numba.rebalance_experts(w, 288, 8, 4, 32)
    return [p.tolist(), log2phy.tolist(), c.tolist()]


@fits_here
def test_a_fresh_install_plans_without_compiling(tmp_path):
    if _cache.shipped_archive() is None:
        pytest.skip("this CPU lacks x86-64-v2, or the shipped kernels are stale (see the test above)")
    got, err = run({"NUMBA_CACHE_DIR": str(tmp_path / "cache")})
    assert not got["compiled"], "the shipped kernels did not serve a first plan"
    assert err == []
    assert got["plan"] == expected()
    # ...and read only: nothing was written next to them.
    assert not list((tmp_path / "cache").rglob("*.nb?"))


def test_they_are_ignored_where_they_do_not_fit(tmp_path):
    # The user asked Numba for another CPU, and EPLB_NUMBA_SHIPPED=0: both compile, to the same plans.
    shipped, _ = run({"NUMBA_CACHE_DIR": str(tmp_path / "a")}, code=FIRST_PLAN)
    for extra in ({"NUMBA_CPU_NAME": "generic"}, {"EPLB_NUMBA_SHIPPED": "0"}):
        got, err = run({"NUMBA_CACHE_DIR": str(tmp_path / "b"), **extra}, code=FIRST_PLAN)
        assert got["compiled"], extra
        assert {k: v for k, v in got.items() if k != "compiled"} == {
            k: v for k, v in shipped.items() if k != "compiled"}
        shutil.rmtree(tmp_path / "b")


def copy_package(tmp_path):
    site = tmp_path / "site"
    shutil.copytree(os.path.join(ROOT, "eplb_numba"), site / "eplb_numba",
                    ignore=shutil.ignore_patterns("__pycache__"))
    return site


@fits_here
def test_an_edited_kernel_source_is_not_served_stale(tmp_path):
    # Numba checks only a kernel's own file: an edit to the sort, which
    # place_layers calls, must still keep the shipped place_layers out.
    site = copy_package(tmp_path)
    sort = site / "eplb_numba" / "_kernels" / "sort.py"
    sort.write_text(sort.read_text() + "\n# edited\n")
    got, err = run({"NUMBA_CACHE_DIR": str(tmp_path / "cache")}, str(site), code=FIRST_PLAN)
    assert got["compiled"] and err == []
    assert got["plan"] == expected()


def test_an_edited_callee_is_not_served_stale_from_the_disk_cache(tmp_path):
    # The same for the user's own cache: place_layers is cached, then only
    # the file of a kernel it calls changes.
    site = copy_package(tmp_path)
    env = {"NUMBA_CACHE_DIR": str(tmp_path / "cache"), "EPLB_NUMBA_SHIPPED": "0"}
    first, _ = run(env, str(site), code=FIRST_PLAN)
    again, _ = run(env, str(site), code=FIRST_PLAN)
    assert first["compiled"] and not again["compiled"]
    sort = site / "eplb_numba" / "_kernels" / "sort.py"
    sort.write_text(sort.read_text() + "\n# edited\n")
    edited, _ = run(env, str(site), code=FIRST_PLAN)
    assert edited["compiled"] and edited["plan"] == first["plan"] == expected()


@fits_here
def test_a_damaged_shipped_file_is_skipped_with_a_warning(tmp_path):
    if _cache.shipped_archive() is None:
        pytest.skip("the shipped kernels do not fit this machine")
    site = copy_package(tmp_path)
    path = site / "eplb_numba" / "_compiled" / _cache.shipped_archive_name()
    with zipfile.ZipFile(_OURS) as old, zipfile.ZipFile(path, "w") as new:
        for info in old.infolist():
            data = old.read(info)
            new.writestr(info, data[:200] if info.filename.startswith("hierarchical.place_layers-") else data)
    got, err = run({"NUMBA_CACHE_DIR": str(tmp_path / "cache")}, str(site), code=FIRST_PLAN)
    assert got["compiled"] and got["plan"] == expected()
    assert len(err) == 1 and "damaged shipped kernel" in err[0], err


def test_a_cpu_without_x86_64_v2_does_not_use_them(monkeypatch):
    monkeypatch.setattr(_cache, "get_host_cpu_features", lambda: {"sse2": True})
    _cache.shipped_archive.cache_clear()
    try:
        assert _cache.shipped_archive() is None
    finally:
        monkeypatch.undo()
        _cache.shipped_archive.cache_clear()
    assert (_cache.shipped_archive() is not None) == (BUILT == _HERE)
