"""``fastconv-bench``: time every backend on the book's and common CNN layer shapes.

Each case runs through the public functional API (``fastconv.conv2d``, ``conv2d_backward``,
``max_pool2d``, ``max_pool2d_backward``, the drop-in layers for the training step) under
``fastconv.use_backend(name)``, so the native, NumPy and PyTorch backends are timed by the
same harness. The method follows ``PERF.md``:

* fresh random inputs (standard normal, never zeros), made once per case and dtype;
* every timed function is warmed up for ~0.25 s first (OpenBLAS and PyTorch worker threads
  keep spinning for a while after each call and slow whatever runs next);
* medians over repeats, taken in rounds that alternate the backends (numpy, native, torch,
  numpy, ...), so a load change on a shared machine hits every backend of a row alike;
* ratios (vs NumPy, vs PyTorch, vs the FMA peak and, for pooling, vs the copy bandwidth of a
  working set of the same size, both measured in the same process) rather than absolute times;
* every benchmarked result is checked once against the NumPy backend's result.

``python -m fastconv.bench --help`` lists the options. The case table (:data:`CASES`) and the
:class:`Workload` helper are shared with the pytest-benchmark suite in ``benchmarks/``.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import fnmatch
import gc
import json
import math
import os
import platform
import sys
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

import fastconv
from fastconv import _config, _core, bench_blas, bench_busy, bench_dezero, bench_networks
from fastconv.bench_console import Console
from fastconv import functional as F
from fastconv import layers as L

__all__ = [
    "Case", "CASES", "CASES_BY_NAME", "OPS", "DTYPES", "Workload", "SimpleConvNetStep",
    "Settings", "NORMAL", "QUICK", "warm_up", "time_callable", "measure_peaks", "select_cases",
    "measure_copy_ceiling", "thread_settings", "Suite", "SUITES", "main",
]

DTYPES = ("float32", "float64")
SHORT_DTYPE = {"float32": "f32", "float64": "f64"}
# Backends in timing order: NumPy first, so its result can serve as the reference.
BACKEND_ORDER = ("numpy", "native", "torch")
OPS = ("conv-fwd", "conv-bwd", "pool-fwd", "pool-bwd", "train-step")

# Checks: max |result - numpy| over max |numpy| (normwise) must stay below this.
TOLERANCE = {"float32": 1e-4, "float64": 1e-10}
# float32 training step: a ReLU input or a pooling window within rounding of a tie (rare among
# the 1.7M activations, but possible) can go the other way than in the NumPy reference; such a
# flip moves one of the ~7000 terms summed into a dW1 entry, up to ~1e-2 of max |dW1|.
TRAIN_TOLERANCE = {"float32": 2e-2, "float64": 1e-9}


# --- the case table --------------------------------------------------------------

@dataclass(frozen=True)
class Case:
    """One benchmark shape. ``kind`` is "conv", "pool" or "train" (the book's SimpleConvNet).

    For "conv" and "train", (FN, kh, kw, stride, pad) is the convolution; for "pool" it is the
    max-pooling window (FN unused). ``smoke`` marks the cases small enough for the pytest
    smoke run (``pytest benchmarks --benchmark-disable``).
    """

    name: str
    kind: str
    x_shape: Tuple[int, int, int, int]
    kh: int
    kw: int
    FN: int = 0
    stride: int = 1
    pad: int = 0
    smoke: bool = False
    source: str = ""

    @property
    def ops(self) -> Tuple[str, ...]:
        return {"conv": ("conv-fwd", "conv-bwd"), "pool": ("pool-fwd", "pool-bwd"),
                "train": ("train-step",)}[self.kind]

    @property
    def out_hw(self) -> Tuple[int, int]:
        H, W = self.x_shape[2:]
        return ((H + 2 * self.pad - self.kh) // self.stride + 1,
                (W + 2 * self.pad - self.kw) // self.stride + 1)

    @property
    def w_shape(self) -> Tuple[int, int, int, int]:
        return (self.FN, self.x_shape[1], self.kh, self.kw)

    @property
    def out_shape(self) -> Tuple[int, int, int, int]:
        N, C = self.x_shape[:2]
        return (N, C if self.kind == "pool" else self.FN) + self.out_hw

    def conv_flop(self) -> int:
        """2*N*OH*OW*FN*C*kh*kw: the multiply-adds of one convolution forward."""
        N, C = self.x_shape[:2]
        OH, OW = self.out_hw
        return 2 * N * OH * OW * self.FN * C * self.kh * self.kw

    def flop(self, op: str) -> int:
        """Floating-point work of ``op`` (0 for pooling, which is memory-bound)."""
        if op == "conv-fwd":
            return self.conv_flop()
        if op == "conv-bwd":
            return 2 * self.conv_flop()
        if op == "train-step":
            return SimpleConvNetStep.flop(self)
        return 0

    def bytes_moved(self, op: str, itemsize: int) -> int:
        """Bytes a pooling op must read + write at least, each array once; 0 for the others.

        pool-fwd (``max_pool2d(..., return_indices=True)``): read x, write out and its int64
        argmax indices. pool-bwd (``max_pool2d_backward(..., indices=...)``): read dout and the
        indices, write dx. Overlapping windows (3x3 stride 2) re-read x's rows from cache, not
        from memory, so they are not counted again.
        """
        n_in = int(np.prod(self.x_shape))
        n_out = int(np.prod(self.out_shape))
        if op == "pool-fwd":  # read x; write out and indices
            return n_in * itemsize + n_out * (itemsize + 8)
        if op == "pool-bwd":  # read dout and indices; write dx
            return n_out * (itemsize + 8) + n_in * itemsize
        return 0

    def describe(self) -> str:
        shape = "(" + ",".join(map(str, self.x_shape)) + ")"
        geo = f"s{self.stride}, p{self.pad}"
        if self.kind == "conv":
            return f"{shape} -> {self.FN}x{self.kh}x{self.kw}, {geo}"
        if self.kind == "pool":
            return f"{shape}, max-pool {self.kh}x{self.kw} {geo}"
        return (f"{shape} -> conv {self.FN}x{self.kh}x{self.kw} -> relu -> pool 2x2 s2 -> affine "
                f"{SimpleConvNetStep.HIDDEN} -> relu -> affine {SimpleConvNetStep.CLASSES} -> softmax loss")


CASES: Tuple[Case, ...] = (
    Case("dlfs-simpleconvnet", "conv", (100, 1, 28, 28), 5, 5, FN=30, smoke=True,
         source="the book's ch07 SimpleConvNet conv layer"),
    Case("mnist-cnn-l2", "conv", (100, 32, 14, 14), 3, 3, FN=64, pad=1, smoke=True,
         source="second conv of a small MNIST CNN"),
    Case("vgg-3x3-mid", "conv", (16, 128, 28, 28), 3, 3, FN=128, pad=1,
         source="a VGG middle block"),
    Case("resnet-stem-7x7s2", "conv", (8, 3, 224, 224), 7, 7, FN=64, stride=2, pad=3,
         source="ResNet stem"),
    Case("single-64x56", "conv", (1, 64, 56, 56), 3, 3, FN=64, pad=1, smoke=True,
         source="batch-1 inference, ResNet stage 1"),
    Case("dlfs-pool2x2", "pool", (100, 30, 24, 24), 2, 2, stride=2, smoke=True,
         source="the book's SimpleConvNet pooling"),
    Case("resnet-pool3x3s2", "pool", (16, 64, 112, 112), 3, 3, stride=2, pad=1,
         source="ResNet stem pooling (PyTorch-style padding)"),
    Case("simpleconvnet-train", "train", (100, 1, 28, 28), 5, 5, FN=30, smoke=True,
         source="the book's SimpleConvNet, one forward + backward at batch 100"),
)
CASES_BY_NAME: Dict[str, Case] = {c.name: c for c in CASES}
assert len(CASES_BY_NAME) == len(CASES)


# --- the book's SimpleConvNet training step ----------------------------------------

class SimpleConvNetStep:
    """One training step (forward + backward, no update) of the book's ch07 SimpleConvNet:
    Convolution -> Relu -> Pooling(2, 2, stride 2) -> Affine -> Relu -> Affine -> SoftmaxWithLoss.

    The images are float32, as the book's ``load_mnist(normalize=True)`` returns them; the
    weights have the step's dtype (the book's ``np.random.randn`` gives float64), which is the
    dtype everything after the first convolution computes in.

    Every layer is fastconv's drop-in (``fastconv.layers``, on the current backend). With
    ``numpy_affine=True`` the Affine layers and the loss are the book's NumPy code instead: the
    step then calls NumPy's BLAS between fastconv calls, which is what the import-order
    comparison (``fastconv.bench_blas``) times. Calling the object returns ``(loss, grads)``,
    grads keyed W1, b1, ..., b3.
    """

    HIDDEN = 100
    CLASSES = 10
    POOL = 2

    def __init__(self, case: Case, dtype, rng: np.random.Generator, weight_init_std: float = 0.01,
                 numpy_affine: bool = False):
        dt = np.dtype(dtype)
        N = case.x_shape[0]
        OH, OW = case.out_hw
        pooled = case.FN * (OH // self.POOL) * (OW // self.POOL)

        def randn(*shape):
            return rng.standard_normal(shape).astype(dt)

        self.x = rng.standard_normal(case.x_shape).astype(np.float32)
        self.t = rng.integers(0, self.CLASSES, size=N)
        self.params = {
            "W1": weight_init_std * randn(*case.w_shape), "b1": 0.1 * randn(case.FN),
            "W2": weight_init_std * randn(pooled, self.HIDDEN), "b2": 0.1 * randn(self.HIDDEN),
            "W3": weight_init_std * randn(self.HIDDEN, self.CLASSES), "b3": 0.1 * randn(self.CLASSES),
        }
        p = self.params
        self.numpy_affine = numpy_affine
        self.conv = L.Convolution(p["W1"], p["b1"], case.stride, case.pad)
        self.relu1 = L.Relu()
        self.pool = L.Pooling(self.POOL, self.POOL, stride=self.POOL)
        self.affine1 = L.Affine(p["W2"], p["b2"])
        self.relu2 = L.Relu()
        self.affine2 = L.Affine(p["W3"], p["b3"])
        self.loss_layer = L.SoftmaxWithLoss()

    @classmethod
    def flop(cls, case: Case) -> int:
        """Convolution forward + backward and the two Affine layers (each 3 GEMMs)."""
        N = case.x_shape[0]
        OH, OW = case.out_hw
        pooled = case.FN * (OH // cls.POOL) * (OW // cls.POOL)
        affine = 2 * N * (pooled * cls.HIDDEN + cls.HIDDEN * cls.CLASSES)
        return 3 * case.conv_flop() + 3 * affine

    def __call__(self):
        if self.numpy_affine:
            return self._step_with_numpy_affine()
        h = self.pool.forward(self.relu1.forward(self.conv.forward(self.x)))
        score = self.affine2.forward(self.relu2.forward(self.affine1.forward(h)))
        loss = self.loss_layer.forward(score, self.t)
        dr = self.relu2.backward(self.affine2.backward(self.loss_layer.backward()))
        self.conv.backward(self.relu1.backward(self.pool.backward(self.affine1.backward(dr))))
        grads = {"W1": self.conv.dW, "b1": self.conv.db, "W2": self.affine1.dW, "b2": self.affine1.db,
                 "W3": self.affine2.dW, "b3": self.affine2.db}
        return float(loss), grads

    def _step_with_numpy_affine(self):
        p, N = self.params, self.x.shape[0]
        h = self.pool.forward(self.relu1.forward(self.conv.forward(self.x)))
        flat = h.reshape(N, -1)
        r = self.relu2.forward(flat @ p["W2"] + p["b2"])
        score = r @ p["W3"] + p["b3"]
        e = np.exp(score - score.max(axis=1, keepdims=True))
        y = e / e.sum(axis=1, keepdims=True)
        loss = -np.sum(np.log(y[np.arange(N), self.t] + 1e-7)) / N
        dscore = y.copy()
        dscore[np.arange(N), self.t] -= 1
        dscore /= N
        grads = {"W3": r.T @ dscore, "b3": dscore.sum(axis=0)}
        dr = self.relu2.backward(dscore @ p["W3"].T)
        grads["W2"], grads["b2"] = flat.T @ dr, dr.sum(axis=0)
        dh = (dr @ p["W2"].T).reshape(h.shape)
        self.conv.backward(self.relu1.backward(self.pool.backward(dh)))
        grads["W1"], grads["b1"] = self.conv.dW, self.conv.db
        return float(loss), grads


# --- inputs, calls, reference results ---------------------------------------------------

@dataclass
class Check:
    """Outcome of comparing one result with the NumPy reference."""

    ok: bool
    max_rel_err: float = 0.0  # max |result - ref| / max |ref|, worst over the outputs
    message: str = ""


def _compare(what: str, got, ref, tol: float) -> Tuple[float, Optional[str]]:
    got, ref = np.asarray(got), np.asarray(ref)
    if got.shape != ref.shape:
        return math.inf, f"{what}: shape {got.shape}, expected {ref.shape}"
    if got.dtype != ref.dtype:
        return math.inf, f"{what}: dtype {got.dtype}, expected {ref.dtype}"
    if ref.size == 0:
        return 0.0, None
    if not np.isfinite(got).all():
        return math.inf, f"{what}: {int(np.size(got) - np.isfinite(got).sum())} non-finite values"
    scale = float(np.max(np.abs(ref)))
    err = float(np.max(np.abs(got.astype(np.float64) - ref)))
    rel = err / scale if scale > 0 else err
    if not rel <= tol:
        worst = np.unravel_index(int(np.argmax(np.abs(got.astype(np.float64) - ref))), ref.shape)
        return rel, (f"{what}: max |error| {err:.3g} at {tuple(int(i) for i in worst)} is {rel:.2g} of "
                     f"max |ref| {scale:.3g} (tolerance {tol:g})")
    return rel, None


class Workload:
    """One case in one dtype: random inputs (made once), the callable to time for each op,
    and the NumPy backend's results (computed once, on demand) to check the others against.

    ``fn(op)`` returns a zero-argument callable that runs on the *current* backend: wrap the
    timing in ``fastconv.use_backend(name)``.
    """

    def __init__(self, case: Case, dtype: str, seed: int = 0):
        self.case = case
        self.dtype = np.dtype(dtype).name
        dt = np.dtype(dtype)
        rng = np.random.default_rng([seed, zlib.crc32(case.name.encode()), dt.itemsize])
        c = case
        if c.kind == "conv":
            self.x = rng.standard_normal(c.x_shape, dtype=dt)
            self.W = rng.standard_normal(c.w_shape, dtype=dt)
            self.b = rng.standard_normal(c.FN, dtype=dt)
            self.dout = rng.standard_normal(c.out_shape, dtype=dt)
        elif c.kind == "pool":
            self.x = rng.standard_normal(c.x_shape, dtype=dt)
            self.dout = rng.standard_normal(c.out_shape, dtype=dt)
        else:
            self.step = SimpleConvNetStep(c, dt, rng)
        self._ref: Dict[str, Any] = {}

    def fn(self, op: str) -> Callable[[], Any]:
        c = self.case
        if op not in c.ops:
            raise ValueError(f"case {c.name} ({c.kind}) has no op {op!r}; it has {c.ops}")
        if op == "conv-fwd":
            return lambda: F.conv2d(self.x, self.W, self.b, c.stride, c.pad)
        if op == "conv-bwd":
            return lambda: F.conv2d_backward(self.dout, self.x, self.W, c.stride, c.pad)
        if op == "pool-fwd":
            return lambda: F.max_pool2d(self.x, c.kh, c.kw, c.stride, c.pad, return_indices=True)
        if op == "pool-bwd":
            # every backend scatters through the same (reference) argmax indices
            idx = self.reference("pool-fwd")[1]
            return lambda: F.max_pool2d_backward(self.dout, c.x_shape, c.kh, c.kw, c.stride, c.pad, indices=idx)
        return self.step

    def reference(self, op: str):
        """The NumPy backend's result of ``op`` (computed on first use)."""
        if op not in self._ref:
            fn = self.fn(op)
            with fastconv.use_backend("numpy"):
                self._ref[op] = fn()
        return self._ref[op]

    def offer_reference(self, op: str, result) -> None:
        """Keep ``result`` (just computed by the NumPy backend) as the reference."""
        self._ref.setdefault(op, result)

    def check(self, op: str, result, ref=None) -> Check:
        """Compare ``result`` of ``op`` with the NumPy backend's (or with ``ref``, another
        backend's result, when the NumPy backend's own result is the one being checked)."""
        ref = self.reference(op) if ref is None else ref
        tol = TOLERANCE[self.dtype]
        if op == "conv-fwd" or op == "pool-bwd":
            pairs = [("out" if op == "conv-fwd" else "dx", result, ref)]
        elif op == "conv-bwd":
            pairs = list(zip(("dx", "dW", "db"), result, ref))
        elif op == "pool-fwd":
            return self._check_pool_forward(result, ref)
        else:
            tol = TRAIN_TOLERANCE[self.dtype]
            (loss, grads), (ref_loss, ref_grads) = result, ref
            pairs = [("loss", np.float64(loss), np.float64(ref_loss))]
            pairs += [(k, grads[k], ref_grads[k]) for k in ref_grads]
        worst, problems = 0.0, []
        for what, got, want in pairs:
            rel, problem = _compare(what, got, want, tol)
            worst = max(worst, rel)
            if problem:
                problems.append(problem)
        return Check(not problems, worst, "; ".join(problems))

    def _check_pool_forward(self, result, ref) -> Check:
        (out, idx), (ref_out, _) = result, ref
        rel, problem = _compare("out", out, ref_out, 0.0)  # a max is exact
        if problem:
            return Check(False, rel, problem)
        idx = np.asarray(idx)
        N, C, H, W = self.case.x_shape
        if idx.shape != ref_out.shape or idx.dtype.kind not in "iu":
            return Check(False, math.inf,
                         f"indices: shape {idx.shape} dtype {idx.dtype}, expected {ref_out.shape} int64")
        if idx.size and (idx.min() < 0 or idx.max() >= H * W):
            return Check(False, math.inf, f"indices: outside [0, {H * W})")
        # An index is right when it points at the window's maximum (ties may resolve differently).
        picked = np.take_along_axis(self.x.reshape(N, C, -1), idx.reshape(N, C, -1), axis=2)
        wrong = int(np.count_nonzero(picked.reshape(ref_out.shape) != ref_out))
        if wrong:
            return Check(False, math.inf, f"indices: {wrong} of {idx.size} do not point at the window maximum")
        return Check(True, 0.0)


