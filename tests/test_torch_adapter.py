"""The torch adapter: devices, dtypes, shapes, and the vLLM policy class."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import eplb_numba  # noqa: E402
from eplb_numba import torch as eplb_torch  # noqa: E402

from .conftest import make_loads, slot_preservation_oracle  # noqa: E402

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype",
                         [torch.int64, torch.int32, torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_outputs_on_input_device(device, dtype, rng):
    w = torch.from_numpy(make_loads(rng, "ties", (5, 32))).to(device=device, dtype=dtype)
    before = w.clone()
    out = eplb_torch.rebalance_experts(w, 40, 8, 2, 8)
    assert torch.equal(w, before)
    expected = eplb_numba.rebalance_experts(w.float().cpu().numpy(), 40, 8, 2, 8)
    for t, a in zip(out, expected):
        assert t.device.type == device and t.dtype == torch.int64
        np.testing.assert_array_equal(t.cpu().numpy(), a)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_matches_oracle(rng):
    from . import oracle as _oracle

    w = torch.from_numpy(make_loads(rng, "fractional", (58, 256))).cuda()
    out = eplb_torch.rebalance_experts(w, 288, 8, 4, 32)
    torch.cuda.synchronize()
    for t, e in zip(out, _oracle.rebalance_experts(w.cpu(), 288, 8, 4, 32)):
        assert torch.equal(t.cpu(), e)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_calls_from_many_threads_reuse_pinned_buffers_safely(rng):
    # Each call takes its own pinned buffers from the pool and hands them back
    # once its copies are done: threads at once, and on a side stream, agree
    # with a plan on the host.
    from concurrent.futures import ThreadPoolExecutor

    loads = [torch.from_numpy(make_loads(rng, kind, (58, 256))).cuda() for kind in ("ties", "uniform", "zipf")]
    want = [eplb_numba.rebalance_experts(w.float().cpu().numpy(), 288, 8, 4, 32) for w in loads]

    def plan(i):
        stream = torch.cuda.Stream() if i % 2 else torch.cuda.current_stream()
        with torch.cuda.stream(stream):
            out = eplb_torch.rebalance_experts(loads[i % 3], 288, 8, 4, 32)
            stream.synchronize()
        return i % 3, [t.cpu().numpy() for t in out]

    with ThreadPoolExecutor(8) as pool:
        for k, got in pool.map(plan, range(64)):
            for g, e in zip(got, want[k]):
                np.testing.assert_array_equal(g, e)


def test_requires_grad_and_non_contiguous_inputs(rng):
    w = torch.from_numpy(make_loads(rng, "uniform", (32, 6))).float().t().requires_grad_(True)
    out = eplb_torch.rebalance_experts(w, 40, 8, 2, 8)
    expected = eplb_numba.rebalance_experts(w.detach().numpy(), 40, 8, 2, 8)
    for t, a in zip(out, expected):
        np.testing.assert_array_equal(t.numpy(), a)


def test_bad_tensors():
    with pytest.raises(ValueError, match="weight must be 2-D"):
        eplb_torch.rebalance_experts(torch.ones(16), 16, 4, 2, 8)
    with pytest.raises(TypeError, match="complex"):
        eplb_torch.rebalance_experts(torch.ones(2, 16, dtype=torch.complex64), 16, 4, 2, 8)
    with pytest.raises(ValueError, match="finite"):
        eplb_torch.rebalance_experts(torch.full((2, 16), float("nan")), 16, 4, 2, 8)
    with pytest.raises(ValueError, match="non-negative"):
        eplb_torch.rebalance_experts(-torch.ones(2, 16), 16, 4, 2, 8)


def test_policy_keeps_slots_of_experts_that_stay(rng):
    old_w = make_loads(rng, "uniform", (6, 64))
    old = eplb_numba.rebalance_experts(old_w, 80, 8, 2, 16)[0]
    new_w = old_w + rng.integers(0, 800, old_w.shape)
    exact = eplb_numba.rebalance_experts(new_w, 80, 8, 2, 16)[0]
    got = eplb_torch.EplbNumbaPolicy.rebalance_experts(torch.from_numpy(new_w), 80, 8, 2, 16, torch.from_numpy(old))
    got = got[0] if isinstance(got, tuple) else got
    np.testing.assert_array_equal(got.numpy(), slot_preservation_oracle(exact, old, 16))
    assert (got.numpy() == old).sum() > (exact == old).sum()


FAKE_VLLM = {
    "vllm/__init__.py": "",
    "vllm/distributed/__init__.py": "",
    "vllm/distributed/eplb/__init__.py": "",
    "vllm/distributed/eplb/policy/__init__.py": textwrap.dedent(
        """
        from .abstract import AbstractEplbPolicy
        EPLB_POLICIES = {"default": AbstractEplbPolicy}
        """
    ),
}


@pytest.mark.parametrize("returns", ["torch.Tensor", "tuple[torch.Tensor, torch.Tensor, torch.Tensor]"])
def test_policy_plugs_into_vllm_interface(tmp_path, returns):
    # A stand-in for vllm.distributed.eplb.policy.abstract with the
    # interface of vLLM 0.19+ (one tensor) and of 0.13-0.18 (a tuple).
    files = dict(FAKE_VLLM)
    files["vllm/distributed/eplb/policy/abstract.py"] = textwrap.dedent(
        f"""
        from abc import ABC, abstractmethod
        import torch
        class AbstractEplbPolicy(ABC):
            @classmethod
            @abstractmethod
            def rebalance_experts(cls, weight: torch.Tensor, num_replicas: int, num_groups: int,
                                  num_nodes: int, num_ranks: int,
                                  old_global_expert_indices: torch.Tensor | None = None) -> {returns}:
                raise NotImplementedError
        """
    )
    for name, text in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    script = textwrap.dedent(
        """
        import os, torch
        from vllm.distributed.eplb import policy
        from vllm.distributed.eplb.policy.abstract import AbstractEplbPolicy
        from eplb_numba.torch import EplbNumbaPolicy, _vllm_plugin
        assert issubclass(EplbNumbaPolicy, AbstractEplbPolicy)
        w = torch.arange(2 * 16).reshape(2, 16) % 5
        out = EplbNumbaPolicy.rebalance_experts(w, 24, 4, 2, 8, None)
        print(type(out).__name__, len(out) if isinstance(out, tuple) else tuple(out.shape))
        # The other classmethods follow the same version's return values.
        print(len(EplbNumbaPolicy.replicate_experts(w.numpy(), 20)),
              type(EplbNumbaPolicy.rebalance_experts_hierarchical(w.numpy(), 24, 4, 2, 8)).__name__)
        _vllm_plugin()
        assert policy.EPLB_POLICIES["default"] is AbstractEplbPolicy
        os.environ["EPLB_NUMBA_VLLM_POLICY"] = "1"
        _vllm_plugin()
        assert policy.EPLB_POLICIES["default"] is EplbNumbaPolicy
        os.environ["EPLB_NUMBA_VLLM_POLICY"] = "movement"
        _vllm_plugin()
        from eplb_numba.torch import EplbNumbaMovementPolicy
        assert policy.EPLB_POLICIES["default"] is EplbNumbaMovementPolicy
        assert issubclass(EplbNumbaMovementPolicy, AbstractEplbPolicy)
        """
    )
    env_path = f"{tmp_path}{':' + sys.path[0] if sys.path[0] else ''}"
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env={**_env(), "PYTHONPATH": env_path}
    )
    assert result.returncode == 0, result.stderr
    expected = "tuple 3\n3 tuple" if returns.startswith("tuple") else "Tensor (2, 24)\n2 ndarray"
    assert result.stdout.strip() == expected


def _env():
    import os

    env = dict(os.environ)
    env.pop("EPLB_NUMBA_VLLM_POLICY", None)
    return env


def test_movement_options_through_torch(rng):
    w0 = make_loads(rng, "uniform", (6, 64))
    w1 = w0 + rng.integers(0, 300, w0.shape)
    old = eplb_numba.rebalance_experts(w0, 80, 8, 2, 16)[0]
    expected = eplb_numba.rebalance_experts(w1, 80, 8, 2, 16, old_phy2log=old, avoid_duplicates=True)
    got = eplb_torch.rebalance_experts(torch.from_numpy(w1), 80, 8, 2, 16, old_phy2log=torch.from_numpy(old),
                                       avoid_duplicates=True)
    for t, a in zip(got, expected):
        np.testing.assert_array_equal(t.numpy(), a)
    policy = eplb_torch.EplbNumbaMovementPolicy.rebalance_experts(
        torch.from_numpy(w1), 80, 8, 2, 16, torch.from_numpy(old))
    policy = policy[0] if isinstance(policy, tuple) else policy
    np.testing.assert_array_equal(policy.numpy(), expected[0])
    # Another slot count per GPU on the same GPUs: each GPU's old slots stand as they are.
    fresh = eplb_torch.EplbNumbaMovementPolicy.rebalance_experts(
        torch.from_numpy(w1), 96, 8, 2, 16, torch.from_numpy(old))
    fresh = fresh[0] if isinstance(fresh, tuple) else fresh
    assert tuple(fresh.shape) == (6, 96)


@pytest.mark.parametrize(
    "make, exc, match",
    [
        (lambda w: torch.empty(4, 32, device="meta"), ValueError, "weight is on the meta device"),
        (lambda w: w.to_sparse(), TypeError, "weight must be a dense tensor, got layout torch.sparse_coo"),
        (lambda w: w.float().to_sparse_csr(), TypeError, "weight must be a dense tensor, got layout torch.sparse_csr"),
    ],
)
def test_tensors_without_plain_values_are_refused(make, exc, match):
    w = torch.tensor((np.arange(4 * 32).reshape(4, 32) * 31) % 97)
    for call in (lambda t: eplb_torch.rebalance_experts(t, 40, 4, 2, 8), lambda t: eplb_torch.balanced_packing(t, 4),
                 lambda t: eplb_torch.replicate_experts(t, 40)):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # torch: "sparse CSR support is in beta"
            t = make(w)
        with pytest.raises(exc, match=match):
            call(t)


def test_quantized_tensors_are_refused():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # torch deprecates making them
        q = torch.quantize_per_tensor(torch.ones(4, 32), 1.0, 0, torch.quint8)
    with pytest.raises(TypeError, match=r"weight is a quantized tensor .*dequantize\(\)"):
        eplb_torch.rebalance_experts(q, 40, 4, 2, 8)


def test_float8_and_bfloat16_are_read_as_float32():
    w = torch.tensor((np.arange(4 * 32).reshape(4, 32) * 31) % 97).float()
    for dtype in (torch.float8_e4m3fn, torch.bfloat16):
        got = eplb_torch.balanced_packing(w.to(dtype), 4)
        want = eplb_numba.balanced_packing(w.to(dtype).float().numpy(), 4)
        assert all(torch.equal(g, torch.from_numpy(x)) for g, x in zip(got, want))


def test_movement_policy_takes_lists():
    w = (np.arange(4 * 32).reshape(4, 32) * 31) % 97
    old = eplb_numba.rebalance_experts(w, 40, 4, 2, 8)[0]
    got = eplb_torch.EplbNumbaMovementPolicy.rebalance_experts(w.tolist(), 40, 4, 2, 8, old.tolist())
    phy2log = got[0] if isinstance(got, tuple) else got
    assert phy2log.shape == (4, 40) and sorted(set(phy2log.flatten().tolist())) == list(range(32))


@pytest.mark.parametrize("kwargs, exc", [(dict(avoid_duplicates="no"), TypeError),
                                         (dict(max_load_slack="0.1"), TypeError),
                                         (dict(max_load_slack=-1.0), ValueError)])
def test_options_are_checked_strictly(kwargs, exc):
    w = torch.tensor((np.arange(4 * 32).reshape(4, 32) * 31) % 97)
    with pytest.raises(exc, match=next(iter(kwargs))):
        eplb_torch.rebalance_experts(w, 40, 4, 2, 8, **kwargs)
