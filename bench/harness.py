"""The benchmark behind ``bench/run.py`` (run from a source checkout).

Medians and p99 over many warm runs of: the plain-torch reference (the
project's oracle, ``oracle.REFERENCES``), vLLM's own function when vLLM is
importable, the NumPy path, the torch adapter on CPU, and the floor — the
bare cost of allocating and filling the three output arrays.  Also: GIL
release, cold start, and processes racing on an empty compile cache.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time

import numpy as np

from eplb_numba import plan_migration, rebalance_experts, warmup
from eplb_numba.cli.workload import deepseek_v3_loads

# The torch reference lives with the tests (tests/oracle.py), apart from the package.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
try:
    from tests import oracle
except ImportError:  # no torch: the rows without the reference still run
    oracle = None

# name: (layers, experts, replicas, groups, nodes, gpus)
MODEL_ROWS = {
    "DeepSeek-V3 EP32": (58, 256, 288, 8, 4, 32),
    "DeepSeek-V3 decode EP144 (global)": (58, 256, 288, 8, 18, 144),
    "Qwen3-235B EP16": (94, 128, 144, 8, 2, 16),
    "Kimi-K2 EP64": (60, 384, 448, 1, 8, 64),
}
SWEEP_ROWS = {
    "sweep 10x256->512 / 64 GPUs": (10, 256, 512, 8, 8, 64),
    "sweep 25x512->1024 / 128 GPUs": (25, 512, 1024, 8, 16, 128),
    "sweep 50x1024->2048 / 256 GPUs": (50, 1024, 2048, 8, 32, 256),
    "sweep 100x1024->4096 / 1024 GPUs": (100, 1024, 4096, 8, 128, 1024),
}


def _times(fn, runs, budget_s, warm_up=True):
    """Run ``fn`` up to ``runs`` times (stopping after ``budget_s``); seconds per run."""
    if warm_up:
        fn()  # compile, caches, allocator
    out = []
    start = time.perf_counter()
    while len(out) < runs and (len(out) < 3 or time.perf_counter() - start < budget_s):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def median_ms(fn, runs=15, warm_up=True):
    """Median milliseconds of ``runs`` calls of ``fn`` (after one untimed call unless not ``warm_up``)."""
    return float(np.median(_times(fn, runs, float("inf"), warm_up))) * 1e3


def _summary(times):
    if not times:
        return None
    arr = np.array(times) * 1e6
    q1, med, q3, p99 = np.percentile(arr, [25, 50, 75, 99])
    return {"median_us": float(med), "p99_us": float(p99), "iqr_us": float(q3 - q1), "runs": len(times)}


def _floor(layers, experts, replicas):
    def fill():
        a = np.empty((layers, replicas), dtype=np.int64)
        a.fill(0)
        b = np.full((layers, experts, replicas - experts + 1), -1, dtype=np.int64)
        c = np.empty((layers, experts), dtype=np.int64)
        c.fill(1)
        return a, b, c

    return fill


def bench_row(name, cfg, *, reference=True, runs=200, budget_s=3.0, progress=None):
    layers, experts, replicas, groups, nodes, gpus = cfg
    weight = deepseek_v3_loads(layers, experts, seed=1)
    row = {"name": name, "config": dict(zip(("layers", "experts", "replicas", "groups", "nodes", "gpus"), cfg))}
    row["policy"] = "hierarchical" if groups % nodes == 0 else "global"
    row["numpy"] = _summary(_times(lambda: rebalance_experts(weight, replicas, groups, nodes, gpus), runs, budget_s))
    row["floor"] = _summary(_times(_floor(layers, experts, replicas), runs, budget_s))
    try:
        import torch

        from eplb_numba import torch as eplb_torch
    except ImportError:
        torch = None
    if torch is not None:
        tw = torch.from_numpy(weight)
        row["torch_adapter_cpu"] = _summary(
            _times(lambda: eplb_torch.rebalance_experts(tw, replicas, groups, nodes, gpus), runs, budget_s)
        )
        if reference:
            if progress:
                progress(f"{name}: torch reference (slow)")
            # The reference's own loop structure, so its cost is the reference's.
            ref = oracle.REFERENCES["rebalance_experts_loops"]
            row["torch_reference"] = _summary(_times(lambda: ref(tw, replicas, groups, nodes, gpus), 5, 15.0))
            fast = oracle.REFERENCES["rebalance_experts"]
            row["torch_oracle_vectorised"] = _summary(_times(lambda: fast(tw, replicas, groups, nodes, gpus), 10, 5.0))
            try:
                from vllm.distributed.eplb.rebalance_algo import rebalance_experts as vllm_ref
            except Exception:
                vllm_ref = None
            if vllm_ref is not None:
                row["vllm"] = _summary(_times(lambda: vllm_ref(tw, replicas, groups, nodes, gpus), 3, 10.0))
    med = row["numpy"]["median_us"]
    row["numpy_over_floor"] = med / row["floor"]["median_us"]
    if row.get("torch_reference"):
        row["speedup_vs_reference"] = row["torch_reference"]["median_us"] / med
    return row


def drift(weight, rng):
    """``weight`` after the movement benchmarks' drift: each load times e**(0.02 z), rounded to int64."""
    return np.round(weight * np.exp(0.02 * rng.standard_normal(weight.shape))).astype(np.int64)