# --- timing --------------------------------------------------------------------------

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
# The networks suite times ~15x more rows: shorter budgets, two alternating rounds.
NETWORKS_FULL = Settings(rounds=2, warmup_s=0.1, budget_s=0.25, min_reps=3, max_reps=60, slow_call_s=0.1,
                         min_reps_slow=2, peak_s=0.2, copy_s=0.03)
NETWORKS_QUICK = Settings(rounds=1, warmup_s=0.02, budget_s=0.05, min_reps=2, max_reps=10, slow_call_s=0.03,
                          min_reps_slow=1, peak_s=0.1, copy_s=0.02)
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


def measure_copy_bandwidth(threads: int, seconds: float = 0.2, nbytes: int = 256 << 20) -> float:
    """GB/s (bytes read + written) of large ``np.copyto`` calls split over ``threads`` Python
    threads (NumPy releases the GIL while copying): the header's DRAM bandwidth. Pooling rows are
    measured against a copy of their own size (:func:`measure_copy_ceiling`)."""
    n = nbytes // 8
    src = np.random.default_rng(0).standard_normal(n)
    dst = np.empty_like(src)
    edges = np.linspace(0, n, threads + 1).astype(int)
    parts = [(src[a:b], dst[a:b]) for a, b in zip(edges[:-1], edges[1:])]

    def copy(part):
        np.copyto(part[1], part[0])

    best = 0.0
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(copy, parts))
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            t = time.perf_counter()
            list(pool.map(copy, parts))
            best = max(best, 2 * src.nbytes / (time.perf_counter() - t) / 1e9)
    return best


