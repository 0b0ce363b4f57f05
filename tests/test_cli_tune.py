"""``eplb-numba tune`` and the quality options of the command line."""

from __future__ import annotations

import json

import numpy as np
import pytest

from eplb_numba.cli.tune import recommend, tune

from .test_cli import SMALL, assert_error, cli


@pytest.fixture
def trace(tmp_path):
    rng = np.random.default_rng(3)
    steps = rng.poisson(rng.gamma(0.5, 20, (1, 4, 16)), (60, 4, 16))
    path = tmp_path / "trace.npy"
    np.save(path, steps)
    return path, steps


def test_tune_recommends_from_a_trace(trace, tmp_path):
    path, steps = trace
    plot = tmp_path / "tune.png"
    result = cli("tune", path, *SMALL, "--windows", "5,10", "--intervals", "5,10", "--json", "--plot", plot)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert len(out["candidates"]) == 2 * 2 * 3 and out["scored_from_step"] == 10
    assert plot.stat().st_size > 0
    rec = out["recommended"]
    best = min(c["imbalance"] for c in out["candidates"])
    assert rec["imbalance"] <= best * 1.01
    assert all(c["copies_per_1000_steps"] >= rec["copies_per_1000_steps"] for c in out["candidates"]
               if c["imbalance"] <= best * 1.01)
    # The same replay in-process, scored on the same steps.
    again = tune(steps, (24, 4, 2, 8), (5, 10), (5, 10))
    assert [c["imbalance"] for c in again["candidates"]] == pytest.approx([c["imbalance"] for c in out["candidates"]])
    text = cli("tune", path, *SMALL, "--windows", "5", "--intervals", "5", "--policies", "reference")
    assert text.returncode == 0 and "recommended (*): policy reference, window 5" in text.stdout


def test_recommend_rule():
    rows = [{"imbalance": 0.100, "copies_per_1000_steps": 900}, {"imbalance": 0.1005, "copies_per_1000_steps": 10},
            {"imbalance": 0.2, "copies_per_1000_steps": 0}]
    assert recommend(rows, 0.01) is rows[1]
    assert recommend(rows, 0.0) is rows[0]


def test_sglang_dump_is_read(tmp_path):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(4)
    counts = np.zeros((80, 4, 16), dtype=np.int32)  # the recorder's buffer, filled for 60 steps
    counts[:60] = rng.poisson(30, (60, 4, 16))
    path = tmp_path / "expert_distribution_recorder_1.pt"
    torch.save({"rank": 0, "logical_count": torch.from_numpy(counts),
                "average_utilization_rate_over_window": None}, path)
    result = cli("tune", path, *SMALL, "--windows", "10", "--intervals", "10", "--json")
    assert result.returncode == 0, result.stderr
    assert "20 steps" in result.stderr and json.loads(result.stdout)["steps"] == 60


def test_tune_errors(trace):
    path, _ = trace
    assert_error(cli("tune", path, *SMALL, "--windows", "a,b"), "--windows")
    assert_error(cli("tune", path, *SMALL, "--intervals", "0"), "--intervals")
    assert_error(cli("tune", path, *SMALL, "--policies", "best"), "--policies", "'best'")
    assert_error(cli("tune", path, *SMALL, "--windows", "50", "--intervals", "20"), "60 steps", "--windows")
    assert_error(cli("tune", path, "--replicas", "23", "--groups", "4", "--nodes", "2", "--gpus", "8",
                     "--windows", "5", "--intervals", "5"), "--replicas")


def test_rebalance_quality_reports_the_bound(trace):
    path, steps = trace
    plain = json.loads(cli(path, *SMALL, "--json").stdout)
    better = json.loads(cli(path, *SMALL, "--json", "--quality").stdout)
    assert better["quality"] and not plain["quality"]
    assert 0 <= better["above_bound"]["mean"] <= plain["above_bound"]["mean"]
    assert "above the balance bound" in cli(path, *SMALL, "--quality").stdout


def test_simulate_has_quality_rows_and_the_bound(trace):
    path, _ = trace
    result = cli("simulate", path, *SMALL, "--every", "10", "--window", "10", "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)["summary"]
    assert {"quality", "quality, movement-aware"} <= set(summary)
    assert 0 <= summary["quality"]["above_bound"] <= summary["reference"]["above_bound"]
    assert summary["quality"]["layers_above_reference_peak"] == 0
