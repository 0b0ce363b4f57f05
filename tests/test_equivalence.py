"""Bit-identity with the plain-torch oracle over thousands of generated cases."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import eplb_numba  # noqa: E402
from eplb_numba import torch as eplb_torch  # noqa: E402

from . import oracle as _oracle  # noqa: E402
from .conftest import LOAD_KINDS, MODEL_CONFIGS, make_loads, random_config  # noqa: E402


def assert_same(ours, theirs):
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs):
        b = b.numpy() if hasattr(b, "numpy") else b
        a = a.cpu().numpy() if hasattr(a, "cpu") else a
        assert a.dtype == np.int64
        assert a.shape == b.shape
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("kind", LOAD_KINDS)
@pytest.mark.parametrize("model", sorted(MODEL_CONFIGS))
def test_model_sized(model, kind, rng):
    layers, experts, replicas, groups, nodes, gpus = MODEL_CONFIGS[model]
    for _ in range(2):
        w = make_loads(rng, kind, (layers, experts))
        expected = _oracle.rebalance_experts(torch.from_numpy(w), replicas, groups, nodes, gpus)
        assert_same(eplb_torch.rebalance_experts(torch.from_numpy(w), replicas, groups, nodes, gpus), expected)
        if kind != "fractional" or groups % nodes or groups == nodes:
            # The NumPy path sums groups itself: exact for integer loads, and
            # not needed by the global policy or one group per node.
            assert_same(eplb_numba.rebalance_experts(w, replicas, groups, nodes, gpus), expected)


def test_thousands_of_small_cases(rng):
    cases = 0
    for _ in range(2500):
        experts, replicas, groups, nodes, gpus = random_config(rng)
        layers = int(rng.integers(1, 4))
        kind = LOAD_KINDS[int(rng.integers(len(LOAD_KINDS)))]
        w = make_loads(rng, kind, (layers, experts))
        expected = _oracle.rebalance_experts(torch.from_numpy(w), replicas, groups, nodes, gpus)
        assert_same(eplb_torch.rebalance_experts(torch.from_numpy(w), replicas, groups, nodes, gpus), expected)
        if kind != "fractional":
            assert_same(eplb_numba.rebalance_experts(w, replicas, groups, nodes, gpus), expected)
        cases += 1
    assert cases == 2500


def test_hierarchical_helper(rng):
    for _ in range(300):
        experts, replicas, groups, nodes, gpus = random_config(rng)
        if groups % nodes:
            continue
        w = make_loads(rng, "ties", (3, experts))
        expected = _oracle.rebalance_experts_hierarchical(torch.from_numpy(w).float(), replicas, groups, nodes, gpus)
        assert_same(eplb_numba.rebalance_experts_hierarchical(w, replicas, groups, nodes, gpus), expected)
        assert_same(eplb_torch.rebalance_experts_hierarchical(torch.from_numpy(w), replicas, groups, nodes, gpus),
                    expected)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64])
def test_balanced_packing(dtype, rng):
    for n in [1, 2, 4, 8, 16, 17, 18, 32, 33, 64, 72, 100, 288, 512, 1024]:
        # n // 2 and n // 4 reach past 256 packs, where a heap replaces the scan.
        for packs in {1, 2, n} | ({4, 8, n // 2, n // 4} if n % 8 == 0 else set()):
            if n % packs:
                continue
            for kind in ("ties", "uniform", "zeros", "fractional"):
                w = make_loads(rng, kind, (3, n)).astype(dtype)
                expected = _oracle.balanced_packing(torch.from_numpy(w), packs)
                assert_same(eplb_numba.balanced_packing(w, packs), expected)
                assert_same(eplb_torch.balanced_packing(torch.from_numpy(w), packs), expected)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_replicate_experts(dtype, rng):
    for n in [1, 2, 3, 8, 64, 256]:
        for extra in [0, 1, 5, n, 3 * n + 1]:
            for kind in ("ties", "uniform", "zeros", "fractional", "onehot"):
                w = make_loads(rng, kind, (4, n)).astype(dtype)
                expected = _oracle.replicate_experts(torch.from_numpy(w), n + extra)
                assert_same(eplb_numba.replicate_experts(w, n + extra), expected)
                assert_same(eplb_torch.replicate_experts(torch.from_numpy(w), n + extra), expected)


def test_replicate_few_extras(rng):
    # Up to 32 extra replicas (and fewer than the experts) the candidates
    # are found by a branch-free top-k: every extra count, with expert
    # counts that are and are not multiples of it, on every kind of load.
    cases = 0
    for extra in range(1, 33):
        for n in {extra + 1, 2 * extra, 2 * extra + 3, 64, 97}:
            if n <= extra:
                continue
            for kind in LOAD_KINDS:
                w = make_loads(rng, kind, (2, n)).astype(np.float32)
                expected = _oracle.replicate_experts(torch.from_numpy(w), n + extra)
                assert_same(eplb_numba.replicate_experts(w, n + extra), expected)
                cases += 1
    assert cases > 1000


def test_integer_replicate_reads_float32(rng):
    # torch promotes int / int to float32, so integer loads divide as float32.
    w = rng.integers(0, 2**30, (6, 40))
    expected = _oracle.replicate_experts(torch.from_numpy(w), 100)
    assert_same(eplb_numba.replicate_experts(w, 100), expected)


def test_deepseek_readme_example():
    w = np.array(
        [
            [90, 132, 40, 61, 104, 165, 39, 4, 73, 56, 183, 86],
            [20, 107, 104, 64, 19, 197, 187, 157, 172, 86, 16, 27],
        ]
    )
    phy2log, log2phy, logcnt = eplb_numba.rebalance_experts(w, 16, 4, 2, 8)
    assert phy2log.tolist() == [
        [5, 6, 5, 7, 8, 4, 3, 4, 10, 9, 10, 2, 0, 1, 11, 1],
        [7, 10, 6, 8, 6, 11, 8, 9, 2, 4, 5, 1, 5, 0, 3, 1],
    ]
    assert_same((phy2log, log2phy, logcnt), _oracle.rebalance_experts(torch.from_numpy(w), 16, 4, 2, 8))


def test_loop_structured_oracle_agrees(rng):
    # The benchmarks time the loop-structured oracle; it must plan the same.
    for model in ("deepseek-v3-ep32", "kimi-k2-ep64"):
        layers, experts, replicas, groups, nodes, gpus = MODEL_CONFIGS[model]
        w = torch.from_numpy(make_loads(rng, "ties", (4, experts)))
        assert_same(
            _oracle.rebalance_experts_loops(w, replicas, groups, nodes, gpus),
            _oracle.rebalance_experts(w, replicas, groups, nodes, gpus),
        )


def test_overflowing_float32_sums():
    # Pack loads that overflow float32 reach inf; every later comparison is
    # then between infs, where the lowest open pack wins (the case:
    # each expert once, none twice).
    w = np.full((1, 6), 3e38, np.float32)
    expected = _oracle.rebalance_experts(torch.from_numpy(w), 6, 1, 1, 2)
    assert sorted(expected[0][0].tolist()) == list(range(6))
    assert_same(_oracle.rebalance_experts_loops(torch.from_numpy(w), 6, 1, 1, 2), expected)
    assert_same(eplb_numba.rebalance_experts(w, 6, 1, 1, 2), expected)


def test_thousands_of_overflowing_cases(rng):
    huge = np.array([0.0, 1.0, 1e37, 1e38, 2e38, 3e38, 3.4e38], dtype=np.float32)
    cases = 0
    for case in range(600):
        experts, replicas, groups, nodes, gpus = random_config(rng)
        layers = int(rng.integers(1, 4))
        w = huge[rng.integers(0, len(huge), (layers, experts))]
        expected = _oracle.rebalance_experts(torch.from_numpy(w), replicas, groups, nodes, gpus)
        if case % 12 == 0:  # the loop-structured reference is slow: a sample of the cases
            assert_same(_oracle.rebalance_experts_loops(torch.from_numpy(w), replicas, groups, nodes, gpus), expected)
        assert_same(eplb_torch.rebalance_experts(torch.from_numpy(w), replicas, groups, nodes, gpus), expected)
        if groups % nodes or groups == nodes:
            # No group sums (or one group a node): the NumPy path needs none of torch's.
            assert_same(eplb_numba.rebalance_experts(w, replicas, groups, nodes, gpus), expected)
        packs = [p for p in (1, 2, 3, 4) if experts % p == 0]
        for dtype in (np.float32, np.float64):
            p = packs[int(rng.integers(len(packs)))]
            wd = w.astype(dtype)
            assert_same(eplb_numba.balanced_packing(wd, p), _oracle.balanced_packing(torch.from_numpy(wd), p))
            if case % 12 == 0:
                assert_same(eplb_numba.balanced_packing(wd, p), _oracle.balanced_packing_loops(torch.from_numpy(wd), p))
            assert_same(eplb_numba.replicate_experts(wd, replicas),
                        _oracle.replicate_experts(torch.from_numpy(wd), replicas))
        cases += 1
    assert cases == 600
