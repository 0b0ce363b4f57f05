"""GPU end to end: a CUDA weight tensor in, CUDA int64 tensors out, synchronised.

``python bench/gpu.py [--out DIR]`` on a machine with a CUDA GPU.  For each
model row it checks the result against the plain-torch oracle, then times
``eplb_numba.torch.rebalance_experts`` plus ``torch.cuda.synchronize()``
(median and p99 over many warm runs) beside the reference in the same run,
and the ratio of CUDA in -> CUDA out to the plan of loads already on the
host, timed round by round side by side (the lowest per-round medians);
it writes ``gpu.json`` and ``gpu.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import torch
from ab import alternate
from harness import MODEL_ROWS, _fmt, _summary, _times, machine
from harness import oracle as _oracle

import eplb_numba
from eplb_numba import torch as eplb_torch
from eplb_numba.cli.workload import deepseek_v3_loads


def timed(fn, runs):
    """Median and p99 of ``fn`` plus a device synchronise, over ``runs`` warm runs."""

    def synced():
        fn()
        torch.cuda.synchronize()

    # Each run ends synchronised, so the next one starts with an idle GPU.
    return _summary(_times(synced, runs, budget_s=float("inf")))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--out", default=".")
    p.add_argument("--runs", type=int, default=300)
    p.add_argument("--docs", action="store_true", help="also put the table into docs/benchmarks.md")
    p.add_argument("--threads", type=int, nargs="+", default=[1],
                   help="EPLB_NUMBA_THREADS values to time (layers split over Numba threads)")
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        sys.exit("bench/gpu.py needs a CUDA GPU")
    print(f"warmup (compile) {eplb_numba.warmup(parallel=max(args.threads) > 1):.1f} s", flush=True)
    info = machine()
    info["gpu"] = torch.cuda.get_device_name(0)
    rows = []
    for name, (layers, experts, replicas, groups, nodes, gpus) in MODEL_ROWS.items():
        w = torch.from_numpy(deepseek_v3_loads(layers, experts, seed=1)).cuda()
        cfg = (replicas, groups, nodes, gpus)
        got = eplb_torch.rebalance_experts(w, *cfg)
        torch.cuda.synchronize()
        want = _oracle.rebalance_experts(w, *cfg)
        identical = all(g.device.type == "cuda" and g.dtype == torch.int64 and torch.equal(g.cpu(), e)
                        for g, e in zip(got, want))
        row = {"name": name, "identical_to_oracle": identical}
        host_w = w.cpu().numpy()
        for threads in args.threads:
            os.environ["EPLB_NUMBA_THREADS"] = str(threads)
            again = eplb_torch.rebalance_experts(w, *cfg)
            identical &= all(torch.equal(g, a) for g, a in zip(got, again))
            # (timed() calls them at once: binding the loop's w and cfg is safe.)
            row[f"cuda_end_to_end_t{threads}"] = timed(lambda w=w, cfg=cfg: eplb_torch.rebalance_experts(w, *cfg),
                                                       args.runs)
            row[f"numpy_on_host_t{threads}"] = timed(
                lambda w=w, cfg=cfg: eplb_numba.rebalance_experts(w.cpu().numpy(), *cfg), args.runs)
            # The two side by side, round by round (this host's speed drifts
            # between the runs above): CUDA in -> CUDA out over the plan of
            # loads already on the host.
            cuda_rounds, host_rounds = alternate(
                [lambda w=w, cfg=cfg: (eplb_torch.rebalance_experts(w, *cfg), torch.cuda.synchronize()),
                 lambda host_w=host_w, cfg=cfg: eplb_numba.rebalance_experts(host_w, *cfg)],
                rounds=15, runs=max(args.runs // 15, 5))
            row[f"cuda_over_host_t{threads}"] = min(cuda_rounds) / min(host_rounds)
        os.environ["EPLB_NUMBA_THREADS"] = "1"
        row["identical_to_oracle"] = identical
        row["torch_reference"] = timed(lambda w=w, cfg=cfg: _oracle.rebalance_experts_loops(w, *cfg), 3)
        best = min(row[f"cuda_end_to_end_t{t}"]["median_us"] for t in args.threads)
        row["speedup"] = row["torch_reference"]["median_us"] / best
        rows.append(row)
        print(json.dumps(row), flush=True)
    lines = [
        f"GPU: {info['gpu']}; host CPU: {info['cpu']} ({info['cores']} cores); torch {info.get('torch')}, "
        f"Numba {info['numba']}, NumPy {info['numpy']}. Microseconds, median (p99).",
        "",
        "| case | identical | threads | CUDA in -> CUDA out, synchronised | NumPy path on the host "
        "| CUDA over host plan, side by side | torch reference (CUDA in) | best speed-up |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        for t in args.threads:
            lines.append(f"| {r['name']} | {r['identical_to_oracle']} | {t} | {_fmt(r[f'cuda_end_to_end_t{t}'])} | "
                         f"{_fmt(r[f'numpy_on_host_t{t}'])} | {r[f'cuda_over_host_t{t}']:.2f}x | "
                         f"{_fmt(r['torch_reference'])} | {r['speedup']:,.0f}x |")
    text = "\n".join(lines) + "\n"
    print(text)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "gpu.json"), "w") as fh:
        json.dump({"machine": info, "rows": rows}, fh, indent=2)
    with open(os.path.join(args.out, "gpu.md"), "w") as fh:
        fh.write(text)
    if args.docs:
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        from _docs import update

        update("gpu-results", text, "python bench/gpu.py --threads 1 4 8 16 --docs")


if __name__ == "__main__":
    main()
