"""Timing: how long to warm up and time (:class:`Settings`), one callable's samples
(:func:`time_callable`), the thread counts of a run (:func:`thread_settings`), and a run of the
case table (:func:`run`): every (case, dtype, op, backend) timed in alternating rounds, checked
against the NumPy reference, into :class:`Result` rows."""
from __future__ import annotations

import contextlib
import dataclasses
import gc
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterator, List, Sequence, Tuple

import numpy as np

import fastconv

from . import ceilings
from .cases import BACKEND_ORDER, SHORT_DTYPE, Case, Workload
from .ceilings import _megabytes


@dataclass(frozen=True)
class Settings:
    """How long to warm up and time each (case, dtype, op, backend)."""

    rounds: int = 3            # alternate the backends this many times; each round below
    warmup_s: float = 0.25     # run the function this long before timing (at least once)
    budget_s: float = 0.5      # aim for this much timed work, over all rounds ...
    min_reps: int = 5          # ... but at least this many samples
    max_reps: int = 200
    slow_call_s: float = math.inf  # calls slower than this need only min_reps_slow samples
    min_reps_slow: int = 5
    peak_s: float = 0.2        # duration of each in-process ceiling measurement
    copy_s: float = 0.05       # duration of each pooling row's copy-ceiling measurement


NORMAL = Settings()
QUICK = Settings(rounds=1, warmup_s=0.05, budget_s=0.12, min_reps=3, max_reps=30,
                 slow_call_s=0.08, min_reps_slow=1, peak_s=0.1, copy_s=0.03)


def warm_up(fn: Callable[[], Any], seconds: float) -> Tuple[Any, int, float]:
    """Call ``fn`` at least once and until ``seconds`` have passed.

    Returns (result of the first call, number of calls, mean seconds per call).
    """
    t0 = time.perf_counter()
    first = fn()
    calls = 1
    while time.perf_counter() - t0 < seconds:
        fn()
        calls += 1
    return first, calls, (time.perf_counter() - t0) / calls


def time_callable(fn: Callable[[], Any], settings: Settings = NORMAL) -> Tuple[List[float], Any, int]:
    """Warm ``fn`` up, then time single calls. Returns (samples in s, first result, warm-up calls)."""
    first, calls, per_call = warm_up(fn, settings.warmup_s)
    low = settings.min_reps_slow if per_call > settings.slow_call_s else settings.min_reps
    reps = max(low, min(settings.max_reps, math.ceil(settings.budget_s / max(per_call, 1e-9))))
    samples = []
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for _ in range(reps):
            t = time.perf_counter()
            fn()
            samples.append(time.perf_counter() - t)
    finally:
        if gc_was_enabled:
            gc.enable()
    return samples, first, calls


@contextlib.contextmanager
def thread_settings(n: int, backends: Sequence[str]) -> Iterator[Dict[str, Any]]:
    """Run fastconv, PyTorch (when in ``backends``) and, with threadpoolctl, NumPy's BLAS on
    ``n`` threads; restore the previous counts on exit. Yields what was set, for the report."""
    info: Dict[str, Any] = {"native": n}
    with contextlib.ExitStack() as restore:
        restore.callback(fastconv.set_num_threads, fastconv.get_num_threads())
        fastconv.set_num_threads(n)
        if "torch" in backends:
            import torch

            restore.callback(torch.set_num_threads, torch.get_num_threads())
            torch.set_num_threads(n)
            info["torch"] = n
        try:
            from threadpoolctl import threadpool_limits
        except ImportError:
            info["numpy_blas"] = "not controlled (threadpoolctl is not installed)"
        else:
            restore.enter_context(threadpool_limits(limits=n, user_api="blas"))
            info["numpy_blas"] = n
        yield info


@dataclass
class Result:
    """Figures of one (case, dtype, op, backend)."""

    case: str
    op: str
    dtype: str
    backend: str
    samples_s: List[float] = field(default_factory=list)
    warmup_calls: int = 0
    flop: int = 0
    bytes: int = 0
    copy_GBps: float = 0.0  # pooling: same-run copy bandwidth of a working set of ``bytes``
    check: str = ""         # "ref" (the NumPy reference itself), "ok", "FAIL" or "ERROR"
    max_rel_err: float = 0.0
    message: str = ""

    @property
    def median_s(self) -> float:
        return float(np.median(self.samples_s)) if self.samples_s else math.nan

    @property
    def failed(self) -> bool:
        return self.check in ("FAIL", "ERROR")


def _median_of(results: Sequence[Result], case: str, dtype: str, op: str, backend: str) -> float:
    for r in results:
        if (r.case, r.dtype, r.op, r.backend) == (case, dtype, op, backend) and r.samples_s:
            return r.median_s
    return math.nan


