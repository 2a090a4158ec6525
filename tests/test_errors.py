"""Every bad input is refused with a clear ValueError or TypeError, whatever the backend."""
from __future__ import annotations

import numpy as np
import pytest

import fastconv
from support import randn, rng_for

F = fastconv
_rng = rng_for("errors")
X = randn(_rng, (2, 3, 6, 5))            # a valid image
Wt = randn(_rng, (4, 3, 3, 2))           # valid weights for X
B = randn(_rng, (4,))
OUT = (2, 4, 4, 4)                      # conv2d(X, Wt) output shape
D = randn(_rng, OUT)                    # matching dout
COL = randn(_rng, (2 * 4 * 4, 3 * 3 * 2))  # im2col(X, 3, 2) shape
P = randn(_rng, (2, 3, 3, 2))           # max/avg_pool2d(X, 2, 2) output shape
IDX = np.zeros(P.shape, dtype=np.int64) + 1
X32 = X.astype(np.float32)


def _c(a):
    return a.astype(np.complex128)


def _o(a):
    return a.astype(object)


# (id, call, exception, regex)
BAD = [
    # --- wrong number of dimensions
    ("im2col_3d", lambda: F.im2col(X[0], 3, 2), ValueError, r"input_data must be 4-D"),
    ("im2col_5d", lambda: F.im2col(X[None], 3, 2), ValueError, r"input_data must be 4-D"),
    ("conv_x_3d", lambda: F.conv2d(X[0], Wt), ValueError, r"x must be 4-D"),
    ("conv_x_2d", lambda: F.conv2d(X[0, 0], Wt), ValueError, r"x must be 4-D"),
    ("conv_W_3d", lambda: F.conv2d(X, Wt[0]), ValueError, r"W must be 4-D"),
    ("conv_bwd_x_3d", lambda: F.conv2d_backward(D, X[0], Wt), ValueError, r"x must be 4-D"),
    ("conv_bwd_W_5d", lambda: F.conv2d_backward(D, X, Wt[None]), ValueError, r"W must be 4-D"),
    ("conv_bwd_dout_3d", lambda: F.conv2d_backward(D[0], X, Wt), ValueError, r"dout must be 4-D"),
    ("maxpool_3d", lambda: F.max_pool2d(X[0], 2, 2), ValueError, r"x must be 4-D"),
    ("avgpool_5d", lambda: F.avg_pool2d(X[None], 2, 2), ValueError, r"x must be 4-D"),
    ("maxpool_bwd_dout_3d", lambda: F.max_pool2d_backward(P[0], X, 2, 2), ValueError, r"dout must be 4-D"),
    ("maxpool_bwd_x_3d", lambda: F.max_pool2d_backward(P, X[0], 2, 2), ValueError, r"x must be 4-D"),
    ("avgpool_bwd_dout_5d", lambda: F.avg_pool2d_backward(P[None], X, 2, 2), ValueError, r"dout must be 4-D"),
    ("avgpool_bwd_shape_3", lambda: F.avg_pool2d_backward(P, (2, 3, 6), 2, 2), ValueError, r"4 entries"),
    ("col2im_col_1d", lambda: F.col2im(COL.ravel(), X.shape, 3, 2), ValueError, r"col has shape"),
    ("col2im_col_3d", lambda: F.col2im(COL[None], X.shape, 3, 2), ValueError, r"col has shape"),
    ("col2im_shape_3", lambda: F.col2im(COL, X.shape[1:], 3, 2), ValueError, r"input_shape must have 4 entries"),
    ("col2im_shape_5", lambda: F.col2im(COL, (1,) + X.shape, 3, 2), ValueError, r"input_shape must have 4 entries"),
    ("col2im_shape_negative", lambda: F.col2im(COL, (2, 3, -6, 5), 3, 2), ValueError, r"non-negative"),
    ("col2im_shape_float", lambda: F.col2im(COL, (2, 3, 6.0, 5), 3, 2), TypeError, r"input_shape"),
    # --- channel mismatch
    ("conv_channels", lambda: F.conv2d(X, Wt[:, :2]), ValueError, r"channel mismatch.*C=3.*C=2"),
    ("conv_channels_more", lambda: F.conv2d(X[:, :1], Wt), ValueError, r"channel mismatch"),
    ("conv_bwd_channels", lambda: F.conv2d_backward(D, X[:, :2], Wt), ValueError, r"channel mismatch"),
    ("conv_zero_channels", lambda: F.conv2d(X[:, :0], Wt[:, :0]), ValueError, r"zero input channels"),
    # --- kernel larger than the padded input
    ("im2col_kernel_too_tall", lambda: F.im2col(X, 7, 2), ValueError, r"smaller than kernel"),
    ("im2col_kernel_too_wide_padded", lambda: F.im2col(X, 3, 8, pad=1), ValueError, r"smaller than kernel"),
    ("im2col_kernel_too_wide_asym_pad", lambda: F.im2col(X, 3, 7, pad=(1, 0)), ValueError, r"smaller than kernel"),
    ("col2im_kernel_too_big", lambda: F.col2im(COL, X.shape, 7, 2), ValueError, r"smaller than kernel"),
    ("conv_kernel_too_big", lambda: F.conv2d(X, randn(_rng, (2, 3, 7, 7))), ValueError, r"smaller than kernel"),
    ("conv_bwd_kernel_too_big", lambda: F.conv2d_backward(D, X, randn(_rng, (4, 3, 3, 6))), ValueError,
     r"smaller than kernel"),
    ("conv_empty_image", lambda: F.conv2d(randn(_rng, (2, 3, 0, 5)), Wt), ValueError, r"smaller than kernel"),
    ("maxpool_window_too_big", lambda: F.max_pool2d(X, 7, 2), ValueError, r"smaller than kernel"),
    ("avgpool_window_too_big", lambda: F.avg_pool2d(X, 2, 6), ValueError, r"smaller than kernel"),
    ("maxpool_bwd_window_too_big", lambda: F.max_pool2d_backward(P, X, 7, 2), ValueError, r"smaller than kernel"),
    ("avgpool_bwd_window_too_big", lambda: F.avg_pool2d_backward(P, X.shape, 2, 6), ValueError,
     r"smaller than kernel"),
    # --- non-positive window
    ("im2col_zero_filter", lambda: F.im2col(X, 0, 2), ValueError, r"filter size must be positive"),
    ("conv_zero_filter", lambda: F.conv2d(X, randn(_rng, (2, 3, 2, 0))), ValueError, r"filter size must be positive"),
    ("maxpool_zero_window", lambda: F.max_pool2d(X, 2, 0), ValueError, r"pool size must be positive"),
    ("avgpool_negative_window", lambda: F.avg_pool2d(X, -2, 2), ValueError, r"pool size must be positive"),
    # --- stride <= 0
    ("im2col_stride_0", lambda: F.im2col(X, 3, 2, stride=0), ValueError, r"stride must be positive"),
    ("im2col_stride_neg", lambda: F.im2col(X, 3, 2, stride=-1), ValueError, r"stride must be positive"),
    ("col2im_stride_0", lambda: F.col2im(COL, X.shape, 3, 2, stride=0), ValueError, r"stride must be positive"),
    ("conv_stride_w0", lambda: F.conv2d(X, Wt, stride=(1, 0)), ValueError, r"stride must be positive"),
    ("conv_bwd_stride_neg", lambda: F.conv2d_backward(D, X, Wt, stride=(-2, 1)), ValueError,
     r"stride must be positive"),
    ("maxpool_stride_0", lambda: F.max_pool2d(X, 2, 2, stride=0), ValueError, r"stride must be positive"),
    ("avgpool_stride_neg", lambda: F.avg_pool2d(X, 2, 2, stride=(2, -2)), ValueError, r"stride must be positive"),
    ("maxpool_bwd_stride_0", lambda: F.max_pool2d_backward(P, X, 2, 2, stride=0), ValueError,
     r"stride must be positive"),
    ("avgpool_bwd_stride_0", lambda: F.avg_pool2d_backward(P, X, 2, 2, stride=(0, 2)), ValueError,
     r"stride must be positive"),
    # --- negative padding
    ("im2col_pad_neg", lambda: F.im2col(X, 3, 2, pad=-1), ValueError, r"pad must be non-negative"),
    ("col2im_pad_neg", lambda: F.col2im(COL, X.shape, 3, 2, pad=(0, -1)), ValueError, r"pad must be non-negative"),
    ("conv_pad_neg", lambda: F.conv2d(X, Wt, pad=(-1, 0)), ValueError, r"pad must be non-negative"),
    ("conv_bwd_pad_neg", lambda: F.conv2d_backward(D, X, Wt, pad=-1), ValueError, r"pad must be non-negative"),
    ("maxpool_pad_neg", lambda: F.max_pool2d(X, 2, 2, pad=-1), ValueError, r"pad must be non-negative"),
    ("avgpool_bwd_pad_neg", lambda: F.avg_pool2d_backward(P, X, 2, 2, pad=(0, -1)), ValueError,
     r"pad must be non-negative"),
    # --- pooling padding above half the window
    ("maxpool_pad_over_half", lambda: F.max_pool2d(X, 2, 2, pad=2), ValueError, r"at most half the window"),
    ("maxpool_pad_over_half_3", lambda: F.max_pool2d(X, 3, 3, 2, pad=2), ValueError, r"at most half the window"),
    ("maxpool_pad_over_half_w", lambda: F.max_pool2d(X, 3, 1, 1, pad=(1, 1)), ValueError, r"at most half the window"),
    ("avgpool_pad_over_half", lambda: F.avg_pool2d(X, 3, 3, pad=(2, 1)), ValueError, r"at most half the window"),
    ("maxpool_bwd_pad_over_half", lambda: F.max_pool2d_backward(P, X, 2, 2, pad=2), ValueError,
     r"at most half the window"),
    ("avgpool_bwd_pad_over_half", lambda: F.avg_pool2d_backward(P, X.shape, 1, 1, 1, pad=1), ValueError,
     r"at most half the window"),
    # --- bias of the wrong length / shape
    ("bias_too_long", lambda: F.conv2d(X, Wt, randn(_rng, (5,))), ValueError, r"b must have shape \(4,\)"),
    ("bias_too_short", lambda: F.conv2d(X, Wt, B[:3]), ValueError, r"b must have shape \(4,\)"),
    ("bias_2d", lambda: F.conv2d(X, Wt, B[:, None]), ValueError, r"b must have shape \(4,\)"),
    ("bias_scalar", lambda: F.conv2d(X, Wt, 1.0), ValueError, r"b must have shape \(4,\)"),
    # --- dout whose shape differs from the forward output
    ("conv_dout_wrong_h", lambda: F.conv2d_backward(randn(_rng, (2, 4, 5, 4)), X, Wt), ValueError,
     r"dout has shape .*\(2, 4, 4, 4\)"),
    ("conv_dout_wrong_fn", lambda: F.conv2d_backward(randn(_rng, (2, 3, 4, 4)), X, Wt), ValueError, r"dout has shape"),
    ("conv_dout_wrong_n", lambda: F.conv2d_backward(randn(_rng, (1, 4, 4, 4)), X, Wt), ValueError, r"dout has shape"),
    ("conv_dout_stride_mismatch", lambda: F.conv2d_backward(D, X, Wt, stride=2), ValueError, r"dout has shape"),
    ("maxpool_dout_wrong", lambda: F.max_pool2d_backward(randn(_rng, (2, 3, 3, 3)), X, 2, 2), ValueError,
     r"dout has shape"),
    ("maxpool_dout_wrong_c", lambda: F.max_pool2d_backward(randn(_rng, (2, 2, 3, 2)), X.shape, 2, 2, indices=IDX),
     ValueError, r"dout has shape"),
    ("avgpool_dout_wrong", lambda: F.avg_pool2d_backward(randn(_rng, (2, 3, 2, 2)), X, 2, 2), ValueError,
     r"dout has shape"),
    ("relu_dout_wrong", lambda: F.relu_backward(X[:, :2], X), ValueError, r"dout has shape"),
    # --- col that does not fit input_shape
    ("col2im_rows_off", lambda: F.col2im(COL[:-1], X.shape, 3, 2), ValueError, r"col has shape .*needs \(32, 18\)"),
    ("col2im_cols_off", lambda: F.col2im(COL[:, :-1], X.shape, 3, 2), ValueError, r"col has shape"),
    ("col2im_wrong_geometry", lambda: F.col2im(COL, X.shape, 3, 2, stride=2), ValueError, r"col has shape"),
    ("col2im_transposed", lambda: F.col2im(COL.T, X.shape, 3, 2), ValueError, r"col has shape"),
    # --- complex and object arrays
    ("im2col_complex", lambda: F.im2col(_c(X), 3, 2), TypeError, r"complex"),
    ("col2im_complex", lambda: F.col2im(_c(COL), X.shape, 3, 2), TypeError, r"complex"),
    ("conv_x_complex", lambda: F.conv2d(_c(X), Wt), TypeError, r"complex"),
    ("conv_W_complex", lambda: F.conv2d(X, _c(Wt)), TypeError, r"complex"),
    ("conv_b_complex", lambda: F.conv2d(X, Wt, _c(B)), TypeError, r"complex"),
    ("conv_bwd_dout_complex", lambda: F.conv2d_backward(_c(D), X, Wt), TypeError, r"complex"),
    ("maxpool_complex", lambda: F.max_pool2d(_c(X), 2, 2), TypeError, r"complex"),
    ("avgpool_complex64", lambda: F.avg_pool2d(X.astype(np.complex64), 2, 2), TypeError, r"complex"),
    ("maxpool_bwd_dout_complex", lambda: F.max_pool2d_backward(_c(P), X, 2, 2), TypeError, r"complex"),
    ("avgpool_bwd_dout_complex", lambda: F.avg_pool2d_backward(_c(P), X, 2, 2), TypeError, r"complex"),
    ("relu_complex", lambda: F.relu(_c(X)), TypeError, r"complex"),
    ("relu_bwd_complex", lambda: F.relu_backward(_c(X), X), TypeError, r"complex"),
    ("im2col_object", lambda: F.im2col(_o(X), 3, 2), TypeError, r"unsupported dtype object"),
    ("col2im_object", lambda: F.col2im(_o(COL), X.shape, 3, 2), TypeError, r"unsupported dtype object"),
    ("conv_x_object", lambda: F.conv2d(_o(X), Wt), TypeError, r"unsupported dtype object"),
    ("conv_W_object", lambda: F.conv2d(X, _o(Wt)), TypeError, r"unsupported dtype object"),
    ("conv_b_object", lambda: F.conv2d(X, Wt, _o(B)), TypeError, r"unsupported dtype object"),
    ("conv_bwd_x_object", lambda: F.conv2d_backward(D, _o(X), Wt), TypeError, r"unsupported dtype object"),
    ("maxpool_object", lambda: F.max_pool2d(_o(X), 2, 2), TypeError, r"unsupported dtype object"),
    ("avgpool_bwd_object", lambda: F.avg_pool2d_backward(_o(P), X, 2, 2), TypeError, r"unsupported dtype object"),
    ("relu_object", lambda: F.relu(_o(X)), TypeError, r"unsupported dtype object"),
    ("relu_strings", lambda: F.relu(np.array([["a", "b"]])), TypeError, r"unsupported dtype"),
    ("relu_datetime", lambda: F.relu(np.array(["2020-01-01"], dtype="datetime64[D]")), TypeError,
     r"unsupported dtype"),
    # --- non-integer geometry
    ("stride_float", lambda: F.im2col(X, 3, 2, stride=1.5), TypeError, r"stride must be an integer"),
    ("stride_bool", lambda: F.conv2d(X, Wt, stride=True), TypeError, r"stride must be an integer"),
    ("pad_float_pair", lambda: F.conv2d(X, Wt, pad=(1, 0.5)), TypeError, r"pad must be an integer"),
    ("pad_str", lambda: F.max_pool2d(X, 2, 2, pad="1"), TypeError, r"pad must be an integer"),
    ("filter_float", lambda: F.im2col(X, 3.0, 2), TypeError, r"filter_h must be an integer"),
    ("pool_float", lambda: F.max_pool2d(X, 2, 2.0), TypeError, r"pool_w must be an integer"),
    ("stride_triple", lambda: F.conv2d(X, Wt, stride=(1, 1, 1)), ValueError,
     r"stride must be an int or an \(h, w\) pair"),
    ("pad_single", lambda: F.avg_pool2d(X, 2, 2, pad=[1]), ValueError, r"pad must be an int or an \(h, w\) pair"),
    # --- pooling indices
    ("indices_float", lambda: F.max_pool2d_backward(P, X.shape, 2, 2, indices=IDX.astype(float)), TypeError,
     r"indices must be integers"),
    ("indices_wrong_shape", lambda: F.max_pool2d_backward(P, X.shape, 2, 2, indices=IDX[:, :, :2]), ValueError,
     r"indices has shape"),
    ("indices_out_of_range", lambda: F.max_pool2d_backward(P, X.shape, 2, 2, indices=IDX + 29), ValueError,
     r"indices must be -1 \(padding\) or lie in \[0, 30\)"),
    ("indices_negative", lambda: F.max_pool2d_backward(P, X.shape, 2, 2, indices=IDX - 3), ValueError,
     r"indices must be -1 \(padding\) or lie"),
    ("maxpool_bwd_shape_without_indices", lambda: F.max_pool2d_backward(P, X.shape, 2, 2), TypeError,
     r"needs the input array x, or indices"),
]


