"""The native convolution never builds the full im2col matrix: its scratch high-water mark
stays a small fraction of that matrix and does not grow with the batch -- and the results it
computes with that scratch are right (checked against the NumPy reference)."""
import functools

import numpy as np
import pytest

import fastconv
from fastconv import _core
from support import assert_close, rng_for


def _peaks(batch, dtype, rng):
    x = rng.standard_normal((batch, 128, 28, 28)).astype(dtype)
    w = rng.standard_normal((128, 128, 3, 3)).astype(dtype)
    with fastconv.use_backend("native"):
        _core.reset_scratch_peak()
        out = fastconv.conv2d(x, w, None, 1, 1)
        fwd = _core.scratch_bytes()[1]
        d = rng.standard_normal(out.shape).astype(dtype)
        _core.reset_scratch_peak()
        grads = fastconv.conv2d_backward(d, x, w, 1, 1)
        bwd = _core.scratch_bytes()[1]
    with fastconv.use_backend("numpy"):
        f64 = [a.astype(np.float64) for a in (x, w, d)]
        ref_out = fastconv.conv2d(f64[0], f64[1], None, 1, 1)
        abs_out = fastconv.conv2d(np.abs(f64[0]), np.abs(f64[1]), None, 1, 1)
        ref = fastconv.conv2d_backward(f64[2], f64[0], f64[1], 1, 1)
        absref = fastconv.conv2d_backward(np.abs(f64[2]), np.abs(f64[0]), np.abs(f64[1]), 1, 1)
    assert_close(out, ref_out, abs_out, 128 * 9, dtype, f"forward, batch {batch}")
    for name, got, r, a, terms in zip(("dx", "dW", "db"), grads, ref, absref, (128 * 9, batch * 784, batch * 784)):
        assert_close(got, r, a, terms, dtype, f"{name}, batch {batch}")
    im2col_bytes = batch * 28 * 28 * w[0].size * x.itemsize
    return fwd, bwd, im2col_bytes


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_conv_scratch_is_a_fraction_of_im2col(dtype):
    rng = np.random.default_rng(7)
    fwd24, bwd24, full24 = _peaks(24, dtype, rng)
    fwd8, bwd8, full8 = _peaks(8, dtype, rng)
    # vgg-3x3-mid's layer: forward scratch <= 25% of the im2col matrix it avoids.
    assert 0 < fwd8 <= 0.25 * full8, (fwd8, full8)
    assert 0 < fwd24 <= 0.25 * full24, (fwd24, full24)
    # Scratch does not scale with the batch: per-thread slices capped by the GEMM's NC block
    # (forward), at most 8 dW partials, fewer where the budget is small (backward: 4 at batch
    # 8, 8 at batch 24). Three times the images fit the batch-8 budget.
    assert fwd24 <= 0.25 * full8, (fwd8, fwd24, full8)
    assert 0 < bwd8 <= 0.25 * full8 and 0 < bwd24 <= 0.25 * full24, (bwd8, full8, bwd24, full24)
    assert bwd24 < 2 * bwd8, (bwd8, bwd24)
    assert _core.scratch_bytes()[0] == 0, "scratch still alive after the calls"


