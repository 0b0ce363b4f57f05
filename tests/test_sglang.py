"""The SGLang adapter: SGLang's calls, its results (DeepSeek's packing), and install()."""

from __future__ import annotations

import enum
import subprocess
import sys
import textwrap

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from eplb_numba import sglang  # noqa: E402

from . import oracle  # noqa: E402
from .conftest import LOAD_KINDS, make_loads  # noqa: E402

LAYOUTS = [(16, 24, 4, 2, 8), (12, 16, 4, 2, 8), (64, 80, 8, 2, 16), (32, 48, 4, 4, 16), (20, 30, 5, 1, 6)]


def equal(got, want):
    for a, b in zip(got, want):
        assert a.dtype == torch.int64 and a.device.type == "cpu"
        assert torch.equal(a, b), (a, b)


@pytest.mark.parametrize("seed", range(60))
def test_deepseek_function_equals_sglangs(seed):
    # SGLang's deepseek.rebalance_experts is DeepSeek's EPLB: float64 packing,
    # log2phy cut to the largest replica count; the oracle transcribes it.
    rng = np.random.default_rng(seed)
    experts, slots, groups, nodes, gpus = LAYOUTS[seed % len(LAYOUTS)]
    for kind in LOAD_KINDS:
        w = torch.from_numpy(make_loads(rng, kind, (4, experts)))
        if seed % 4 == 0:
            w = w * 1_000_003  # packs far above 2**24 tokens: float32 sums round there, float64 ones do not
        for hierarchical in (True, False):
            if hierarchical and groups % nodes:
                continue
            want = oracle.sglang_deepseek(w, slots, groups, nodes, gpus, hierarchical)
            equal(sglang.deepseek_rebalance_experts(w, slots, groups, nodes, gpus, hierarchical), want)


def test_float64_packing_is_what_makes_it_differ_from_the_reference():
    # On fractional loads DeepSeek's float64 pack sums and the reference's
    # float32 ones choose different packs for some inputs; the adapter follows DeepSeek's.
    rng = np.random.default_rng(1)
    differ = 0
    for _ in range(40):
        w = torch.from_numpy(make_loads(rng, "fractional", (3, 32)))
        ours = sglang.deepseek_rebalance_experts(w, 40, 1, 1, 8, False)
        reference = oracle.rebalance_experts(w, 40, 1, 1, 8)
        differ += not torch.equal(ours[0], reference[0])
        equal(ours, oracle.sglang_deepseek(w, 40, 1, 1, 8, False))
    assert differ > 0


class EplbAlgorithm(enum.Enum):
    # SGLang's enum passes its member; its name is the algorithm.
    deepseek = enum.auto()
    deepseek_hierarchical = enum.auto()


@pytest.mark.parametrize("seed", range(20))
def test_dispatcher_sums_steps_and_chooses_like_sglang(seed):
    rng = np.random.default_rng(seed)
    experts, slots, groups, nodes, gpus = LAYOUTS[seed % len(LAYOUTS)]
    steps = torch.from_numpy(np.stack([make_loads(rng, "uniform", (3, experts)) for _ in range(1 + seed % 4)]))
    before = steps.clone()
    per_gpu = slots // gpus
    summed = steps.sum(dim=0)
    hierarchical = groups % nodes == 0
    want = oracle.sglang_deepseek(summed, slots, groups, nodes, gpus, hierarchical)
    # Positional, as SGLang's signature reads, and with the default algorithm (auto).
    equal(sglang.rebalance_experts(steps, slots, per_gpu, groups, nodes), want)
    equal(sglang.rebalance_experts(steps, slots, per_gpu, groups, nodes, "auto"), want)
    name = "deepseek_hierarchical" if hierarchical else "deepseek"
    equal(sglang.rebalance_experts(steps, slots, per_gpu, groups, nodes, EplbAlgorithm[name]), want)
    equal(sglang.rebalance_experts(summed, slots, per_gpu, groups, nodes), want)
    # A model without groups plans globally.
    equal(sglang.rebalance_experts(steps, slots, per_gpu, None, nodes),
          oracle.sglang_deepseek(summed, slots, 1, 1, gpus, False))
    # The reference's log2phy width where asked.
    full = sglang.rebalance_experts(steps, slots, per_gpu, groups, nodes, trim=False)
    assert full[1].shape[-1] == slots - experts + 1
    assert torch.equal(full[1][..., :want[1].shape[-1]], want[1]) and (full[1][..., want[1].shape[-1]:] == -1).all()
    assert torch.equal(steps, before)
    assert sglang.choose_algorithm(groups, nodes) == name and sglang.choose_algorithm(None, nodes) == "deepseek"