@pytest.mark.parametrize("call, exc, match", [pytest.param(c, e, m, id=i) for i, c, e, m in BAD])
def test_bad_input_is_refused(call, exc, match, backend):
    before = {k: v.copy() for k, v in dict(X=X, Wt=Wt, B=B, D=D, COL=COL, P=P).items()}
    with pytest.raises(exc, match=match):
        call()
    for k, v in dict(X=X, Wt=Wt, B=B, D=D, COL=COL, P=P).items():
        assert np.array_equal(v, before[k]), f"{k} modified by a refused call"


@pytest.mark.skipif(np.dtype(np.longdouble).itemsize <= 8, reason="long double is float64 on this platform")
def test_long_double_refused():
    with pytest.raises(TypeError, match="float32 or float64"):
        F.relu(X.astype(np.longdouble))


def test_float32_errors_match_float64():
    """The same validation whatever the dtype."""
    with pytest.raises(ValueError, match="channel mismatch"):
        F.conv2d(X32, Wt.astype(np.float32)[:, :2])
    with pytest.raises(ValueError, match="dout has shape"):
        F.conv2d_backward(D.astype(np.float32)[:, :, :3], X32, Wt.astype(np.float32))


@pytest.mark.parametrize("n, exc", [(0, ValueError), (-1, ValueError), (1.5, TypeError), (True, TypeError),
                                    ("2", TypeError)], ids=["zero", "negative", "float", "bool", "str"])
