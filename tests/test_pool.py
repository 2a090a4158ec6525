"""Max and average pooling (forward, indices, backward) against the naive loops, finite
differences, and the documented edge cases (NaN, -inf, ties, -inf padding)."""
from __future__ import annotations

import functools

import numpy as np
import pytest

import fastconv
import naive
from cases import POOL_CASES, SMALL_POOL_CASES, params
from support import assert_close, assert_exact, assert_result_array, distinct, randn, rng_for, seed_note


@functools.lru_cache(maxsize=None)
def _problem(case, kind):
    rng = rng_for("pool", case.id, kind)
    if kind == "normal":
        x = randn(rng, case.x_shape)
    else:  # "ties": few distinct values, so most windows hold repeated maxima
        x = rng.integers(-2, 3, size=case.x_shape).astype(np.float64) + 0.5
    dout = randn(rng, case.pool_shape)
    ref_out, ref_idx = naive.max_pool2d(x, case.kh, case.kw, case.stride, case.pad)
    for a in (x, dout, ref_out, ref_idx):
        a.flags.writeable = False
    return x, dout, ref_out, ref_idx


@pytest.mark.parametrize("kind", ["normal", "ties"])
@pytest.mark.parametrize("case", params(POOL_CASES))
def test_max_pool_forward_matches_naive(case, backend, dtype, kind):
    x, _, ref_out, ref_idx = _problem(case, kind)
    out, idx = fastconv.max_pool2d(x.astype(dtype), case.kh, case.kw, **case.geometry, return_indices=True)
    assert_result_array(out, case.pool_shape, dtype, f"max_pool2d[{backend}]")
    assert_result_array(idx, case.pool_shape, np.int64, f"max_pool2d indices[{backend}]")
    # A max involves no arithmetic: values and indices are exact.
    assert_exact(out, ref_out.astype(dtype), f"max_pool2d values[{backend}]")
    assert_exact(idx, ref_idx, f"max_pool2d indices[{backend}] (ties go to the first maximum)")
    only = fastconv.max_pool2d(x.astype(dtype), case.kh, case.kw, **case.geometry)
    assert isinstance(only, np.ndarray)
    assert_exact(only, out, "return_indices=False")


