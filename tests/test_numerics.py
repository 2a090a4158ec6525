"""Floating-point environment and subnormal numbers.

The native arithmetic kernels may flush subnormals to zero while they run (FTZ/DAZ); that must
stay inside the kernels: the caller's floating-point state is restored, and the pure copies and
comparisons (im2col, relu, max pooling) stay exact on subnormal values.
"""
from __future__ import annotations

import numpy as np
import pytest

import fastconv
import naive
from fastconv import _core
from support import BACKENDS, assert_exact, randn, rng_for, seed_note

TINY = {np.dtype(np.float32): np.finfo(np.float32).smallest_subnormal,
        np.dtype(np.float64): np.finfo(np.float64).smallest_subnormal}


def _numpy_keeps_subnormals():
    """Subnormal arithmetic in NumPy on this thread (breaks if FTZ/DAZ leaked into it)."""
    for dt in (np.float32, np.float64):
        tiny = np.array([TINY[np.dtype(dt)]] * 8, dtype=dt)
        assert (tiny * dt(1.0) > 0).all(), f"{np.dtype(dt).name}: subnormal * 1 flushed to zero"
        assert (tiny + tiny == 2 * tiny).all() and (2 * tiny > tiny).all()
        assert (np.array([np.finfo(dt).tiny] * 8, dtype=dt) / dt(2) > 0).all(), "FTZ on a result"


@pytest.mark.parametrize("threads", [1, 2])
def test_floating_point_state_restored(threads, threads_restored):
    fastconv.set_num_threads(threads)
    rng = rng_for("mxcsr", threads)
    _numpy_keeps_subnormals()
    for dt in (np.float32, np.float64):
        x, w = randn(rng, (4, 3, 12, 12), dt), randn(rng, (8, 3, 3, 3), dt)
        out = fastconv.conv2d(x, w, None, 1, 1)
        _numpy_keeps_subnormals()
        fastconv.conv2d_backward(out, x, w, 1, 1)
        _numpy_keeps_subnormals()
        _core.gemm(randn(rng, (70, 50), dt), randn(rng, (50, 90), dt))
        _numpy_keeps_subnormals()
        fastconv.avg_pool2d_backward(fastconv.avg_pool2d(x, 2, 2), x, 2, 2)
        fastconv.col2im(fastconv.im2col(x, 3, 3), x.shape, 3, 3)
        _numpy_keeps_subnormals()
    # An error raised from inside a kernel call must not leave the state changed either.
    with pytest.raises(ValueError):
        fastconv.conv2d(np.ones((1, 2, 3, 3)), np.ones((1, 3, 2, 2)))
    _numpy_keeps_subnormals()


def _subnormal_image(rng, shape, dtype):
    """Positive and negative subnormals of distinct magnitudes (no ties), plus a few normals."""
    tiny = TINY[np.dtype(dtype)]
    n = int(np.prod(shape))
    mags = (rng.permutation(n) + 1).astype(np.float64)  # k * smallest_subnormal, exact
    x = (mags * rng.choice([-1.0, 1.0], size=n) * float(tiny)).astype(dtype)  # exact: k * tiny
    assert (np.abs(x) < np.finfo(dtype).tiny).all() and (x != 0).all()
    return x.reshape(shape)


@pytest.mark.parametrize("name", BACKENDS)
def test_copies_and_compares_exact_on_subnormals(name, dtype):
    fastconv.set_backend(name)
    rng = rng_for("subnormal", name, dtype.name)
    x = _subnormal_image(rng, (2, 3, 7, 8), dtype)
    assert_exact(fastconv.im2col(x, 3, 2, (2, 1), 1), naive.im2col(x, 3, 2, (2, 1), 1).astype(dtype),
                 f"im2col of subnormals[{name}]")
    assert_exact(fastconv.relu(x), naive.relu(x).astype(dtype), f"relu of subnormals[{name}]")
    d = _subnormal_image(rng, x.shape, dtype)
    assert_exact(fastconv.relu_backward(d, x), naive.relu_backward(d, x).astype(dtype),
                 f"relu_backward of subnormals[{name}]")
    out, idx = fastconv.max_pool2d(x, 3, 3, 2, 1, return_indices=True)
    ref, ref_idx = naive.max_pool2d(x, 3, 3, 2, 1)
    assert_exact(out, ref.astype(dtype), f"max_pool2d of subnormals[{name}]")
    assert_exact(idx, ref_idx, f"max_pool2d indices of subnormals[{name}] (compares must not flush)")


@pytest.mark.parametrize("name", BACKENDS)
def test_arithmetic_on_subnormals_within_flush_error(name, dtype):
    """Flushing subnormals may change a sum by at most (terms x smallest normal x max|weight|)."""
    fastconv.set_backend(name)
    rng = rng_for("subnormal-arith", name, dtype.name)
    x = _subnormal_image(rng, (2, 3, 7, 8), dtype)
    w = randn(rng, (4, 3, 3, 2), dtype)
    tiny = float(np.finfo(dtype).tiny)
    out = fastconv.conv2d(x, w, None, 1, 1)
    ref = naive.conv2d(x, w, None, 1, 1)
    absref = naive.conv2d(abs(x), abs(w), None, 1, 1)
    bound = 19 * tiny * float(np.abs(w).max()) * 2 + 64 * np.finfo(dtype).eps * absref
    assert (np.abs(out - ref) <= bound).all(), f"conv2d of subnormals off by {np.abs(out - ref).max()} {seed_note()}"
    avg = fastconv.avg_pool2d(x, 2, 2)
    assert (np.abs(avg - naive.avg_pool2d(x, 2, 2)) <= 5 * tiny).all()
