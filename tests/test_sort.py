"""The introsort emulation against torch's CPU sort, ties and heapsort included."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from eplb_numba._kernels.sort import (  # noqa: E402
    LOW,
    SORT_SCRATCH_EXTRA,
    SORT_SCRATCH_PER_ITEM,
    SORT_STACK_SIZE,
    argsort_desc,
    heap_sort_desc,
    pack_keys,
    rank_sort_desc,
)

from .introsort_model import killer_sequence  # noqa: E402


def ours(keys):
    keys = np.ascontiguousarray(keys, dtype=np.float32)
    packed = np.empty(keys.shape[0], dtype=np.int64)
    scratch = np.empty(SORT_SCRATCH_PER_ITEM * keys.shape[0] + SORT_SCRATCH_EXTRA, dtype=np.int64)
    argsort_desc(keys, packed, np.empty(SORT_STACK_SIZE, dtype=np.int64), scratch)
    return packed & LOW


def torchs(keys):
    return torch.from_numpy(np.ascontiguousarray(keys, dtype=np.float32)).sort(-1, descending=True).indices.numpy()


@pytest.mark.parametrize("high", [1, 2, 3, 10, 1000])
def test_matches_torch_on_ties(high, rng):
    for n in list(range(0, 40)) + [63, 64, 65, 72, 100, 128, 144, 256, 288, 448, 1000, 4096]:
        for _ in range(8):
            keys = rng.integers(0, high, n).astype(np.float32)
            np.testing.assert_array_equal(ours(keys), torchs(keys))


def test_matches_torch_on_patterns():
    for n in [17, 33, 100, 257, 1000]:
        for keys in (np.arange(n), np.arange(n)[::-1], np.arange(n) % 7, np.zeros(n), (np.arange(n) // 3)[::-1]):
            np.testing.assert_array_equal(ours(keys), torchs(keys))


def test_heapsort_fallback_matches_torch():
    # An adversarial input drives introsort past its depth limit, so the
    # heapsort branch decides part of the order.
    for n in [40, 100, 300, 1000]:
        keys, used_heapsort = killer_sequence(n)
        assert used_heapsort
        np.testing.assert_array_equal(ours(keys), torchs(keys))


def test_heap_sort_alone_sorts_descending(rng):
    for n in [2, 3, 16, 17, 100]:
        vals = rng.integers(0, 5, n).astype(np.float32)
        packed = np.empty(n, dtype=np.int64)
        pack_keys(vals, packed)
        heap_sort_desc(packed, 0, n)
        order = packed & LOW
        assert np.all(np.diff(vals[order]) <= 0)
        assert sorted(order.tolist()) == list(range(n))


def test_negative_zero_ties_with_zero():
    keys = np.array([0.0, -0.0, 1.0, -0.0, 0.0] * 5, dtype=np.float32)
    np.testing.assert_array_equal(ours(keys), torchs(keys))


@pytest.mark.parametrize("high", [1, 3, 1000])
def test_rank_sort_orders_values_ignoring_ties(high, rng):
    # The bound's sort: the same sequence of values as the exact sort, each
    # index once, equal keys in any order; the packed key is the value's bits.
    for n in [0, 1, 2, 7, 8, 9, 31, 32, 33, 72, 100, 288]:
        keys = rng.integers(0, high, n).astype(np.float32)
        keys[rng.random(n) < 0.1] = -0.0
        packed = np.empty(n, dtype=np.int64)
        rank_sort_desc(keys, packed, np.empty(n, dtype=np.int64))
        order = packed & LOW
        assert sorted(order.tolist()) == list(range(n))
        np.testing.assert_array_equal(keys[order], keys[ours(keys)])
        np.testing.assert_array_equal(packed >> 32, np.maximum(keys[order].view(np.int32), 0))
