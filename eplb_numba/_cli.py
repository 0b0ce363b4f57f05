"""eplb-numba: plan expert placements and report how balanced they are.

  eplb-numba [rebalance] [LOADS] [--replicas N --groups N --nodes N --gpus N]
             [--json] [--out FILE] [--plot FILE.png]
  eplb-numba simulate [TRACE] [--every K --window W] [--json] [--plot FILE.png]
  eplb-numba bench [--quick] [--out DIR] [--only TEXT]
  eplb-numba warmup

With no LOADS file, rebalance runs on the built-in DeepSeek-R1-shaped workload
(58 layers x 256 experts, 100 steps); see docs/cli.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from ._io import CliError, load_loads, save_placement

_COMMANDS = ("rebalance", "simulate", "bench", "warmup")


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2, no usage dump
        raise CliError(f"{message} (see {self.prog} --help)")


def _parser():
    p = _Parser(prog="eplb-numba", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", parser_class=_Parser)
    r = sub.add_parser("rebalance", help="plan a placement and report its balance")
    r.add_argument("loads", nargs="?", help=".npy/.npz/.pt/.csv/.json of token counts, [layers, experts] "
                   "or [steps, layers, experts]; default: the built-in workload")
    r.add_argument("--replicas", type=int, default=288, help="physical expert slots in all (default 288)")
    r.add_argument("--groups", type=int, default=8, help="expert groups (default 8)")
    r.add_argument("--nodes", type=int, default=4, help="server nodes (default 4)")
    r.add_argument("--gpus", type=int, default=32, help="GPUs in all (default 32)")
    r.add_argument("--json", action="store_true", help="print the report as JSON")
    r.add_argument("--out", metavar="FILE", help="write the placement (.npz, .json or .pt) in vLLM's shapes")
    r.add_argument("--plot", metavar="FILE.png", help="draw per-GPU load before and after (needs matplotlib)")
    s = sub.add_parser("simulate", help="replay a load trace under several policies")
    s.add_argument("trace", nargs="?", help="3-D [steps, layers, experts] token counts (.npy/.npz/.pt/.json); "
                   "default: the built-in drifting trace")
    for flag, default, what in (("--replicas", 288, "slots"), ("--groups", 8, "expert groups"),
                                ("--nodes", 4, "nodes"), ("--gpus", 32, "GPUs")):
        s.add_argument(flag, type=int, default=default, help=f"{what} (default {default})")
    s.add_argument("--every", type=int, default=100, help="steps between rebalances (default 100)")
    s.add_argument("--window", type=int, default=200, help="past steps each plan uses (default 200)")
    s.add_argument("--expert-mb", type=float, default=0.0, help="MB of one expert's weights per layer, for bytes")
    s.add_argument("--json", action="store_true", help="print the result as JSON")
    s.add_argument("--plot", metavar="FILE.png", help="draw imbalance and copies over time (needs matplotlib)")
    b = sub.add_parser("bench", help="benchmark against the torch reference")
    b.add_argument("--quick", action="store_true", help="model rows only; no scaling sweep, no cold start")
    b.add_argument("--out", metavar="DIR", help="also write benchmarks.json and benchmarks.md here")
    b.add_argument("--only", metavar="TEXT", help="only the rows whose name contains TEXT")
    sub.add_parser("warmup", help="compile and cache the kernels ahead of a serving start")
    return p


def _rebalance(args):
    from ._api import rebalance_experts
    from ._report import build_report, format_report

    trace = None
    if args.loads is None:
        from ._workload import default_trace

        trace = default_trace()
        weight = trace.sum(axis=0)
        source = "built-in DeepSeek-R1-shaped workload, 100 steps"
    else:
        weight = load_loads(args.loads)
        source = args.loads
    cfg = (args.replicas, args.groups, args.nodes, args.gpus)
    rebalance_experts(weight, *cfg)  # validates; compiles on a cold cache
    times = []
    for _ in range(5):  # the median of a few warm calls is what serving sees
        start = time.perf_counter()
        phy2log, log2phy, logcnt = rebalance_experts(weight, *cfg)
        times.append(time.perf_counter() - start)
    elapsed = sorted(times)[len(times) // 2]
    config = dict(zip(("replicas", "groups", "nodes", "gpus"), cfg))
    report = build_report(weight, phy2log, logcnt, config, elapsed, trace=trace, source=source)
    if args.out:
        save_placement(args.out, phy2log, log2phy, logcnt)
        report["written"] = args.out
    if args.plot:
        from ._plot import plot_balance

        plot_balance(args.plot, weight, phy2log, args.gpus)
        report["plot"] = args.plot
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(format_report(report))
        for key, what in (("written", "placement"), ("plot", "plot")):
            if key in report:
                print(f"\n{what} written to {report[key]}")
    return 0


def _bar(msg):
    # "[i/n] name" messages advance a bar; anything else is printed as is.
    if msg.startswith("[") and "/" in msg.split("]")[0]:
        i, n = (int(x) for x in msg[1:].split("]")[0].split("/"))
        filled = round(24 * (i - 1) / n)
        msg = f"[{'#' * filled}{'.' * (24 - filled)}] {i}/{n} {msg.split('] ', 1)[1]}"
    print(msg, file=sys.stderr, flush=True)


def _simulate(args):
    from ._simulate import format_simulation, simulate

    if args.trace is None:
        from ._workload import drifting_trace

        trace = drifting_trace()
    else:
        trace = load_loads(args.trace, keep_steps=True)
    for name in ("every", "window"):
        if getattr(args, name) < 1:
            raise CliError(f"--{name} must be at least 1")
    cfg = (args.replicas, args.groups, args.nodes, args.gpus)
    result = simulate(trace, cfg, every=args.every, window=args.window,
                      expert_bytes=int(args.expert_mb * 2**20), progress=_bar)
    if args.plot:
        from ._plot import plot_simulation

        plot_simulation(args.plot, result)
    print(json.dumps(result, indent=2) if args.json else format_simulation(result))
    return 0


def _bench(args):
    from ._bench import run

    _, text = run(out_dir=args.out, sweep=not args.quick, cold=not args.quick, progress=_bar, only=args.only)
    print(text)
    return 0


def _warmup(args):
    from ._api import warmup

    def step(i, n, what, seconds):
        print(f"[{i}/{n}] {what}: {seconds:.1f} s", file=sys.stderr, flush=True)

    print(f"every kernel compiled or loaded from the cache in {warmup(progress=step):.2f} s")
    return 0


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or (argv[0] not in _COMMANDS and argv[0] not in ("-h", "--help")):
        argv.insert(0, "rebalance")
    try:
        args = _parser().parse_args(argv)
        commands = {"rebalance": _rebalance, "simulate": _simulate, "bench": _bench, "warmup": _warmup}
        from ._jit import compile_notice

        # One line on stderr before a first run's compile, one with its time.
        with compile_notice():
            return commands[args.command](args)
    except (CliError, ValueError, TypeError) as exc:
        print(f"eplb-numba: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