# Below this working set a copy split over Python threads costs more in hand-offs than it gains.
_COPY_SPLIT_MIN_BYTES = 1 << 20


def measure_copy_ceiling(nbytes: int, threads: int, seconds: float = 0.05, min_samples: int = 5) -> float:
    """GB/s (bytes read + written) of ``np.copyto`` over a working set of ``nbytes``: a source and
    a destination of ``nbytes / 2`` each, so one copy moves ``nbytes``, the same bytes as the
    pooling op it is the ceiling of, over a working set of the same size (in the same cache
    level, when it fits in one).

    Median of single timed copies (after one untimed copy that touches every page), for about
    ``seconds`` and at least ``min_samples``; on 1 thread and, from 1 MiB, split over ``threads``
    Python threads (NumPy releases the GIL while copying). The faster of the two is the ceiling.
    """
    half = max(nbytes // 2, 64)
    src = np.full(half, 1, dtype=np.uint8)  # written: never the shared zero page
    dst = np.empty_like(src)
    configs = [1] + ([threads] if threads > 1 and nbytes >= _COPY_SPLIT_MIN_BYTES else [])
    best = 0.0
    for n in configs:
        edges = np.linspace(0, half, n + 1).astype(int)
        parts = [(dst[a:b], src[a:b]) for a, b in zip(edges[:-1], edges[1:])]
        with contextlib.ExitStack() as stack:
            if n == 1:
                def copy():
                    np.copyto(dst, src)
            else:
                pool = stack.enter_context(ThreadPoolExecutor(n))

                def copy():
                    list(pool.map(lambda part: np.copyto(*part), parts))
            copy()
            samples: List[float] = []
            end = time.perf_counter() + seconds / len(configs)
            while len(samples) < min_samples or time.perf_counter() < end:
                t = time.perf_counter()
                copy()
                samples.append(time.perf_counter() - t)
        best = max(best, 2 * half / float(np.median(samples)) / 1e9)
    return best


def measure_peaks(seconds: float = 0.2) -> Dict[str, float]:
    """The machine's ceilings on fastconv's current thread count, measured now, in this process:
    FMA GFLOP/s for float32 and float64 (``_core.fma_peak_gflops``) and copy GB/s."""
    return {
        "float32": _core.fma_peak_gflops(False, seconds),
        "float64": _core.fma_peak_gflops(True, seconds),
        "copy_GBps": measure_copy_bandwidth(fastconv.get_num_threads(), seconds),
    }


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


# --- a run ---------------------------------------------------------------------------

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
        return measure_copy_ceiling(nbytes, fastconv.get_num_threads(), settings.copy_s)

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


# --- reporting ----------------------------------------------------------------------

def _median_of(results: Sequence[Result], case: str, dtype: str, op: str, backend: str) -> float:
    for r in results:
        if (r.case, r.dtype, r.op, r.backend) == (case, dtype, op, backend) and r.samples_s:
            return r.median_s
    return math.nan


def derived(r: Result, results: Sequence[Result], peaks: Dict[str, float]) -> Dict[str, float]:
    """Rates, fraction of the same-run ceiling and speed-ups of one result."""
    t = r.median_s
    d: Dict[str, float] = {"median_s": t}
    if r.flop:
        d["gflops"] = r.flop / t / 1e9
        d["pct_fma_peak"] = 100 * d["gflops"] / peaks[r.dtype]
    elif r.bytes:
        # the row's own copy ceiling; the header's large copy for a Result made without one
        d["gbps"] = r.bytes / t / 1e9
        d["copy_GBps"] = r.copy_GBps or peaks["copy_GBps"]
        d["pct_copy_bw"] = 100 * d["gbps"] / d["copy_GBps"]
    for other in ("numpy", "torch"):
        d[f"speedup_vs_{other}"] = _median_of(results, r.case, r.dtype, r.op, other) / t
    return d


def _megabytes(nbytes: int) -> str:
    mb = nbytes / 1e6
    return f"{mb:.0f}" if mb >= 100 else f"{mb:.3g}"


def _fmt(v: float, spec: str, suffix: str = "") -> str:
    return "-" if v is None or not math.isfinite(v) else format(v, spec) + suffix


def format_table(results: Sequence[Result], peaks: Dict[str, float]) -> str:
    """The results table: one row per backend, grouped by case / dtype / op."""
    head = ("case", "dtype", "op", "backend", "median ms", "rate", "% FMA peak", "% copy bw", "vs numpy", "vs torch",
            "check")
    rows: List[Tuple[str, ...]] = []
    prev: Tuple[Optional[str], ...] = (None, None, None)
    for r in results:
        key = (r.case, r.dtype, r.op)
        new_block = key[:2] != prev[:2]  # a new case or dtype: blank line, full label
        if new_block and prev[0] is not None:
            rows.append(("",) * len(head))
        label = (r.case if new_block else "", SHORT_DTYPE[r.dtype] if new_block else "",
                 r.op if key != prev else "")
        prev = key
        if not r.samples_s:
            rows.append(label + (r.backend,) + ("-",) * 7 + (r.check,))
            continue
        d = derived(r, results, peaks)
        rate = _fmt(d.get("gflops"), ".1f", " GF/s") if r.flop else _fmt(d.get("gbps"), ".1f", " GB/s")
        rows.append(label + (
            r.backend, _fmt(d["median_s"] * 1e3, ".3f"), rate,
            _fmt(d.get("pct_fma_peak", math.nan), ".1f", "%"), _fmt(d.get("pct_copy_bw", math.nan), ".1f", "%"),
            _fmt(d["speedup_vs_numpy"], ".2f", "x"), _fmt(d["speedup_vs_torch"], ".2f", "x"),
            f"ok {r.max_rel_err:.0e}" if r.check == "ok" and r.max_rel_err else r.check))
    widths = [max(len(row[i]) for row in rows + [head]) for i in range(len(head))]
    right = {4, 5, 6, 7, 8, 9}

    def line(row):
        return "  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))).rstrip()

    out = [line(head), "  ".join("-" * w for w in widths)]
    out += [line(row) for row in rows]
    return "\n".join(out)


LEGEND = (
    "rate: GFLOP/s for conv (forward 2*N*OH*OW*FN*C*kh*kw FLOP, backward twice that) and the training step\n"
    "      (its conv and affine GEMMs), GB/s of bytes read + written for pooling: fwd reads x and writes out and\n"
    "      the int64 indices, bwd reads dout and the indices and writes dx.\n"
    "% FMA peak (conv, train): of the FMA peak measured at the start of this run.\n"
    "% copy bw (pool, memory-bound): of np.copyto's bandwidth on a working set of the row's byte count, measured\n"
    "      right before and after the row (the higher of the two); above 100 % only by a read-heavier mix\n"
    "      than a copy's or by noise (benchmarks/README.md).\n"
    "vs numpy / vs torch: their median time / this row's (higher is faster). check: max |x - numpy| / max |numpy|.\n"
    "train-step: the book's SimpleConvNet on float32 images (as load_mnist gives them); f32 / f64 is the weights'\n"
    "      dtype (the book's np.random.randn weights are float64, so f64 is the book's own configuration)."
)


def machine_info() -> Dict[str, Any]:
    info: Dict[str, Any] = dict(_config.config())
    info["cpu_count"] = os.cpu_count()
    try:
        with open("/proc/cpuinfo") as f:
            info["cpu"] = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), "")
    except OSError:
        info["cpu"] = platform.processor()
    if hasattr(os, "getloadavg"):
        info["loadavg"] = os.getloadavg()
    if "torch" in info["backends"]:  # available_backends() has imported it
        import torch

        info["torch"] = torch.__version__
    return info