def test_set_num_threads_refuses(n, exc, threads_restored):
    with pytest.raises(exc, match="thread|int"):
        F.set_num_threads(n)
    assert F.get_num_threads() == threads_restored


def test_unknown_backend_refused():
    before = F.get_backend()
    with pytest.raises(ValueError, match="unknown backend 'cuda'"):
        F.set_backend("cuda")
    with pytest.raises(ValueError, match="unknown backend"):
        with F.use_backend("gpu"):
            pass  # pragma: no cover - not reached
    assert F.get_backend() == before


def test_remembered_geometry_still_refuses_lookalikes(backend):
    """Validated window geometry is remembered per call signature (_params.fitted_window), but
    True == 1 and 2.0 == 2 hash alike: after the int calls succeed, their look-alikes must still
    be refused, and a NumPy integer still accepted with the same result."""
    F.conv2d(X, Wt, stride=1, pad=1)
    F.max_pool2d(X, 2, 2, stride=2)
    for call, match in ((lambda: F.conv2d(X, Wt, stride=True, pad=1), "stride must be an integer"),
                        (lambda: F.conv2d(X, Wt, stride=1, pad=(1, True)), "pad must be an integer"),
                        (lambda: F.max_pool2d(X, 2.0, 2, stride=2), "pool_h must be an integer"),
                        (lambda: F.max_pool2d(X, 2, 2, stride=(2, 2.0)), "stride must be an integer")):
        with pytest.raises(TypeError, match=match):
            call()
    expected = F.max_pool2d(X, 2, 2, stride=2)
    assert np.array_equal(F.max_pool2d(X, np.int64(2), 2, stride=2), expected)
    assert np.array_equal(F.max_pool2d(X, 2, 2, stride=np.True_ + 1), expected)  # the NumPy integer 2


def test_small_size_shortcut_keeps_overflow_checks():
    """check_alloc skips the memory-limit lookup for small arrays, but a shape of NumPy integers
    whose product wraps to a small number must still be refused as an overflow."""
    from fastconv import _params as P
    with pytest.raises(ValueError, match="overflows 64-bit sizes"):
        P.check_alloc("test array", (np.int64(2**40), np.int64(2**40)), np.float64)
    with pytest.raises(ValueError, match="overflows 64-bit sizes"):
        P.check_alloc("test array", (2**40, 2**40, 0), np.float64)
    P.check_alloc("test array", (np.int64(3), 4), np.float32)  # small and valid
