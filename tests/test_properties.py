"""Structural properties of every placement, over hypothesis-generated inputs."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import eplb_numba


@st.composite
def problems(draw):
    nodes = draw(st.integers(1, 4))
    gpus = nodes * draw(st.integers(1, 4))
    groups = draw(st.one_of(st.just(nodes * draw(st.integers(1, 3))), st.integers(1, 8)))
    experts = groups * draw(st.integers(1, 6))
    replicas = gpus * (-(-experts // gpus) + draw(st.integers(0, 3)))
    layers = draw(st.integers(0, 3))
    loads = st.one_of(st.integers(0, 3), st.integers(0, 10**6), st.floats(0, 1e6, width=32))
    weight = draw(arrays(np.float64, (layers, experts), elements=loads))
    return weight, replicas, groups, nodes, gpus


@settings(max_examples=300, deadline=None)
@given(problems())
def test_placement_is_valid(problem):
    weight, replicas, groups, nodes, gpus = problem
    before = weight.copy()
    phy2log, log2phy, logcnt = eplb_numba.rebalance_experts(weight, replicas, groups, nodes, gpus)
    np.testing.assert_array_equal(weight, before)  # never mutated
    layers, experts = weight.shape
    assert phy2log.shape == (layers, replicas)
    assert log2phy.shape == (layers, experts, replicas - experts + 1)
    assert logcnt.shape == (layers, experts)
    for layer in range(layers):
        counts = np.bincount(phy2log[layer], minlength=experts)
        np.testing.assert_array_equal(counts, logcnt[layer])  # counts match the placement
        assert counts.min() >= 1  # every expert has a replica
        assert counts.sum() == replicas
        # log2phy and phy2log invert each other; padding is -1.
        for e in range(experts):
            slots = log2phy[layer, e, : logcnt[layer, e]]
            assert np.all(phy2log[layer, slots] == e)
            assert np.all(log2phy[layer, e, logcnt[layer, e] :] == -1)
        assert sorted(log2phy[layer][log2phy[layer] >= 0].tolist()) == list(range(replicas))
    # Every GPU holds replicas // gpus slots by construction of the GPU-major
    # layout; the hierarchical policy also keeps a group's experts on one node.
    if groups % nodes == 0 and layers:
        per_node = replicas // nodes
        group_size = experts // groups
        node_of_slot = np.arange(replicas) // per_node
        for layer in range(layers):
            for g in range(groups):
                members = np.isin(phy2log[layer], np.arange(g * group_size, (g + 1) * group_size))
                assert len(set(node_of_slot[members].tolist())) == 1


@settings(max_examples=100, deadline=None)
@given(problems())
def test_deterministic(problem):
    weight, replicas, groups, nodes, gpus = problem
    first = eplb_numba.rebalance_experts(weight, replicas, groups, nodes, gpus)
    second = eplb_numba.rebalance_experts(weight.copy(), replicas, groups, nodes, gpus)
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)


@settings(max_examples=200, deadline=None)
@given(arrays(np.float64, st.tuples(st.integers(0, 3), st.sampled_from([2, 4, 6, 12, 24])),
              elements=st.floats(0, 1e4, width=32)),
       st.sampled_from([1, 2]))
def test_packing_fills_every_pack_exactly(weight, packs):
    pack_index, rank = eplb_numba.balanced_packing(weight, packs)
    per_pack = weight.shape[1] // packs
    for row in range(weight.shape[0]):
        np.testing.assert_array_equal(np.bincount(pack_index[row], minlength=packs), per_pack)
        pairs = set(zip(pack_index[row].tolist(), rank[row].tolist()))
        assert len(pairs) == weight.shape[1]  # (pack, rank) are distinct slots
