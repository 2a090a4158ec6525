"""``fastconv-bench --suite dezero``: DeZero's own conv2d and pooling against the same calls with
``fastconv.dezero.install()`` in force, forward + backward through DeZero's graph.

Each row times ``y = F.conv2d(x, W, b, stride, pad)`` (or ``F.pooling(x, k, k)``) and
``y.backward()`` from a fixed output gradient, as a DeZero training step calls them, with
DeZero's functions (backend "dezero") and with fastconv's installed (backend "native"), in
alternating rounds. The layers are those of a DeZero MNIST CNN at batch 100 and a VGG-style
middle layer. Needs ``pip install 'fastconv[dezero]'``.
"""
from __future__ import annotations

import math
from typing import Callable, List, Sequence

import numpy as np

from .cases import DTYPES, SHORT_DTYPE, TOLERANCE, Case
from .timing import Result, Settings, split_rounds, time_callable

OWN, INSTALLED = "dezero", "native"

# (name, kind, x shape, kernel, filters, stride, pad, source)
LAYERS = [
    ("dezero-cnn-conv1", "conv", (100, 1, 28, 28), 3, 32, 1, 1, "DeZero MNIST CNN, conv 1->32 3x3 pad 1, batch 100"),
    ("dezero-cnn-pool1", "pool", (100, 32, 28, 28), 2, 0, 2, 0, "its 2x2 max pooling"),
    ("dezero-cnn-conv2", "conv", (100, 32, 14, 14), 3, 64, 1, 1, "conv 32->64 3x3 pad 1 on 14x14"),
    ("dezero-cnn-pool2", "pool", (100, 64, 14, 14), 2, 0, 2, 0, "its 2x2 max pooling"),
    ("dezero-vgg-conv", "conv", (8, 64, 56, 56), 3, 64, 1, 1, "a 3x3 64->64 layer of dezero.models.VGG16 on 56x56, batch 8"),
]


def cases() -> List[Case]:
    return [Case(name, kind, shape, k, k, FN=fn, stride=s, pad=p, smoke=name.endswith("1"), source=src)
            for name, kind, shape, k, fn, s, p, src in LAYERS]


OP = {"conv": "conv-fwd+bwd", "pool": "pool-fwd+bwd"}

# DeZero's own conv2d takes ~1 s on a 14x14x32 batch of 100: few samples of the slow rows.
DEZERO_FULL = Settings(rounds=2, warmup_s=0.1, budget_s=0.5, min_reps=3, max_reps=40, slow_call_s=0.2,
                       min_reps_slow=2)
DEZERO_QUICK = Settings(rounds=1, warmup_s=0.02, budget_s=0.1, min_reps=2, max_reps=10, slow_call_s=0.05,
                        min_reps_slow=1)


def _import_dezero():
    # DeZero 0.0.13 evaluates np.int (removed in NumPy 1.24) at import; restore it for that import.
    had = hasattr(np, "int")
    if not had:
        np.int = int  # type: ignore[attr-defined]
    try:
        import dezero
        import dezero.functions as F

        from fastconv import dezero as fdz  # fastconv's own module, not this one
    except ImportError as exc:
        raise SystemExit(f"fastconv-bench --suite dezero needs DeZero: pip install 'fastconv[dezero]' ({exc})") from exc
    finally:
        if not had:
            del np.int  # type: ignore[attr-defined]
    return dezero, F, fdz


def _step(case: Case, dtype: str) -> Callable[[], tuple]:
    """One forward + backward through DeZero's graph; returns (y, grads) for the check."""
    dezero, F, _ = _import_dezero()
    rng = np.random.default_rng(0)
    x = rng.standard_normal(case.x_shape).astype(dtype)
    gy = rng.standard_normal(case.out_shape).astype(dtype)
    if case.kind == "conv":
        W = (rng.standard_normal(case.w_shape) * 0.1).astype(dtype)
        b = rng.standard_normal(case.FN).astype(dtype)

    def step():
        xv = dezero.Variable(x)
        if case.kind == "conv":
            Wv, bv = dezero.Variable(W), dezero.Variable(b)
            y = F.conv2d(xv, Wv, bv, case.stride, case.pad)
            grads = (xv, Wv, bv)
        else:
            y = F.pooling(xv, case.kh, case.stride, case.pad)
            grads = (xv,)
        y.grad = dezero.Variable(gy)
        y.backward()
        return (y.data,) + tuple(v.grad.data for v in grads)
    return step


