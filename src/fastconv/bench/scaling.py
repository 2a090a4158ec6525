"""``fastconv-bench --suite scaling``: how much faster a batch-1 layer runs on N threads than on
one, measured as a ratio inside one run.

The rows are the batch-1 conv layers of the networks suite above ``MIN_FLOP`` (the issue's
"more than 50 MFLOP"), forward and backward. Each row is timed on 1 thread and on N (the run's
``--threads``) in alternating rounds, so both medians share the machine's load of the same
minute; a ratio taken from two separate sweeps minutes apart counts the host's noise twice. The
FMA probe is timed the same way at the start of each dtype ("fma-probe" rows): the machine's own
ceiling of the ratio. The N-thread result is checked against the 1-thread one.
"""
from __future__ import annotations

import math
from typing import Callable, Dict, List, Sequence, Tuple

import fastconv
from fastconv import _core

from . import networks
from .cases import DTYPES, SHORT_DTYPE, Case, Workload
from .timing import Result, Settings, split_rounds, time_callable

MIN_FLOP = 50e6
# The target at 2 threads: 1.7x, i.e. 85 % of perfect scaling; the same fraction at N.
TARGET_EFFICIENCY = 0.85
PROBE = "fma-probe"
PROBE_FLOP = 10**9  # a probe row's "time" is the time of 1 GFLOP at the measured peak

SCALING_FULL = Settings(rounds=3, warmup_s=0.05, budget_s=0.45, min_reps=6, max_reps=90, slow_call_s=0.1,
                        min_reps_slow=3, peak_s=0.1)
SCALING_QUICK = Settings(rounds=2, warmup_s=0.01, budget_s=0.06, min_reps=2, max_reps=10, slow_call_s=0.03,
                         min_reps_slow=2, peak_s=0.05)


def cases(nets: Sequence[str] = None) -> List[Case]:
    """The batch-1 conv layers of the networks suite whose forward exceeds ``MIN_FLOP``."""
    return [c for c in networks.cases(nets) if c.kind == "conv" and c.x_shape[0] == 1 and c.conv_flop() > MIN_FLOP]


def backend_name(threads: int) -> str:
    return f"native-{threads}T"


def threads_of(backend: str) -> int:
    """The thread count a ``backend_name`` row was timed on."""
    return int(backend[len("native-"):-len("T")])


def _parallel_threads() -> int:
    n = fastconv.get_num_threads()
    if n < 2:
        raise SystemExit("fastconv-bench --suite scaling compares 1 thread with N: run it with --threads N, N >= 2 "
                         f"(fastconv runs on {n} thread here)")
    return n


def _probe_rows(dtype: str, counts: Tuple[int, int], rounds: int, seconds: float) -> List[Result]:
    rows = {n: Result(PROBE, "fma", dtype, backend_name(n), flop=PROBE_FLOP, check="ref" if n == 1 else "-")
            for n in counts}
    for _ in range(rounds):
        for n in counts:
            fastconv.set_num_threads(n)
            rows[n].samples_s.append(PROBE_FLOP / (_core.fma_peak_gflops(dtype == "float64", seconds) * 1e9))
    return list(rows.values())