# Layers (N, C, H, FN, k, stride, pad) on which each rule of the workspace budget decides, at
# batches that make a quarter of their float32 im2col exceed 2 threads x 2 MiB of L2 (below
# that, every thread may keep one L2 of panels). The rule, and what it held before the budget:
BUDGET_LAYERS = {
    # the taps' 8 group partials of the whole dW -> channel blocks (1.3x the im2col at batch 8)
    "resnet50 s3_reduce@b32 (taps partials)": (32, 1024, 14, 256, 1, 1, 0),
    "resnet18 l3_down3x3@b24 (taps partials, stride 2)": (24, 128, 28, 256, 3, 2, 1),
    "vgg16 conv3_1@b2 (taps partials over row units)": (2, 128, 56, 256, 3, 1, 1),
    # dW's column blocks: a thread's B panels of the patch
    "deep patch on 16x16@b2 (dW column blocks)": (2, 1024, 16, 256, 3, 1, 1),
    # the pixel-rows dx: a thread's dx^T block of half its channels
    "resnet50 s4_reduce@b64 (pixel-rows dx)": (64, 2048, 7, 512, 1, 1, 0),
    # the transposed-forward dx: W's flipped copy (0.28 of AlexNet conv3's im2col, f64)
    "alexnet conv3@b12 (dx flipped W)": (12, 256, 13, 384, 3, 1, 1),
    # dx fused with dW: a thread's padded image rows and dx chunk (0.35 at batch 8, f32)
    "resnet18 l2_down3x3@b12 (dx fused with dW)": (12, 64, 56, 128, 3, 2, 1),
    # the forward's chunks: a thread's B panels (0.38 at batch 8, f64)
    "resnet50 s2_proj@b24 (forward chunks, stride 2)": (24, 256, 56, 512, 1, 2, 0),
}


@functools.lru_cache(maxsize=None)
def _budget_case(layer, dtype_name):
    """Inputs of a BUDGET_LAYERS layer and their float64 NumPy reference (values and |terms| bounds)."""
    N, C, H, FN, k, stride, pad = BUDGET_LAYERS[layer]
    rng = rng_for("workspace", layer, dtype_name)
    OH = (H + 2 * pad - k) // stride + 1
    shapes = ((N, C, H, H), (FN, C, k, k), (N, FN, OH, OH))
    x, w, d = (rng.standard_normal(shape).astype(dtype_name) for shape in shapes)

    def forward_dx_dw(x, w, d):
        dx, dw, _ = fastconv.conv2d_backward(d, x, w, stride, pad)
        return fastconv.conv2d(x, w, None, stride, pad), dx, dw

    f64 = [a.astype(np.float64) for a in (x, w, d)]
    with fastconv.use_backend("numpy"):
        return (x, w, d), forward_dx_dw(*f64), forward_dx_dw(*(np.abs(a) for a in f64))


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("layer", list(BUDGET_LAYERS), ids=[k.split(" (")[0] for k in BUDGET_LAYERS])
def test_scratch_within_a_quarter_of_im2col_on_large_layers(layer, dtype, threads, threads_restored):
    """Forward, dx, dW and the whole backward each hold at most a quarter of the layer's im2col
    matrix in scratch, and the blocks the budget chose compute the right results (against the
    float64 NumPy reference)."""
    N, C, H, FN, k, stride, pad = BUDGET_LAYERS[layer]
    fastconv.set_num_threads(threads)
    (x, w, d), ref, bound = _budget_case(layer, np.dtype(dtype).name)
    OH = d.shape[2]
    quarter = N * OH * OH * C * k * k * x.itemsize / 4
    assert quarter >= threads * _core.cache_sizes()["l2"], "below this the per-thread L2 of panels decides"
    calls = {"forward": lambda: [fastconv.conv2d(x, w, None, stride, pad)],
             "dx": lambda: [fastconv.conv2d_backward_input(d, w, x.shape, stride, pad)],
             "dW": lambda: [fastconv.conv2d_backward_weight(d, x, k, k, stride, pad)],
             "dx and dW": lambda: fastconv.conv2d_backward(d, x, w, stride, pad)[:2]}
    which = {"forward": [0], "dx": [1], "dW": [2], "dx and dW": [1, 2]}
    terms = (C * k * k, FN * k * k, N * OH * OH)
    peaks = {}
    with fastconv.use_backend("native"):
        for name, call in calls.items():
            _core.reset_scratch_peak()
            results = call()
            peaks[name] = _core.scratch_bytes()[1]
            for got, i in zip(results, which[name]):
                assert_close(got, ref[i], bound[i], terms[i], dtype, f"{layer} {name}, {threads} threads")
    over = {name: round(peak / (4 * quarter), 3) for name, peak in peaks.items() if not 0 < peak <= quarter}
    assert not over, f"{layer}: scratch / im2col above 0.25 (or no scratch at all), {threads} threads: {over}"
