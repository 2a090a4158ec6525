"""The ``fastconv-bench`` command line: the options, the ``--suite`` table (:data:`SUITES`) and
:func:`main`, which runs a suite and prints (or writes) its report."""
from __future__ import annotations

import argparse
import fnmatch
import sys
import time
from dataclasses import asdict, dataclass
from typing import Callable, Dict, List, Optional, Sequence

import fastconv

from . import blas, busy, ceilings, dezero, networks, scaling
from .cases import BACKEND_ORDER, CASES, DTYPES, Case, select_cases
from .console import Console
from .plot import write_plot
from .report import LEGEND, copy_ceiling_lines, format_table, header_lines, machine_info, write_json
from .timing import NORMAL, QUICK, Result, Settings, run, thread_settings


def _select_backends(spec: Optional[str]) -> List[str]:
    available = fastconv.available_backends()
    if not spec:
        return [b for b in BACKEND_ORDER if b in available]
    names = [b.strip() for b in spec.split(",") if b.strip()]
    for b in names:
        if b not in BACKEND_ORDER:
            raise ValueError(f"unknown backend {b!r}; choose from {', '.join(BACKEND_ORDER)}")
        if b not in available:
            hint = ("; install PyTorch's CPU build for it (pip install torch==2.13.0, or "
                    "pip install '.[torch]' in fastconv's checkout)") if b == "torch" else ""
            raise ValueError(f"backend {b!r} is not available here (available: {', '.join(available)}){hint}")
    return [b for b in BACKEND_ORDER if b in names]


def list_cases(cases: Sequence[Case] = CASES) -> str:
    width = max(len(c.name) for c in cases)
    lines = [f"{c.name:<{width}}  {'+'.join(c.ops):<19}  {c.describe()}" for c in cases]
    return "\n".join(lines)


@dataclass(frozen=True)
class Suite:
    """One ``--suite``: its cases (from the parsed options), its timing settings, and what it
    prints after the table. Add a suite by adding an entry to :data:`SUITES`.

    ``runner`` (default :func:`run`) times the cases: ``runner(cases, dtypes, backends,
    settings, progress, numpy_for)`` returns the :class:`Result` rows of the table.
    """

    help: str
    cases: Callable[[argparse.Namespace], List[Case]]
    normal: Settings = NORMAL
    quick: Settings = QUICK
    numpy_for: Callable[[Case], bool] = lambda case: True
    summary: Optional[Callable[[Sequence[Result], Sequence[Case]], str]] = None
    runner: Optional[Callable[..., List[Result]]] = None


def _matching(cases: List[Case], patterns: Optional[str]) -> List[Case]:
    """The cases whose names match one of the comma-separated glob patterns (all without)."""
    if not patterns:
        return cases
    return [c for c in cases if any(fnmatch.fnmatchcase(c.name, p.strip()) for p in patterns.split(","))]


def _network_names(args: argparse.Namespace) -> Optional[List[str]]:
    return [n.strip() for n in args.networks.split(",")] if args.networks else None


def _network_cases(args: argparse.Namespace) -> List[Case]:
    return _matching(networks.cases(_network_names(args), quick=args.quick), args.cases)


SUITES: Dict[str, Suite] = {
    "cases": Suite("the tuned shape table (default)", lambda args: select_cases(args.cases)),
    "networks": Suite("every distinct conv and pooling layer of LeNet-5, AlexNet, ZFNet, VGG-16, ResNet-18, "
                      "ResNet-50's 1x1 layers, the book's networks and the seed's MNIST CNN, with per-network "
                      "summaries", _network_cases, networks.NETWORKS_FULL, networks.NETWORKS_QUICK,
                      numpy_for=networks.numpy_timed, summary=networks.summary),
    "scaling": Suite(f"the batch-1 conv layers of the networks suite above {scaling.MIN_FLOP / 1e6:g} MFLOP on 1 thread "
                     "and on --threads N (>= 2) in alternating rounds: the thread-scaling ratios of one run",
                     lambda args: _matching(scaling.cases(_network_names(args)), args.cases), scaling.SCALING_FULL,
                     scaling.SCALING_QUICK, summary=scaling.summary, runner=scaling.run),
    "dezero": Suite("DeZero's own conv2d and pooling vs the same calls after fastconv.dezero.install(), forward + "
                    "backward through DeZero's graph (needs fastconv[dezero])",
                    lambda args: _matching(dezero.cases(), args.cases), dezero.DEZERO_FULL, dezero.DEZERO_QUICK,
                    summary=dezero.summary, runner=dezero.run),
}