def run(cases: Sequence[Case], dtypes: Sequence[str], backends: Sequence[str], settings: Settings,
        progress: Callable[[str], None] = lambda msg: None, numpy_for=None) -> List[Result]:
    """Every (layer, dtype, op) on 1 and N threads, alternating rounds (``backends`` unused)."""
    counts = (1, _parallel_threads())
    rounds, per_round = split_rounds(settings)
    rows = [(c, dt, op) for dt in dtypes for c in cases for op in c.ops]
    results: List[Result] = []
    try:
        for dtype in dtypes:
            progress(f"FMA probe on {counts[0]} and {counts[1]} threads ({SHORT_DTYPE[dtype]}) ...")
            results += _probe_rows(dtype, counts, rounds, settings.peak_s)
        workload = None
        for i, (case, dtype, op) in enumerate(rows, 1):
            if workload is None or (workload.case, workload.dtype) != (case, dtype):
                workload = Workload(case, dtype)
            row = {n: Result(case.name, op, dtype, backend_name(n), flop=case.flop(op)) for n in counts}
            fn, first_single = workload.fn(op), None
            try:
                for r in range(rounds):
                    for n in counts:
                        progress(f"[{i}/{len(rows)}] {case.name} {SHORT_DTYPE[dtype]} {op} {n} thread(s) "
                                 f"(round {r + 1}/{rounds}) ...")
                        fastconv.set_num_threads(n)
                        with fastconv.use_backend("native"):
                            samples, first, calls = time_callable(fn, per_round)
                        row[n].samples_s += samples
                        row[n].warmup_calls += calls
                        if r == 0 and n == 1:
                            first_single, row[n].check = first, "ref"
                        elif r == 0:
                            chk = workload.check(op, first, ref=first_single)
                            row[n].check, row[n].max_rel_err, row[n].message = (("ok" if chk.ok else "FAIL"),
                                                                                chk.max_rel_err, chk.message)
            except Exception as exc:  # report it in the table and carry on with the other rows
                for res in row.values():
                    res.check, res.message, res.samples_s = "ERROR", f"{type(exc).__name__}: {exc}", []
            results += row.values()
    finally:
        fastconv.set_num_threads(counts[1])
    return results


def _ratios(results: Sequence[Result]) -> Dict[Tuple[str, str, str], Tuple[float, float, float]]:
    """(case, dtype, op) -> (1-thread median, N-thread median, their ratio)."""
    single = {(r.case, r.dtype, r.op): r for r in results if r.backend == backend_name(1) and r.samples_s}
    out = {}
    for r in results:
        key = (r.case, r.dtype, r.op)
        if r.backend != backend_name(1) and r.samples_s and key in single:
            out[key] = (single[key].median_s, r.median_s, single[key].median_s / r.median_s)
    return out


def summary(results: Sequence[Result], case_list: Sequence[Case]) -> str:
    """Per dtype and direction: the geometric mean and worst ratio, the rows under the target."""
    parallel = sorted({r.backend for r in results} - {backend_name(1)})
    if not parallel:
        return "no N-thread rows"
    n = threads_of(parallel[0])
    target = TARGET_EFFICIENCY * n
    ratios = _ratios(results)
    lines = [f"thread scaling, {n} threads vs 1 (same run, alternating rounds, medians); target >= {target:.2f}x:"]
    under: List[str] = []
    for dtype in DTYPES:
        probe = ratios.get((PROBE, dtype, "fma"))
        if probe:
            lines.append(f"  {SHORT_DTYPE[dtype]}  FMA probe {1 / probe[0] / 1e9 * PROBE_FLOP:.0f} -> "
                         f"{1 / probe[1] / 1e9 * PROBE_FLOP:.0f} GFLOP/s: {probe[2]:.2f}x (the machine's ceiling)")
        for op in ("conv-fwd", "conv-bwd"):
            rows = {case: v for (case, dt, o), v in ratios.items() if dt == dtype and o == op and case != PROBE}
            if not rows:
                continue
            geo = math.exp(sum(math.log(v[2]) for v in rows.values()) / len(rows))
            worst = min(rows, key=lambda c: rows[c][2])
            low = sorted((c for c in rows if rows[c][2] < target), key=lambda c: rows[c][2])
            lines.append(f"  {SHORT_DTYPE[dtype]}  {op}  {len(rows)} layers: geometric mean {geo:.2f}x, worst "
                         f"{rows[worst][2]:.2f}x ({worst}), {len(low)} under {target:.2f}x")
            under += [f"    {SHORT_DTYPE[dtype]} {op} {c}: {rows[c][0] * 1e3:.2f} -> {rows[c][1] * 1e3:.2f} ms, "
                      f"{rows[c][2]:.2f}x" for c in low]
    if under:
        lines += ["  under the target:"] + under
    return "\n".join(lines)
