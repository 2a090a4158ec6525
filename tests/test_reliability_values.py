"""Special values: NaN and +-inf propagate as in PyTorch, ties in max pooling go to the first
maximum, subnormal inputs do not slow the convolution down, and the calling thread's floating-point
environment (flush-to-zero / denormals-are-zero) is left as it was."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import fastconv
import naive
from support import BACKENDS, assert_exact

INF, NAN = np.inf, np.nan


def _pool_all(x, kh, kw, stride, pad):
    out, idx = fastconv.max_pool2d(x, kh, kw, stride, pad, return_indices=True)
    dx = fastconv.max_pool2d_backward(np.ones_like(out), x, kh, kw, stride, pad)
    dx_idx = fastconv.max_pool2d_backward(np.ones_like(out), x.shape, kh, kw, stride, pad, indices=idx)
    return out, idx, dx, dx_idx


# --- max pooling -------------------------------------------------------------------------------

def test_max_pool_nan_in_window_gives_nan(backend, dtype):
    x = np.arange(16, dtype=dtype).reshape(1, 1, 4, 4)
    x[0, 0, 1, 1] = NAN           # window (0, 0)
    x[0, 0, 2, 3] = NAN           # window (1, 1), together with a larger value
    x[0, 0, 3, 2] = 1000
    out, idx, dx, dx_idx = _pool_all(x, 2, 2, 2, 0)
    assert np.isnan(out[0, 0, 0, 0]) and np.isnan(out[0, 0, 1, 1]), out
    assert out[0, 0, 0, 1] == 7 and out[0, 0, 1, 0] == 13
    assert idx[0, 0, 0, 0] == 5 and idx[0, 0, 1, 1] == 11, idx  # the NaN's position
    expected = np.zeros_like(x)
    expected.flat[[5, 7, 13, 11]] = 1
    assert_exact(dx, expected, f"max-pool gradient to the NaN [{backend}]")
    assert_exact(dx_idx, expected, f"max-pool gradient from indices [{backend}]")


def test_max_pool_nan_sweeps_over_later_values(backend, dtype):
    """A NaN early in the window wins over larger values after it (PyTorch: NaN propagates)."""
    x = np.array([[[[NAN, 5.0, 9.0, -INF]]]], dtype=dtype)
    out, idx = fastconv.max_pool2d(x, 1, 4, return_indices=True)
    assert np.isnan(out).all() and idx.ravel().tolist() == [0]


@pytest.mark.parametrize("pad", [0, 1])
def test_max_pool_all_minus_inf_window(backend, dtype, pad):
    """An all -inf window gives -inf and an argmax that points at a real pixel (never padding);
    the gradient lands there."""
    x = np.full((2, 3, 5, 4), -INF, dtype=dtype)
    x[1, 2, 4, 3] = 2.0
    out, idx, dx, dx_idx = _pool_all(x, 3, 2, 2, (pad, pad))
    H, W = x.shape[2:]
    assert ((idx >= 0) & (idx < H * W)).all(), f"argmax outside the plane [{backend}]: {idx.ravel()}"
    neg = out == -INF
    assert neg.sum() == out.size - (out == 2.0).sum() and (out[~neg] == 2.0).all()
    # the argmax of an all -inf window lies inside that window
    OH, OW = out.shape[2:]
    for n, c, oh, ow in zip(*np.nonzero(neg)):
        h, w = divmod(int(idx[n, c, oh, ow]), W)
        assert oh * 2 - pad <= h < oh * 2 - pad + 3 and ow * 2 - pad <= w < ow * 2 - pad + 2, (oh, ow, h, w)
    assert dx.sum() == out.size and np.isfinite(dx).all()
    assert_exact(dx, dx_idx, f"gradient via x and via indices [{backend}]")


def test_max_pool_ties_go_to_first_maximum(backend, dtype):
    """Equal maxima (also 0.0 and -0.0): the first one in row-major window order takes the whole
    gradient; windows overlap so a pixel may collect from several windows."""
    x = np.array([[[[1.0, 3.0, 3.0, 0.0, -0.0],
                    [3.0, 3.0, 2.0, -0.0, 0.0],
                    [3.0, 1.0, 3.0, -1.0, -1.0]]]], dtype=dtype)
    out, idx, dx, dx_idx = _pool_all(x, 2, 2, 1, 0)
    # windows at (0,0): [1,3;3,3] -> first 3 at (0,1); (0,1): [3,3;3,2] -> (0,1)
    # (0,2): [3,0;2,-0] -> (0,2); (0,3): [0,-0;-0,0] -> (0,3)
    # (1,0): [3,3;3,1] -> (1,0); (1,1): [3,2;1,3] -> (1,1); (1,2): [2,-0;3,-1] -> (2,2)
    # (1,3): [-0,0;-1,-1] -> (1,3)
    assert idx[0, 0].tolist() == [[1, 1, 2, 3], [5, 6, 12, 8]], idx[0, 0]
    expected = np.zeros_like(x)
    for i in idx.ravel():
        expected.flat[i] += 1
    assert_exact(dx, expected, f"tie gradient [{backend}]")
    assert_exact(dx_idx, expected, f"tie gradient from indices [{backend}]")


def test_max_pool_inf_and_minus_inf(backend, dtype):
    x = np.array([[[[-INF, INF, 1.0, 2.0], [0.0, -1.0, -INF, -INF]]]], dtype=dtype)
    out, idx = fastconv.max_pool2d(x, 2, 2, return_indices=True)
    assert out.ravel().tolist() == [INF, 2.0] and idx.ravel().tolist() == [1, 3]


# --- convolution, average pooling, ReLU --------------------------------------------------------

def test_conv_inf_and_nan_propagate(backend, dtype):
    """No padding: +-inf and NaN reach exactly the outputs whose window holds them (inf - inf and
    inf * 0 give NaN), as in PyTorch and NumPy."""
    x = np.ones((1, 1, 4, 5), dtype=dtype)
    x[0, 0, 0, 0] = INF
    x[0, 0, 1, 1] = -INF         # with the +inf: window (0, 0) sums inf - inf
    x[0, 0, 3, 4] = NAN
    w = np.ones((2, 1, 2, 2), dtype=dtype)
    w[1, 0, 0, 0] = 0.0          # filter 1: inf * 0 in window (0, 0)
    with np.errstate(all="ignore"):  # NumPy warns about inf - inf
        out = fastconv.conv2d(x, w)
        with fastconv.use_backend("numpy"):
            ref = fastconv.conv2d(x, w)
    assert np.isnan(out[0, 0, 0, 0]) and out[0, 0, 0, 1] == -INF and out[0, 0, 1, 0] == -INF
    assert np.isnan(out[0, 0, 2, 3]) and out[0, 0, 2, 2] == 4 and out[0, 0, 0, 3] == 4
    assert np.isnan(out[0, 1, 0, 0]) and np.isnan(out[0, 1, 1, 1]) and out[0, 1, 0, 1] == -INF
    assert np.array_equal(out, ref, equal_nan=True), (out, ref)


def test_avg_pool_and_relu_specials(backend, dtype):
    x = np.array([[[[INF, 1.0, -INF, INF], [NAN, 2.0, 3.0, 4.0]]]], dtype=dtype)
    with np.errstate(all="ignore"):  # NumPy warns about inf - inf
        avg = fastconv.avg_pool2d(x, 1, 2)
    assert avg[0, 0, 0, 0] == INF and np.isnan(avg[0, 0, 0, 1]) and np.isnan(avg[0, 0, 1, 0]) and avg[0, 0, 1, 1] == 3.5
    r = fastconv.relu(x)
    assert r[0, 0, 0].tolist() == [INF, 1.0, 0.0, INF] and np.isnan(r[0, 0, 1, 0])   # NaN passes (the book)
    g = fastconv.relu_backward(np.full(x.shape, 2.0, dtype), x)
    assert g[0, 0, 0].tolist() == [2.0, 2.0, 0.0, 2.0] and g[0, 0, 1, 0] == 2.0


# --- the floating-point environment ----------------------------------------------------------------

def _subnormals_survive() -> bool:
    t64 = np.array([np.finfo(np.float64).smallest_subnormal]) * np.array([3.0])
    t32 = np.array([np.finfo(np.float32).smallest_subnormal], np.float32) * np.array([3.0], np.float32)
    return bool(t64[0] != 0 and t32[0] != 0)


@pytest.mark.parametrize("threads", [1, 2])
def test_calling_thread_floating_point_mode_is_restored(threads, threads_restored):
    """Flush-to-zero inside the kernels must not leak into the caller's NumPy arithmetic."""
    assert _subnormals_survive(), "this process already flushes subnormals"
    fastconv.set_num_threads(threads)
    rng = np.random.default_rng(0)
    for dt in (np.float32, np.float64):
        x = rng.standard_normal((2, 3, 10, 10)).astype(dt)
        w = rng.standard_normal((4, 3, 3, 3)).astype(dt)
        out = fastconv.conv2d(x, w, pad=1)
        fastconv.conv2d_backward(out, x, w, pad=1)
        fastconv.max_pool2d(x, 2, 2)
        fastconv.avg_pool2d(x, 2, 2)
        fastconv.relu(x)
        assert _subnormals_survive(), f"subnormals flushed in the calling thread after a {np.dtype(dt).name} call"


