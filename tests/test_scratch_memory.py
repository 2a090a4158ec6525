"""The native convolution never builds the full im2col matrix: its scratch high-water mark
stays a small fraction of that matrix, and does not grow with the batch."""
import numpy as np
import pytest

import fastconv
from fastconv import _core


def _peaks(batch, dtype, rng):
    x = rng.standard_normal((batch, 128, 28, 28)).astype(dtype)
    w = rng.standard_normal((128, 128, 3, 3)).astype(dtype)
    with fastconv.use_backend("native"):
        _core.reset_scratch_peak()
        out = fastconv.conv2d(x, w, None, 1, 1)
        fwd = _core.scratch_bytes()[1]
        d = rng.standard_normal(out.shape).astype(dtype)
        _core.reset_scratch_peak()
        fastconv.conv2d_backward(d, x, w, 1, 1)
        bwd = _core.scratch_bytes()[1]
    im2col_bytes = batch * 28 * 28 * w[0].size * x.itemsize
    return fwd, bwd, im2col_bytes


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_conv_scratch_is_a_fraction_of_im2col(dtype):
    rng = np.random.default_rng(7)
    fwd48, bwd48, full48 = _peaks(48, dtype, rng)
    fwd16, bwd16, full16 = _peaks(16, dtype, rng)
    # vgg-3x3-mid: forward scratch <= 25% of the im2col matrix it avoids.
    assert 0 < fwd16 <= 0.25 * full16, (fwd16, full16)
    assert 0 < fwd48 <= 0.25 * full48, (fwd48, full48)
    # Scratch does not scale with the batch: per-thread slices capped by the GEMM's NC block
    # (forward), fixed dW partials (backward). Three times the images fit the batch-16 budget.
    assert fwd48 <= 0.25 * full16, (fwd16, fwd48, full16)
    assert bwd48 <= bwd16, (bwd16, bwd48)
    assert _core.scratch_bytes()[0] == 0, "scratch still alive after the calls"
