"""Movement-aware plans, duplicate avoidance and migration plans (opt-in features)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import eplb_numba
from eplb_numba._metrics import gpu_loads

from .conftest import make_loads


def max_loads(weight, phy2log, gpus):
    return gpu_loads(weight, phy2log, gpus).max(axis=1)


def assert_valid(new, weight, replicas, groups, nodes, gpus, old=None, slack=0.0):
    layers, experts = weight.shape
    ref = eplb_numba.rebalance_experts(weight, replicas, groups, nodes, gpus)[0]
    assert new.shape == (layers, replicas)
    # No layer's busiest GPU is busier than the reference's (times 1 + slack).
    assert np.all(max_loads(weight, new, gpus) <= max_loads(weight, ref, gpus) * (1 + slack) * (1 + 1e-9))
    per_gpu = replicas // gpus
    for layer in range(layers):
        counts = np.bincount(new[layer], minlength=experts)
        assert counts.min() >= 1 and counts.sum() == replicas  # every expert keeps a replica
        if old is None:  # without an old placement the reference's counts stay
            np.testing.assert_array_equal(counts, np.bincount(ref[layer], minlength=experts))
        if groups % nodes == 0:  # hierarchical: a group's replicas share a node
            node = np.arange(replicas) // (replicas // nodes)
            group = new[layer] // (experts // groups)
            for g in range(groups):
                assert len(set(node[group == g].tolist())) == 1
        if old is not None:  # experts that stay on a GPU keep their slot
            for gpu in range(gpus):
                sl = slice(gpu * per_gpu, (gpu + 1) * per_gpu)
                o, n = old[layer, sl], new[layer, sl]
                for e in set(o.tolist()) & set(n.tolist()):
                    kept = int(np.sum((o == e) & (n == e)))
                    assert kept == min(int(np.sum(o == e)), int(np.sum(n == e)))


CONFIGS = [(64, 80, 8, 2, 16), (48, 60, 8, 3, 12), (32, 48, 4, 4, 8), (256, 288, 8, 4, 32), (256, 288, 8, 18, 144)]


@st.composite
def drifts(draw):
    experts, replicas, groups, nodes, gpus = draw(st.sampled_from(CONFIGS))
    seed = draw(st.integers(0, 2**32 - 1))
    drift = draw(st.sampled_from([0.0, 0.02, 0.2, 1.0]))
    kind = draw(st.sampled_from(["uniform", "zipf", "ties"]))
    rng = np.random.default_rng(seed)
    w0 = make_loads(rng, kind, (3, experts))
    w1 = np.round(w0 * np.exp(drift * rng.standard_normal(w0.shape))).astype(np.int64)
    return w0, w1, replicas, groups, nodes, gpus


@settings(max_examples=60, deadline=None)
@given(drifts(), st.sampled_from([0.0, 0.01]), st.booleans())
def test_movement_aware_contract(case, slack, avoid):
    w0, w1, replicas, groups, nodes, gpus = case
    old = eplb_numba.rebalance_experts(w0, replicas, groups, nodes, gpus)[0]
    new, log2phy, logcnt = eplb_numba.rebalance_experts(
        w1, replicas, groups, nodes, gpus, old_phy2log=old, max_load_slack=slack, avoid_duplicates=avoid)
    assert_valid(new, w1, replicas, groups, nodes, gpus, old=old, slack=slack)
    for layer in range(new.shape[0]):  # logcnt counts and log2phy inverts phy2log
        np.testing.assert_array_equal(logcnt[layer], np.bincount(new[layer], minlength=w1.shape[1]))
        for e in range(w1.shape[1]):
            np.testing.assert_array_equal(np.sort(log2phy[layer, e, : logcnt[layer, e]]),
                                          np.flatnonzero(new[layer] == e))


@settings(max_examples=40, deadline=None)
@given(drifts(), st.sampled_from(["shuffled", "random", "gpus swapped"]), st.integers(0, 2**32 - 1), st.booleans())
def test_contract_from_any_old_placement(case, how, seed, avoid):
    # Old placements the reference never makes: slots shuffled across nodes,
    # random experts (some missing, some many times), GPUs relabelled.  They
    # take the paths that re-split the groups or fall back to the
    # reference's placement.
    w0, w1, replicas, groups, nodes, gpus = case
    rng = np.random.default_rng(seed)
    old = eplb_numba.rebalance_experts(w0, replicas, groups, nodes, gpus)[0]
    if how == "shuffled":
        old = np.stack([rng.permutation(row) for row in old])
    elif how == "random":
        old = rng.integers(0, w0.shape[1], old.shape)
    else:
        old = old.reshape(len(old), gpus, -1)[:, rng.permutation(gpus)].reshape(old.shape)
    new = eplb_numba.rebalance_experts(w1, replicas, groups, nodes, gpus, old_phy2log=old, avoid_duplicates=avoid)[0]
    assert_valid(new, w1, replicas, groups, nodes, gpus, old=old)


def test_same_loads_move_nothing(rng):
    w = make_loads(rng, "uniform", (5, 256))
    old = eplb_numba.rebalance_experts(w, 288, 8, 4, 32)[0]
    new = eplb_numba.rebalance_experts(w, 288, 8, 4, 32, old_phy2log=old)[0]
    np.testing.assert_array_equal(new, old)
    assert len(eplb_numba.plan_migration(old, new, 32, 4).expert) == 0


def test_small_drift_moves_far_fewer_experts(rng):
    w0 = make_loads(rng, "uniform", (20, 256)) + 1000
    w1 = np.round(w0 * np.exp(0.02 * rng.standard_normal(w0.shape))).astype(np.int64)
    old = eplb_numba.rebalance_experts(w0, 288, 8, 4, 32)[0]
    ref = eplb_numba.rebalance_experts(w1, 288, 8, 4, 32)[0]
    new = eplb_numba.rebalance_experts(w1, 288, 8, 4, 32, old_phy2log=old)[0]
    ref_copies = len(eplb_numba.plan_migration(old, ref, 32, 4).expert)
    new_copies = len(eplb_numba.plan_migration(old, new, 32, 4).expert)
    assert new_copies * 5 <= ref_copies


def duplicates(phy2log, gpus):
    per = phy2log.shape[1] // gpus
    slots = phy2log.reshape(phy2log.shape[0], gpus, per)
    return sum(per - len(set(row.tolist())) for layer in slots for row in layer)


def test_avoid_duplicates_removes_them_without_raising_the_peak(rng):
    w = np.round(rng.lognormal(0, 1.5, (30, 64)) * 100).astype(np.int64)
    ref = eplb_numba.rebalance_experts(w, 128, 4, 1, 16)[0]
    new = eplb_numba.rebalance_experts(w, 128, 4, 1, 16, avoid_duplicates=True)[0]
    assert duplicates(ref, 16) > 0 and duplicates(new, 16) < duplicates(ref, 16)
    assert_valid(new, w, 128, 4, 1, 16)


def test_worked_example_avoid_duplicates():
    # One node, 2 GPUs of 2 slots: the reference puts both replicas of the
    # hot expert 0 on GPU 0; swapping one with expert 1 removes the duplicate
    # at the same peak load.
    w = np.array([[10, 5, 5]])
    ref = eplb_numba.rebalance_experts(w, 4, 1, 1, 2)[0]
    new = eplb_numba.rebalance_experts(w, 4, 1, 1, 2, avoid_duplicates=True)[0]
    assert duplicates(new, 2) == 0
    assert max_loads(w, new, 2)[0] <= max_loads(w, ref, 2)[0]


def test_plan_migration_worked_example():
    old = np.array([[0, 1, 2, 3, 4, 5, 6, 7]])  # 4 GPUs x 2 slots, 2 nodes
    new = np.array([[0, 7, 2, 3, 4, 5, 6, 1]])
    m = eplb_numba.plan_migration(old, new, num_gpus=4, num_nodes=2, expert_bytes=1000)
    assert m.expert.tolist() == [7, 1] and m.dst_slot.tolist() == [1, 7]
    assert m.src_gpu.tolist() == [3, 0] and m.src_slot.tolist() == [7, 1] and m.dst_gpu.tolist() == [0, 3]
    assert (m.intra_node, m.inter_node, m.bytes) == (0, 2, 2000)


def test_plan_prefers_same_node_and_spreads_sends():
    # Expert 0 lives on GPU 0 (node 0) and GPU 2 (node 1); GPU 3 needs it twice.
    old = np.array([[0, 1, 2, 3, 0, 4, 5, 6]])
    new = np.array([[0, 1, 2, 3, 0, 4, 0, 0]])
    m = eplb_numba.plan_migration(old, new, num_gpus=4, num_nodes=2)
    assert m.src_gpu.tolist() == [2, 2] and m.intra_node == 2


@settings(max_examples=40, deadline=None)
@given(drifts())
def test_plans_are_valid_and_minimal(case):
    w0, w1, replicas, groups, nodes, gpus = case
    old = eplb_numba.rebalance_experts(w0, replicas, groups, nodes, gpus)[0]
    new = eplb_numba.rebalance_experts(w1, replicas, groups, nodes, gpus)[0]
    m = eplb_numba.plan_migration(old, new, gpus, nodes)
    per = replicas // gpus
    needed = {(layer, q) for layer in range(new.shape[0]) for q in range(replicas)
              if new[layer, q] not in old[layer, (q // per) * per:(q // per + 1) * per]}
    got = list(zip(m.layer.tolist(), m.dst_slot.tolist()))
    assert len(got) == len(set(got)) and set(got) == needed  # every changed slot filled once, no other
    for layer, e, sg, ss, dg, ds in zip(m.layer, m.expert, m.src_gpu, m.src_slot, m.dst_gpu, m.dst_slot):
        assert old[layer, ss] == e and ss // per == sg  # the source holds the expert
        assert new[layer, ds] == e and ds // per == dg
        node = dg // (gpus // nodes)
        node_gpus = set(range(node * (gpus // nodes), (node + 1) * (gpus // nodes)))
        local_sources = {q // per for q in np.flatnonzero(old[layer] == e)} & node_gpus
        if local_sources:
            assert sg in local_sources  # same node whenever possible


def test_bad_old_placement():
    w = np.arange(2 * 16).reshape(2, 16)
    with pytest.raises(ValueError, match=r"old_phy2log must have shape \(2, slots\)"):
        eplb_numba.rebalance_experts(w, 24, 4, 2, 8, old_phy2log=np.zeros((3, 24), dtype=int))
    with pytest.raises(ValueError, match="neither whole GPUs of 3 slots.*nor 8 GPUs; pass old_num_gpus"):
        eplb_numba.rebalance_experts(w, 24, 4, 2, 8, old_phy2log=np.zeros((2, 20), dtype=int))
    with pytest.raises(ValueError, match=r"holds expert -2, outside 0..15 \(or -1 for an empty slot\)"):
        eplb_numba.rebalance_experts(w, 24, 4, 2, 8, old_phy2log=np.full((2, 24), -2))
    with pytest.raises(ValueError, match="holds expert 99"):
        eplb_numba.rebalance_experts(w, 24, 4, 2, 8, old_phy2log=np.full((2, 24), 99))
    with pytest.raises(TypeError, match="integer expert ids"):
        eplb_numba.rebalance_experts(w, 24, 4, 2, 8, old_phy2log=np.zeros((2, 24)))
    with pytest.raises(ValueError, match="max_load_slack must be a finite number >= 0"):
        eplb_numba.rebalance_experts(w, 24, 4, 2, 8, avoid_duplicates=True, max_load_slack=-1)
    with pytest.raises(ValueError, match="new_phy2log must be 2-D"):
        eplb_numba.plan_migration(np.zeros((1, 4), int), np.zeros(4, int), 2)
    with pytest.raises(ValueError, match="neither whole GPUs of 2 slots.*pass old_num_gpus"):
        eplb_numba.plan_migration(np.zeros((1, 5), int), np.zeros((1, 4), int), 2)
    with pytest.raises(ValueError, match=r"old_phy2log must have shape \(1, slots\)"):
        eplb_numba.plan_migration(np.zeros((2, 4), int), np.zeros((1, 4), int), 2)
