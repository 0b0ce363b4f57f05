"""A copy budget: swaps within it, whole layers where they pay, and the order to move layers in."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import eplb_numba
from eplb_numba._kernels.budget import MIN_GAIN, SOFT_WIDTH, best_swap
from eplb_numba._metrics import gpu_loads, imbalance_ratio
from eplb_numba.cli.workload import deepseek_v3_loads

from .conftest import make_loads
from .test_elastic import check_plan, copies


def swap_oracle(p, share, loads, old_held, held, num_nodes, width, max_cost):
    """The best value of any swap, every pair of slots tried (what ``best_swap`` must find)."""
    num_gpus = loads.size
    per = p.size // num_gpus
    experts = share.size
    old_held = old_held.astype(np.int64)
    scale = width * loads.mean()
    floor = loads.max() - scale

    def excess(x):
        return max(x - floor, 0.0) ** 3

    best = MIN_GAIN
    for qa in range(p.size):
        for qb in range(p.size):
            i, j = qa // per, qb // per
            if i == j or i // (num_gpus // num_nodes) != j // (num_gpus // num_nodes):
                continue
            a, b = p[qa], p[qb]
            if held[j * experts + a] or held[i * experts + b]:
                continue
            cost = (1 - old_held[i * experts + b]) + (1 - old_held[j * experts + a]) \
                - (1 - old_held[i * experts + a]) - (1 - old_held[j * experts + b])
            if cost > max_cost:
                continue
            d = share[a] - share[b]
            gain = excess(loads[i]) + excess(loads[j]) - excess(loads[i] - d) - excess(loads[j] + d)
            best = max(best, gain * width / scale ** 3 / max(cost, 0.5))
    return best


@pytest.mark.parametrize("seed", range(300))
def test_best_swap_finds_the_best(seed):
    # The kernel prunes pairs of GPUs and tries, per expert, only the partner
    # nearest the ideal move; the oracle tries every pair of slots.
    rng = np.random.default_rng(seed)
    nodes = int(rng.choice([1, 2]))
    gpus, per = 4 * nodes, int(rng.integers(2, 4))
    experts = gpus * per - int(rng.integers(0, gpus))
    kind = ("ties", "uniform", "zipf", "fractional")[seed % 4]
    w = make_loads(rng, kind, (1, experts))[0].astype(np.float64) + (seed % 3 == 0)
    old = rng.permutation(np.concatenate([np.arange(experts), rng.integers(0, experts, gpus * per - experts)]))
    p = old.copy()
    # A few random swaps first, so that some GPUs hold experts they did not.
    for _ in range(int(rng.integers(0, 3))):
        qa, qb = rng.integers(0, p.size, 2)
        p[qa], p[qb] = p[qb], p[qa]
    cnt = np.bincount(old, minlength=experts)
    share = w / cnt
    gpu_of = np.arange(p.size) // per
    loads = np.bincount(gpu_of, weights=share[p], minlength=gpus)
    old_held = np.zeros(gpus * experts, dtype=np.uint8)
    old_held[gpu_of * experts + old] = 1
    held = np.zeros(gpus * experts, dtype=np.uint8)
    np.add.at(held, gpu_of * experts + p, 1)
    touched = np.array([(np.sort(p[g * per:(g + 1) * per]) != np.sort(old[g * per:(g + 1) * per])).any()
                        for g in range(gpus)], dtype=np.uint8)
    max_cost = int(rng.integers(0, 3))
    value, cost, qa, qb = best_swap(p, share, loads, old_held, held, touched, nodes, SOFT_WIDTH, max_cost,
                                    np.empty(gpus, np.int64), np.empty(5), np.empty(5, np.int64))
    want = swap_oracle(p, share, loads, old_held, held, nodes, SOFT_WIDTH, max_cost)
    if qa < 0:
        assert want == MIN_GAIN
        return
    assert value == pytest.approx(want, rel=1e-9)
    assert cost <= max_cost and qa // per != qb // per and qa // per // (gpus // nodes) == qb // per // (gpus // nodes)


def layer_peaks(w, p, num_gpus):
    return gpu_loads(w, p, num_gpus).max(axis=1)


@pytest.mark.parametrize("groups,nodes", [(8, 4), (1, 1)])
def test_copy_budget(groups, nodes):
    w = deepseek_v3_loads(58, 256, seed=1)
    rng = np.random.default_rng(7)
    w2 = np.round(w * np.exp(0.05 * rng.standard_normal(w.shape))).astype(np.int64)
    old = eplb_numba.rebalance_experts(w, 288, groups, nodes, 32)[0]
    before = (old.copy(), w2.copy())
    full = eplb_numba.rebalance_experts(w2, 288, groups, nodes, 32, old_phy2log=old)[0]
    total = copies(old, full, 32, num_nodes=nodes)
    old_cnt = np.stack([np.bincount(r, minlength=256) for r in old])
    per_node = 288 // nodes
    imbalance = []
    for budget in (0, 1, 40, total // 3, total, 10 * total):
        out = eplb_numba.rebalance_experts(w2, 288, groups, nodes, 32, old_phy2log=old, max_copies=budget)
        check_plan(w2, out, 32, num_nodes=nodes, groups=groups)
        assert copies(old, out[0], 32, num_nodes=nodes) <= budget
        # No layer's busiest GPU is busier than it was.
        assert (layer_peaks(w2, out[0], 32) <= layer_peaks(w2, old, 32) * (1 + 1e-12)).all()
        for layer in range(58):
            if (out[0][layer] == full[layer]).all():
                continue
            # Swaps within nodes: every expert keeps its replica count and its nodes.
            row, was = out[0][layer], old[layer]
            np.testing.assert_array_equal(np.bincount(row, minlength=256), old_cnt[layer])
            for e in np.flatnonzero(old_cnt[layer] > 0)[:64]:
                assert set(np.flatnonzero(row == e) // per_node) == set(np.flatnonzero(was == e) // per_node)
            # A swap never puts a second replica of an expert on a GPU.
            for g in range(32):
                assert len(set(row[g * 9:(g + 1) * 9])) >= len(set(was[g * 9:(g + 1) * 9]))
        imbalance.append(imbalance_ratio(gpu_loads(w2, out[0], 32)).mean())
    np.testing.assert_array_equal(
        eplb_numba.rebalance_experts(w2, 288, groups, nodes, 32, old_phy2log=old, max_copies=0)[0], old)
    # More copies buy more balance.
    assert imbalance[2] < imbalance[0] and imbalance[4] < imbalance[2]
    assert imbalance[5] <= imbalance_ratio(gpu_loads(w2, full, 32)).mean()
    np.testing.assert_array_equal(old, before[0])
    np.testing.assert_array_equal(w2, before[1])


def test_threshold_and_layers_that_must_change():
    w = deepseek_v3_loads(58, 256, seed=1)
    rng = np.random.default_rng(7)
    w2 = np.round(w * np.exp(0.05 * rng.standard_normal(w.shape))).astype(np.int64)
    old = eplb_numba.rebalance_experts(w, 288, 8, 4, 32)[0]
    full = eplb_numba.rebalance_experts(w2, 288, 8, 4, 32, old_phy2log=old)[0]
    # A threshold leaves the balanced layers alone, with or without a budget.
    for budget in (None, 100):
        calm = eplb_numba.rebalance_experts(w2, 288, 8, 4, 32, old_phy2log=old, min_imbalance=10.0,
                                            max_copies=budget)[0]
        np.testing.assert_array_equal(calm, old)
    # Without a budget the layers above the threshold take the plan whole.
    loose = eplb_numba.rebalance_experts(w2, 288, 8, 4, 32, old_phy2log=old, min_imbalance=0.05)[0]
    above = imbalance_ratio(gpu_loads(w2, old, 32)) > 0.05
    changed = (full != old).any(axis=1)
    assert above.any() and (~above).any()
    np.testing.assert_array_equal(loose[above & changed], full[above & changed])
    np.testing.assert_array_equal(loose[~above], old[~above])
    # A layer with an expert on no GPU moves whatever the budget.
    broken = old.copy()
    broken[3][broken[3] == 7] = 8
    out = eplb_numba.rebalance_experts(w2, 288, 8, 4, 32, old_phy2log=broken, max_copies=0)
    check_plan(w2, out, 32)
    np.testing.assert_array_equal(np.delete(out[0], 3, axis=0), np.delete(broken, 3, axis=0))


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), case=st.sampled_from([(4, 2, 8, 3), (1, 1, 6, 4), (4, 1, 4, 5)]),
       kind=st.sampled_from(["ties", "uniform", "zeros", "zipf", "large", "fractional"]),
       budget=st.integers(0, 40), avoid=st.booleans())
def test_budget_properties(seed, case, kind, budget, avoid):
    groups, nodes, gpus, per = case
    rng = np.random.default_rng(seed)
    experts, slots = 16, gpus * per
    w = make_loads(rng, kind, (3, experts))
    old = eplb_numba.rebalance_experts(make_loads(rng, kind, (3, experts)), slots, groups, nodes, gpus)[0]
    before = old.copy()
    args = (w, slots, groups, nodes, gpus)
    out = eplb_numba.rebalance_experts(*args, old_phy2log=old, max_copies=budget, avoid_duplicates=avoid)
    check_plan(w, out, gpus, num_nodes=nodes, groups=groups)
    assert copies(old, out[0], gpus, num_nodes=nodes) <= budget
    assert (layer_peaks(w, out[0], gpus) <= layer_peaks(w, old, gpus) * (1 + 1e-12)).all()
    again = eplb_numba.rebalance_experts(*args, old_phy2log=old, max_copies=budget, avoid_duplicates=avoid)
    for a, b in zip(out, again):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(old, before)


def test_copy_budget_errors_and_torch():
    w = np.arange(2 * 16).reshape(2, 16)
    old = eplb_numba.rebalance_experts(w, 24, 4, 2, 8)[0]
    with pytest.raises(ValueError, match="max_copies must be at least 0"):
        eplb_numba.rebalance_experts(w, 24, 4, 2, 8, old_phy2log=old, max_copies=-1)
    with pytest.raises(TypeError, match="max_copies must be an integer"):
        eplb_numba.rebalance_experts(w, 24, 4, 2, 8, old_phy2log=old, max_copies=2.5)
    with pytest.raises(ValueError, match="min_imbalance must be a finite number >= 0"):
        eplb_numba.rebalance_experts(w, 24, 4, 2, 8, old_phy2log=old, min_imbalance=-0.1)
    with pytest.raises(ValueError, match="pass old_phy2log with them"):
        eplb_numba.rebalance_experts(w, 24, 4, 2, 8, max_copies=3)
    with pytest.raises(ValueError, match="apply to the same GPUs"):
        eplb_numba.rebalance_experts(w, 24, 4, 2, 8, old_phy2log=old, failed_gpus=[1], max_copies=3)
    with pytest.raises(ValueError, match="old_phy2log must have new_phy2log's shape"):
        eplb_numba.layer_gains(w, old[:, :16], old, 8)
    torch = pytest.importorskip("torch")
    from eplb_numba import torch as eplb_torch

    w2 = w[:, ::-1].copy()
    want = eplb_numba.rebalance_experts(w2, 24, 4, 2, 8, old_phy2log=old, max_copies=2)
    got = eplb_torch.rebalance_experts(torch.from_numpy(w2), 24, 4, 2, 8, old_phy2log=torch.from_numpy(old),
                                       max_copies=2)
    for a, b in zip(got, want):
        np.testing.assert_array_equal(a.numpy(), b)

    class Budgeted(eplb_torch.EplbNumbaMovementPolicy):
        MAX_COPIES = 2

    policy = Budgeted.rebalance_experts(torch.from_numpy(w2), 24, 4, 2, 8, torch.from_numpy(old))
    policy = policy[0] if isinstance(policy, tuple) else policy
    np.testing.assert_array_equal(policy.numpy(), want[0])
