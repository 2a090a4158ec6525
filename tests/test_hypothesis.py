"""Property-based tests over random valid geometries (small sizes; see the "fastconv" hypothesis
profile in conftest.py, FASTCONV_HYPOTHESIS_PROFILE=thorough for a longer run)."""
from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

import fastconv
import naive
from support import NATIVE_FAMILIES, assert_close, assert_exact, backend_context, coord_encoded, small_ints


@st.composite
def geometries(draw, pool: bool = False):
    """(N, C, H, W, FN, kh, kw, stride, pad) with the window fitting the padded input; pool=True
    keeps the padding at most half the window. stride/pad come as ints or (h, w) pairs."""
    kh = draw(st.integers(1, 4))
    kw = draw(st.integers(1, 4))
    if pool:
        ph = draw(st.integers(0, kh // 2))
        pw = draw(st.integers(0, kw // 2))
    else:
        ph = draw(st.integers(0, 3))
        pw = draw(st.integers(0, 3))
    H = draw(st.integers(max(1, kh - 2 * ph), 9))
    W = draw(st.integers(max(1, kw - 2 * pw), 9))
    sh = draw(st.integers(1, 4))
    sw = draw(st.integers(1, 4))
    N = draw(st.integers(0, 3))
    C = draw(st.integers(1, 3))
    FN = draw(st.integers(1, 4))
    stride = sh if sh == sw and draw(st.booleans()) else (sh, sw)
    pad = ph if ph == pw and draw(st.booleans()) else (ph, pw)
    return N, C, H, W, FN, kh, kw, stride, pad


backends = st.sampled_from(["native", "numpy"] + NATIVE_FAMILIES)
seeds = st.integers(0, 2**32 - 1)
dtypes = st.sampled_from([np.float32, np.float64])


@given(g=geometries(), backend=backends, dtype=dtypes)
def test_im2col_and_col2im_exact(g, backend, dtype):
    N, C, H, W, FN, kh, kw, stride, pad = g
    x = coord_encoded((N, C, H, W), dtype)
    with backend_context(backend):
        col = fastconv.im2col(x, kh, kw, stride, pad)
        assert_exact(col, naive.im2col(x, kh, kw, stride, pad).astype(dtype), "im2col")
        c = small_ints(np.random.default_rng(col.size), col.shape, dtype, high=20)
        img = fastconv.col2im(c, x.shape, kh, kw, stride, pad)
    assert_exact(img, naive.col2im(c, x.shape, kh, kw, stride, pad).astype(dtype), "col2im")


@given(g=geometries(), backend=backends, seed=seeds)
def test_conv_forward_backward_float64(g, backend, seed):
    N, C, H, W, FN, kh, kw, stride, pad = g
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N, C, H, W))
    w = rng.standard_normal((FN, C, kh, kw))
    b = rng.standard_normal(FN)
    with backend_context(backend):
        out = fastconv.conv2d(x, w, b, stride, pad)
        dout = rng.standard_normal(out.shape)
        dx, dw, db = fastconv.conv2d_backward(dout, x, w, stride, pad)
    n_out, n_dx, n_dw, n_db = naive.conv_terms(x.shape, w.shape, stride, pad)
    assert_close(out, naive.conv2d(x, w, b, stride, pad), naive.conv2d(abs(x), abs(w), abs(b), stride, pad),
                 n_out, np.float64, "conv2d")
    rdx, rdw, rdb = naive.conv2d_backward(dout, x, w, stride, pad)
    adx, adw, adb = naive.conv2d_backward(abs(dout), abs(x), abs(w), stride, pad)
    assert_close(dx, rdx, adx, n_dx, np.float64, "dx")
    assert_close(dw, rdw, adw, n_dw, np.float64, "dW")
    assert_close(db, rdb, adb, n_db, np.float64, "db")


@given(g=geometries(), backend=backends, seed=seeds)
def test_conv_exact_on_integers_float32(g, backend, seed):
    N, C, H, W, FN, kh, kw, stride, pad = g
    rng = np.random.default_rng(seed)
    x = small_ints(rng, (N, C, H, W), np.float32)
    w = small_ints(rng, (FN, C, kh, kw), np.float32)
    b = small_ints(rng, (FN,), np.float32)
    with backend_context(backend):
        out = fastconv.conv2d(x, w, b, stride, pad)
        dout = small_ints(rng, out.shape, np.float32)
        dx, dw, db = fastconv.conv2d_backward(dout, x, w, stride, pad)
    assert out.dtype == dx.dtype == dw.dtype == db.dtype == np.float32
    assert_exact(out, naive.conv2d(x, w, b, stride, pad).astype(np.float32), "conv2d")
    rdx, rdw, rdb = naive.conv2d_backward(dout, x, w, stride, pad)
    assert_exact(dx, rdx.astype(np.float32), "dx")
    assert_exact(dw, rdw.astype(np.float32), "dW")
    assert_exact(db, rdb.astype(np.float32), "db")


@given(g=geometries(pool=True), backend=backends, seed=seeds, dtype=dtypes,
       specials=st.sampled_from(["none", "ties", "nan", "neginf"]))
def test_max_pool(g, backend, seed, dtype, specials):
    N, C, H, W, _, kh, kw, stride, pad = g
    rng = np.random.default_rng(seed)
    if specials == "ties":
        x = rng.integers(-2, 3, size=(N, C, H, W)).astype(dtype)
    else:
        x = rng.standard_normal((N, C, H, W)).astype(dtype)
    if specials in ("nan", "neginf") and x.size:
        mask = rng.random(x.shape) < (0.3 if specials == "nan" else 0.7)
        x[mask] = np.nan if specials == "nan" else -np.inf
    with backend_context(backend):
        out, idx = fastconv.max_pool2d(x, kh, kw, stride, pad, return_indices=True)
        dout = rng.standard_normal(out.shape).astype(dtype)
        dx = fastconv.max_pool2d_backward(dout, x.shape, kh, kw, stride, pad, indices=idx)
    ref, ref_idx = naive.max_pool2d(x, kh, kw, stride, pad)
    assert out.dtype == dtype and idx.dtype == np.int64
    assert_exact(out, ref.astype(dtype), "max_pool2d values")
    if specials == "nan":
        # Which NaN of a window is named is not specified; it must be a NaN of that window.
        nan_out = np.isnan(out)
        flat_idx = idx.reshape(N, C, out.shape[2] * out.shape[3])
        picked = np.take_along_axis(x.reshape(N, C, H * W), flat_idx, axis=2).reshape(out.shape)
        assert np.isnan(picked[nan_out]).all()
        assert_exact(idx[~nan_out], ref_idx[~nan_out], "indices")
    else:
        assert_exact(idx, ref_idx, "indices")
        assert_close(dx, naive.max_pool2d_backward(dout, ref_idx, x.shape),
                     naive.max_pool2d_backward(np.abs(dout), ref_idx, x.shape), kh * kw, dtype, "max backward")


@given(g=geometries(pool=True), backend=backends, seed=seeds, dtype=dtypes)
def test_avg_pool(g, backend, seed, dtype):
    N, C, H, W, _, kh, kw, stride, pad = g
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N, C, H, W)).astype(dtype)
    with backend_context(backend):
        out = fastconv.avg_pool2d(x, kh, kw, stride, pad)
        dout = rng.standard_normal(out.shape).astype(dtype)
        dx = fastconv.avg_pool2d_backward(dout, x.shape, kh, kw, stride, pad)
    assert out.dtype == dx.dtype == dtype
    assert_close(out, naive.avg_pool2d(x, kh, kw, stride, pad), naive.avg_pool2d(np.abs(x), kh, kw, stride, pad),
                 kh * kw + 1, dtype, "avg_pool2d")
    assert_close(dx, naive.avg_pool2d_backward(dout, x.shape, kh, kw, stride, pad),
                 naive.avg_pool2d_backward(np.abs(dout), x.shape, kh, kw, stride, pad), kh * kw + 1, dtype,
                 "avg backward")


