"""A/B timing of two versions of eplb-numba in one process: ``python bench/ab.py HEAD~1``.

The development machine is a VM whose speed drifts by up to 2x over minutes,
so two separate benchmark runs cannot be compared.  This script imports two
versions side by side (a git revision and the working tree, or two
revisions), alternates rounds between them, and reports the minimum and the
quartile of the per-round medians and their ratio, B over A.

Examples::

    python bench/ab.py HEAD~1                      # HEAD~1 vs working tree, DeepSeek-V3 EP32
    python bench/ab.py main HEAD --what movement   # movement-aware plan + migration plan
    python bench/ab.py HEAD~3 --row "Kimi-K2 EP64" --rounds 21
"""

from __future__ import annotations

import argparse
import importlib
import itertools
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _checkout(rev, dest, name):
    """The package at ``rev`` (or the working tree for None) as top-level package ``name``.

    ``rev`` may also be a directory that holds an ``eplb_numba`` package (a
    machine without the git history, such as a lent GPU host).
    """
    target = os.path.join(dest, name)
    if rev is None or os.path.isdir(os.path.join(rev, "eplb_numba")):
        source = ROOT if rev is None else rev
        shutil.copytree(os.path.join(source, "eplb_numba"), target,
                        ignore=shutil.ignore_patterns("*.nbi", "*.nbc", "__pycache__"))
        return
    archive = subprocess.run(["git", "-C", ROOT, "archive", rev, "eplb_numba"], check=True,
                             capture_output=True).stdout
    tmp = os.path.join(dest, f"_{name}")
    os.makedirs(tmp)
    subprocess.run(["tar", "-x", "-C", tmp], input=archive, check=True)
    os.rename(os.path.join(tmp, "eplb_numba"), target)


def _case(name, what, row, inputs=1):
    """A no-argument callable timing ``what`` with package ``name``.

    With ``inputs`` > 1 the calls cycle through that many different load
    matrices, so that no branch predictor learns one input by heart (the
    real case: every rebalance sees new loads).
    """
    pkg = importlib.import_module(name)
    # The rows and loads are inputs, the same for both versions: this tree's.
    from harness import MODEL_ROWS, SWEEP_ROWS, drift

    from eplb_numba.cli import workload

    layers, experts, replicas, groups, nodes, gpus = {**MODEL_ROWS, **SWEEP_ROWS}[row]
    cfg = (replicas, groups, nodes, gpus)
    weights = [workload.deepseek_v3_loads(layers, experts, seed=1 + k) for k in range(inputs)]
    if what == "full":
        cases = itertools.cycle(weights)
        return lambda: pkg.rebalance_experts(next(cases), *cfg)
    if what == "quality":
        cases = itertools.cycle(weights)
        return lambda: pkg.rebalance_experts(next(cases), *cfg, quality=True)
    if what == "cuda":
        # CUDA loads in, CUDA results out, synchronised (the torch adapter).
        import torch

        adapter = importlib.import_module(f"{name}.torch")
        on_gpu = itertools.cycle([torch.from_numpy(w).cuda() for w in weights])

        def cuda():
            out = adapter.rebalance_experts(next(on_gpu), *cfg)
            torch.cuda.synchronize()
            return out
        return cuda
    # The movement row of the benchmark: the loads drift 2% after the old plan.
    rng = np.random.default_rng(7)
    drifted = []
    for weight in weights:
        new_w = drift(weight, rng)
        old = pkg.rebalance_experts(weight, *cfg)[0]
        drifted.append((old, new_w, pkg.rebalance_experts(new_w, *cfg, old_phy2log=old)[0]))
    cases = itertools.cycle(drifted)
    if what == "movement":
        def movement():
            old, new_w, _ = next(cases)
            return pkg.plan_migration(old, pkg.rebalance_experts(new_w, *cfg, old_phy2log=old)[0], gpus, nodes)
        return movement

    def migration():
        old, _, new = next(cases)
        return pkg.plan_migration(old, new, gpus, nodes)
    return migration


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("a", help="git revision of version A, or a directory holding its eplb_numba")
    p.add_argument("b", nargs="?", default=None, help="git revision of version B (default: the working tree)")
    p.add_argument("--what", choices=["full", "quality", "movement", "migration", "cuda"], default="full",
                   help="full: rebalance_experts; movement: movement-aware plan + migration plan; "
                        "migration: plan_migration alone; cuda: the torch adapter, CUDA in and out")
    p.add_argument("--row", default="DeepSeek-V3 EP32", help="a benchmark row name (bench/run.py's rows)")
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--runs", type=int, default=60, help="calls per round")
    p.add_argument("--inputs", type=int, default=1,
                   help="cycle through this many different load matrices (default 1: the same every call)")
    p.add_argument("--workdir", help="keep the two checkouts (and so their compiled kernels) in this directory "
                   "between runs; reused as they are if present")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        dest = args.workdir or tmp
        for name, rev in (("eplb_a", args.a), ("eplb_b", args.b)):
            if not os.path.isdir(os.path.join(dest, name)):
                _checkout(rev, dest, name)
        sys.path.insert(0, dest)
        fns = [_case(name, args.what, args.row, args.inputs) for name in ("eplb_a", "eplb_b")]
        medians = alternate(fns, args.rounds, args.runs)
    report((f"A {args.a}", f"B {args.b or 'working tree'}"), medians,
           f"{args.what}, {args.row}, {args.rounds} rounds of {args.runs}, {args.inputs} input(s)")


def alternate(fns, rounds, runs):
    """Per-round medians (us) of two callables, each called once first (compile), in alternating order."""
    for fn in fns:
        fn()
    medians = [[], []]
    for rnd in range(rounds):
        for i in (0, 1) if rnd % 2 == 0 else (1, 0):
            times = []
            for _ in range(runs):
                start = time.perf_counter()
                fns[i]()
                times.append(time.perf_counter() - start)
            medians[i].append(statistics.median(times) * 1e6)
    return medians


def report(labels, medians, what):
    """Print the minimum and lower quartile of each side's per-round medians, and B over A."""
    lows = [min(m) for m in medians]
    quartiles = [sorted(m)[len(m) // 4] for m in medians]
    for label, low, q in zip(labels, lows, quartiles):
        print(f"{label}: min of medians {low:,.0f} us, lower quartile {q:,.0f} us")
    print(f"B / A: {lows[1] / lows[0]:.3f} (min), {quartiles[1] / quartiles[0]:.3f} (quartile)  [{what}]")


if __name__ == "__main__":
    main()
