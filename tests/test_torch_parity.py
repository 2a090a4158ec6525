"""Parity with torch.nn.functional (skipped cleanly when PyTorch is not installed).

PyTorch is an independent implementation of the same definitions: conv2d (and its autograd
gradients), max_pool2d with return_indices, avg_pool2d(count_include_pad=True), unfold/fold
(im2col/col2im). The fastconv backends checked here are the native one and the NumPy one.
"""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional

import fastconv  # noqa: E402
from cases import CASES, POOL_CASES, params  # noqa: E402
from support import (  # noqa: E402
    NATIVE_FAMILIES, assert_close, assert_exact, distinct, randn, rng_for, seed_note, select_backend,
)

OURS = ["native", "numpy"] + NATIVE_FAMILIES


@pytest.fixture(params=OURS)
def ours(request):
    return select_backend(request, request.param)


def _t(a, grad=False):
    t = torch.from_numpy(np.array(a, copy=True))
    return t.requires_grad_(True) if grad else t


def _geo(case):
    return dict(stride=(case.sh, case.sw), padding=(case.ph, case.pw))


def _close(actual, expected, dtype, what, nterms):
    expected = expected.detach().numpy() if isinstance(expected, torch.Tensor) else expected
    # Both sides carry rounding error: use the magnitude of the expected values as the scale.
    scale = np.abs(expected).max(initial=0.0) + np.finfo(dtype).tiny
    assert_close(actual, expected, np.full(expected.shape, scale), nterms, dtype, what)


@pytest.mark.parametrize("case", params([c for c in CASES if c.N * c.C * c.H * c.W <= 100000]))
def test_conv2d_and_autograd(case, ours, dtype):
    rng = rng_for("torch-conv", case.id, dtype.name)
    x, w, b = randn(rng, case.x_shape, dtype), randn(rng, case.w_shape, dtype), randn(rng, (case.FN,), dtype)
    dout = randn(rng, case.out_shape, dtype)
    tx, tw, tb = _t(x, True), _t(w, True), _t(b, True)
    tout = F.conv2d(tx, tw, tb, **_geo(case))
    tout.backward(_t(dout))
    out = fastconv.conv2d(x, w, b, **case.geometry)
    dx, dw, db = fastconv.conv2d_backward(dout, x, w, **case.geometry)
    k = case.C * case.kh * case.kw
    _close(out, tout, dtype, f"conv2d[{ours}] vs torch", k)
    _close(dx, tx.grad, dtype, f"dx[{ours}] vs torch autograd", case.FN * case.kh * case.kw)
    _close(dw, tw.grad, dtype, f"dW[{ours}] vs torch autograd", max(case.N * case.OH * case.OW, 1))
    _close(db, tb.grad, dtype, f"db[{ours}] vs torch autograd", max(case.N * case.OH * case.OW, 1))


@pytest.mark.parametrize("case", params([c for c in CASES if c.N > 0]))
def test_im2col_is_unfold_and_col2im_is_fold(case, ours, dtype):
    rng = rng_for("torch-unfold", case.id, dtype.name)
    x = randn(rng, case.x_shape, dtype)
    unfolded = F.unfold(_t(x), (case.kh, case.kw), **_geo(case))  # (N, C*kh*kw, L)
    expected = unfolded.transpose(1, 2).reshape(-1, unfolded.shape[1]).numpy()
    assert_exact(fastconv.im2col(x, case.kh, case.kw, **case.geometry), expected, f"im2col[{ours}] vs unfold")
    col = randn(rng, case.col_shape, dtype)
    cols = _t(col).reshape(case.N, -1, col.shape[1]).transpose(1, 2)
    folded = F.fold(cols, (case.H, case.W), (case.kh, case.kw), **_geo(case))
    _close(fastconv.col2im(col, case.x_shape, case.kh, case.kw, **case.geometry), folded, dtype,
           f"col2im[{ours}] vs fold", case.kh * case.kw)


@pytest.mark.parametrize("ties", [False, True], ids=["distinct", "ties"])
@pytest.mark.parametrize("case", params(POOL_CASES))
def test_max_pool2d_with_indices_and_autograd(case, ours, dtype, ties):
    rng = rng_for("torch-max", case.id, dtype.name, ties)
    if ties:
        x = rng.integers(-2, 3, size=case.x_shape).astype(dtype)
    else:
        x = distinct(rng, case.x_shape, dtype)
    dout = randn(rng, case.pool_shape, dtype)
    tx = _t(x, True)
    tout, tidx = F.max_pool2d(tx, (case.kh, case.kw), **_geo(case), return_indices=True)
    tout.backward(_t(dout))
    out, idx = fastconv.max_pool2d(x, case.kh, case.kw, **case.geometry, return_indices=True)
    assert_exact(out, tout.detach().numpy(), f"max_pool2d[{ours}] vs torch")
    assert_exact(idx, tidx.numpy(), f"max_pool2d indices[{ours}] vs torch (ties: first maximum)")
    dx = fastconv.max_pool2d_backward(dout, x, case.kh, case.kw, **case.geometry)
    _close(dx, tx.grad, dtype, f"max_pool2d_backward[{ours}] vs torch autograd", case.kh * case.kw)


@pytest.mark.parametrize("case", params(POOL_CASES))
def test_avg_pool2d_and_autograd(case, ours, dtype):
    rng = rng_for("torch-avg", case.id, dtype.name)
    x = randn(rng, case.x_shape, dtype)
    dout = randn(rng, case.pool_shape, dtype)
    tx = _t(x, True)
    tout = F.avg_pool2d(tx, (case.kh, case.kw), **_geo(case), count_include_pad=True)
    tout.backward(_t(dout))
    _close(fastconv.avg_pool2d(x, case.kh, case.kw, **case.geometry), tout, dtype, f"avg_pool2d[{ours}]",
           case.kh * case.kw)
    _close(fastconv.avg_pool2d_backward(dout, x, case.kh, case.kw, **case.geometry), tx.grad, dtype,
           f"avg_pool2d_backward[{ours}]", case.kh * case.kw)


@pytest.mark.parametrize("pad", [0, 1], ids=["pad0", "pad1"])
def test_max_pool2d_special_values_like_torch(pad, ours, dtype):
    """-inf windows (index: PyTorch names the first valid element), +inf, and NaN windows."""
    rng = rng_for("torch-special", pad, dtype.name)
    x = distinct(rng, (2, 2, 7, 6), dtype)
    x[0, 0] = -np.inf
    x[0, 1, :3, :3] = -np.inf
    x[1, 0, 2, 2] = np.inf
    x[1, 1, 4, 1] = np.nan
    tout, tidx = F.max_pool2d(_t(x), 3, 2, pad, return_indices=True)
    out, idx = fastconv.max_pool2d(x, 3, 3, 2, pad, return_indices=True)
    assert_exact(out, tout.numpy(), f"values[{ours}] vs torch")
    assert_exact(idx, tidx.numpy(), f"indices[{ours}] vs torch {seed_note()}")


def test_relu_matches_torch_where_defined(ours, dtype):
    rng = rng_for("torch-relu", dtype.name)
    x = randn(rng, (3, 4, 5, 6), dtype)
    assert_exact(fastconv.relu(x), F.relu(_t(x)).numpy(), f"relu[{ours}] vs torch")
    tx = _t(x, True)
    d = randn(rng, x.shape, dtype)
    F.relu(tx).backward(_t(d))
    assert_exact(fastconv.relu_backward(d, x), tx.grad.numpy(), f"relu_backward[{ours}] vs torch")
