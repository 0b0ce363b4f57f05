"""What a new user waits for: the first plan of a fresh install against the torch reference.

``python bench/cold_start.py`` installs the package (``pip install --no-deps
--target``) into a new temporary directory, so its compile cache starts
empty, and times whole processes, alternating them round by round:

- **torch reference**: import torch, build DeepSeek-V3 EP32 loads, one call
  of the reference (the loop-structured oracle, loaded by path so that
  eplb-numba is not imported);
- **fresh install, first plan**: import eplb_numba, the same loads, one
  plan, on that install's empty cache (each round a new install), served
  by the kernels shipped with the package;
- **... compiling**: the same where the shipped kernels do not fit (another
  Python, Numba or architecture; here ``EPLB_NUMBA_SHIPPED=0``);
- **second process**: the first plan again, once the cache holds the kernels;
- **warmup**: ``eplb-numba warmup`` on a new install (every kernel), with and
  without the shipped kernels.

It prints medians and the ratio of each to the reference, and with
``--docs`` puts the table into ``docs/benchmarks.md``.
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

# Loads from the package's workload module and the reference from the tests'
# oracle, loaded by path: no eplb_numba import.
_LOADS = f"""
import importlib.util
def _load(path):
    spec = importlib.util.spec_from_file_location("m" + str(abs(hash(path))), {ROOT!r} + "/" + path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod
w = _load("eplb_numba/cli/workload.py").deepseek_v3_loads(58, 256, seed=1)
"""

REFERENCE = "import torch\n" + _LOADS + """
ref = _load("tests/oracle.py")
ref.rebalance_experts_loops(torch.from_numpy(w), 288, 8, 4, 32)
"""

# An editable install of the checkout (pip install -e) puts a finder ahead of
# PYTHONPATH; drop it so that the fresh install is the one imported.
_FRESH = """
import os, sys
sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in getattr(f, "__module__", "")]
import eplb_numba
assert eplb_numba.__file__.startswith(os.environ["PYTHONPATH"].split(os.pathsep)[0]), eplb_numba.__file__
"""

FIRST_PLAN = _FRESH + """
from eplb_numba.cli.workload import deepseek_v3_loads
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


def _source(tmp):
    """The checkout's tracked and new files, without build leftovers (a stale build/ would be packaged)."""
    src = os.path.join(tmp, "source")
    try:
        files = subprocess.run(["git", "-C", ROOT, "ls-files", "-co", "--exclude-standard"], check=True,
                               capture_output=True, text=True).stdout.split()
    except (OSError, subprocess.CalledProcessError):  # not a git checkout
        shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__", ".git"))
        return src
    for name in files:
        if os.path.isfile(os.path.join(ROOT, name)):
            os.makedirs(os.path.dirname(os.path.join(src, name)), exist_ok=True)
            shutil.copy2(os.path.join(ROOT, name), os.path.join(src, name))
    return src


def _install(dest, src):
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--target",
                    dest, src], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    env = {k: v for k, v in os.environ.items() if k not in ("NUMBA_CACHE_DIR", "EPLB_NUMBA_CACHE")}
    # Ahead of any PYTHONPATH already set (where Numba itself may come from).
    env["PYTHONPATH"] = os.pathsep.join(p for p in (dest, os.environ.get("PYTHONPATH")) if p)
    # Numba's user-wide cache must not serve a kernel either.
    env["XDG_CACHE_HOME"] = os.path.join(dest, "user-cache")
    return env


def measure(rounds=3, progress=print):
    names = ["torch reference", "fresh install, first plan", "fresh install, first plan, compiling",
             "second process", "eplb-numba warmup (fresh install)", "eplb-numba warmup, compiling"]
    times = {k: [] for k in names}
    with tempfile.TemporaryDirectory() as tmp:
        src = _source(tmp)
        for r in range(rounds):
            # One process of each kind per round, in turn, so slow minutes hit them all.
            dest = os.path.join(tmp, f"round{r}")
            env = _install(os.path.join(dest, "plan"), src)
            compiling = {**_install(os.path.join(dest, "compile"), src), "EPLB_NUMBA_SHIPPED": "0"}
            times["torch reference"].append(_run(REFERENCE))
            times["fresh install, first plan"].append(_run(FIRST_PLAN, env))
            times["fresh install, first plan, compiling"].append(_run(FIRST_PLAN, compiling))
            times["second process"].append(_run(FIRST_PLAN, compiling))
            times["eplb-numba warmup (fresh install)"].append(_run(WARMUP, _install(os.path.join(dest, "warmup"), src)))
            times["eplb-numba warmup, compiling"].append(
                _run(WARMUP, {**_install(os.path.join(dest, "warmup-c"), src), "EPLB_NUMBA_SHIPPED": "0"}))
            progress(f"round {r + 1}/{rounds}: " + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in times.items()))
            shutil.rmtree(dest, ignore_errors=True)
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

        update("cold-start", text, f"python bench/cold_start.py --rounds {args.rounds} --docs")


if __name__ == "__main__":
    main()
