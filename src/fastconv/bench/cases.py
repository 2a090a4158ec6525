"""The case table (:data:`CASES`) and what one case in one dtype needs to be timed and checked
(:class:`Workload`): fresh random inputs, the callable of each op on the current backend, and
the NumPy backend's result to compare with. Shared with the pytest-benchmark suite in
``benchmarks/``.
"""
from __future__ import annotations

import fnmatch
import math
import zlib
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np

import fastconv
from fastconv import functional as F

from .training import SimpleConvNetStep

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