def _max_rel_err(got: tuple, ref: tuple) -> float:
    return max(float(np.abs(g.astype(np.float64) - r).max() / max(np.abs(r).max(), 1e-300))
               for g, r in zip(got, ref))


def run(cases: Sequence[Case], dtypes: Sequence[str], backends: Sequence[str], settings: Settings,
        progress: Callable[[str], None] = lambda msg: None, numpy_for=None) -> List[Result]:
    """DeZero's own and installed, alternating rounds per row (``backends`` is not used)."""
    _, _, fdz = _import_dezero()
    rounds, per_round = split_rounds(settings)
    results: List[Result] = []
    rows = [(c, dt) for c in cases for dt in dtypes]
    for i, (case, dtype) in enumerate(rows, 1):
        op = OP[case.kind]
        flop = 3 * case.conv_flop() if case.kind == "conv" else 0
        row = {be: Result(case.name, op, dtype, be, flop=flop) for be in (OWN, INSTALLED)}
        step = _step(case, dtype)
        reference = None
        try:
            for r in range(rounds):
                for be in (OWN, INSTALLED):
                    progress(f"[{i}/{len(rows)}] {case.name} {dtype} {be} (round {r + 1}/{rounds})")
                    (fdz.install if be == INSTALLED else fdz.uninstall)()
                    samples, first, calls = time_callable(step, per_round)
                    row[be].samples_s += samples
                    row[be].warmup_calls += calls
                    if be == OWN:
                        reference = reference or tuple(a.astype(np.float64) for a in first)
                    else:
                        row[be].max_rel_err = max(row[be].max_rel_err, _max_rel_err(first, reference))
        finally:
            fdz.uninstall()
        row[OWN].check = "ref"
        row[INSTALLED].check = "ok" if row[INSTALLED].max_rel_err <= TOLERANCE[dtype] else "FAIL"
        results += [row[OWN], row[INSTALLED]]
    return results


TARGET = 5.0  # the issue's: installed >= 5x DeZero's own in float32


def summary(results: Sequence[Result], cases: Sequence[Case]) -> str:
    """Per row and dtype, installed vs DeZero's own; geometric mean and worst row."""
    lines = ["fastconv.dezero.install() vs DeZero's own functions (forward + backward, same run, medians):"]
    for dtype in DTYPES:
        ratios = []
        for r in results:
            if r.dtype == dtype and r.backend == INSTALLED and r.samples_s:
                own = next(o for o in results if (o.case, o.dtype, o.backend) == (r.case, dtype, OWN))
                ratios.append((own.median_s / r.median_s, r.case, own.median_s, r.median_s))
        if not ratios:
            continue
        for ratio, name, own_s, ours_s in ratios:
            lines.append(f"  {SHORT_DTYPE[dtype]}  {name:<18} DeZero {own_s * 1e3:8.2f} ms   installed "
                         f"{ours_s * 1e3:7.2f} ms   {ratio:6.1f}x")
        geo = math.exp(sum(math.log(r[0]) for r in ratios) / len(ratios))
        worst = min(ratios)
        target = f"  (target >= {TARGET:g}x: {'met' if geo >= TARGET else 'missed'})" if dtype == "float32" else ""
        lines.append(f"  {SHORT_DTYPE[dtype]}  geometric mean {geo:.1f}x, worst {worst[0]:.1f}x ({worst[1]})"
                     f"{target}")
    return "\n".join(lines)