SUBNORMAL = r"""
import json, statistics, time, numpy as np, fastconv
fastconv.set_backend("native")
fastconv.set_num_threads(1)
rng = np.random.default_rng(0)
report = {}
for dt in (np.float32, np.float64):
    tiny = np.finfo(dt).smallest_subnormal
    x = rng.standard_normal((8, 16, 32, 32)).astype(dt)
    w = rng.standard_normal((32, 16, 3, 3)).astype(dt)
    # every input a subnormal, and every product and partial sum subnormal as well
    xs = (rng.integers(1, 100, x.shape) * tiny).astype(dt)
    assert (xs != 0).all() and (np.abs(xs) < np.finfo(dt).tiny).all()
    d = rng.standard_normal(fastconv.conv2d(x, w, pad=1).shape).astype(dt)
    ds = (rng.integers(1, 100, d.shape) * tiny).astype(dt)
    for name, normal, subnormal in (
        ("forward", lambda: fastconv.conv2d(x, w, pad=1), lambda: fastconv.conv2d(xs, w, pad=1)),
        ("backward", lambda: fastconv.conv2d_backward(d, x, w, pad=1),
                     lambda: fastconv.conv2d_backward(ds, xs, w, pad=1)),
    ):
        normal(); subnormal()
        tn, ts = [], []
        for _ in range(9):       # interleaved, so a noisy neighbour hits both alike
            t0 = time.perf_counter(); normal(); tn.append(time.perf_counter() - t0)
            t0 = time.perf_counter(); subnormal(); ts.append(time.perf_counter() - t0)
        report[f"{np.dtype(dt).name} {name}"] = {
            "normal_ms": 1e3 * statistics.median(tn), "subnormal_ms": 1e3 * statistics.median(ts),
            "ratio": statistics.median(ts) / statistics.median(tn)}
print(json.dumps(report))
"""