def test_bad_calls():
    steps = torch.ones(2, 3, 16)
    with pytest.raises(ValueError, match="algorithm must be one of auto, deepseek, deepseek_hierarchical"):
        sglang.rebalance_experts(steps, 24, 3, 4, 2, "elasticity_aware")
    with pytest.raises(ValueError, match="must be a multiple of num_local_physical_experts"):
        sglang.rebalance_experts(steps, 24, 5, 4, 2)
    with pytest.raises(ValueError, match=r"tokens_per_expert must be \[steps, layers, experts\]"):
        sglang.rebalance_experts(torch.ones(16), 24, 3, 4, 2)
    with pytest.raises(ValueError, match="needs num_groups"):
        sglang.rebalance_experts(steps, 24, 3, None, 2, "deepseek_hierarchical")
    with pytest.raises(ValueError, match="needs num_groups"):
        sglang.deepseek_rebalance_experts(steps[0], 24, 3, 2, 8, True)
    with pytest.raises(TypeError, match="enable_hierarchical must be True or False"):
        sglang.deepseek_rebalance_experts(steps[0], 24, 4, 2, 8, "yes")
    with pytest.raises(ValueError, match="num_replicas"):
        sglang.deepseek_rebalance_experts(steps[0], 25, 4, 2, 8, False)


FAKE_SGLANG = {
    "sglang/__init__.py": "",
    "sglang/srt/__init__.py": "",
    "sglang/srt/eplb/__init__.py": "",
    # A stand-in with SGLang's layout: the dispatcher calls deepseek's
    # function through its module, with keywords, as SGLang does.
    "sglang/srt/eplb/eplb_algorithms/__init__.py": textwrap.dedent(
        """
        from sglang.srt.eplb.eplb_algorithms import deepseek

        def rebalance_experts(tokens_per_expert, num_physical_experts, num_local_physical_experts, num_groups,
                              num_nodes, algorithm):
            return deepseek.rebalance_experts(
                weight=tokens_per_expert.sum(dim=0), num_replicas=num_physical_experts, num_groups=num_groups,
                num_nodes=num_nodes, num_gpus=num_physical_experts // num_local_physical_experts,
                enable_hierarchical=algorithm == "deepseek_hierarchical")
        """
    ),
    "sglang/srt/eplb/eplb_algorithms/deepseek.py": "def rebalance_experts(*args, **kwargs):\n    return 'sglang'\n",
}


def test_install_replaces_sglangs_deepseek_function(tmp_path):
    for name, text in FAKE_SGLANG.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    script = textwrap.dedent(
        """
        import torch
        from sglang.srt.eplb import eplb_algorithms
        import eplb_numba.sglang as adapter
        steps = (torch.arange(3 * 2 * 16).reshape(3, 2, 16) * 7) % 11
        assert eplb_algorithms.rebalance_experts(steps, 24, 3, 4, 2, "deepseek_hierarchical") == "sglang"
        adapter.install(warm=False)
        got = eplb_algorithms.rebalance_experts(steps, 24, 3, 4, 2, "deepseek_hierarchical")
        want = adapter.rebalance_experts(steps, 24, 3, 4, 2, "deepseek_hierarchical")
        assert all(torch.equal(a, b) for a, b in zip(got, want))
        print("installed")
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            env={"PYTHONPATH": f"{tmp_path}:{sys.path[0]}", "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "installed"


def test_install_without_sglang_says_what_to_do():
    script = "import sys; sys.modules['sglang'] = None\nimport eplb_numba.sglang as a\na.install(warm=False)"
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == 1
    assert "install() needs SGLang" in result.stderr.strip().splitlines()[-1]