def header_lines(info: Dict[str, Any], threads: Dict[str, Any], peaks: Dict[str, float],
                 cpu_use: Optional[bench_busy.CpuUse] = None) -> List[str]:
    """The run's header; ``cpu_use`` (other processes' use, sampled just before) decides the
    busy warning, the load average where it is not given."""
    kernels = f"gemm f32 {info.get('gemm_f32')}, f64 {info.get('gemm_f64')}, selection {info.get('gemm_selection')}"
    lines = [
        f"fastconv {info['fastconv']}  ({info.get('compiler')}, {info.get('openmp')}; numpy {info['numpy']}"
        + (f", torch {info['torch']}" if "torch" in info else "") + ")",
        f"kernels: {kernels}; cpu isas {', '.join(info.get('cpu_isas', []))}",
        f"cpu: {info.get('cpu', '?')} x{info['cpu_count']}; "
        + (f"just before the run {cpu_use.describe()}; " if cpu_use and cpu_use.source != "load average" else "")
        + "load average " + " ".join(f"{v:.2f}" for v in info.get("loadavg", ()))
        + (" (decays over minutes: not the busy check)" if cpu_use and cpu_use.source != "load average" else ""),
        "threads: " + ", ".join(f"{k} {v}" for k, v in threads.items())
        + f"; numpy's BLAS spin: {info.get('blas_spin', '?')}",
        f"measured peaks (this run, {threads['native']} threads): FMA f32 {peaks['float32']:.1f} GFLOP/s, "
        f"f64 {peaks['float64']:.1f} GFLOP/s; large copy (256 MiB) {peaks['copy_GBps']:.1f} GB/s "
        "(pooling rows: a copy of their own size)",
    ]
    if cpu_use is None:
        cpu_use = bench_busy.CpuUse(info.get("loadavg", (0.0,))[0], info.get("cpu_count") or 1, 60.0, "load average")
    warning = bench_busy.busy_warning(cpu_use, threads["native"], "before the run")
    if warning:
        lines.append(warning)
    return lines


