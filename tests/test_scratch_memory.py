"""The native convolution never builds the full im2col matrix: its scratch high-water mark
stays a small fraction of that matrix and does not grow with the batch -- and the results it
computes with that scratch are right (checked against the NumPy reference)."""
import numpy as np
import pytest

import fastconv
from fastconv import _core
from support import assert_close


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
    # (forward), fixed dW partials (backward). Three times the images fit the batch-8 budget.
    assert fwd24 <= 0.25 * full8, (fwd8, fwd24, full8)
    assert bwd24 <= bwd8, (bwd8, bwd24)
    assert _core.scratch_bytes()[0] == 0, "scratch still alive after the calls"
