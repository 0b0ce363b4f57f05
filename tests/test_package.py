"""Package surface: exports, torch-free import, and the entry point."""

from __future__ import annotations

import subprocess
import sys
import types

import eplb_numba
from eplb_numba import _api


def test_all_matches_public_names():
    # Submodules (eplb_numba.torch once imported) are not re-exported names.
    public = {
        name
        for name in dir(eplb_numba)
        if not name.startswith("_") and not isinstance(getattr(eplb_numba, name), types.ModuleType)
    }
    public.discard("annotations")
    assert set(eplb_numba.__all__) - {"__version__"} == public


def test_api_functions_are_documented():
    for name in _api.__all__:
        doc = getattr(eplb_numba, name).__doc__
        assert doc and "Parameters" in doc and "Returns" in doc


def _public_functions():
    import importlib
    import importlib.util

    names = ["eplb_numba", "eplb_numba.cli"]
    if importlib.util.find_spec("torch") is not None:
        names += ["eplb_numba.torch", "eplb_numba.sglang"]
    modules = [importlib.import_module(name) for name in names]
    for module in modules:
        for name in module.__all__:
            value = getattr(module, name)
            if isinstance(value, type):
                # Public methods of public classes and of the package's classes
                # they inherit from (vLLM's policy interface).
                for klass in value.__mro__:
                    if not klass.__module__.startswith("eplb_numba"):
                        continue
                    for attr, member in vars(klass).items():
                        if not attr.startswith("_") and isinstance(member, (classmethod, staticmethod)):
                            yield f"{module.__name__}.{name}.{attr}", member.__func__
            elif callable(value):
                yield f"{module.__name__}.{name}", value


def test_public_functions_are_typed():
    import inspect

    seen = []
    for qualname, fn in _public_functions():
        sig = inspect.signature(fn)
        untyped = [p.name for p in sig.parameters.values()
                   if p.name not in ("self", "cls") and p.annotation is inspect.Parameter.empty]
        assert not untyped, f"{qualname}: parameters {untyped} have no type hint"
        assert sig.return_annotation is not inspect.Signature.empty, f"{qualname}: no return type"
        seen.append(qualname)
    assert "eplb_numba.rebalance_experts" in seen and "eplb_numba.plan_migration" in seen
    if "eplb_numba.sglang.install" in seen:
        assert "eplb_numba.torch.EplbNumbaPolicy.preserve_intragpu_slots" in seen


BLOCK_TORCH = "import sys; sys.modules['torch'] = None\n"


def run_without_torch(code):
    return subprocess.run([sys.executable, "-c", BLOCK_TORCH + code], capture_output=True, text=True)


def test_imports_and_runs_without_torch():
    result = run_without_torch(
        "import sys, numpy as np, eplb_numba\n"
        "p, l, c = eplb_numba.rebalance_experts(np.arange(32).reshape(2, 16), 24, 4, 2, 8)\n"
        "assert 'torch' not in [m for m in sys.modules if sys.modules[m] is not None]\n"
        "print(p.shape, l.shape, c.shape)\n"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "(2, 24) (2, 16, 9) (2, 16)"


def test_torch_adapter_says_how_to_install():
    for module in ("torch", "sglang"):
        result = run_without_torch(f"import eplb_numba.{module}\n")
        assert result.returncode != 0
        last = result.stderr.strip().splitlines()[-1]
        assert last.startswith("ImportError") and f"eplb_numba.{module} needs PyTorch" in last
        assert "pip install 'eplb-numba[torch]'" in last


def test_module_entry_point_runs_default_workload():
    result = subprocess.run([sys.executable, "-m", "eplb_numba"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "balancedness" in result.stdout


def test_movement_tools_load_on_first_use():
    result = subprocess.run(
        [sys.executable, "-c",
         "import sys, eplb_numba\n"
         "assert 'eplb_numba._migration' not in sys.modules\n"
         "m = eplb_numba.plan_migration([[0, 1]], [[1, 0]], 2)\n"
         "assert 'eplb_numba._migration' in sys.modules and isinstance(m, eplb_numba.Migration)\n"
         "print(len(m.expert))\n"],
        capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "2"


def test_version_is_written_once_and_reported():
    from importlib.metadata import version

    assert version("eplb-numba") == eplb_numba.__version__  # pyproject reads it from the package
    result = subprocess.run([sys.executable, "-m", "eplb_numba", "--version"], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.strip() == f"eplb-numba {eplb_numba.__version__}"
