"""Each convolution gradient alone (conv2d_backward_input, conv2d_backward_weight) and the
transposed convolution (conv_transpose2d) against the naive loops, on the whole case table."""
from __future__ import annotations

import functools

import numpy as np
import pytest

import fastconv
import naive
from cases import CASES, params
from support import assert_close, assert_result_array, randn, rng_for


@functools.lru_cache(maxsize=None)
def _problem(case):
    """Inputs and float64 naive references (and on absolute values: the tolerance scale)."""
    rng = rng_for("conv-parts", case.id)
    x, w, dout = randn(rng, case.x_shape), randn(rng, case.w_shape), randn(rng, case.out_shape)
    bias = randn(rng, (case.C,))
    dx, dw, _ = naive.conv2d_backward(dout, x, w, case.stride, case.pad)
    adx, adw, _ = naive.conv2d_backward(np.abs(dout), np.abs(x), np.abs(w), case.stride, case.pad)
    for a in (x, w, dout, bias):
        a.flags.writeable = False
    return dict(x=x, w=w, dout=dout, bias=bias, dx=dx, dw=dw, adx=adx, adw=adw)


@pytest.mark.parametrize("case", params(CASES))
def test_each_gradient_alone_matches_naive(case, backend, dtype):
    d = _problem(case)
    x, w, dout = (d[k].astype(dtype) for k in ("x", "w", "dout"))
    _, n_dx, n_dw, _ = naive.conv_terms(case.x_shape, case.w_shape, case.stride, case.pad)
    dx = fastconv.conv2d_backward_input(dout, w, case.x_shape, **case.geometry)
    assert_result_array(dx, case.x_shape, dtype, f"conv2d_backward_input[{backend}]")
    assert_close(dx, d["dx"], d["adx"], n_dx, dtype, f"conv2d_backward_input[{backend}]")
    dw = fastconv.conv2d_backward_weight(dout, x, case.kh, case.kw, **case.geometry)
    assert_result_array(dw, case.w_shape, dtype, f"conv2d_backward_weight[{backend}]")
    assert_close(dw, d["dw"], d["adw"], n_dw, dtype, f"conv2d_backward_weight[{backend}]")


@pytest.mark.parametrize("case", params(CASES))
def test_conv_transpose_matches_the_definition(case, backend, dtype):
    """A case's conv read backwards: its output gradient is the input, W is (C_in, C_out, kh, kw)
    = (FN, C, kh, kw), and output_size is the case's input plane; checked against the scatter
    loop of the definition (not the backward code it runs on)."""
    d = _problem(case)
    x, w, bias = d["dout"].astype(dtype), d["w"].astype(dtype), d["bias"].astype(dtype)
    size = (case.H, case.W)
    y = fastconv.conv_transpose2d(x, w, bias, **case.geometry, output_size=size)
    assert_result_array(y, case.x_shape, dtype, f"conv_transpose2d[{backend}]")
    ref = naive.conv_transpose2d(x, w, case.stride, case.pad, size) + bias.astype(np.float64)[None, :, None, None]
    absref = (naive.conv_transpose2d(np.abs(x), np.abs(w), case.stride, case.pad, size)
              + np.abs(bias.astype(np.float64))[None, :, None, None])
    _, n_dx, _, _ = naive.conv_terms(case.x_shape, case.w_shape, case.stride, case.pad)
    assert_close(y, ref, absref, n_dx + 1, dtype, f"conv_transpose2d[{backend}]")


@pytest.mark.parametrize("stride, pad", [(1, 0), (2, 1), (3, 2), ((2, 3), (0, 1))])
def test_conv_transpose_every_output_size(stride, pad, backend, rng):
    """Without output_size the smallest output; with it, each of the stride's sizes that a
    convolution maps back onto the input -- and nothing else."""
    x, w = randn(rng, (2, 3, 4, 5)), randn(rng, (3, 2, 3, 3))
    sh, sw = naive.pair(stride)
    ph, pw = naive.pair(pad)
    smallest = (sh * 3 + 3 - 2 * ph, sw * 4 + 3 - 2 * pw)
    y = fastconv.conv_transpose2d(x, w, stride=stride, pad=pad)
    assert y.shape == (2, 2) + smallest
    assert_close(y, naive.conv_transpose2d(x, w, stride, pad), naive.conv_transpose2d(np.abs(x), np.abs(w), stride, pad),
                 27, np.float64, "default output size")
    for eh in range(sh):
        for ew in range(sw):
            size = (smallest[0] + eh, smallest[1] + ew)
            y = fastconv.conv_transpose2d(x, w, stride=stride, pad=pad, output_size=size)
            ref = naive.conv_transpose2d(x, w, stride, pad, size)
            assert_close(y, ref, naive.conv_transpose2d(np.abs(x), np.abs(w), stride, pad, size), 27, np.float64,
                         f"output_size {size}")
    with pytest.raises(ValueError, match=r"is not an output of this convolution"):
        fastconv.conv_transpose2d(x, w, stride=stride, pad=pad, output_size=(smallest[0] + sh, smallest[1]))
    with pytest.raises(ValueError, match=r"is not an output of this convolution"):
        fastconv.conv_transpose2d(x, w, stride=stride, pad=pad, output_size=(smallest[0] - 1, smallest[1]))


@pytest.mark.parametrize("call, exc, match", [
    pytest.param(lambda x, w: fastconv.conv_transpose2d(x, w[:2]), ValueError, r"channel mismatch", id="channels"),
    pytest.param(lambda x, w: fastconv.conv_transpose2d(x, w, b=np.ones(3)), ValueError, r"b has shape", id="bias"),
    pytest.param(lambda x, w: fastconv.conv_transpose2d(x[:, :, :0], w), ValueError, r"empty", id="empty_plane"),
    pytest.param(lambda x, w: fastconv.conv_transpose2d(x[:, :, :1, :1], w, pad=2), ValueError,
                 r"gives an output of -1 pixels", id="no_output"),
    pytest.param(lambda x, w: fastconv.conv2d_backward_input(np.ones((2, 2, 2, 3)), w, (2, 3, 4, 5)), ValueError,
                 r"channel mismatch", id="input_channels"),
    pytest.param(lambda x, w: fastconv.conv2d_backward_input(np.ones((2, 3, 9, 9)), w.transpose(1, 0, 2, 3),
                                                             (2, 3, 4, 5)), ValueError, r"dout has shape", id="dout"),
    pytest.param(lambda x, w: fastconv.conv2d_backward_weight(np.ones((2, 2, 9, 9)), x, 3, 3), ValueError,
                 r"dout has shape", id="weight_dout"),
])
def test_errors(call, exc, match, rng):
    x, w = randn(rng, (2, 3, 4, 5)), randn(rng, (3, 2, 3, 3))
    with pytest.raises(exc, match=match):
        call(x, w)


def test_results_keep_float32_and_inputs_untouched(backend, rng):
    x, w = randn(rng, (2, 3, 6, 6)).astype(np.float32), randn(rng, (3, 4, 3, 3)).astype(np.float32)
    before = x.copy(), w.copy()
    y = fastconv.conv_transpose2d(x, w, np.ones(4, np.float32), stride=2, pad=1)
    assert y.dtype == np.float32 and y.flags.c_contiguous
    assert fastconv.conv_transpose2d(x, w.astype(np.float64)).dtype == np.float64
    dw = fastconv.conv2d_backward_weight(x, y, 3, 3, stride=2, pad=1)
    assert dw.dtype == np.float32 and dw.shape == (3, 4, 3, 3)
    np.testing.assert_array_equal(x, before[0])
    np.testing.assert_array_equal(w, before[1])
