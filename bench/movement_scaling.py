"""How the movement-aware and duplicate-avoiding plans grow with slots per GPU.

``python bench/movement_scaling.py`` plans 2 layers x 12 experts on 8 GPUs
(2 nodes, 4 groups; and the global policy) at 4k to 64k slots, after a 10%
drift, and prints one warm call of each path in ms.  With few experts and
many slots every GPU holds many replicas of each expert, the case where a
per-slot search would make the movement paths quadratic.
"""

from __future__ import annotations

import sys
import time

import numpy as np

import eplb_numba


def main(argv=None):
    sizes = [int(x) for x in (argv if argv is not None else sys.argv[1:])] or [4096, 8192, 16384, 65536]
    rng = np.random.default_rng(1)
    print("| slots | policy | plan | movement | movement + no duplicates | no duplicates | migration |")
    print("| ---: | --- | ---: | ---: | ---: | ---: | ---: |")
    for slots in sizes:
        w0 = rng.integers(1, 1000, (2, 12))
        w1 = np.round(w0 * np.exp(0.1 * rng.standard_normal(w0.shape))).astype(np.int64) + 1
        for groups, nodes, policy in ((4, 2, "hierarchical"), (1, 1, "global")):
            old = eplb_numba.rebalance_experts(w0, slots, groups, nodes, 8)[0]
            row = []
            for kw in ({}, dict(old_phy2log=old), dict(old_phy2log=old, avoid_duplicates=True),
                       dict(avoid_duplicates=True)):
                eplb_numba.rebalance_experts(w1, slots, groups, nodes, 8, **kw)  # compile or load, warm caches
                start = time.perf_counter()
                eplb_numba.rebalance_experts(w1, slots, groups, nodes, 8, **kw)
                row.append(time.perf_counter() - start)
            new = eplb_numba.rebalance_experts(w1, slots, groups, nodes, 8)[0]
            eplb_numba.plan_migration(old, new, 8, nodes)
            start = time.perf_counter()
            eplb_numba.plan_migration(old, new, 8, nodes)
            row.append(time.perf_counter() - start)
            print(f"| {slots:,} | {policy} | " + " | ".join(f"{t * 1e3:.1f} ms" for t in row) + " |", flush=True)


if __name__ == "__main__":
    main()
