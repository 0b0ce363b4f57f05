"""The command line never loses a user's data and never fails with a traceback.

Each case runs ``eplb-numba`` in a subprocess, as a user would, on real files.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import zipfile

import numpy as np
import pytest

import eplb_numba

from .test_cli import SMALL, assert_error, cli

LOADS = (np.arange(4 * 16).reshape(4, 16) * 37) % 101


def digest(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


@pytest.fixture
def loads(tmp_path):
    path = tmp_path / "loads.npy"
    np.save(path, LOADS)
    return path


@pytest.mark.parametrize("ext", [".npz", ".json", ".pt"])
def test_out_never_replaces_the_input(tmp_path, ext):
    if ext == ".pt":
        torch = pytest.importorskip("torch")
        path = tmp_path / f"loads{ext}"
        torch.save(torch.from_numpy(LOADS), path)
    elif ext == ".npz":
        path = tmp_path / f"loads{ext}"
        np.savez(path, loads=LOADS)
    else:
        path = tmp_path / f"loads{ext}"
        path.write_text(json.dumps(LOADS.tolist()))
    before = digest(path)
    for extra in ([], ["--force"]):
        assert_error(cli("rebalance", path, *SMALL, "--out", path, *extra), "--out", "is the input file")
        assert digest(path) == before


def test_out_needs_force_to_overwrite(tmp_path, loads):
    out = tmp_path / "plan.npz"
    out.write_bytes(b"the user's own file")
    assert_error(cli("rebalance", loads, *SMALL, "--out", out), "--out", "already exists", "--force")
    assert out.read_bytes() == b"the user's own file"
    result = cli("rebalance", loads, *SMALL, "--out", out, "--force")
    assert result.returncode == 0, result.stderr
    with np.load(out) as data:
        np.testing.assert_array_equal(data["physical_to_logical_map"],
                                      eplb_numba.rebalance_experts(LOADS, 24, 4, 2, 8)[0])
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".eplb-numba-")], "a temporary file was left"


@pytest.mark.parametrize(
    "out, fragments",
    [
        ("/nonexistent/dir/plan.pt", ["--out", "no such directory /nonexistent/dir"]),
        ("plan.txt", ["--out", "unknown extension '.txt'"]),
        (".", ["--out", "is a directory"]),
    ],
)
def test_out_is_checked_before_any_work(tmp_path, loads, out, fragments):
    result = cli("rebalance", loads, *SMALL, "--out", out, cwd=tmp_path)
    assert_error(result, *fragments)


def test_plot_is_checked_before_any_work(tmp_path, loads):
    pytest.importorskip("matplotlib")
    plot = tmp_path / "balance.png"
    plot.write_bytes(b"an old picture")
    assert_error(cli("rebalance", loads, *SMALL, "--plot", plot), "--plot", "already exists")
    assert plot.read_bytes() == b"an old picture"
    assert_error(cli("rebalance", loads, *SMALL, "--plot", "/nonexistent/x.png"), "--plot", "no such directory")


def test_a_closed_pipe_ends_quietly(loads):
    proc = subprocess.Popen([sys.executable, "-m", "eplb_numba", "rebalance", str(loads), *SMALL, "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.read(10)
    proc.stdout.close()  # as `| head -c 10` does
    with proc.stderr:
        err = proc.stderr.read().decode()
    proc.wait(timeout=120)
    assert "Traceback" not in err and "BrokenPipe" not in err, err
    assert proc.returncode in (0, 141)


def test_traces_are_summed_without_overflow(tmp_path):
    wide = tmp_path / "wide.npy"
    np.save(wide, np.full((3, 4, 16), 2**62, np.int64))  # the sum wraps in int64
    assert_error(cli("rebalance", wide, *SMALL), "wide.npy", "exceed int64")
    small = tmp_path / "f16.npy"
    trace = np.full((100, 4, 16), 1000, np.float16)  # 1e5 per expert: beyond float16, fine in float64
    trace[:, 0, 0] = 3000
    np.save(small, trace)
    want = eplb_numba.rebalance_experts(trace.astype(np.float64).sum(axis=0), 24, 4, 2, 8)[0]
    out = tmp_path / "plan.npz"
    assert cli("rebalance", small, *SMALL, "--out", out).returncode == 0
    with np.load(out) as data:
        np.testing.assert_array_equal(data["physical_to_logical_map"], want)


def test_simulate_sums_windows_without_overflow(tmp_path):
    trace = np.full((20, 4, 16), 60000, np.float16)
    path = tmp_path / "trace.npy"
    np.save(path, trace)
    result = cli("simulate", path, *SMALL, "--every", "5", "--window", "10", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["rebalances"] >= 1


def test_npz_members_are_chosen_by_header_before_reading(tmp_path):
    # Next to the loads, a member whose header promises 1.6 GB: only the
    # loads may be read.  Its data is cut short, so reading it would fail.
    path = tmp_path / "bomb.npz"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        with archive.open("zeros.npy", "w") as f:
            np.lib.format.write_array_header_1_0(f, {"descr": "<f8", "fortran_order": False, "shape": (200_000_000,)})
            f.write(bytes(2**20))
        with archive.open("loads.npy", "w") as f:
            np.lib.format.write_array(f, LOADS)
    out = tmp_path / "plan.npz"
    result = cli("rebalance", path, *SMALL, "--out", out)
    assert result.returncode == 0, result.stderr
    with np.load(out) as data:
        np.testing.assert_array_equal(data["physical_to_logical_map"],
                                      eplb_numba.rebalance_experts(LOADS, 24, 4, 2, 8)[0])
    # A lone member of the wrong shape is refused from its header alone.
    lone = tmp_path / "lone.npz"
    with zipfile.ZipFile(lone, "w", zipfile.ZIP_DEFLATED) as archive, archive.open("zeros.npy", "w") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": "<f8", "fortran_order": False, "shape": (10**9,)})
    assert_error(cli("rebalance", lone, *SMALL), "lone.npz", "must be 2-D", "(1000000000,)")


@pytest.mark.parametrize(
    "make, fragments",
    [
        (lambda p: np.savez(p.with_suffix(".npz")), ["holds no arrays"]),
        (lambda p: p.with_suffix(".csv").write_text(""), ["is empty"]),
        (lambda p: p.with_suffix(".csv").write_text("\n\n"), ["holds no numbers"]),
        (lambda p: p.with_suffix(".pt").write_bytes(b""), ["is empty"]),
        (lambda p: p.with_suffix(".pt").write_bytes(b"not a torch file"), ["cannot read", "Error"]),
        (lambda p: np.save(p.with_suffix(".npy"), np.zeros((0, 16))), ["holds no loads", "(0, 16)"]),
        (lambda p: np.save(p.with_suffix(".npy"), np.array([{"a": 1}], dtype=object), allow_pickle=True),
         ["not a numeric .npy array"]),
        (lambda p: np.save(p.with_suffix(".npy"), np.full((4, 16), 1e300)), ["1e+300", "float32 range"]),
        (lambda p: p.with_suffix(".npy").mkdir(), ["is a directory"]),
    ],
)
def test_bad_files_get_one_line_naming_the_file(tmp_path, make, fragments):
    base = tmp_path / "loads"
    make(base)
    (path,) = [p for p in tmp_path.iterdir() if p.stem == "loads"]
    if path.suffix == ".pt":
        pytest.importorskip("torch")
    result = cli("rebalance", path, *SMALL)
    assert_error(result, path.name, *fragments)
    assert "allow_pickle" not in result.stderr


def test_errors_name_flags_not_parameters(loads):
    result = cli("rebalance", loads, "--replicas", "25", "--groups", "4", "--nodes", "2", "--gpus", "8")
    assert_error(result, "--replicas (25)", "--gpus (8)")
    assert "num_" not in result.stderr
    result = cli("rebalance", loads, "--replicas", "8", "--groups", "4", "--nodes", "2", "--gpus", "8")
    assert_error(result, "--replicas (8)", "experts in")
    assert "weight.shape" not in result.stderr


def test_outputs_that_cannot_fit_are_refused(loads):
    result = cli("rebalance", loads, "--replicas", "10000000000", "--groups", "4", "--nodes", "2", "--gpus", "8")
    assert_error(result, "the outputs would take", "--replicas")


def test_plot_needs_an_image_extension(loads, tmp_path):
    pytest.importorskip("matplotlib")
    # Without one matplotlib would write noplot.png and the report would name noplot.
    assert_error(cli("rebalance", loads, *SMALL, "--plot", tmp_path / "noplot"), "--plot", "unknown extension")
    assert not list(tmp_path.glob("noplot*"))
