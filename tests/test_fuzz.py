"""Fuzzing the public functions and the command line's loaders with arbitrary input.

The only outcomes allowed: a result that passes the placement properties, or
a ``ValueError``/``TypeError`` (the command line: exit 2 with one line).  Never
another exception, a crash, a hang or a mutated input.
"""

from __future__ import annotations

import json
import os
import tempfile
import warnings

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import eplb_numba
from eplb_numba.__main__ import main

DTYPES = [np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64, np.float16, np.float32,
          np.float64, np.bool_, np.complex64]
SPECIAL = [0, 1, 2, 7, 255, 65504, 2**31 - 1, 2**62, 2**63, 3e38, 3.5e38, 1e300, -1, -1e-3, float("inf"),
           float("nan")]


@st.composite
def any_array(draw, max_dims=3):
    dtype = np.dtype(draw(st.sampled_from(DTYPES)))
    ndim = draw(st.integers(0, max_dims))
    shape = tuple(draw(st.lists(st.integers(0, 6), min_size=ndim, max_size=ndim)))
    values = draw(st.lists(st.sampled_from(SPECIAL) | st.integers(0, 10**6) | st.floats(allow_nan=True),
                           min_size=1, max_size=8))
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")  # out-of-range casts are part of the fuzz
        pool = np.array(values, dtype=np.float64).astype(dtype) if dtype.kind != "c" else np.array(values, dtype)
    idx = draw(arrays(np.intp, shape, elements=st.integers(0, len(values) - 1)))
    return pool[idx]


COUNTS = st.one_of(st.integers(-2, 40), st.sampled_from([0, 2**31, 2**63, 2**64, 10**9]),
                   st.sampled_from([True, 2.0, "8", None, np.int32(8), np.uint64(8)]))


def check_placement(weight, phy2log, log2phy, logcnt, replicas):
    layers, experts = np.shape(weight)
    assert phy2log.dtype == log2phy.dtype == logcnt.dtype == np.int64
    assert phy2log.shape == (layers, replicas) and logcnt.shape == (layers, experts)
    assert log2phy.shape == (layers, experts, replicas - experts + 1)
    for layer in range(layers):
        counts = np.bincount(phy2log[layer], minlength=experts)
        assert counts.min() >= 1 and counts.sum() == replicas
        np.testing.assert_array_equal(counts, logcnt[layer])
        for e in range(experts):
            assert np.all(phy2log[layer, log2phy[layer, e, :logcnt[layer, e]]] == e)
            assert np.all(log2phy[layer, e, logcnt[layer, e]:] == -1)


def call(fn, *args, **kwargs):
    """``fn``'s result, or None for a ValueError/TypeError; the inputs must come back unchanged."""
    copies = [np.array(a, copy=True) if isinstance(a, np.ndarray) else a for a in args]
    try:
        return fn(*args, **kwargs)
    except (ValueError, TypeError):
        return None
    finally:
        for a, c in zip(args, copies):
            if isinstance(a, np.ndarray):
                np.testing.assert_array_equal(a, c)  # never mutated (NaN compares equal here)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(any_array(), COUNTS, COUNTS, COUNTS, COUNTS, st.sampled_from([False, True, "no", 1]),
       st.sampled_from([0.0, 0.1, -1, float("nan"), "0.1", True]))
def test_rebalance_experts(weight, replicas, groups, nodes, gpus, avoid, slack):
    out = call(eplb_numba.rebalance_experts, weight, replicas, groups, nodes, gpus, avoid_duplicates=avoid,
               max_load_slack=slack)
    if out is not None:
        check_placement(weight, *out, replicas)
        assert weight.dtype.kind in "iuf"
        assert weight.size == 0 or (np.isfinite(weight.astype(np.float64)).all() and weight.min() >= 0)
    hier = call(eplb_numba.rebalance_experts_hierarchical, weight, replicas, groups, nodes, gpus)
    if hier is not None:
        phy2log, phyrank, logcnt = hier
        assert phy2log.shape == phyrank.shape == (weight.shape[0], replicas)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(any_array(max_dims=2), COUNTS)
def test_packing_and_replication(weight, count):
    packed = call(eplb_numba.balanced_packing, weight, count)
    if packed is not None:
        index, rank = packed
        rows, n = weight.shape
        assert index.shape == rank.shape == (rows, n)
        for r in range(rows if n else 0):  # no items: nothing to check per pack
            assert np.bincount(index[r], minlength=count).tolist() == [n // count] * count
            assert sorted(zip(index[r].tolist(), rank[r].tolist())) == sorted(
                (p, k) for p in range(count) for k in range(n // count))
    replicated = call(eplb_numba.replicate_experts, weight, count)
    if replicated is not None:
        phy2log, rank, logcnt = replicated
        for r in range(weight.shape[0]):
            np.testing.assert_array_equal(np.bincount(phy2log[r], minlength=weight.shape[1]), logcnt[r])


@settings(max_examples=200, deadline=None)
@given(any_array(max_dims=2), any_array(max_dims=2), COUNTS, COUNTS)
def test_plan_migration(old, new, gpus, nodes):
    m = call(eplb_numba.plan_migration, old, new, gpus, nodes)
    if m is not None:
        assert len(m.expert) == m.intra_node + m.inter_node
        for layer, e, ss, ds in zip(m.layer, m.expert, m.src_slot, m.dst_slot):
            assert new[layer, ds] == e and (ss < 0 or old[layer, ss] == e)


def _write(path, arr, fmt):
    if fmt == ".npy":
        np.save(path, arr)
    elif fmt == ".npz":
        np.savez(path, loads=arr)
    elif fmt == ".csv":
        np.savetxt(path, np.atleast_2d(arr) if arr.ndim < 3 else arr.reshape(-1, arr.shape[-1] or 1),
                   delimiter=",", fmt="%s")
    else:
        with open(path, "w") as f:
            json.dump(arr.tolist() if arr.dtype.kind != "c" else str(arr), f)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(any_array(), st.sampled_from([".npy", ".npz", ".csv", ".json"]), st.booleans())
def test_cli_loaders(arr, fmt, simulate):
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "loads" + fmt)
        try:
            _write(path, arr, fmt)
        except (ValueError, TypeError):
            return  # a format that cannot hold this array
        with open(path, "rb") as f:
            before = f.read()
        argv = ["simulate", path, "--every", "1", "--window", "1"] if simulate else ["rebalance", path]
        argv += ["--replicas", "8", "--groups", "2", "--nodes", "1", "--gpus", "2", "--json"]
        rc, err = _run_main(argv)
        assert rc in (0, 2), (rc, err)
        if rc == 2:
            lines = [line for line in err.splitlines() if line.strip()]
            assert len(lines) == 1 and lines[0].startswith("eplb-numba: error: "), err
        with open(path, "rb") as f:
            assert f.read() == before  # the user's file is never touched


def _run_main(argv):
    import contextlib
    import io

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(argv)
    return rc, err.getvalue()
