"""A changed GPU set: scaling up or down, GPUs lost, and vLLM's elastic call sites."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import eplb_numba
from eplb_numba.cli.workload import deepseek_v3_loads

from .conftest import make_loads, slot_preservation_oracle


def replica_loads(weight, phy2log, num_gpus):
    """Per-GPU loads (float64) of a placement with -1 (empty) slots."""
    layers, slots = phy2log.shape
    per = slots // num_gpus
    loads = np.zeros((layers, num_gpus))
    for layer in range(layers):
        row = phy2log[layer]
        cnt = np.bincount(row[row >= 0], minlength=weight.shape[1])
        for q in range(slots):
            e = row[q]
            if e >= 0:
                loads[layer, q // per] += weight[layer, e] / cnt[e]
    return loads


def check_plan(weight, out, num_gpus, failed=(), num_nodes=None, groups=None):
    """Every live slot filled, failed GPUs empty, every expert on a live GPU, maps consistent."""
    phy2log, log2phy, logcnt = out
    layers, slots = phy2log.shape
    per = slots // num_gpus
    experts = weight.shape[1]
    dead = np.zeros(slots, dtype=bool)
    for g in failed:
        dead[g * per:(g + 1) * per] = True
    assert (phy2log[:, dead] == -1).all()
    assert (phy2log[:, ~dead] >= 0).all() and (phy2log < experts).all()
    for layer in range(layers):
        row = phy2log[layer]
        cnt = np.bincount(row[row >= 0], minlength=experts)
        assert (cnt >= 1).all()
        np.testing.assert_array_equal(logcnt[layer], cnt)
        for e in range(experts):
            got = log2phy[layer, e]
            assert (got[cnt[e]:] == -1).all()
            assert sorted(got[:cnt[e]].tolist()) == np.flatnonzero(row == e).tolist()
    if num_nodes and groups and groups % num_nodes == 0 and not len(failed):
        # The locality rule: each expert group lives on one node.
        node_of_slot = np.arange(slots) // (slots // num_nodes)
        size = experts // groups
        for layer in range(layers):
            for g in range(groups):
                nodes = set(node_of_slot[(phy2log[layer] // size) == g].tolist())
                assert len(nodes) == 1


def copies(old, new, num_gpus, **kw):
    return len(eplb_numba.plan_migration(old, new, num_gpus, **kw).expert)


CASES = [(8, 4, 32), (1, 4, 32)]  # (groups, nodes, gpus): hierarchical and global


@pytest.mark.parametrize("groups,nodes,gpus", CASES)
def test_one_gpu_lost(groups, nodes, gpus):
    w = deepseek_v3_loads(58, 256, seed=1)
    rng = np.random.default_rng(7)
    w2 = np.round(w * np.exp(0.02 * rng.standard_normal(w.shape))).astype(np.int64)
    old = eplb_numba.rebalance_experts(w, 320, groups, nodes, gpus)[0]
    before = old.copy()
    out = eplb_numba.rebalance_experts(w2, 320, groups, nodes, gpus, old_phy2log=old, failed_gpus=[5])
    np.testing.assert_array_equal(old, before)
    check_plan(w2, out, gpus, failed=[5])
    # No layer busier than the reference's plan on the 31 live GPUs (global: 31 % 4 != 0).
    scratch = eplb_numba.rebalance_experts(w2, 310, 1, 1, 31)[0]
    peak = replica_loads(w2, out[0], gpus).max(axis=1)
    assert (peak <= replica_loads(w2, scratch, 31).max(axis=1) * (1 + 1e-9)).all()
    m = eplb_numba.plan_migration(old, out[0], gpus, nodes, failed_gpus=[5])
    assert not (m.src_gpu == 5).any()
    # What only GPU 5 held comes from storage (a copy per new replica), and nothing else does.
    per = 10
    for layer in range(58):
        only_there = (set(old[layer, 5 * per:6 * per].tolist())
                      - set(np.delete(old[layer], range(5 * per, 6 * per)).tolist()))
        assert set(m.expert[(m.layer == layer) & (m.src_gpu == -1)].tolist()) == only_there
    assert m.from_storage == int((m.src_gpu == -1).sum()) > 0
    assert m.intra_node + m.inter_node + m.from_storage == len(m.expert)


@pytest.mark.parametrize("groups,nodes", [(8, 4), (1, 4)])
def test_scale_down_and_up(groups, nodes):
    w = deepseek_v3_loads(58, 256, seed=2)
    old = eplb_numba.rebalance_experts(w, 320, groups, nodes, 32)[0]
    down = eplb_numba.rebalance_experts(w, 280, groups, nodes, 28, old_phy2log=old)
    check_plan(w, down, 28, num_nodes=nodes, groups=groups)
    # The GPUs that stay keep most of their experts: far fewer copies than a fresh plan.
    fresh = eplb_numba.rebalance_experts(w, 280, groups, nodes, 28)[0]
    assert copies(old, down[0], 28, num_nodes=nodes) < copies(old, fresh, 28, num_nodes=nodes)
    up = eplb_numba.rebalance_experts(w, 320, groups, nodes, 32, old_phy2log=down[0])
    check_plan(w, up, 32, num_nodes=nodes, groups=groups)
    peak = replica_loads(w, up[0], 32).max(axis=1)
    bound = replica_loads(w, eplb_numba.rebalance_experts(w, 320, groups, nodes, 32)[0], 32).max(axis=1)
    assert (peak <= bound * (1 + 1e-9)).all()


def test_rank_mapping_moves_gpus():
    w = deepseek_v3_loads(4, 64, seed=3)
    old = eplb_numba.rebalance_experts(w, 80, 1, 1, 8)[0]
    # Old GPU 0 leaves; the others shift down one rank.
    mapping = {0: -1, **{g: g - 1 for g in range(1, 8)}}
    out = eplb_numba.rebalance_experts(w, 70, 1, 1, 7, old_phy2log=old, rank_mapping=mapping)
    check_plan(w, out, 7)
    m = eplb_numba.plan_migration(old, out[0], 7, rank_mapping=mapping)
    # New GPU g is old GPU g + 1: most of its experts stay.
    for g in range(7):
        stay = np.isin(out[0][:, g * 10:(g + 1) * 10], old[:, (g + 1) * 10:(g + 2) * 10]).mean()
        assert stay > 0.5
    assert (m.src_gpu >= 0).all()  # old GPU 0 still sends before it leaves
    assert m.from_storage == 0


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10**6), gpus=st.integers(2, 8), per=st.integers(2, 4), nodes=st.sampled_from([1, 2]),
       kind=st.sampled_from(["uniform", "zipf", "ties", "zeros"]), slack=st.sampled_from([0.0, 0.05]),
       avoid=st.booleans())
def test_failures_properties(seed, gpus, per, nodes, kind, slack, avoid):
    gpus = max(nodes, gpus - gpus % nodes)
    rng = np.random.default_rng(seed)
    experts = 4 * nodes * int(rng.integers(1, 3))
    slots = gpus * per
    if slots < experts + per:
        slots = (experts // gpus + 2) * gpus
        per = slots // gpus
    w = make_loads(rng, kind, (3, experts))
    old = eplb_numba.rebalance_experts(make_loads(rng, kind, (3, experts)), slots, 4 * nodes, nodes, gpus)[0]
    live_slots = slots - per
    failed = [int(rng.integers(0, gpus))] if live_slots >= experts else []
    before = (w.copy(), old.copy())
    out = eplb_numba.rebalance_experts(w, slots, 4 * nodes, nodes, gpus, old_phy2log=old, failed_gpus=failed,
                                       max_load_slack=slack, avoid_duplicates=avoid)
    np.testing.assert_array_equal(w, before[0])
    np.testing.assert_array_equal(old, before[1])
    check_plan(w.astype(np.float32), out, gpus, failed=failed, num_nodes=nodes, groups=4 * nodes)
    m = eplb_numba.plan_migration(old, out[0], gpus, nodes, failed_gpus=failed)
    assert not np.isin(m.src_gpu, failed).any()
    # Applying the copies to what stands on each GPU gives the plan.
    for layer in range(3):
        for g in range(gpus):
            if g in failed:
                continue
            had = set(old[layer, g * per:(g + 1) * per].tolist())
            got = out[0][layer, g * per:(g + 1) * per]
            brought = set(m.expert[(m.layer == layer) & (m.dst_gpu == g)].tolist())
            assert set(got.tolist()) <= had | brought


def test_vllm_scale_down_call():
    # vLLM's rearrange after a scale-down: num_replicas and num_ranks are the
    # new ones, the old map keeps its old width (the leaving ranks last).
    torch = pytest.importorskip("torch")
    from eplb_numba import torch as eplb_torch

    w = torch.from_numpy(deepseek_v3_loads(6, 48, seed=4))
    old = eplb_torch.rebalance_experts(w, 80, 8, 2, 8)[0]
    for policy in (eplb_torch.EplbNumbaPolicy, eplb_torch.EplbNumbaMovementPolicy):
        got = policy.rebalance_experts(w, 60, 8, 2, 6, old)
        phy2log = got[0] if isinstance(got, tuple) else got
        assert tuple(phy2log.shape) == (6, 60) and phy2log.dtype == torch.int64 and (phy2log >= 0).all()
    exact = eplb_torch.EplbNumbaPolicy.rebalance_experts(w, 60, 8, 2, 6, old)
    exact = exact[0] if isinstance(exact, tuple) else exact
    # The exact policy is the reference's plan with each GPU's slots reordered as
    # vLLM's default does: compared slot by slot with the old map's first 60 slots.
    plain = eplb_torch.rebalance_experts(w, 60, 8, 2, 6)[0].numpy()
    np.testing.assert_array_equal(exact.numpy(), slot_preservation_oracle(plain, old.numpy()[:, :60], 6))


def test_vllm_scale_up_call():
    # vLLM's rearrange after a scale-up: the old map has the new width, -1 in the new slots.
    torch = pytest.importorskip("torch")
    from eplb_numba import torch as eplb_torch

    w = torch.from_numpy(deepseek_v3_loads(6, 48, seed=5))
    old = eplb_torch.rebalance_experts(w, 60, 8, 2, 6)[0]
    widened = torch.full((6, 80), -1, dtype=torch.int64)
    widened[:, :60] = old
    for policy in (eplb_torch.EplbNumbaPolicy, eplb_torch.EplbNumbaMovementPolicy):
        got = policy.rebalance_experts(w, 80, 8, 2, 8, widened)
        phy2log = got[0] if isinstance(got, tuple) else got
        assert tuple(phy2log.shape) == (6, 80) and (phy2log >= 0).all()
    exact = eplb_torch.EplbNumbaPolicy.rebalance_experts(w, 80, 8, 2, 8, widened)
    exact = exact[0] if isinstance(exact, tuple) else exact
    plain = eplb_torch.rebalance_experts(w, 80, 8, 2, 8)[0].numpy()
    np.testing.assert_array_equal(exact.numpy(), slot_preservation_oracle(plain, widened.numpy(), 8))
    moved = eplb_torch.EplbNumbaMovementPolicy.rebalance_experts(w, 80, 8, 2, 8, widened)
    moved = moved[0] if isinstance(moved, tuple) else moved
    fresh = eplb_torch.rebalance_experts(w, 80, 8, 2, 8)[0]
    assert copies(widened.numpy(), moved.numpy(), 8) < copies(widened.numpy(), fresh.numpy(), 8)


def test_bad_gpu_changes():
    w = np.arange(2 * 16).reshape(2, 16)
    old = eplb_numba.rebalance_experts(w, 24, 4, 2, 8)[0]
    cases = [
        (dict(failed_gpus=[8]), ValueError, r"failed_gpus holds GPU 8; GPUs are 0..7"),
        (dict(failed_gpus=range(8)), ValueError, "lists all 8 GPUs"),
        (dict(failed_gpus=[0, 1, 2]), ValueError, "fewer than the 16 experts"),
        (dict(failed_gpus="3"), TypeError, "failed_gpus must be a list of GPU indices"),
        (dict(failed_gpus=[1.5]), TypeError, "failed_gpus must hold GPU indices"),
        (dict(rank_mapping=[0, 1, 2]), ValueError, "rank_mapping has 3 entries; it needs one per old GPU"),
        (dict(rank_mapping={0: 9}), ValueError, "maps an old rank to 9; new ranks are 0..7"),
        (dict(rank_mapping={0: 1, 1: 1}), ValueError, "maps two old ranks to one new rank"),
        (dict(rank_mapping={12: 1}), ValueError, "old rank 12; old ranks are 0..7"),
        (dict(old_num_gpus=5), ValueError, r"old_num_gpus \(5\) must be at least 1 and divide"),
    ]
    for kw, exc, match in cases:
        with pytest.raises(exc, match=match):
            eplb_numba.rebalance_experts(w, 24, 4, 2, 8, old_phy2log=old, **kw)
    with pytest.raises(ValueError, match="pass old_phy2log with it"):
        eplb_numba.rebalance_experts(w, 24, 4, 2, 8, failed_gpus=[1])
    with pytest.raises(ValueError, match="places experts on failed GPU 1"):
        eplb_numba.plan_migration(old, old, 8, failed_gpus=[1])


@pytest.mark.parametrize("slots", [64, 80, 96, 112])
def test_other_slots_per_gpu(slots):
    # The same 16 GPUs with 4, 5, 6 or 7 slots each, from a plan with 5:
    # each GPU keeps its first old slots (as many as it has now).
    w = deepseek_v3_loads(6, 64, seed=6)
    old = eplb_numba.rebalance_experts(w, 80, 8, 2, 16)[0]
    out = eplb_numba.rebalance_experts(w, slots, 8, 2, 16, old_phy2log=old, old_num_gpus=16)
    check_plan(w, out, 16, num_nodes=2, groups=8)
    m = eplb_numba.plan_migration(old, out[0], 16, 2, old_num_gpus=16)
    assert m.from_storage == 0 and m.intra_node + m.inter_node == len(m.expert)
    fresh = eplb_numba.rebalance_experts(w, slots, 8, 2, 16)[0]
    assert len(m.expert) <= copies(old, fresh, 16, num_nodes=2, old_num_gpus=16)
