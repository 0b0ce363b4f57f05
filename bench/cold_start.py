"""What a new user waits for: the first plan of a fresh install against the torch reference.

``python bench/cold_start.py`` installs the package (``pip install --no-deps
--target``) into a new temporary directory, so its compile cache starts
empty, and times whole processes, alternating them round by round:

- **torch reference**: import torch, build DeepSeek-V3 EP32 loads, one call
  of the reference (the loop-structured oracle, loaded by path so that
  eplb-numba is not imported);
- **fresh install, first plan**: import eplb_numba, the same loads, one
  plan, on that install's empty cache (each round a new install);
- **second process**: the same, once the cache holds the kernels;
- **warmup**: ``eplb-numba warmup`` on a new install (every kernel).

It prints medians and the ratio of the first plan to the reference, and
with ``--docs`` puts the table into ``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PKG = os.path.join(ROOT, "eplb_numba")

# Loads from the package's workload module, loaded by path: no eplb_numba import.
_LOADS = f"""
import importlib.util
def _load(name):
    spec = importlib.util.spec_from_file_location(name, {PKG!r} + "/" + name + ".py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod
w = _load("_workload").deepseek_v3_loads(58, 256, seed=1)
"""

REFERENCE = "import torch\n" + _LOADS + """
ref = _load("_oracle")
ref.rebalance_experts_loops(torch.from_numpy(w), 288, 8, 4, 32)
"""

# An editable install of the checkout (pip install -e) puts a finder ahead of
# PYTHONPATH; drop it so that the fresh install is the one imported.
_FRESH = """
import os, sys
sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in getattr(f, "__module__", "")]
import eplb_numba
assert eplb_numba.__file__.startswith(os.environ["PYTHONPATH"]), eplb_numba.__file__
"""

FIRST_PLAN = _FRESH + """
from eplb_numba._workload import deepseek_v3_loads
eplb_numba.rebalance_experts(deepseek_v3_loads(58, 256, seed=1), 288, 8, 4, 32)
"""

WARMUP = _FRESH + """
from eplb_numba.__main__ import main
sys.exit(main(["warmup"]))
"""


def _run(code, env=None):
    start = time.perf_counter()
    # Run outside the checkout: ``python -c`` puts the working directory first on sys.path.
    subprocess.run([sys.executable, "-c", code], check=True, env=env, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, cwd=tempfile.gettempdir())
    return time.perf_counter() - start


def _install(dest):
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--target",
                    dest, ROOT], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    env = {k: v for k, v in os.environ.items() if k not in ("NUMBA_CACHE_DIR", "EPLB_NUMBA_CACHE")}
    env["PYTHONPATH"] = dest
    # Numba's user-wide cache must not serve a kernel either.
    env["XDG_CACHE_HOME"] = os.path.join(dest, "user-cache")
    return env


def measure(rounds=3, progress=print):
    times = {"torch reference": [], "fresh install, first plan": [], "second process": [],
             "eplb-numba warmup (fresh install)": []}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(rounds):
            # One process of each kind per round, in turn, so slow minutes hit both.
            env = _install(os.path.join(tmp, f"plan{r}"))
            times["torch reference"].append(_run(REFERENCE))
            times["fresh install, first plan"].append(_run(FIRST_PLAN, env))
            times["second process"].append(_run(FIRST_PLAN, env))
            wenv = _install(os.path.join(tmp, f"warmup{r}"))
            times["eplb-numba warmup (fresh install)"].append(
                _run(WARMUP, wenv))
            progress(f"round {r + 1}/{rounds}: " + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in times.items()))
            shutil.rmtree(os.path.join(tmp, f"plan{r}"), ignore_errors=True)
            shutil.rmtree(os.path.join(tmp, f"warmup{r}"), ignore_errors=True)
    return {k: statistics.median(v) for k, v in times.items()}, times


def format_table(medians, times):
    ref = medians["torch reference"]
    lines = ["| process (DeepSeek-V3 EP32, whole process) | median | runs | vs. torch reference |",
             "| --- | ---: | --- | ---: |"]
    for name, med in medians.items():
        runs = ", ".join(f"{t:.2f}" for t in times[name])
        lines.append(f"| {name} | {med:.2f} s | {runs} | {med / ref:.2f}x |")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--docs", action="store_true", help="also put the table into docs/benchmarks.md")
    args = p.parse_args(argv)
    medians, times = measure(args.rounds, progress=lambda m: print(m, file=sys.stderr, flush=True))
    text = format_table(medians, times)
    print(text)
    if args.docs:
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        from _docs import update

        update("cold-start", text, "python bench/cold_start.py --docs")


if __name__ == "__main__":
    main()