# Length of the sample of other processes' CPU use taken before the run.
BUSY_SAMPLE_S = 0.5


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="fastconv-bench",
        description="Time fastconv's backends (native, numpy, torch) on common CNN layer shapes; "
                    "results are checked against the numpy backend.",
        epilog="Quote ratios from one run (vs numpy, vs torch, % of the measured ceilings): the machine "
               "is shared and absolute times drift.")
    p.add_argument("--dtype", choices=("float32", "float64", "both"), default="both")
    p.add_argument("--threads", type=int, default=None, metavar="N",
                   help="threads for every library (default: fastconv.get_num_threads())")
    p.add_argument("--suite", choices=tuple(SUITES), default="cases",
                   help="; ".join(f"{name}: {suite.help}" for name, suite in SUITES.items()))
    p.add_argument("--networks", metavar="NAMES", help="with --suite networks or scaling: a comma list of networks")
    p.add_argument("--cases", metavar="NAMES", help="comma list of case names or glob patterns (see --list)")
    p.add_argument("--list", action="store_true", help="list the cases and exit")
    p.add_argument("--backends", metavar="NAMES",
                   help=f"comma list from {', '.join(BACKEND_ORDER)} (default: every available one)")
    p.add_argument("--quick", action="store_true",
                   help="short warm-ups and few repeats (the whole run in well under a minute)")
    p.add_argument("--json", metavar="FILE", help="write every raw figure, machine info and peaks as JSON")
    p.add_argument("--plot", metavar="FILE.png", help="bar chart of the speed-ups (needs matplotlib)")
    p.add_argument("--no-import-order", action="store_true",
                   help="skip timing the training step in fresh processes with NumPy imported before and "
                        "after fastconv (run when the train-step case is selected)")
    return p


def main(argv: Optional[Sequence[str]] = None, console: Optional[Console] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    suite = SUITES[args.suite]
    console = console or Console()
    try:
        cases = suite.cases(args)
        if args.list:
            console.print(list_cases(cases))
            return 0
        backends = _select_backends(args.backends)
    except ValueError as exc:
        parser.error(str(exc))
    if args.threads is not None and args.threads < 1:
        parser.error("--threads must be >= 1")
    if args.plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            parser.error("--plot needs matplotlib, which is not installed (pip install matplotlib)")
    dtypes = list(DTYPES) if args.dtype == "both" else [args.dtype]
    settings = suite.quick if args.quick else suite.normal
    n = args.threads or fastconv.get_num_threads()

    with thread_settings(n, backends) as threads:
        console.progress(f"sampling other processes' CPU use ({BUSY_SAMPLE_S:g} s) ...")
        busy_before = busy.sample(BUSY_SAMPLE_S)
        console.progress("measuring the FMA peaks and the copy bandwidth ...")
        peaks = ceilings.measure_peaks(settings.peak_s)
        info = machine_info()
        for line in header_lines(info, threads, peaks, busy_before):
            console.print(line)
        t0 = time.perf_counter()
        start = busy.snapshot()
        results = (suite.runner or run)(cases, dtypes, backends, settings, console.progress, suite.numpy_for)
        busy_during = busy.use_between(start, busy.snapshot(), busy_before.cpus)
        elapsed = time.perf_counter() - t0
    console.print()
    console.print(format_table(results, peaks))
    console.print()
    console.print(LEGEND)
    for line in copy_ceiling_lines(results):
        console.print(line)
    console.print(f"{len(results)} timings in {elapsed:.0f} s ({'--quick' if args.quick else 'full'} settings); "
                  f"during them {busy_during.describe()} (this process's own time not counted)")
    warning = busy.busy_warning(busy_during, n, "during the timings")
    if warning:
        console.print(warning)
    if suite.summary:
        console.print()
        console.print(suite.summary(results, cases))
    import_order = None
    if not args.no_import_order and any(c.kind == "train" for c in cases):
        console.progress("timing the training step in fresh processes (import orders, OpenBLAS hook on/off) ...")
        import_order = blas.measure(n, repeats=15 if args.quick else 40, warm=settings.warmup_s,
                                          rounds=1 if args.quick else 3)
        console.print()
        console.print(blas.format_rows(import_order))
    failed = [r for r in results if r.failed]
    for r in failed:
        console.print(f"{r.check}: {r.case} {r.dtype} {r.op} {r.backend}: {r.message}")
    if failed:
        console.warn(f"fastconv-bench: {len(failed)} of {len(results)} results FAILED or raised (details on stdout)")
    if args.json:
        write_json(args.json, results, peaks,
                   dict(info, import_order=import_order, busy_before=asdict(busy_before),
                        busy_during=asdict(busy_during)),
                   threads, settings, sys.argv[1:] if argv is None else argv)
        console.print(f"wrote {args.json}")
    if args.plot:
        write_plot(args.plot, results)
        console.print(f"wrote {args.plot}")
    return 1 if failed else 0
