"""Bad input gets a clear TypeError/ValueError naming the parameter."""

from __future__ import annotations

import numpy as np
import pytest

import eplb_numba

W = np.arange(2 * 16).reshape(2, 16)


@pytest.mark.parametrize(
    "weight, exc, match",
    [
        (np.arange(16), ValueError, "weight must be 2-D"),
        (np.ones((2, 2, 16)), ValueError, "weight must be 2-D"),
        (np.ones((2, 16), dtype=complex), TypeError, "weight must be real"),
        (np.array([["a"] * 16] * 2), TypeError, "weight must be a real numeric"),
        (np.ones((2, 16), dtype=bool), TypeError, "weight must hold numbers"),
        (np.where(W == 3, np.nan, W), ValueError, r"weight must be finite.*\[0, 3\]"),
        (np.where(W == 5, np.inf, W), ValueError, "weight must be finite"),
        (np.full((2, 16), 1e300), ValueError, r"weight\[0, 0\] is 1e\+300, beyond the float32 range"),
        (np.where(W == 7, -1, W), ValueError, r"non-negative.*\[0, 7\]"),
        ([[1, 2], [3]], ValueError, "rectangular"),
        (np.ones((2, 0)), ValueError, "at least one expert"),
    ],
)
def test_bad_weight(weight, exc, match):
    with pytest.raises(exc, match=match):
        eplb_numba.rebalance_experts(weight, 16, 4, 2, 8)


@pytest.mark.parametrize(
    "args, exc, match",
    [
        ((16.0, 4, 2, 8), TypeError, "num_replicas must be an integer"),
        ((16, True, 2, 8), TypeError, "num_groups must be an integer, not a bool"),
        ((16, 4, 0, 8), ValueError, "num_nodes must be at least 1"),
        ((16, 4, 2, -8), ValueError, "num_gpus must be at least 1"),
        ((8, 4, 2, 8), ValueError, r"num_replicas \(8\) must be at least the number of logical experts \(16"),
        ((20, 4, 2, 8), ValueError, r"multiple of num_gpus.*num_replicas=24"),
        ((16, 4, 3, 8), ValueError, r"num_gpus \(8\) must be a multiple of num_nodes \(3\)"),
        ((16, 6, 2, 8), ValueError, r"multiple of num_groups \(6\)"),
    ],
)
def test_bad_counts(args, exc, match):
    with pytest.raises(exc, match=match):
        eplb_numba.rebalance_experts(W, *args)


def test_global_policy_ignores_group_divisibility():
    # 16 experts do not split into 3 groups, but 3 % 2 != 0 selects the
    # global policy, which the reference runs without groups.
    phy2log, _, _ = eplb_numba.rebalance_experts(W, 16, 3, 2, 8)
    assert phy2log.shape == (2, 16)


def test_hierarchical_helper_insists_on_groups_per_node():
    with pytest.raises(ValueError, match="num_groups .* multiple of num_nodes"):
        eplb_numba.rebalance_experts_hierarchical(W, 16, 3, 2, 8)


def test_zero_layers_returns_empty_shapes():
    phy2log, log2phy, logcnt = eplb_numba.rebalance_experts(np.zeros((0, 16)), 24, 4, 2, 8)
    assert phy2log.shape == (0, 24) and log2phy.shape == (0, 16, 9) and logcnt.shape == (0, 16)
    assert phy2log.dtype == log2phy.dtype == logcnt.dtype == np.int64


def test_helpers_validate():
    with pytest.raises(ValueError, match=r"num_packs \(3\) must divide"):
        eplb_numba.balanced_packing(W, 3)
    with pytest.raises(ValueError, match=r"num_phy \(4\) must be at least"):
        eplb_numba.replicate_experts(W, 4)
    with pytest.raises(ValueError, match="non-negative"):
        eplb_numba.replicate_experts(-W, 40)


@pytest.mark.parametrize("dtype", [np.int32, np.uint16, np.float16, np.float32, np.float64])
def test_inputs_are_not_mutated_and_any_real_dtype_works(dtype):
    w = (W % 7).astype(dtype)
    snapshot = w.copy()
    flags = w.flags.writeable
    expected = eplb_numba.rebalance_experts(W % 7, 16, 4, 2, 8)
    got = eplb_numba.rebalance_experts(w, 16, 4, 2, 8)
    for a, b in zip(got, expected):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(w, snapshot)
    assert w.flags.writeable == flags