@given(g=geometries(), seed=seeds, dtype=dtypes)
def test_native_matches_numpy_backend(g, seed, dtype):
    N, C, H, W, FN, kh, kw, stride, pad = g
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N, C, H, W)).astype(dtype)
    w = rng.standard_normal((FN, C, kh, kw)).astype(dtype)
    results = {}
    for name in ["numpy", "native"] + NATIVE_FAMILIES:
        with backend_context(name):
            out = fastconv.conv2d(x, w, None, stride, pad)
            grads = fastconv.conv2d_backward(np.cos(out), x, w, stride, pad)
            results[name] = (out,) + tuple(grads)
    tol = 2e-5 if dtype == np.float32 else 1e-12
    for a, b in zip(results["native"], results["numpy"]):
        assert a.dtype == b.dtype and a.shape == b.shape
        scale = float(np.abs(b).max(initial=1.0))
        np.testing.assert_allclose(a, b, rtol=tol, atol=tol * scale * 10)


@given(shape=st.lists(st.integers(0, 5), min_size=1, max_size=5), seed=seeds, backend=backends)
def test_relu_any_shape(shape, seed, backend):
    """(0-d arrays are covered by test_relu.py.)"""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape)
    d = rng.standard_normal(shape)
    with backend_context(backend):
        out = fastconv.relu(x)
        dx = fastconv.relu_backward(d, x)
    assert out.shape == x.shape and dx.shape == x.shape
    assert_exact(out, naive.relu(x), "relu")
    assert_exact(dx, naive.relu_backward(d, x), "relu_backward")
