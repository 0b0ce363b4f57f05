"""Is the exact sort the obstacle?  ``python bench/sort_alternatives.py``

DeepSeek-V3 EP32 sorts 58 x 4 rows of 72 replica loads per plan, with the
reference's introsort emulated move for move so that ties come out in
torch's order (``_kernels/sort.py``).  This times that sort against two
sorts that ignore the tie order, on rows shaped like the plan's own (64
experts' loads replicated to 72, so each row has the plan's ties): a
branch-free rank count, and Numba's ``ndarray.sort`` of packed keys.  If
either were much faster, the exact emulation would be what keeps the plan
from its target; it is not.
"""

from __future__ import annotations

import statistics
import time

import numpy as np

from eplb_numba._jit import jit
from eplb_numba._kernels.replication import replicate_rows
from eplb_numba._kernels.sort import LOW, SORT_STACK_SIZE, argsort_desc
from eplb_numba.cli.workload import deepseek_v3_loads


@jit
def _exact(rows, out, stack):
    for r in range(rows.shape[0]):
        argsort_desc(rows[r], out[r], stack)


@jit
def _rank_count(rows, out, counts):
    # Each key's place is how many keys beat it; equal keys share that
    # count and take the places after it in index order (counts[n:]).
    n = rows.shape[1]
    for r in range(rows.shape[0]):
        row = rows[r]
        bits = row.view(np.int32)
        for t in range(2 * n):
            counts[t] = 0
        for u in range(n):
            for t in range(n):
                counts[t] += row[t] < row[u]
        for t in range(n):
            c = counts[t]
            out[r, c + counts[n + c]] = (np.int64(max(bits[t], 0)) << 32) | t
            counts[n + c] += 1


@jit
def _numba_sort(rows, out):
    n = rows.shape[1]
    for r in range(rows.shape[0]):
        bits = rows[r].view(np.int32)
        o = out[r]
        for i in range(n):
            o[i] = -((np.int64(bits[i]) << 32) | (LOW - i))
        o.sort()
        for i in range(n):
            o[i] = -o[i]


def plan_rows(layers=58, nodes=4, experts_per_node=64, replicas_per_node=72):
    """Replica loads of every (layer, node) row, float32, as the plan's step 3 sorts them."""
    w = deepseek_v3_loads(layers, nodes * experts_per_node, seed=1).astype(np.float32)
    w = np.ascontiguousarray(w.reshape(layers * nodes, experts_per_node))
    phy2log = np.empty((w.shape[0], replicas_per_node), dtype=np.int64)
    rank = np.empty_like(phy2log)
    cnt = np.empty(w.shape, dtype=np.int64)
    replicate_rows(w, replicas_per_node, phy2log, rank, cnt)
    rows = np.take_along_axis(w, phy2log, 1) / np.take_along_axis(cnt, phy2log, 1).astype(np.float32)
    return np.ascontiguousarray(rows, dtype=np.float32)


def main(rounds=15, runs=100):
    rows = plan_rows()
    n = rows.shape[1]
    outs = [np.empty(rows.shape, dtype=np.int64) for _ in range(3)]
    stack = np.empty(SORT_STACK_SIZE + 2 * n, dtype=np.int64)
    keys = np.empty(2 * n, dtype=np.int64)
    cases = {
        "exact (torch's tie order)": lambda: _exact(rows, outs[0], stack),
        "rank count (ties in no order)": lambda: _rank_count(rows, outs[1], keys),
        "Numba ndarray.sort (ties by index)": lambda: _numba_sort(rows, outs[2]),
    }
    for fn in cases.values():
        fn()
    values = [o >> 32 for o in outs]
    assert all(np.array_equal(values[0], v) for v in values[1:]), "the sorts disagree on the value order"
    ties = np.mean([n - len(np.unique(r)) for r in rows])
    medians = {name: [] for name in cases}
    for rnd in range(rounds):
        for name, fn in (cases.items() if rnd % 2 == 0 else reversed(cases.items())):
            times = []
            for _ in range(runs):
                start = time.perf_counter()
                fn()
                times.append(time.perf_counter() - start)
            medians[name].append(statistics.median(times) * 1e6)
    base = min(medians["exact (torch's tie order)"])
    print(f"{rows.shape[0]} rows of {n} replica loads ({ties:.1f} tied entries a row); "
          f"min of {rounds} medians of {runs} runs")
    for name, m in medians.items():
        print(f"  {name:36s} {min(m):8.0f} us  {min(m) / base:5.2f}x the exact sort")


if __name__ == "__main__":
    main()
