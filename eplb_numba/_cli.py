"""Command line: plan a placement and report how balanced it is."""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from ._api import rebalance_experts
from ._metrics import balancedness, gpu_loads, identity_placement
from ._workload import deepseek_v3_loads


def _parser():
    p = argparse.ArgumentParser(prog="eplb-numba", description=__doc__)
    p.add_argument("--replicas", type=int, default=288)
    p.add_argument("--groups", type=int, default=8)
    p.add_argument("--nodes", type=int, default=4)
    p.add_argument("--gpus", type=int, default=32)
    return p


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    weight = deepseek_v3_loads()
    try:
        rebalance_experts(weight, args.replicas, args.groups, args.nodes, args.gpus)  # compile
        t0 = time.perf_counter()
        phy2log, _, logcnt = rebalance_experts(weight, args.replicas, args.groups, args.nodes, args.gpus)
        elapsed = time.perf_counter() - t0
    except (TypeError, ValueError) as exc:
        print(f"eplb-numba: error: {exc}", file=sys.stderr)
        return 2
    before = balancedness(gpu_loads(weight, identity_placement(*weight.shape), args.gpus))
    after = balancedness(gpu_loads(weight, phy2log, args.gpus))
    print(f"workload: built-in DeepSeek-V3-sized loads, {weight.shape[0]} layers x {weight.shape[1]} experts")
    print(f"plan: {args.replicas} replicas, {args.groups} groups, {args.nodes} nodes, {args.gpus} GPUs")
    print(f"balancedness (mean/max GPU load): before {before.mean():.3f}, after {after.mean():.3f}")
    print(f"worst layer after: {after.min():.3f}; replicas of the hottest expert: {int(logcnt.max())}")
    print(f"planning time: {elapsed * 1e6:.0f} us")
    return 0
