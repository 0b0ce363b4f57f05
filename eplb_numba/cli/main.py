"""eplb-numba: plan expert placements and report how balanced they are.

  eplb-numba [rebalance] [LOADS] [--replicas N --groups N --nodes N --gpus N]
             [--json] [--out FILE] [--plot FILE.png] [--force]
  eplb-numba simulate [TRACE] [--every K --window W] [--budgets PCT,...] [--json] [--plot FILE.png] [--force]
  eplb-numba tune [TRACE] [--windows W,... --intervals K,... --policies P,...] [--json] [--plot FILE.png]
  eplb-numba warmup

With no LOADS file, rebalance runs on the built-in DeepSeek-R1-shaped workload
(58 layers x 256 experts, 100 steps); see docs/cli.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

from .files import CliError, check_output, load_loads, save_placement

_COMMANDS = ("rebalance", "simulate", "tune", "bench", "warmup")


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2, no usage dump
        raise CliError(f"{message} (see {self.prog} --help)")


def _layout_flags(parser):
    for flag, default, what in (("--replicas", 288, "slots"), ("--groups", 8, "expert groups"),
                                ("--nodes", 4, "nodes"), ("--gpus", 32, "GPUs")):
        parser.add_argument(flag, type=int, default=default, help=f"{what} (default {default})")


def _parser():
    from .. import __version__

    p = _Parser(prog="eplb-numba", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"eplb-numba {__version__}")
    sub = p.add_subparsers(dest="command", parser_class=_Parser)
    r = sub.add_parser("rebalance", help="plan a placement and report its balance")
    r.add_argument("loads", nargs="?", help=".npy/.npz/.pt/.csv/.json of token counts, [layers, experts] "
                   "or [steps, layers, experts]; default: the built-in workload")
    r.add_argument("--replicas", type=int, default=288, help="physical expert slots in all (default 288)")
    r.add_argument("--groups", type=int, default=8, help="expert groups (default 8)")
    r.add_argument("--nodes", type=int, default=4, help="server nodes (default 4)")
    r.add_argument("--gpus", type=int, default=32, help="GPUs in all (default 32)")
    r.add_argument("--quality", action="store_true", help="improve the reference's plan by local search "
                   "(docs/quality.md); not bit-identical")
    r.add_argument("--json", action="store_true", help="print the report as JSON")
    r.add_argument("--out", metavar="FILE", help="write the placement (.npz, .json or .pt) in vLLM's shapes")
    r.add_argument("--plot", metavar="FILE.png", help="draw per-GPU load before and after (needs matplotlib)")
    r.add_argument("--force", action="store_true", help="overwrite existing --out / --plot files")
    s = sub.add_parser("simulate", help="replay a load trace under several policies")
    s.add_argument("trace", nargs="?", help="3-D [steps, layers, experts] token counts (.npy/.npz/.pt/.json); "
                   "default: the built-in drifting trace")
    _layout_flags(s)
    s.add_argument("--every", type=int, default=100, help="steps between rebalances (default 100)")
    s.add_argument("--window", type=int, default=200, help="past steps each plan uses (default 200)")
    s.add_argument("--budgets", metavar="PCT,...", help="also replay copy budgets, each a percentage of the "
                   "reference's copies per rebalance (e.g. 1,2,5)")
    s.add_argument("--scenario", choices=("drift", "lost-gpu", "scale"), default="drift",
                   help="drift (default): the same GPUs throughout; lost-gpu: --lose-gpu fails at the middle "
                        "rebalance; scale: 4 GPUs fewer from the 2nd rebalance to the 4th")
    s.add_argument("--lose-gpu", type=int, default=5, metavar="N", help="the GPU lost in --scenario lost-gpu (5)")
    s.add_argument("--expert-mb", type=float, default=0.0, help="MB of one expert's weights per layer, for bytes")
    s.add_argument("--json", action="store_true", help="print the result as JSON")
    s.add_argument("--plot", metavar="FILE.png", help="draw imbalance and copies over time (needs matplotlib)")
    s.add_argument("--force", action="store_true", help="overwrite an existing --plot file")
    t = sub.add_parser("tune", help="choose window, interval and policy from a recorded load trace")
    t.add_argument("trace", nargs="?", help="3-D [steps, layers, experts] token counts (.npy/.npz/.pt/.json; "
                   "SGLang's expert-distribution dump in stat mode too); default: the built-in drifting trace")
    _layout_flags(t)
    t.add_argument("--windows", default="100,200,400", metavar="W,...",
                   help="past steps each plan sums, candidates (default 100,200,400)")
    t.add_argument("--intervals", default="50,100,200", metavar="K,...",
                   help="steps between rebalances, candidates (default 50,100,200)")
    t.add_argument("--policies", default="reference,movement-aware,quality", metavar="P,...",
                   help="candidates among reference, movement-aware, quality (default all three)")
    t.add_argument("--tolerance", type=float, default=1.0, metavar="PCT",
                   help="recommend the fewest copies within PCT%% of the lowest imbalance (default 1)")
    t.add_argument("--json", action="store_true", help="print the result as JSON")
    t.add_argument("--plot", metavar="FILE.png", help="draw imbalance against copies (needs matplotlib)")
    t.add_argument("--force", action="store_true", help="overwrite an existing --plot file")
    # Listed so that --help says where the benchmarks went; main() answers it before parsing.
    sub.add_parser("bench", help="benchmarks: they need a source checkout (python bench/run.py)")
    sub.add_parser("warmup", help="compile and cache the kernels ahead of a serving start")
    return p


# The API's parameter names, as the command line's flags and file.
_FLAGS = (("num_replicas", "--replicas"), ("num_groups", "--groups"), ("num_nodes", "--nodes"),
          ("num_gpus", "--gpus"), ("the GPU to lose", "--lose-gpu"))


def _in_cli_terms(exc, source):
    text = str(exc)
    for name, flag in _FLAGS:
        text = text.replace(name, flag)
    what = "the loads" if source is None else source
    text = text.replace("weight.shape[1]", f"experts in {what}").replace("weight[", f"{what}[")
    return CliError(text.replace("weight ", f"{what} "))


def _check_plot(args):
    if args.plot:
        from .plot import pyplot

        pyplot()  # matplotlib, or the line that says how to install it
        check_output(args.plot, "--plot", inputs=[getattr(args, "loads", None) or getattr(args, "trace", None)],
                     force=args.force, exts={".png", ".svg", ".pdf", ".jpg", ".jpeg"})


def _rebalance(args):
    from .. import balance_bound, rebalance_experts
    from .report import build_report, format_report

    # Every file to write is checked before any work starts.
    if args.out:
        check_output(args.out, "--out", inputs=[args.loads], force=args.force, exts={".npz", ".json", ".pt", ".pth"})
    _check_plot(args)
    if args.out and args.plot and os.path.abspath(args.out) == os.path.abspath(args.plot):
        raise CliError("--out and --plot name the same file; give each its own")
    trace = None
    if args.loads is None:
        from .workload import default_trace

        trace = default_trace()
        weight = trace.sum(axis=0)
        source = "built-in DeepSeek-R1-shaped workload, 100 steps"
    else:
        weight = load_loads(args.loads)
        source = args.loads
    cfg = (args.replicas, args.groups, args.nodes, args.gpus)
    try:
        rebalance_experts(weight, *cfg, quality=args.quality)  # validates; compiles on a cold cache
    except (ValueError, TypeError) as exc:
        raise _in_cli_terms(exc, args.loads) from None
    times = []
    for _ in range(5):  # the median of a few warm calls is what serving sees
        start = time.perf_counter()
        phy2log, log2phy, logcnt = rebalance_experts(weight, *cfg, quality=args.quality)
        times.append(time.perf_counter() - start)
    elapsed = sorted(times)[len(times) // 2]
    config = dict(zip(("replicas", "groups", "nodes", "gpus"), cfg))
    report = build_report(weight, phy2log, logcnt, config, elapsed, trace=trace, source=source,
                          bound=balance_bound(weight, *cfg), quality=args.quality)
    if args.out:
        save_placement(args.out, phy2log, log2phy, logcnt)
        report["written"] = args.out
    if args.plot:
        from .plot import plot_balance

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


def _check_trace(trace, what):
    # Before the first plan, so that the replay does not fail halfway (each
    # value was checked when the file was read).
    from .._validate import F32_MAX

    if trace.size and trace.sum(axis=0, dtype=np.float64).max() > F32_MAX:
        raise CliError(f"{what}: loads summed over steps exceed the float32 range (3.4e38) that plans read "
                       f"them in; rescale the trace")


def _budgets(text):
    # "1,2,5" -> (0.01, 0.02, 0.05): shares of the reference's copies.
    if text is None:
        return ()
    shares = []
    for part in text.split(","):
        try:
            pct = float(part)
        except ValueError:
            raise CliError(f"--budgets takes percentages separated by commas, such as 1,2,5; got {part!r}") from None
        if not 0 <= pct <= 100:
            raise CliError(f"--budgets: each budget is a percentage from 0 to 100, got {part}")
        shares.append(pct / 100)
    return tuple(shares)


def _load_trace(args):
    # The TRACE argument, 3-D, or the built-in drifting trace.
    if args.trace is None:
        from .workload import drifting_trace

        return drifting_trace()
    return load_loads(args.trace, keep_steps=True)


def _show(args, result, plot_name, formatter):
    # A replay's result: the --plot file, then --json or the table.
    if args.plot:
        from . import plot

        getattr(plot, plot_name)(args.plot, result)
    print(json.dumps(result, indent=2) if args.json else formatter(result))
    return 0


def _simulate(args):
    from .simulate import format_simulation, simulate

    trace = _load_trace(args)
    for name in ("every", "window"):
        if getattr(args, name) < 1:
            raise CliError(f"--{name} must be at least 1")
    if not (args.expert_mb >= 0 and args.expert_mb < float("inf")):
        raise CliError(f"--expert-mb must be a finite number >= 0, got {args.expert_mb}")
    budgets = _budgets(args.budgets)
    if budgets and args.scenario != "drift":
        raise CliError("--budgets replays the drift scenario; leave out --scenario, or --budgets")
    _check_plot(args)
    _check_trace(trace, args.trace or "the built-in trace")
    cfg = (args.replicas, args.groups, args.nodes, args.gpus)
    try:
        result = simulate(trace, cfg, every=args.every, window=args.window,
                          expert_bytes=int(args.expert_mb * 2**20), progress=_bar, budgets=budgets,
                          scenario=args.scenario, lose_gpu=args.lose_gpu)
    except (ValueError, TypeError) as exc:
        raise _in_cli_terms(exc, args.trace) from None
    return _show(args, result, "plot_simulation", format_simulation)


def _steps_list(text, flag):
    # "100,200" -> (100, 200), each a whole number of steps >= 1.
    try:
        values = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise CliError(f"{flag} takes whole numbers of steps separated by commas, such as 100,200; "
                       f"got {text!r}") from None
    if min(values) < 1:
        raise CliError(f"{flag}: each value is a number of steps, at least 1; got {text!r}")
    return values


def _tune(args):
    from .tune import TUNE_POLICIES, format_tuning, tune

    windows = _steps_list(args.windows, "--windows")
    intervals = _steps_list(args.intervals, "--intervals")
    policies = [p.strip() for p in args.policies.split(",")]
    unknown = [p for p in policies if p not in TUNE_POLICIES]
    if unknown:
        raise CliError(f"--policies: unknown policy {unknown[0]!r}; choose among {', '.join(TUNE_POLICIES)}")
    if not 0 <= args.tolerance < 100:
        raise CliError(f"--tolerance is a percentage from 0 to 100, got {args.tolerance}")
    trace = _load_trace(args)
    # Steps that carry no tokens (SGLang's recorder buffer before it fills) say nothing of the loads.
    empty = trace.reshape(trace.shape[0], -1).sum(axis=1) == 0
    if empty.any() and not empty.all():
        print(f"eplb-numba: note: {int(empty.sum())} steps of {args.trace or 'the trace'} carry no tokens; "
              f"left out", file=sys.stderr)
        trace = trace[~empty]
    _check_plot(args)
    _check_trace(trace, args.trace or "the built-in trace")
    cfg = (args.replicas, args.groups, args.nodes, args.gpus)
    try:
        result = tune(trace, cfg, windows, intervals, policies, args.tolerance / 100, progress=_bar)
    except (ValueError, TypeError) as exc:
        raise _in_cli_terms(exc, args.trace) from None
    return _show(args, result, "plot_tuning", format_tuning)


def _bench(args):
    # The benchmarks time the torch reference, which lives with the tests in
    # the source tree, not in the installed package.
    raise CliError("the benchmarks need a source checkout: clone eplb-numba and run `python bench/run.py "
                   "[--quick] [--out DIR]` there (see docs/benchmarks.md)")


def _warmup(args):
    from .. import warmup

    def step(i, n, what, seconds):
        print(f"[{i}/{n}] {what}: {seconds:.1f} s", file=sys.stderr, flush=True)

    print(f"every kernel compiled or loaded from the cache in {warmup(progress=step):.2f} s")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or (argv[0] not in _COMMANDS and argv[0] not in ("-h", "--help", "--version")):
        argv.insert(0, "rebalance")
    try:
        if argv[0] == "bench":
            return _bench(argv[1:])
        args = _parser().parse_args(argv)
        commands = {"rebalance": _rebalance, "simulate": _simulate, "tune": _tune, "bench": _bench,
                    "warmup": _warmup}
        from .._jit import compile_notice

        # One line on stderr before a first run's compile, one with its time.
        with compile_notice():
            return commands[args.command](args)
    except (CliError, ValueError, TypeError) as exc:
        print(f"eplb-numba: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # The reader went away (``eplb-numba --json | head``): stop quietly,
        # and let the interpreter's final flush go nowhere.
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), sys.stdout.fileno())
        return 141
    except KeyboardInterrupt:
        return 130
