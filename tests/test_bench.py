"""The benchmark harness (``bench/``), which lives in the source tree, not the package."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from .test_cli import assert_error, cli

BENCH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench")


def _run(*args):
    return subprocess.run([sys.executable, os.path.join(BENCH, "run.py"), *map(str, args)], capture_output=True,
                          text=True, timeout=600)


@pytest.fixture
def harness(monkeypatch):
    monkeypatch.syspath_prepend(BENCH)
    import harness

    return harness


def test_movement_row_times_it_alternately_with_the_reference(harness):
    mv = harness.movement_row(runs=20, budget_s=20.0)  # a budget that never cuts the 20 runs short
    mine, plain = mv["movement_plus_migration"], mv["reference_alone"]
    assert mine["runs"] == plain["runs"] == 20
    assert mv["ratio_to_reference"] == pytest.approx(mine["median_us"] / plain["median_us"])
    assert 0 < mv["copies_movement_aware"] * 5 <= mv["copies_reference"]
    text = harness.markdown({"machine": harness.machine(), "rows": [], "movement": mv})
    assert f"{mv['ratio_to_reference']:.2f}x" in text and "timed alternately" in text


def test_one_row_with_progress(tmp_path):
    pytest.importorskip("torch")
    result = _run("--quick", "--only", "DeepSeek-V3 EP32", "--out", tmp_path / "results")
    assert result.returncode == 0, result.stderr
    assert "[1/1] DeepSeek-V3 EP32" in result.stderr
    row = [line for line in result.stdout.splitlines() if line.startswith("| DeepSeek-V3 EP32")][0]
    assert "hierarchical" in row and row.count("|") == 10
    assert (tmp_path / "results" / "benchmarks.json").stat().st_size > 0


def test_bad_arguments_fail_before_any_work(tmp_path):
    existing = tmp_path / "existing.npy"
    existing.write_bytes(b"keep me")
    result = _run("--quick", "--out", existing)
    assert result.returncode != 0 and "--out" in result.stderr and "is a file" in result.stderr
    assert existing.read_bytes() == b"keep me"
    folder = tmp_path / "results"
    folder.mkdir()
    (folder / "benchmarks.md").write_text("an earlier run")
    result = _run("--quick", "--out", folder)
    assert "already holds benchmarks.md" in result.stderr and "--force" in result.stderr
    assert (folder / "benchmarks.md").read_text() == "an earlier run"
    result = _run("--quick", "--only", "no such row", "--out", tmp_path / "new")
    assert result.returncode != 0 and "matches no benchmark row" in result.stderr
    assert "Traceback" not in result.stderr


def test_the_cli_says_where_the_benchmarks_are():
    assert_error(cli("bench", "--quick"), "source checkout", "python bench/run.py")