def movement_row(runs=100, budget_s=3.0):
    """Movement-aware plan plus migration plan, DeepSeek-V3 EP32, after a 2% drift."""
    rng = np.random.default_rng(7)
    old_w = deepseek_v3_loads(seed=1)
    new_w = drift(old_w, rng)
    cfg = (288, 8, 4, 32)
    old = rebalance_experts(old_w, *cfg)[0]

    def both():
        new = rebalance_experts(new_w, *cfg, old_phy2log=old)[0]
        return plan_migration(old, new, 32, 4)

    def reference():
        return rebalance_experts(new_w, *cfg)[0]

    ref = reference()  # both warm up here, once
    moved = both()
    # Alternate blocks of the two, so that their ratio holds even while the
    # machine's speed drifts.
    mine, plain = [], []
    for _ in range(max(1, runs // 10)):
        mine += _times(both, 10, budget_s / 20, warm_up=False)
        plain += _times(reference, 10, budget_s / 20, warm_up=False)
    out = {
        "movement_plus_migration": _summary(mine),
        "reference_alone": _summary(plain),
        "copies_movement_aware": int(len(moved.expert)),
        "copies_reference": int(len(plan_migration(old, ref, 32, 4).expert)),
    }
    out["ratio_to_reference"] = out["movement_plus_migration"]["median_us"] / out["reference_alone"]["median_us"]
    return out


def gil_share(seconds=2.0):
    """Main-thread Python throughput while another thread plans in a loop, relative to idle."""
    weight = deepseek_v3_loads()
    rebalance_experts(weight, 288, 8, 4, 32)

    def count(duration):
        n = 0
        end = time.perf_counter() + duration
        while time.perf_counter() < end:
            n += 1
        return n

    idle = count(seconds)
    stop = threading.Event()
    calls = [0]

    def background():
        while not stop.is_set():
            rebalance_experts(weight, 288, 8, 4, 32)
            calls[0] += 1

    t = threading.Thread(target=background)
    t.start()
    busy = count(seconds)
    stop.set()
    t.join()
    return {"idle_iterations": idle, "busy_iterations": busy, "share": busy / idle, "background_calls": calls[0]}


_CHILD = (
    "import time; t0 = time.perf_counter(); import eplb_numba; t1 = time.perf_counter();"
    "import numpy as np; w = (np.arange(58 * 256).reshape(58, 256) * 7919) % 1000;"
    "p, l, c = eplb_numba.rebalance_experts(w, 288, 8, 4, 32); t2 = time.perf_counter();"
    "import json; print(json.dumps({'import_s': t1 - t0, 'first_call_s': t2 - t1, 'sum': int(p.sum() + l.sum())}))"
)


def _child(env):
    out = subprocess.run([sys.executable, "-c", _CHILD], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def cold_start(cache_dir, processes=8):
    """Import time, cold compile, first call from a warm cache, and a cache race."""
    base = {**os.environ, "EPLB_NUMBA_CACHE": "1"}
    cold = _child({**base, "NUMBA_CACHE_DIR": os.path.join(cache_dir, "cold")})
    warm = [_child({**base, "NUMBA_CACHE_DIR": os.path.join(cache_dir, "cold")}) for _ in range(3)]
    race_env = {**base, "NUMBA_CACHE_DIR": os.path.join(cache_dir, "race")}
    procs = [
        subprocess.Popen([sys.executable, "-c", _CHILD], env=race_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
        for _ in range(processes)
    ]
    results = [(p.communicate()[0], p.returncode) for p in procs]
    ok = [json.loads(out)["sum"] for out, rc in results if rc == 0]
    return {
        "cold_compile_first_call_s": cold["first_call_s"],
        "import_s": statistics.median(r["import_s"] for r in warm),
        "first_call_warm_cache_s": statistics.median(r["first_call_s"] for r in warm),
        "race_processes": processes,
        "race_succeeded": len(ok),
        "race_identical": len(set(ok)) == 1 and len(ok) == processes,
        "warmup_s_in_process": warmup(),
    }


def machine():
    import numba

    info = {"python": platform.python_version(), "numpy": np.__version__, "numba": numba.__version__,
            "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count()}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    info["cpu"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        import torch

        info["torch"] = torch.__version__
    except ImportError:
        pass
    return info


def _fmt(s):
    return "-" if not s else f"{s['median_us']:,.0f} (p99 {s['p99_us']:,.0f})"


def markdown(result):
    m = result["machine"]
    lines = [
        f"Machine: {m['cpu']}, {m['cores']} cores; Python {m['python']}, NumPy {m['numpy']}, "
        f"Numba {m['numba']}, torch {m.get('torch', '-')}. Times in microseconds, median (p99).",
        "",
        "| case | policy | torch reference | torch oracle (vectorised) | NumPy path | torch adapter (CPU) | floor "
        "| speed-up vs reference | NumPy / floor |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in result["rows"]:
        speed = f"{row['speedup_vs_reference']:,.0f}x" if row.get("speedup_vs_reference") else "-"
        lines.append(
            f"| {row['name']} | {row['policy']} | {_fmt(row.get('torch_reference'))} | "
            f"{_fmt(row.get('torch_oracle_vectorised'))} | {_fmt(row['numpy'])} | "
            f"{_fmt(row.get('torch_adapter_cpu'))} | {_fmt(row['floor'])} | {speed} | {row['numpy_over_floor']:.1f}x |"
        )
    if "movement" in result:
        mv = result["movement"]
        lines += ["", f"Movement-aware plan + migration plan (DeepSeek-V3 EP32, loads drifted 2%): "
                  f"{_fmt(mv['movement_plus_migration'])} us (the reference plan alone, timed alternately with "
                  f"it: {_fmt(mv['reference_alone'])} us, {mv['ratio_to_reference']:.2f}x); "
                  f"{mv['copies_movement_aware']} expert copies instead of "
                  f"the reference's {mv['copies_reference']}."]
    if "gil" in result:
        g = result["gil"]
        lines += ["", f"GIL: the main thread kept {g['share']:.0%} of its idle Python throughput while another "
                  f"thread planned DeepSeek-V3 EP32 in a loop ({g['background_calls']} plans)."]
    if "cold" in result:
        c = result["cold"]
        lines += ["", f"Cold start: `import eplb_numba` {c['import_s']:.2f} s; first call with a warm on-disk cache "
                  f"{c['first_call_warm_cache_s']:.2f} s; "
                  f"cold compile of the first call {c['cold_compile_first_call_s']:.1f} s; "
                  f"{c['race_succeeded']}/{c['race_processes']} processes started at once on an empty cache succeeded, "
                  f"results identical: {c['race_identical']}."]
    return "\n".join(lines) + "\n"


def run(out_dir=None, sweep=True, cold=True, progress=print, only=None):
    rows = []
    todo = list(MODEL_ROWS.items()) + (list(SWEEP_ROWS.items()) if sweep else [])
    if only:
        todo = [(name, cfg) for name, cfg in todo if only.lower() in name.lower()]
        if not todo:
            raise ValueError(f"--only {only!r} matches no benchmark row; rows: {', '.join(MODEL_ROWS)}, sweep ...")
    for i, (name, cfg) in enumerate(todo, 1):
        progress(f"[{i}/{len(todo)}] {name}")
        rows.append(bench_row(name, cfg, reference=name in MODEL_ROWS, runs=200 if name in MODEL_ROWS else 20,
                              progress=progress))
        row = rows[-1]
        progress(f"    NumPy {_fmt(row['numpy'])} us, floor {_fmt(row['floor'])} us, "
                 f"reference {_fmt(row.get('torch_reference'))} us")
    result = {"machine": machine(), "rows": rows}
    if not only:
        progress("movement-aware plan + migration plan ...")
        result["movement"] = movement_row()
    progress("GIL share ...")
    result["gil"] = gil_share()
    if cold:
        import tempfile

        progress("cold start and cache race (compiles from scratch; about a minute) ...")
        with tempfile.TemporaryDirectory() as tmp:
            result["cold"] = cold_start(tmp)
    text = markdown(result)
    if out_dir:
        os.makedirs(out_dir, exist_ok=True)
        with open(os.path.join(out_dir, "benchmarks.json"), "w") as f:
            json.dump(result, f, indent=2)
        with open(os.path.join(out_dir, "benchmarks.md"), "w") as f:
            f.write(text)
    return result, text