def copy_ceiling_lines(results: Sequence[Result], limit: int = 8) -> List[str]:
    """The pooling rows' copy ceilings: per (case, dtype), its working set and each op's ceiling."""
    seen: Dict[Tuple[str, str], Dict[str, Any]] = {}
    for r in results:
        if r.bytes and r.copy_GBps:
            entry = seen.setdefault((r.case, r.dtype), {"bytes": r.bytes, "ops": {}})
            entry["ops"][r.op.split("-")[-1]] = r.copy_GBps
    if not seen:
        return []
    if len(seen) > limit:
        values = [v for e in seen.values() for v in e["ops"].values()]
        return [f"copy ceilings of the {len(seen)} pooling working sets (np.copyto over the same byte count, this "
                f"run): {min(values):.1f} to {max(values):.1f} GB/s (--json has each row's)"]
    return ["copy ceilings (np.copyto over the same byte count, this run): " + "; ".join(
        f"{case} {SHORT_DTYPE[dt]} {_megabytes(e['bytes'])} MB: "
        + " / ".join(f"{v:.1f}" for v in e["ops"].values()) + f" GB/s ({' / '.join(e['ops'])})"
        for (case, dt), e in seen.items())]


def write_plot(path: str, results: Sequence[Result]) -> None:
    """Horizontal bars from 1x: speed-up of each non-NumPy backend over NumPy, one panel per dtype."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, NullFormatter

    dtypes = [dt for dt in DTYPES if any(r.dtype == dt for r in results)]
    others = [b for b in BACKEND_ORDER if b != "numpy" and any(r.backend == b for r in results)]
    groups = list(dict.fromkeys((r.case, r.op) for r in results))
    fig, axes = plt.subplots(1, len(dtypes), figsize=(6.5 * len(dtypes), 1.2 + 0.45 * len(groups)),
                             squeeze=False, sharey=True)
    height = 0.8 / max(1, len(others))
    for ax, dt in zip(axes[0], dtypes):
        for k, be in enumerate(others):
            for i, (case, op) in enumerate(groups):
                v = _median_of(results, case, dt, op, "numpy") / _median_of(results, case, dt, op, be)
                if not math.isfinite(v):
                    continue
                y = i + (k - (len(others) - 1) / 2) * height
                ax.barh(y, v - 1, left=1, height=height, color=f"C{k}", label=be if i == 0 else None)
                ax.text(v, y, f" {v:.2g}x ", va="center", ha="left" if v >= 1 else "right", fontsize=7)
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}x"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        lo, hi = ax.get_xlim()
        ax.set_xlim(min(lo, 0.5) / 1.5, max(hi, 2) * 1.5)
        ax.axvline(1.0, color="k", lw=0.8)
        ax.set_yticks(range(len(groups)))
        ax.set_yticklabels([f"{c} {op}" for c, op in groups], fontsize=8)
        ax.set_ylim(len(groups) - 0.5, -0.5)
        ax.set_xlabel("speed-up vs numpy (numpy time / backend time, log scale)")
        ax.set_title(f"{dt}, {fastconv.get_num_threads()} threads")
        ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_json(path: str, results: Sequence[Result], peaks, info, threads, settings: Settings, argv) -> None:
    doc = {
        "fastconv": fastconv.__version__,
        "argv": list(argv),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": info,
        "threads": threads,
        "peaks": {"fma_gflops_float32": peaks["float32"], "fma_gflops_float64": peaks["float64"],
                  "copy_GBps": peaks["copy_GBps"]},
        "settings": asdict(settings),
        "cases": {c.name: dict(asdict(c), describe=c.describe()) for c in CASES},
        "results": [dict(asdict(r), **(derived(r, results, peaks) if r.samples_s else {})) for r in results],
    }

    def clean(o):  # JSON has no inf/nan
        if isinstance(o, float) and not math.isfinite(o):
            return None
        if isinstance(o, dict):
            return {k: clean(v) for k, v in o.items()}
        if isinstance(o, (list, tuple)):
            return [clean(v) for v in o]
        return o

    with open(path, "w") as f:
        json.dump(clean(doc), f, indent=1)


# --- command line -------------------------------------------------------------------

def select_cases(spec: Optional[str]) -> List[Case]:
    """Cases named by a comma list of names or glob patterns (all cases for an empty spec)."""
    if not spec:
        return list(CASES)
    chosen: List[Case] = []
    for pattern in (p.strip() for p in spec.split(",") if p.strip()):
        hits = [c for c in CASES if fnmatch.fnmatchcase(c.name, pattern)]
        if not hits:
            raise ValueError(f"no case matches {pattern!r}; cases: {', '.join(CASES_BY_NAME)} (see --list)")
        chosen += [c for c in hits if c not in chosen]
    return [c for c in CASES if c in chosen]


def _select_backends(spec: Optional[str]) -> List[str]:
    available = fastconv.available_backends()
    if not spec:
        return [b for b in BACKEND_ORDER if b in available]
    names = [b.strip() for b in spec.split(",") if b.strip()]
    for b in names:
        if b not in BACKEND_ORDER:
            raise ValueError(f"unknown backend {b!r}; choose from {', '.join(BACKEND_ORDER)}")
        if b not in available:
            raise ValueError(f"backend {b!r} is not available here (available: {', '.join(available)})"
                             + ("; install PyTorch (pip install torch) for it" if b == "torch" else ""))
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
    settings, progress, numpy_for)`` returns the :class:`Result` rows of the table. A suite's
    module imports this one, so reach its functions through lambdas (``python -m fastconv.bench``
    runs this file as ``__main__``, and the suite module's ``from . import bench`` then finds
    this module half-initialised).
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


def _network_cases(args: argparse.Namespace) -> List[Case]:
    nets = [n.strip() for n in args.networks.split(",")] if args.networks else None
    return _matching(bench_networks.cases(nets, quick=args.quick), args.cases)


# DeZero's own conv2d takes ~1 s on a 14x14x32 batch of 100: few samples of the slow rows.
DEZERO_FULL = Settings(rounds=2, warmup_s=0.1, budget_s=0.5, min_reps=3, max_reps=40, slow_call_s=0.2,
                       min_reps_slow=2)
DEZERO_QUICK = Settings(rounds=1, warmup_s=0.02, budget_s=0.1, min_reps=2, max_reps=10, slow_call_s=0.05,
                        min_reps_slow=1)


SUITES: Dict[str, Suite] = {
    "cases": Suite("the tuned shape table (default)", lambda args: select_cases(args.cases)),
    "networks": Suite("every distinct conv and pooling layer of LeNet-5, AlexNet, ZFNet, VGG-16, ResNet-18, "
                      "ResNet-50's 1x1 layers, the book's networks and the seed's MNIST CNN, with per-network "
                      "summaries", _network_cases, NETWORKS_FULL, NETWORKS_QUICK,
                      numpy_for=lambda case: bench_networks.numpy_timed(case),
                      summary=lambda results, cases: bench_networks.summary(results, cases)),
    "dezero": Suite("DeZero's own conv2d and pooling vs the same calls after fastconv.dezero.install(), forward + "
                    "backward through DeZero's graph (needs fastconv[dezero])",
                    lambda args: _matching(bench_dezero.cases(), args.cases), DEZERO_FULL, DEZERO_QUICK,
                    summary=lambda results, cases: bench_dezero.summary(results, cases),
                    runner=lambda *args: bench_dezero.run(*args)),
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
    p.add_argument("--networks", metavar="NAMES", help="with --suite networks: a comma list of networks")
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
        busy_before = bench_busy.sample(BUSY_SAMPLE_S)
        console.progress("measuring the FMA peaks and the copy bandwidth ...")
        peaks = measure_peaks(settings.peak_s)
        info = machine_info()
        for line in header_lines(info, threads, peaks, busy_before):
            console.print(line)
        t0 = time.perf_counter()
        start = bench_busy.snapshot()
        results = (suite.runner or run)(cases, dtypes, backends, settings, console.progress, suite.numpy_for)
        busy_during = bench_busy.use_between(start, bench_busy.snapshot(), busy_before.cpus)
        elapsed = time.perf_counter() - t0
    console.print()
    console.print(format_table(results, peaks))
    console.print()
    console.print(LEGEND)
    for line in copy_ceiling_lines(results):
        console.print(line)
    console.print(f"{len(results)} timings in {elapsed:.0f} s ({'--quick' if args.quick else 'full'} settings); "
                  f"during them {busy_during.describe()} (this process's own time not counted)")
    warning = bench_busy.busy_warning(busy_during, n, "during the timings")
    if warning:
        console.print(warning)
    if suite.summary:
        console.print()
        console.print(suite.summary(results, cases))
    import_order = None
    if not args.no_import_order and any(c.kind == "train" for c in cases):
        console.progress("timing the training step in fresh processes (import orders, OpenBLAS hook on/off) ...")
        import_order = bench_blas.measure(n, repeats=15 if args.quick else 40, warm=settings.warmup_s,
                                          rounds=1 if args.quick else 3)
        console.print()
        console.print(bench_blas.format_rows(import_order))
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


if __name__ == "__main__":
    sys.exit(main())
