"""What the movement-aware plan takes of the reference: placement, counts and split.

``ref_plan`` runs the plain plan's kernel with the groups' nodes as an extra
output; its bound is the placement's busiest GPU, each GPU summed slot by
slot in float64 (``busiest_in_slot_order``, as the movement kernel sums).
These tests hold it to the public plan.
"""

from __future__ import annotations

import numpy as np
import pytest

import eplb_numba
from eplb_numba._engine import ref_plan
from eplb_numba._kernels.repack import layer_loads
from eplb_numba._metrics import replica_counts
from eplb_numba._validate import as_weight, check_layout

from .conftest import LOAD_KINDS, make_loads, random_config


def busiest_in_slot_order(weight, phy2log, gpus):
    """Each layer's largest GPU load, every GPU summed slot by slot in float64."""
    w = as_weight(weight).astype(np.float64)
    counts = replica_counts(phy2log, w.shape[1])
    per_slot = np.take_along_axis(w, phy2log, 1) / np.take_along_axis(counts, phy2log, 1)
    per_slot = per_slot.reshape(len(phy2log), gpus, -1)
    total = np.zeros(per_slot.shape[:2])
    for k in range(per_slot.shape[2]):
        total = total + per_slot[:, :, k]
    return total.max(axis=1)


def assert_ref_plan_matches(weight, replicas, groups, nodes, gpus):
    w = as_weight(weight)
    layout = check_layout(w.shape, replicas, groups, nodes, gpus)
    ref, logcnt, split = ref_plan(w, layout)
    phy2log, _, expected_cnt = eplb_numba.rebalance_experts(weight, replicas, groups, nodes, gpus)
    np.testing.assert_array_equal(ref, phy2log)
    np.testing.assert_array_equal(logcnt, expected_cnt)
    # The movement kernel's own per-GPU sums give the same busiest GPU.
    loads = np.empty(gpus)
    for layer in range(len(w)):
        share = w[layer].astype(np.float64) / logcnt[layer]
        layer_loads(ref[layer], share, replicas // gpus, loads)
        assert loads.max() == busiest_in_slot_order(weight, phy2log, gpus)[layer]
    if layout.hierarchical:
        # Every slot on node n holds an expert of a group that split puts on n.
        per_node = replicas // nodes
        group = phy2log // (w.shape[1] // groups)
        node = np.broadcast_to(np.arange(replicas) // per_node, phy2log.shape)
        np.testing.assert_array_equal(np.take_along_axis(split, group, 1), node)
    else:
        np.testing.assert_array_equal(split, np.zeros((len(w), 1), dtype=np.int64))


def test_thousands_of_generated_cases(rng):
    for _ in range(1500):
        experts, replicas, groups, nodes, gpus = random_config(rng)
        kind = LOAD_KINDS[int(rng.integers(len(LOAD_KINDS)))]
        weight = make_loads(rng, kind, (int(rng.integers(1, 4)), experts))
        assert_ref_plan_matches(weight, replicas, groups, nodes, gpus)


@pytest.mark.parametrize("model", [(256, 288, 8, 4, 32), (256, 288, 8, 18, 144), (384, 448, 1, 8, 64)])
@pytest.mark.parametrize("kind", ["ties", "zipf", "large"])
def test_model_sized(model, kind, rng):
    experts, replicas, groups, nodes, gpus = model
    assert_ref_plan_matches(make_loads(rng, kind, (12, experts)), replicas, groups, nodes, gpus)


# (small, big, replicas of big): big / replicas and small differ as float64
# but round to one float32, so the reference's sort ties them and its order
# decides which GPU gets the slightly larger load.
NEAR_TIES = [(167026576, 501079712, 3), (323637184, 1618185856, 5), (159747856, 958487104, 6)]


@pytest.mark.parametrize("small, big, copies", NEAR_TIES)
@pytest.mark.parametrize("nodes", [1, 2])
def test_near_ties_follow_the_reference_order(small, big, copies, nodes, rng):
    assert np.float32(big) / np.float32(copies) == np.float32(small)
    assert np.float64(big) / copies != np.float64(small)
    for gpus_per_node in (2, 3, 4):
        # Per node (one group each): the pair and light experts, padded so
        # that its slots (all copies - 1 extra ones go to big) fill its GPUs.
        per_node = 8 + (-(8 + copies - 1) % gpus_per_node)
        for _ in range(10):
            w = rng.integers(0, 50, (3, nodes * per_node))
            for layer in range(3):
                for node in range(nodes):
                    a, b = node * per_node + rng.choice(per_node, 2, replace=False)
                    w[layer, a], w[layer, b] = big, small
            replicas = nodes * (per_node + copies - 1)
            assert_ref_plan_matches(w, replicas, nodes, nodes, nodes * gpus_per_node)