def test_read_only_and_strided_inputs():
    w = np.asfortranarray((W * 3) % 11)
    w.setflags(write=False)
    expected = eplb_numba.rebalance_experts(np.ascontiguousarray(w), 16, 4, 2, 8)
    for a, b in zip(eplb_numba.rebalance_experts(w, 16, 4, 2, 8), expected):
        np.testing.assert_array_equal(a, b)


# Options are checked strictly whether or not they are used.
@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        (dict(avoid_duplicates="no"), TypeError, "avoid_duplicates must be True or False, got str 'no'"),
        (dict(avoid_duplicates="False"), TypeError, "avoid_duplicates must be True or False"),
        (dict(avoid_duplicates=1), TypeError, "avoid_duplicates must be True or False"),
        (dict(max_load_slack="0.1"), TypeError, "max_load_slack must be a real number"),
        (dict(max_load_slack=True), TypeError, "max_load_slack must be a real number .*got bool True"),
        (dict(max_load_slack=-0.1), ValueError, "max_load_slack must be a finite number >= 0"),
        (dict(max_load_slack=float("nan")), ValueError, "max_load_slack must be a finite number >= 0"),
        (dict(max_load_slack=float("inf")), ValueError, "max_load_slack must be a finite number >= 0"),
    ],
)
def test_options_are_checked_even_when_unused(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        eplb_numba.rebalance_experts(W, 16, 4, 2, 8, **kwargs)


def test_options_accept_numpy_scalars():
    a = eplb_numba.rebalance_experts(W, 16, 4, 2, 8, max_load_slack=np.float32(0.0), avoid_duplicates=np.bool_(False))
    b = eplb_numba.rebalance_experts(W, 16, 4, 2, 8)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))


@pytest.mark.parametrize("replicas", [10_000_000, 2**64])
def test_outputs_that_cannot_fit_are_refused_with_their_size(replicas):
    with pytest.raises(ValueError, match=r"the outputs would take .*(TiB|PiB) \(phy2log \[58, .*more than this"):
        eplb_numba.rebalance_experts(np.ones((58, 256)), replicas * 32, 8, 4, 32)


def test_replicate_experts_refuses_outputs_that_cannot_fit():
    with pytest.raises(ValueError, match="outputs would take .* check num_phy"):
        eplb_numba.replicate_experts(np.ones((1000, 8)), 10**12)


def test_unsigned_loads_beyond_int64_are_named():
    w = np.full((1, 8), 2**63, np.uint64)
    for call in (lambda: eplb_numba.balanced_packing(w, 2), lambda: eplb_numba.replicate_experts(w, 9)):
        with pytest.raises(ValueError, match=r"weight\[0, 0\] is 9223372036854775808, beyond int64"):
            call()


def test_balanced_packing_rejects_what_float32_cannot_sort():
    # No RuntimeWarning (the test config turns warnings into errors): a ValueError.
    with pytest.raises(ValueError, match=r"weight\[0, 0\] is 1e\+39, beyond the float32 range"):
        eplb_numba.balanced_packing(np.full((1, 8), 1e39), 2)


def test_plan_migration_names_the_map_with_bad_ids():
    with pytest.raises(ValueError, match="old_phy2log holds expert 99"):
        eplb_numba.plan_migration([[0, 1, 2, 99]], [[0, 1, 2, 3]], 2)
    with pytest.raises(ValueError, match="old_phy2log holds expert -2"):
        eplb_numba.plan_migration([[0, 1, 2, -2]], [[0, 1, 2, 3]], 2)
    with pytest.raises(ValueError, match="new_phy2log holds expert -2"):
        eplb_numba.plan_migration([[0, 1, 2, 3]], [[0, 1, 2, -2]], 2)
    # -1 is an empty slot: nothing to send from it, nothing to fill in it.
    m = eplb_numba.plan_migration([[0, 1, 2, -1]], [[0, 1, 3, -1]], 2)
    assert m.expert.tolist() == [3] and m.from_storage == 1 and m.src_gpu.tolist() == [-1]
