"""The introsort emulation against torch's CPU sort, ties and heapsort included."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from eplb_numba._kernels.sort import LOW, SORT_STACK_SIZE, argsort_desc  # noqa: E402

from .introsort_model import _introsort, killer_sequence  # noqa: E402


def ours(keys):
    keys = np.ascontiguousarray(keys, dtype=np.float32)
    packed = np.empty(keys.shape[0], dtype=np.int64)
    argsort_desc(keys, packed, np.empty(SORT_STACK_SIZE + 2 * keys.shape[0], dtype=np.int64))
    # The high word carries the value's bits (-0.0 as 0.0).
    np.testing.assert_array_equal(packed >> 32, np.maximum(keys[packed & LOW].view(np.int32), 0))
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


def test_heapsort_with_ties_matches_torch():
    # A killer sequence whose smaller half is made one value still reaches
    # the heapsort branch (checked on the model); the result must match
    # torch there too, equal keys included.
    for n in [40, 100, 300]:
        keys, _ = killer_sequence(n)
        tied = np.where(keys < n / 2, 1, keys).astype(np.float32)
        hits = []
        _introsort(range(n), lambda i, j, tied=tied: tied[i] > tied[j], lambda hits=hits: hits.append(1))
        assert hits, n
        np.testing.assert_array_equal(ours(tied), torchs(tied))


def test_negative_zero_ties_with_zero():
    keys = np.array([0.0, -0.0, 1.0, -0.0, 0.0] * 5, dtype=np.float32)
    np.testing.assert_array_equal(ours(keys), torchs(keys))