@pytest.mark.parametrize("case", params(POOL_CASES))
def test_max_pool_backward_matches_naive(case, backend, dtype):
    x, dout, _, ref_idx = _problem(case, "normal")
    x, dout = x.astype(dtype), dout.astype(dtype)
    ref = naive.max_pool2d_backward(dout, ref_idx, case.x_shape)
    absref = naive.max_pool2d_backward(np.abs(dout), ref_idx, case.x_shape)
    nterms = -(-case.kh // case.sh) * -(-case.kw // case.sw)
    dx = fastconv.max_pool2d_backward(dout, x, case.kh, case.kw, **case.geometry)
    assert_result_array(dx, case.x_shape, dtype, f"max_pool2d_backward[{backend}]")
    assert_close(dx, ref, absref, nterms, dtype, f"max_pool2d_backward[{backend}] from x")
    # Same gradient from the indices, with x given as an array or as its shape only.
    _, idx = fastconv.max_pool2d(x, case.kh, case.kw, **case.geometry, return_indices=True)
    for x_arg in (x, tuple(case.x_shape)):
        dx2 = fastconv.max_pool2d_backward(dout, x_arg, case.kh, case.kw, **case.geometry, indices=idx)
        assert_result_array(dx2, case.x_shape, dtype, "max_pool2d_backward with indices")
        assert_close(dx2, ref, absref, nterms, dtype, f"max_pool2d_backward[{backend}] from indices")


@pytest.mark.parametrize("case", params(POOL_CASES))
def test_max_pool_backward_with_ties(case, backend):
    """With tied maxima the gradient goes to the first maximum only."""
    x, dout, _, ref_idx = _problem(case, "ties")
    x, dout = x.copy(), dout.copy()  # writeable copies (read-only inputs are tested on their own)
    dx = fastconv.max_pool2d_backward(dout, x, case.kh, case.kw, **case.geometry)
    ref = naive.max_pool2d_backward(dout, ref_idx, case.x_shape)
    assert_close(dx, ref, naive.max_pool2d_backward(np.abs(dout), ref_idx, case.x_shape), 9, np.float64,
                 f"max_pool2d_backward with ties[{backend}]")


@pytest.mark.parametrize("case", params(POOL_CASES))
def test_avg_pool_matches_naive(case, backend, dtype):
    x, dout, _, _ = _problem(case, "normal")
    x, dout = x.astype(dtype), dout.astype(dtype)
    out = fastconv.avg_pool2d(x, case.kh, case.kw, **case.geometry)
    assert_result_array(out, case.pool_shape, dtype, f"avg_pool2d[{backend}]")
    k = case.kh * case.kw
    assert_close(out, naive.avg_pool2d(x, case.kh, case.kw, case.stride, case.pad),
                 naive.avg_pool2d(np.abs(x), case.kh, case.kw, case.stride, case.pad), k + 1, dtype,
                 f"avg_pool2d[{backend}]")
    ref = naive.avg_pool2d_backward(dout, case.x_shape, case.kh, case.kw, case.stride, case.pad)
    absref = naive.avg_pool2d_backward(np.abs(dout), case.x_shape, case.kh, case.kw, case.stride, case.pad)
    for x_arg in (x, tuple(case.x_shape)):
        dx = fastconv.avg_pool2d_backward(dout, x_arg, case.kh, case.kw, **case.geometry)
        assert_result_array(dx, case.x_shape, dtype, f"avg_pool2d_backward[{backend}]")
        assert_close(dx, ref, absref, k + 1, dtype, f"avg_pool2d_backward[{backend}]")


@pytest.mark.parametrize("case", params(SMALL_POOL_CASES))
def test_pool_gradients_match_finite_differences(case, backend, rng, threads_restored):
    """float64 central differences of sum(pool(x) * G); x has no ties and gaps >> h.
    (One native thread, as in test_conv.py's finite differences.)"""
    fastconv.set_num_threads(1)
    x = distinct(rng, case.x_shape, gap=0.1)
    g = randn(rng, case.pool_shape)
    geo = case.geometry
    for name, fwd, bwd in (
        ("max", lambda: fastconv.max_pool2d(x, case.kh, case.kw, **geo),
         lambda: fastconv.max_pool2d_backward(g, x, case.kh, case.kw, **geo)),
        ("avg", lambda: fastconv.avg_pool2d(x, case.kh, case.kw, **geo),
         lambda: fastconv.avg_pool2d_backward(g, x, case.kh, case.kw, **geo)),
    ):
        numeric = naive.numerical_grad(lambda: float(np.sum(fwd() * g)), x, h=1e-5)
        np.testing.assert_allclose(bwd(), numeric, rtol=1e-6, atol=1e-7,
                                   err_msg=f"{name}_pool2d_backward[{backend}] vs finite differences {seed_note()}")


# --- defaults and shapes ---------------------------------------------------------------------

def test_stride_defaults_to_window(backend, rng):
    x = randn(rng, (2, 3, 9, 8))
    for f in (fastconv.max_pool2d, fastconv.avg_pool2d):
        assert_exact(f(x, 3, 2), f(x, 3, 2, stride=(3, 2)), f"{f.__name__} stride=None")
    out, idx = fastconv.max_pool2d(x, 3, 2, return_indices=True)
    ref, ref_idx = naive.max_pool2d(x, 3, 2, (3, 2), 0)
    assert out.shape == (2, 3, 3, 4)
    assert_exact(out, ref, "max stride None")
    assert_exact(idx, ref_idx, "max stride None indices")
    d = randn(rng, out.shape)
    assert_exact(fastconv.max_pool2d_backward(d, x, 3, 2), fastconv.max_pool2d_backward(d, x, 3, 2, (3, 2)),
                 "max backward stride None")
    assert_exact(fastconv.avg_pool2d_backward(d, x, 3, 2), fastconv.avg_pool2d_backward(d, x, 3, 2, (3, 2)),
                 "avg backward stride None")


def test_empty_batch(backend, dtype):
    x = np.empty((0, 3, 6, 5), dtype=dtype)
    out, idx = fastconv.max_pool2d(x, 2, 3, 2, 1, return_indices=True)
    assert_result_array(out, (0, 3, 4, 3), dtype, "max_pool2d N=0")
    assert_result_array(idx, (0, 3, 4, 3), np.int64, "indices N=0")
    assert_result_array(fastconv.avg_pool2d(x, 2, 3, 2, 1), (0, 3, 4, 3), dtype, "avg_pool2d N=0")
    d = np.empty((0, 3, 4, 3), dtype=dtype)
    assert_result_array(fastconv.max_pool2d_backward(d, x, 2, 3, 2, 1), x.shape, dtype, "max bwd N=0")
    assert_result_array(fastconv.max_pool2d_backward(d, x.shape, 2, 3, 2, 1, indices=idx), x.shape, dtype,
                        "max bwd N=0 indices")
    assert_result_array(fastconv.avg_pool2d_backward(d, x.shape, 2, 3, 2, 1), x.shape, dtype, "avg bwd N=0")


@pytest.mark.parametrize("src", [np.int32, np.uint8, np.bool_, np.float16], ids=lambda t: np.dtype(t).name)
def test_non_float_inputs_are_promoted(src, backend, rng):
    x = rng.integers(0, 2 if src is np.bool_ else 9, size=(2, 2, 6, 6)).astype(src)
    expected = np.float32 if src is np.float16 else np.float64
    out, idx = fastconv.max_pool2d(x, 3, 3, 2, 1, return_indices=True)
    ref, ref_idx = naive.max_pool2d(x.astype(np.float64), 3, 3, 2, 1)
    assert_result_array(out, ref.shape, expected, "max_pool2d promoted")
    assert_exact(out, ref.astype(expected), "max_pool2d promoted")
    assert_exact(idx, ref_idx, "max_pool2d promoted indices")
    avg = fastconv.avg_pool2d(x, 3, 3, 2, 1)
    assert_result_array(avg, ref.shape, expected, "avg_pool2d promoted")
    assert_close(avg, naive.avg_pool2d(x.astype(np.float64), 3, 3, 2, 1),
                 naive.avg_pool2d(np.abs(x.astype(np.float64)), 3, 3, 2, 1), 10, expected, "avg promoted")


@pytest.mark.parametrize("xt, dt", [(np.float64, np.float32), (np.float32, np.float64)], ids=["x64-d32", "x32-d64"])
def test_backward_dtype_is_that_of_dout(xt, dt, backend, rng):
    """Documented: pooling backward returns dx in the dtype of dout."""
    x = distinct(rng, (2, 2, 6, 6), xt)
    d = randn(rng, (2, 2, 3, 3), dt)
    assert fastconv.max_pool2d_backward(d, x, 2, 2).dtype == dt
    assert fastconv.avg_pool2d_backward(d, x, 2, 2).dtype == dt


# --- edge cases --------------------------------------------------------------------------------

def test_padding_never_wins_a_max(backend, dtype, rng):
    """Padding is -inf: with an all-negative input every output is a real input value."""
    x = (-1.0 - np.abs(randn(rng, (2, 3, 5, 6)))).astype(dtype) * 1e3
    out, idx = fastconv.max_pool2d(x, 3, 3, 2, 1, return_indices=True)
    assert (out < 0).all(), f"zero padding won a max: {out.max()} {seed_note()}"
    ref, ref_idx = naive.max_pool2d(x, 3, 3, 2, 1)
    assert_exact(out, ref.astype(dtype), "all-negative with padding")
    assert_exact(idx, ref_idx, "all-negative with padding indices")
    planes = x.reshape(2, 3, -1)
    assert_exact(np.take_along_axis(planes, idx.reshape(2, 3, -1), axis=2).reshape(out.shape), out,
                 "x[indices] == out")


PADDED_POOL_CASES = [c for c in POOL_CASES if c.ph or c.pw]


@pytest.mark.parametrize("value", [0.0, -0.5, 2.0], ids=["zero", "tie", "above"])
@pytest.mark.parametrize("kind", ["normal", "ties"])
@pytest.mark.parametrize("case", params(PADDED_POOL_CASES))
def test_valued_padding_matches_naive(case, backend, dtype, kind, value):
    """pad_value: padded pixels hold that value and win ties in window order (the book's and
    DeZero's zero-padded im2col); a window whose max is padding gets index -1 and passes no
    gradient. "ties" data holds -0.5 (a tie with the padding) in many windows."""
    x, dout, _, _ = _problem(case, kind)
    x, dout = x.astype(dtype), dout.astype(dtype)
    ref_out, ref_idx = naive.max_pool2d_valued_pad(x, case.kh, case.kw, case.stride, case.pad, value)
    out, idx = fastconv.max_pool2d(x, case.kh, case.kw, **case.geometry, return_indices=True, pad_value=value)
    assert_exact(out, ref_out.astype(dtype), f"max_pool2d pad_value={value} values[{backend}]")
    assert_exact(idx, ref_idx, f"max_pool2d pad_value={value} indices[{backend}]")
    ref = naive.max_pool2d_backward(dout, ref_idx, case.x_shape)
    absref = naive.max_pool2d_backward(np.abs(dout), ref_idx, case.x_shape)
    nterms = -(-case.kh // case.sh) * -(-case.kw // case.sw)
    for how in ("indices", "x"):
        extra = dict(indices=idx) if how == "indices" else dict(pad_value=value)
        dx = fastconv.max_pool2d_backward(dout, x, case.kh, case.kw, **case.geometry, **extra)
        assert_close(dx, ref, absref, nterms, dtype, f"max_pool2d_backward pad_value={value} from {how}[{backend}]")


def test_valued_padding_edges(backend, dtype, rng):
    """Only padded windows change; -inf is the default; NaN still wins; NaN is refused."""
    x = -1.0 - np.abs(randn(rng, (2, 3, 5, 6))).astype(dtype)
    out, idx = fastconv.max_pool2d(x, 3, 3, 1, 1, return_indices=True, pad_value=0)
    border = np.ones(out.shape[2:], dtype=bool)
    border[1:-1, 1:-1] = False
    assert (out[:, :, border] == 0).all() and (idx[:, :, border] == -1).all(), seed_note()
    default, default_idx = fastconv.max_pool2d(x, 3, 3, 1, 1, return_indices=True)
    assert_exact(out[:, :, ~border], default[:, :, ~border], "interior windows")
    for same in (None, -np.inf, float("-inf")):
        o, i = fastconv.max_pool2d(x, 3, 3, 1, 1, return_indices=True, pad_value=same)
        assert_exact(o, default, f"pad_value={same}")
        assert_exact(i, default_idx, f"pad_value={same} indices")
    x[0, 0, 0, 0] = np.nan
    o, i = fastconv.max_pool2d(x, 3, 3, 1, 1, return_indices=True, pad_value=0)
    assert np.isnan(o[0, 0, 0, 0]) and i[0, 0, 0, 0] == 0, (o[0, 0, 0, 0], i[0, 0, 0, 0])
    with pytest.raises(ValueError, match="pad_value must not be NaN"):
        fastconv.max_pool2d(x, 3, 3, 1, 1, pad_value=np.nan)
    with pytest.raises(TypeError, match="pad_value must be a number"):
        fastconv.max_pool2d(x, 3, 3, 1, 1, pad_value="0")


def test_avg_padding_counts_in_divisor(backend, rng):
    x = randn(rng, (1, 1, 4, 4))
    out = fastconv.avg_pool2d(x, 3, 3, 1, 1)
    # Top-left window covers x[0:2, 0:2] plus five padding zeros; divisor is 9, not 4.
    np.testing.assert_allclose(out[0, 0, 0, 0], x[0, 0, :2, :2].sum() / 9, rtol=1e-14, err_msg=seed_note())
    np.testing.assert_allclose(out[0, 0, 1, 1], x[0, 0, :3, :3].sum() / 9, rtol=1e-14, err_msg=seed_note())


@pytest.mark.parametrize("pad", [0, 1], ids=["pad0", "pad1"])
def test_nan_in_window_gives_nan(backend, dtype, pad, rng):
    x = distinct(rng, (2, 2, 6, 6), dtype)
    x[0, 1, 2, 3] = np.nan
    x[1, 0, 5, 5] = np.nan
    x[1, 0, 4, 4] = np.nan  # two NaNs in one window
    out, idx = fastconv.max_pool2d(x, 2, 2, 2, pad, return_indices=True)
    nan_windows = np.zeros(out.shape, dtype=bool)
    # The windows that contain the NaN positions (stride 2, pad p): o = (h + p) // 2.
    nan_windows[0, 1, (2 + pad) // 2, (3 + pad) // 2] = True
    nan_windows[1, 0, (5 + pad) // 2, (5 + pad) // 2] = True
    nan_windows[1, 0, (4 + pad) // 2, (4 + pad) // 2] = True
    assert np.array_equal(np.isnan(out), nan_windows), f"NaN must show exactly in its windows {seed_note()}"
    ref, ref_idx = naive.max_pool2d(x, 2, 2, 2, pad)
    assert_exact(out, ref.astype(dtype), "values with NaN")
    # The index of a NaN window names a NaN element of that window; others are the naive argmax.
    flat = x.reshape(2, 2, -1)
    picked = np.take_along_axis(flat, idx.reshape(2, 2, -1), axis=2).reshape(out.shape)
    assert np.isnan(picked[nan_windows]).all(), "index of a NaN window must point at a NaN"
    assert_exact(idx[~nan_windows], ref_idx[~nan_windows], "indices of NaN-free windows")
    assert not np.isnan(fastconv.avg_pool2d(x, 2, 2, 2, pad)[~nan_windows]).any()
    assert np.isnan(fastconv.avg_pool2d(x, 2, 2, 2, pad)[nan_windows]).all()


@pytest.mark.parametrize("pad", [0, 1], ids=["pad0", "pad1"])
def test_all_neg_inf_window(backend, dtype, pad, rng):
    """A window of -inf gives -inf and an index of a real element of that window (PyTorch
    names the window's first valid element); the backward pass then accepts those indices."""
    N, C, H, W = 1, 2, 6, 6
    x = distinct(rng, (N, C, H, W), dtype)
    x[0, 0] = -np.inf  # a whole plane of -inf
    x[0, 1, 0:3, 0:3] = -np.inf  # and an -inf corner
    k, s = 3, 2
    out, idx = fastconv.max_pool2d(x, k, k, s, pad, return_indices=True)
    ref, ref_idx = naive.max_pool2d(x, k, k, s, pad)
    assert_exact(out, ref.astype(dtype), "values with -inf windows")
    assert np.isneginf(out[0, 0]).all()
    OH, OW = out.shape[2:]
    for c in range(C):
        for oh in range(OH):
            for ow in range(OW):
                i = int(idx[0, c, oh, ow])
                h, w = divmod(i, W)
                assert 0 <= i < H * W, f"index {i} outside the {H}x{W} plane at {(c, oh, ow)} {seed_note()}"
                assert oh * s - pad <= h < oh * s - pad + k and ow * s - pad <= w < ow * s - pad + k, (
                    f"index {i} = ({h}, {w}) is not in window {(oh, ow)} {seed_note()}")
                assert x[0, c, h, w] == out[0, c, oh, ow]
    # PyTorch's convention: the window's first valid element.
    assert_exact(idx, ref_idx, "indices of all -inf windows")
    d = randn(rng, out.shape, dtype)
    dx = fastconv.max_pool2d_backward(d, x.shape, k, k, s, pad, indices=idx)
    assert_close(dx, naive.max_pool2d_backward(d, ref_idx, x.shape),
                 naive.max_pool2d_backward(np.abs(d), ref_idx, x.shape), 4, dtype, "backward of -inf windows")


def test_ties_go_to_first_max(backend, dtype):
    x = np.array([[[[5.0, 5.0, 1.0, 7.0],
                    [5.0, 5.0, 7.0, 2.0],
                    [-1.0, 3.0, 4.0, 4.0],
                    [3.0, -2.0, 4.0, 4.0]]]], dtype=dtype)
    out, idx = fastconv.max_pool2d(x, 2, 2, return_indices=True)
    assert_exact(out, np.array([[[[5.0, 7.0], [3.0, 4.0]]]], dtype=dtype), "tie values")
    # Row-major window order: first 5 at (0,0); first 7 at (0,3); first 3 at (2,1); first 4 at (2,2).
    assert_exact(idx, np.array([[[[0, 3], [9, 10]]]]), "ties go to the first maximum")
    dx = fastconv.max_pool2d_backward(np.ones((1, 1, 2, 2), dtype) * np.array([1, 2, 3, 4]).reshape(1, 1, 2, 2),
                                      x, 2, 2)
    expected = np.zeros((1, 1, 4, 4), dtype)
    expected[0, 0, 0, 0], expected[0, 0, 0, 3], expected[0, 0, 2, 1], expected[0, 0, 2, 2] = 1, 2, 3, 4
    assert_exact(dx, expected, "tie gradient goes to the first maximum only")


def test_backward_scatters_arbitrary_indices(backend, dtype, rng):
    """max_pool2d_backward with caller-given indices adds each dout to x.flat[index] of its
    plane, for any in-range indices (repeats included), not only those of a forward pass."""
    shape = (3, 4, 8, 7)
    d = randn(rng, (3, 4, 4, 4), dtype)
    idx = rng.integers(0, 8 * 7, size=d.shape)
    idx[0, 0] = 5  # one index repeated over a whole plane
    dx = fastconv.max_pool2d_backward(d, shape, 2, 2, stride=2, pad=(0, 1), indices=idx)
    ref = naive.max_pool2d_backward(d, idx, shape)
    assert_close(dx, ref, naive.max_pool2d_backward(np.abs(d), idx, shape), 12, dtype, "scatter of given indices")


def test_overlapping_windows_accumulate_gradient(backend):
    """Stride 1: the same maximum wins several windows and collects all their gradients."""
    x = np.array([[[[1.0, 2.0, 3.0], [4.0, 9.0, 5.0], [6.0, 7.0, 8.0]]]])
    d = np.array([[[[1.0, 10.0], [100.0, 1000.0]]]])
    dx = fastconv.max_pool2d_backward(d, x, 2, 2, 1)
    expected = np.zeros_like(x)
    expected[0, 0, 1, 1] = 1111.0
    assert_exact(dx, expected, "accumulated gradient")
    dxa = fastconv.avg_pool2d_backward(d, x, 2, 2, 1)
    np.testing.assert_allclose(dxa[0, 0], np.array([[1, 11, 10], [101, 1111, 1010], [100, 1100, 1000]]) / 4.0,
                               rtol=1e-15)


def test_inf_values(backend, dtype, rng):
    x = distinct(rng, (1, 1, 4, 4), dtype)
    x[0, 0, 1, 1] = np.inf
    x[0, 0, 2, 3] = -np.inf
    out, idx = fastconv.max_pool2d(x, 2, 2, return_indices=True)
    assert out[0, 0, 0, 0] == np.inf and idx[0, 0, 0, 0] == 5
    ref, ref_idx = naive.max_pool2d(x, 2, 2)
    assert_exact(out, ref.astype(dtype), "inf values")
    assert_exact(idx, ref_idx, "inf indices")


@pytest.mark.parametrize("W", [2, 3, 5, 16, 17, 24, 31, 32, 33, 34, 48, 50])
def test_book_2x2_stride2_every_row_length(backend, dtype, W, rng):
    """The book's Pooling(2, 2, stride=2) has its own vector kernel on AVX-512 (make_plane_kernels.hpp):
    full vectors, masked tails and odd widths/heights, with ties, NaN and -inf mixed in."""
    H = 7 if W % 2 else 6
    x = rng.integers(-3, 4, size=(2, 3, H, W)).astype(dtype) + 0.5  # many ties
    x[0, 0] = randn(rng, (H, W), dtype)
    x[0, 1, 1, W - 1] = np.nan
    x[1, 2, 2:4, :2] = -np.inf
    x[1, 1, 0, 0] = x[1, 1, 0, 1] = np.nan
    out, idx = fastconv.max_pool2d(x, 2, 2, 2, 0, return_indices=True)
    ref, ref_idx = naive.max_pool2d(x, 2, 2, 2, 0)
    assert_result_array(out, ref.shape, dtype, f"max_pool2d 2x2[{backend}]")
    assert_exact(out, ref.astype(dtype), f"2x2 values, width {W}")
    nan_free = ~np.isnan(ref)
    assert_exact(idx[nan_free], ref_idx[nan_free], f"2x2 indices, width {W}")
    picked = np.take_along_axis(x.reshape(2, 3, -1), idx.reshape(2, 3, -1), axis=2).reshape(out.shape)
    assert np.isnan(picked[~nan_free]).all(), "a NaN window's index must name a NaN"


def _row_vector_shapes(lanes, rng):
    """(H, W, kh, kw, sh, sw, ph, pw) below, at and above each limit of the row-vector kernel
    (make_plane_kernels.hpp): outputs per row around one vector, windows spanning two vectors
    of columns give or take one, a window as wide as two vectors, rows within one vector."""
    shapes = []
    for OW in (1, 2, lanes - 1, lanes, lanes + 1):
        for sw in (1, 2, 3):
            for pw in (0, 1):
                for span in (2 * lanes - 1, 2 * lanes, 2 * lanes + 1, lanes // 2 + 1):
                    kw = span - (OW - 1) * sw + pw  # span = (OW - 1) * sw + kw - pw
                    W = (OW - 1) * sw + kw - 2 * pw
                    if kw < 1 or 2 * pw > kw or W < 1:
                        continue
                    kh = int(rng.integers(1, 4))
                    ph = int(rng.integers(0, kh // 2 + 1))
                    shapes.append((kh + int(rng.integers(0, 7)), W, kh, kw, int(rng.integers(1, 3)), sw, ph, pw))
    return shapes


def test_row_vector_limits(backend, dtype, rng):
    """Max pooling at the limits of AVX-512's row-vector kernel, which picks each tap's columns
    with a permute, masks padded columns out of the compare and pairs output rows: values and
    indices exact against the loop reference, with ties, +-0 (the first keeps its sign), NaN
    (the rows are swept again with the NaN rule) and all -inf windows mixed in."""
    lanes = fastconv._core.plane_kernel_limits()["row_vector_bytes"] // dtype.itemsize
    for H, W, kh, kw, sh, sw, ph, pw in _row_vector_shapes(lanes, rng):
        x = rng.integers(-3, 4, size=(2, 4, H, W)).astype(dtype) + 0.5  # many ties
        x[0, 0] = randn(rng, (H, W), dtype)
        x[0, 1] = np.where(rng.random((H, W)) < 0.5, -0.0, 0.0)
        x[1, 0, rng.integers(0, H), rng.integers(0, W)] = np.nan
        x[1, 1, : max(1, H // 2)] = -np.inf
        out, idx = fastconv.max_pool2d(x, kh, kw, (sh, sw), (ph, pw), return_indices=True)
        ref, ref_idx = naive.max_pool2d(x, kh, kw, (sh, sw), (ph, pw))
        what = f"{kh}x{kw} window, stride ({sh}, {sw}), pad ({ph}, {pw}) on {H}x{W}"
        assert_exact(out, ref.astype(dtype), f"values, {what}")
        assert np.array_equal(np.signbit(out[0, 1]), np.signbit(ref[0, 1])), f"signs of zeros, {what}"
        nan_free = ~np.isnan(ref)
        assert_exact(idx[nan_free], ref_idx[nan_free], f"indices, {what}")
        picked = np.take_along_axis(x.reshape(2, 4, -1), idx.reshape(2, 4, -1), axis=2).reshape(out.shape)
        assert np.isnan(picked[~nan_free]).all(), f"a NaN window's index must name a NaN, {what}"


@pytest.mark.parametrize("pad", [0, 1], ids=["pad0", "pad1"])
def test_short_rows_every_length(backend, dtype, pad, rng):
    """Max-pooling rows shorter than narrow_row take groups of row_group or row_group_wide
    outputs, the last one's spare lanes repeating the row's last output (make_plane_kernels.hpp):
    every row length from 1 across every limit, 3x3 stride 2 (AlexNet's pool5) with and without
    padding, ties, NaN and -inf mixed in."""
    lim = fastconv._core.plane_kernel_limits()
    for OW in range(1, lim["narrow_row"] + 3):
        W = 2 * (OW - 1) + 3 - 2 * pad
        x = rng.integers(-3, 4, size=(2, 2, 7, W)).astype(dtype) + 0.5  # many ties
        x[0, 0] = randn(rng, (7, W), dtype)
        x[1, 0, 3, W // 2] = np.nan
        x[1, 1, :3, : min(W, 7)] = -np.inf  # all -inf windows, also in the groups
        out, idx = fastconv.max_pool2d(x, 3, 3, 2, pad, return_indices=True)
        ref, ref_idx = naive.max_pool2d(x, 3, 3, 2, pad)
        assert out.shape[3] == OW
        assert_exact(out, ref.astype(dtype), f"3x3 values, {OW} outputs a row, pad {pad}")
        nan_free = ~np.isnan(ref)
        assert_exact(idx[nan_free], ref_idx[nan_free], f"3x3 indices, {OW} outputs a row, pad {pad}")
        picked = np.take_along_axis(x.reshape(2, 2, -1), idx.reshape(2, 2, -1), axis=2).reshape(out.shape)
        assert np.isnan(picked[~nan_free]).all(), "a NaN window's index must name a NaN"