def test_subnormal_inputs_do_not_slow_convolution(record_property):
    """Median time on subnormal-filled data over median time on normal data, forward and
    backward, float32 and float64, measured in one fresh process on one thread."""
    res = subprocess.run([sys.executable, "-c", textwrap.dedent(SUBNORMAL)], capture_output=True, text=True,
                         timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    report = json.loads(res.stdout.strip().splitlines()[-1])
    summary = ", ".join(f"{k}: {v['ratio']:.2f}x" for k, v in report.items())
    record_property("subnormal_slowdown", summary)
    print(f"\nsubnormal / normal conv time: {summary}")
    for key, r in report.items():
        assert r["ratio"] < 2.0, f"{key}: subnormal inputs {r['ratio']:.1f}x slower ({r})"


@pytest.mark.parametrize("pad", [0, 1])
def test_conv_weight_gradient_with_inf_outside_some_taps(backend, dtype, pad):
    """+-inf in the last column reaches only the weight-gradient taps whose windows cover it.
    The native stride-1 small-patch path (weight_grad_dots.hpp) walks padded rows with zeros in
    the extra columns; for an image holding inf it must fall back, or 0 * inf would spoil taps
    the inf never touches. Three images: only the middle one holds specials."""
    rng = np.random.default_rng(7)
    x = rng.standard_normal((3, 2, 6, 7)).astype(dtype)
    x[1, 0, 2, 6] = INF
    x[1, 1, 4, 6] = -INF
    w = rng.standard_normal((4, 2, 3, 3)).astype(dtype)
    dout = rng.standard_normal((3, 4, 4 + 2 * pad, 5 + 2 * pad)).astype(dtype)
    with np.errstate(all="ignore"):
        _, dw, _ = fastconv.conv2d_backward(dout, x, w, stride=1, pad=pad)
        _, ref, _ = naive.conv2d_backward(dout, x, w, stride=1, pad=pad)
    assert np.array_equal(np.isfinite(dw), np.isfinite(ref)), (np.isfinite(dw), np.isfinite(ref))
    assert np.isfinite(ref).sum() >= ref.size // 3, "the test needs taps the inf does not reach"
    finite = np.isfinite(ref)
    scale = np.abs(ref[finite]).max()
    tol = 1e-4 if dtype == np.float32 else 1e-12
    assert np.abs(dw[finite] - ref[finite]).max() <= tol * scale