def split_rounds(settings: Settings) -> Tuple[int, Settings]:
    """The number of alternating rounds, and the settings of each: a share of the budget."""
    rounds = max(settings.rounds, 1)
    return rounds, dataclasses.replace(settings, warmup_s=settings.warmup_s / rounds ** 0.5,
                                       budget_s=settings.budget_s / rounds,
                                       min_reps=max(1, math.ceil(settings.min_reps / rounds)),
                                       max_reps=max(1, math.ceil(settings.max_reps / rounds)),
                                       min_reps_slow=max(1, math.ceil(settings.min_reps_slow / rounds)))


def run(cases: Sequence[Case], dtypes: Sequence[str], backends: Sequence[str], settings: Settings,
        progress: Callable[[str], None] = lambda msg: None,
        numpy_for: Callable[[Case], bool] = lambda case: True) -> List[Result]:
    """Time every (case, dtype, op, backend); NumPy runs first and is the reference.

    The backends of one (case, dtype, op) are timed in ``settings.rounds`` alternating rounds,
    each with its own warm-up and a share of the budget; a backend's samples are pooled. Cases
    for which ``numpy_for`` is false skip the NumPy backend; PyTorch, when timed, is their
    reference instead.

    A pooling row's ceiling (``Result.copy_GBps``) is the copy bandwidth of a working set of its
    byte count (:func:`measure_copy_ceiling`), measured right before and right after the row is
    timed (the after of one row is the before of the next of the same size); the higher is kept.
    """
    backends = sorted(backends, key=BACKEND_ORDER.index)
    rows = [(c, dt, op) for c in cases for dt in dtypes for op in c.ops]
    rounds, per_round = split_rounds(settings)
    total = len(rows) * len(backends) * rounds
    results: List[Result] = []
    workload = None
    step = 0
    last_copy = (0, 0.0)  # (bytes, GB/s) measured after the previous pooling row

    def copy_ceiling(nbytes: int) -> float:
        return ceilings.measure_copy_ceiling(nbytes, fastconv.get_num_threads(), settings.copy_s)

    for case, dtype, op in rows:
        if workload is None or (workload.case, workload.dtype) != (case, dtype):
            workload = None
            gc.collect()
            workload = Workload(case, dtype)
        item = np.dtype(dtype).itemsize
        row_backends = backends if numpy_for(case) else sorted((b for b in backends if b != "numpy"),
                                                               key=lambda b: b != "torch")
        if not row_backends:  # only numpy asked for, on a layer it is not timed on
            continue
        reference = row_backends[0] if row_backends[0] in ("numpy", "torch") else None
        row = {be: Result(case.name, op, dtype, be, flop=case.flop(op), bytes=case.bytes_moved(op, item))
               for be in row_backends}
        fn = workload.fn(op)
        ref_result = None
        nbytes = case.bytes_moved(op, item)
        if nbytes:
            progress(f"copy bandwidth of a {_megabytes(nbytes)} MB working set (the ceiling of {case.name} "
                     f"{SHORT_DTYPE[dtype]} {op}) ...")
            before = last_copy[1] if last_copy[0] == nbytes else copy_ceiling(nbytes)
        for r in range(rounds):
            for backend in row_backends:
                step += 1
                res = row[backend]
                if res.check == "ERROR":  # failed in an earlier round: reported once
                    continue
                progress(f"[{step}/{total}] {case.name} {SHORT_DTYPE[dtype]} {op} {backend}"
                         + (f" (round {r + 1}/{rounds})" if rounds > 1 else "") + " ...")
                try:
                    with fastconv.use_backend(backend):
                        samples, first, calls = time_callable(fn, per_round)
                    res.samples_s += samples
                    res.warmup_calls += calls
                    if r == 0:  # check the first result only
                        if backend == "numpy":
                            workload.offer_reference(op, first)
                            res.check = "ref"
                        elif backend == reference:  # torch, where NumPy would take minutes
                            ref_result, res.check = first, "ref"
                        elif reference is None:
                            res.check = "unchecked"
                        else:
                            chk = workload.check(op, first, ref=ref_result)
                            res.check, res.max_rel_err, res.message = (("ok" if chk.ok else "FAIL"),
                                                                       chk.max_rel_err, chk.message)
                    del first
                except Exception as exc:  # report it in the table and carry on with the others
                    res.check, res.message = "ERROR", f"{type(exc).__name__}: {exc}"
                    res.samples_s = []
        if nbytes:
            last_copy = (nbytes, copy_ceiling(nbytes))
            for res in row.values():
                res.copy_GBps = max(before, last_copy[1])
        results.extend(row.values())
    return results
