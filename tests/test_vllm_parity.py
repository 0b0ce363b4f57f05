"""vLLM's default policy, classmethod by classmethod: what vLLM's own EPLB tests check, for both
return conventions (vLLM 0.14-0.18: tuples; 0.19 and later: one map), in this project's words."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import eplb_numba  # noqa: E402
from eplb_numba import _engine  # noqa: E402
from eplb_numba.torch import EplbNumbaPolicy  # noqa: E402

from .conftest import make_loads  # noqa: E402


class TupleApi(EplbNumbaPolicy):
    """The policy as vLLM 0.14-0.18 calls it."""

    VLLM_TUPLE_API = True


class MapApi(EplbNumbaPolicy):
    """The policy as vLLM 0.19 and later call it (the default without vLLM)."""

    VLLM_TUPLE_API = False


def logical_maps(phy2log, num_logical):
    """``(log2phy, logcnt)`` as vLLM 0.19+ rebuilds them from a map: width = the largest count, -1 padded."""
    rows = np.asarray(phy2log)
    logcnt = np.stack([np.bincount(r[r >= 0], minlength=num_logical) for r in rows])
    log2phy = np.full((rows.shape[0], num_logical, max(int(logcnt.max()), 1)), -1, dtype=np.int64)
    for layer, row in enumerate(rows):
        for e in range(num_logical):
            slots = np.flatnonzero(row == e)
            log2phy[layer, e, :slots.size] = slots
    return log2phy, logcnt


def plan(policy, weight, *args):
    """``(phy2log, log2phy, logcnt)`` of either convention, as NumPy arrays."""
    out = policy.rebalance_experts(torch.as_tensor(weight), *args)
    if isinstance(out, tuple):
        return tuple(t.numpy() for t in out)
    phy2log = out.numpy()
    return (phy2log, *logical_maps(phy2log, np.shape(weight)[-1]))


POLICIES = [TupleApi, MapApi]
DEEPSEEK_EXAMPLE = [[90, 132, 40, 61, 104, 165, 39, 4, 73, 56, 183, 86],
                    [20, 107, 104, 64, 19, 197, 187, 157, 172, 86, 16, 27]]


@pytest.mark.parametrize("policy", POLICIES)
def test_deepseek_example(policy):
    phy2log, log2phy, logcnt = plan(policy, DEEPSEEK_EXAMPLE, 16, 4, 2, 8)
    assert phy2log.shape == (2, 16) and log2phy.shape[:2] == (2, 12) and logcnt.shape == (2, 12)
    assert ((phy2log >= 0) & (phy2log < 12)).all() and (logcnt >= 1).all() and logcnt.sum() == 32
    # The worked example of DeepSeek's EPLB README, which vLLM's test pins.
    np.testing.assert_array_equal(phy2log, [[5, 6, 5, 7, 8, 4, 3, 4, 10, 9, 10, 2, 0, 1, 11, 1],
                                            [7, 10, 6, 8, 6, 11, 8, 9, 2, 4, 5, 1, 5, 0, 3, 1]])
    np.testing.assert_array_equal(logcnt, [[1, 2, 1, 1, 2, 2, 1, 1, 1, 1, 2, 1],
                                           [1, 2, 1, 1, 1, 2, 2, 1, 2, 1, 1, 1]])


@pytest.mark.parametrize("policy", POLICIES)
def test_small_cases(policy):
    # One GPU holds every expert once.
    phy2log, _, logcnt = plan(policy, [[10, 20, 30, 40]], 4, 1, 1, 1)
    assert phy2log.shape == (1, 4) and set(phy2log[0].tolist()) == {0, 1, 2, 3}
    # Equal loads and no spare slot: one replica each.
    _, _, logcnt = plan(policy, [[50] * 8], 8, 2, 2, 4)
    assert (logcnt == 1).all()
    # A dominant expert gets the spare slots.
    _, _, logcnt = plan(policy, [[1000, 1, 1, 1, 1, 1, 1, 1]], 12, 2, 2, 4)
    assert logcnt.shape == (1, 8) and logcnt[0, 0] > logcnt[0, 1]
    # Several layers with opposite and flat loads.
    phy2log, _, logcnt = plan(policy, [[10, 20, 30, 40, 50, 60], [60, 50, 40, 30, 20, 10], [25] * 6], 8, 2, 2, 4)
    assert phy2log.shape == (3, 8) and ((phy2log >= 0) & (phy2log < 6)).all() and (logcnt.sum(axis=1) == 8).all()
    # Hierarchical at small scale: the heaviest expert is replicated.
    w = [[100, 50, 200, 75, 150, 25, 300, 80]]
    _, _, logcnt = plan(policy, w, 12, 4, 2, 4)
    assert logcnt.sum() == 12 and (logcnt >= 1).all() and logcnt[0, 6] >= 2
    # Groups that do not split over the nodes fall back to the global policy.
    phy2log, _, logcnt = plan(policy, [[10, 20, 30, 40, 50, 60]], 8, 3, 2, 4)
    assert phy2log.shape == (1, 8) and logcnt.sum() == 8
    phy2log, _, logcnt = plan(policy, [[10, 20, 30, 40]], 8, 3, 2, 4)
    assert phy2log.shape == (1, 8) and logcnt.shape == (1, 4)
    # Larger layouts, and the heaviest expert of each layer replicated.
    w = [[50, 100, 75, 120, 90, 60, 80, 110, 40, 70, 95, 85, 65, 55, 45, 35]]
    phy2log, _, logcnt = plan(policy, w, 24, 8, 4, 8)
    assert phy2log.shape == (1, 24) and logcnt.sum() == 24
    w = np.array([[200, 150, 100, 50, 25, 12], [12, 25, 50, 100, 150, 200]])
    _, _, logcnt = plan(policy, w, 10, 3, 1, 2)
    assert all(logcnt[layer, w[layer].argmax()] >= 2 for layer in range(2))


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("device", ["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
def test_any_device(policy, device):
    out = policy.rebalance_experts(torch.tensor([[10, 20, 30, 40]], device=device), 6, 2, 1, 2)
    phy2log = out[0] if isinstance(out, tuple) else out
    assert tuple(phy2log.shape) == (1, 6)
    # vLLM 0.14-0.18 return the maps on the loads' device; 0.19 and later a
    # CPU map whatever the device (vLLM's callers assert it is on the CPU).
    assert phy2log.device.type == (device if policy is TupleApi else "cpu")


@pytest.mark.parametrize("policy", POLICIES)
def test_bad_counts_raise_value_error_not_assertion_error(policy):
    # vLLM's default asserts here; eplb-numba says what is wrong (docs/compatibility.md).
    with pytest.raises(ValueError, match="num_replicas"):
        policy.rebalance_experts(torch.tensor([[10, 20, 30, 40]]), 7, 2, 2, 4)


def test_classmethods_return_what_each_version_returns(rng):
    w = make_loads(rng, "ties", (3, 16)).astype(np.float64)
    pack = eplb_numba.balanced_packing(w, 4)
    for policy in POLICIES:
        for got, want in zip(policy.balanced_packing(w, 4), pack):
            np.testing.assert_array_equal(got, want)
    phy2log, rank, logcnt = eplb_numba.replicate_experts(w, 20)
    for got, want in zip(TupleApi.replicate_experts(w, 20), (phy2log, rank, logcnt)):
        np.testing.assert_array_equal(got, want)
    for got, want in zip(MapApi.replicate_experts(w, 20), (phy2log, logcnt)):
        np.testing.assert_array_equal(got, want)
    assert len(MapApi.replicate_experts(w, 20)) == 2
    hier = eplb_numba.rebalance_experts_hierarchical(w, 24, 4, 2, 8)
    for got, want in zip(TupleApi.rebalance_experts_hierarchical(w, 24, 4, 2, 8), hier):
        np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(MapApi.rebalance_experts_hierarchical(w, 24, 4, 2, 8), hier[0])
    # A CPU tensor reads as its array.
    np.testing.assert_array_equal(MapApi.rebalance_experts_hierarchical(torch.from_numpy(w), 24, 4, 2, 8), hier[0])


def slot_ranks(phy2log):
    """Each slot's replica rank, counted in slot order (as vLLM's test builds them)."""
    ranks = np.zeros_like(phy2log)
    for layer, row in enumerate(phy2log):
        seen: dict[int, int] = {}
        for q, e in enumerate(row.tolist()):
            ranks[layer, q] = seen.get(e, 0)
            seen[e] = ranks[layer, q] + 1
    return ranks


PRESERVE_CASES = {
    # (GPUs, old map, new map): experts moving within a GPU and arriving from the other.
    "within and across GPUs": (2, [[0, 1, 2, 3, 4, 5, 6, 7]], [[1, 5, 0, 4, 6, 2, 7, 3]]),
    # Duplicates of an expert on one GPU, before and after.
    "duplicates": (2, [[0, 1, 0, 2, 3, 4, 5, 6, 1, 2]], [[0, 5, 4, 0, 1, 6, 2, 3, 2, 1]]),
    # One expert takes two whole GPUs; the third GPU is reshuffled.
    "one expert everywhere": (3, [[0, 1, 2, 3] * 3], [[0] * 8 + [1, 2, 3, 0]]),
}


@pytest.mark.parametrize("case", PRESERVE_CASES)
def test_preserve_intragpu_slots(case):
    gpus, old, new = (np.array(x) if i else x for i, x in enumerate(PRESERVE_CASES[case]))
    per = new.shape[1] // gpus
    new_ranks = slot_ranks(new)
    post, post_ranks = TupleApi.preserve_intragpu_slots(new, new_ranks, gpus, old)
    only = MapApi.preserve_intragpu_slots(new, gpus, old)
    np.testing.assert_array_equal(only, post)
    assert post.shape == new.shape and post_ranks.shape == new.shape
    for g in range(gpus):
        seg = slice(g * per, (g + 1) * per)
        # Nothing is lost or duplicated: the same (expert, rank) pairs on each GPU.
        assert sorted(zip(post[0, seg].tolist(), post_ranks[0, seg].tolist())) == \
            sorted(zip(new[0, seg].tolist(), new_ranks[0, seg].tolist()))
        # An expert that stays on the GPU is found at its first old slot there.
        for e in set(old[0, seg].tolist()) & set(new[0, seg].tolist()):
            first = g * per + old[0, seg].tolist().index(e)
            assert post[0, first] == e
            assert post_ranks[0, first] in new_ranks[0, seg][new[0, seg] == e]


def test_preserve_intragpu_slots_equals_the_kernel(rng):
    # The classmethod (NumPy, for vLLM's calls) and the kernel the policy runs agree.
    for _ in range(400):
        gpus, per = int(rng.integers(1, 5)), int(rng.integers(1, 5))
        experts = int(rng.integers(1, gpus * per + 1))
        new = np.stack([rng.permutation(np.concatenate([np.arange(experts),
                                                        rng.integers(0, experts, gpus * per - experts)]))
                        for _ in range(3)])
        old = rng.integers(-1, experts, new.shape)
        want, _ = _engine.preserve_slots(new, old, gpus, experts)
        np.testing.assert_array_equal(MapApi.preserve_intragpu_slots(new, gpus, old), want)
        # Slots that do not split over the GPUs: unchanged, as vLLM leaves them.
        np.testing.assert_array_equal(MapApi.preserve_intragpu_slots(new, gpus * per + 1, old), new)
    with pytest.raises(TypeError, match="preserve_intragpu_slots takes"):
        MapApi.preserve_intragpu_slots(new, gpus)
    with pytest.raises(ValueError, match="old_phy2log must have shape"):
        MapApi.preserve_intragpu_slots(new, gpus, old[:1])
    with pytest.raises(ValueError, match=r"phy2log must be 2-D \[layers, slots\]"):
        MapApi.preserve_intragpu_slots(new[0], gpus, old)
