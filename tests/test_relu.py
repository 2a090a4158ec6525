"""relu / relu_backward: the book's rule (zero where x <= 0, NaN passes) on any shape."""
from __future__ import annotations

import numpy as np
import pytest

import fastconv
import naive
from support import assert_exact, assert_result_array, randn


def _special(rng, shape, dtype):
    x = randn(rng, shape, dtype)
    flat = x.reshape(-1)
    if flat.size >= 6:
        flat[:6] = [np.nan, np.inf, -np.inf, 0.0, -0.0, np.finfo(dtype).tiny]
        rng.shuffle(flat)
    return x


@pytest.mark.parametrize("shape", [(2, 3, 4, 5), (7,), (3, 11), (2, 1, 3, 2, 4), (0, 3, 2, 2), (1, 1, 1, 1), ()],
                         ids=lambda s: "x".join(map(str, s)) or "scalar")
def test_relu_matches_book_rule(shape, backend, dtype, rng):
    x = _special(rng, shape, dtype)
    out = fastconv.relu(x)
    assert_result_array(out, shape, dtype, f"relu[{backend}]")
    ref = naive.relu(x).astype(dtype)
    assert_exact(out, ref, f"relu[{backend}]")
    # -0.0 and 0.0 both map to a zero (of either sign); positive values, +inf and NaN pass unchanged.
    d = _special(rng, shape, dtype)
    dx = fastconv.relu_backward(d, x)
    assert_result_array(dx, shape, dtype, f"relu_backward[{backend}]")
    assert_exact(dx, naive.relu_backward(d, x).astype(dtype), f"relu_backward[{backend}]")


def test_nan_passes(backend):
    x = np.array([np.nan, -1.0, 2.0, 0.0])
    assert_exact(fastconv.relu(x), np.array([np.nan, 0.0, 2.0, 0.0]), "relu NaN")
    assert_exact(fastconv.relu_backward(np.array([5.0, 6.0, 7.0, 8.0]), x), np.array([5.0, 0.0, 7.0, 0.0]),
                 "relu_backward: NaN in x passes the gradient, x <= 0 blocks it")


@pytest.mark.parametrize("src", [np.int32, np.int8, np.bool_, np.float16], ids=lambda t: np.dtype(t).name)
def test_relu_promotes(src, backend, rng):
    x = (rng.integers(-5, 6, size=(3, 4)) > 0) if src is np.bool_ else rng.integers(-5, 6, size=(3, 4)).astype(src)
    expected = np.float32 if src is np.float16 else np.float64
    out = fastconv.relu(x)
    assert_result_array(out, x.shape, expected, "relu promoted")
    assert_exact(out, naive.relu(x.astype(np.float64)).astype(expected), "relu promoted")


@pytest.mark.parametrize(
    "dt, xt, expected",
    [(np.float32, np.float32, np.float32), (np.float64, np.float64, np.float64),
     (np.float64, np.float32, np.float64), (np.float32, np.float64, np.float64),
     (np.int32, np.float32, np.float64), (np.float32, np.int32, np.float64)],
    ids=lambda t: np.dtype(t).name,
)
def test_relu_backward_dtype_rule(dt, xt, expected, backend, rng):
    """The module's rule: float32 only when every operand is float32; any float64 (or integer)
    operand gives float64."""
    x = rng.integers(-3, 4, size=(4, 5)).astype(xt)
    d = rng.integers(1, 9, size=(4, 5)).astype(dt)
    dx = fastconv.relu_backward(d, x)
    assert_result_array(dx, x.shape, expected, "relu_backward dtype")
    assert_exact(dx, naive.relu_backward(d.astype(np.float64), x.astype(np.float64)).astype(expected),
                 "relu_backward values")


def test_relu_of_list(backend):
    assert_exact(fastconv.relu([[-1, 2], [3, -4]]), np.array([[0.0, 2.0], [3.0, 0.0]]), "relu of a list")


@pytest.mark.parametrize("shape", [(2, 3, 4, 5), (7,), ()], ids=str)
def test_relu_backward_into_out(shape, backend, dtype, rng):
    x, dout = _special(rng, shape, dtype), randn(rng, shape, dtype)
    want = naive.relu_backward(dout, x).astype(dtype)
    out = np.full(shape, np.nan, dtype)  # poisoned: every element must be written
    assert fastconv.relu_backward(dout, x, out=out) is out
    assert_exact(out, want, f"relu_backward out=[{backend}]")
    assert fastconv.relu_backward(dout, x, out=dout) is dout  # the book's in-place form
    assert_exact(dout, want, f"relu_backward out=dout [{backend}]")


def test_relu_backward_rejects_bad_out(backend, rng):
    x, buf = randn(rng, (3, 4)), randn(rng, 13)
    dout, shifted = buf[:12].reshape(3, 4), buf[1:].reshape(3, 4)
    read_only = np.empty((3, 4))
    read_only.flags.writeable = False
    for out, match in [(np.empty((3, 4), np.float32), "dtype float32"), (np.empty((4, 3)), r"shape \(4, 3\)"),
                       (read_only, "writeable"), (np.empty((3, 8))[:, ::2], "C-contiguous"),
                       (x, "overlaps x"), (shifted, "overlaps dout"),
                       ([[0.0] * 4] * 3, "numpy.ndarray")]:
        keep = dout.copy()
        with pytest.raises((ValueError, TypeError), match=match):
            fastconv.relu_backward(dout, x, out=out)
        assert_exact(dout, keep, "dout after a refused call")


@pytest.mark.parametrize("shape", [(2, 3, 4, 5), (7,), (0, 3), ()], ids=str)
def test_relu_mask_round_trip(shape, backend, dtype, rng):
    """relu(x, return_mask=True) gives the book's Relu.mask (x <= 0, NaN not masked) in the same
    pass; relu_backward(dout, mask=...) matches the x form, into a fresh array or in place."""
    x, dout = _special(rng, shape, dtype), randn(rng, shape, dtype)
    y, mask = fastconv.relu(x, return_mask=True)
    assert_exact(y, fastconv.relu(x), f"relu values with the mask [{backend}]")
    assert mask.dtype == np.bool_ and mask.shape == x.shape
    assert np.array_equal(mask, x <= 0)
    want = naive.relu_backward(dout, x).astype(dtype)
    got = fastconv.relu_backward(dout, mask=mask)
    assert_result_array(got, shape, dtype, f"relu_backward(mask=)[{backend}]")
    assert_exact(got, want, f"relu_backward(mask=)[{backend}]")
    assert fastconv.relu_backward(dout, mask=mask, out=dout) is dout
    assert_exact(dout, want, f"relu_backward(mask=, out=dout)[{backend}]")


def test_relu_backward_mask_errors(backend, rng):
    x, dout = randn(rng, (3, 4)), randn(rng, (3, 4))
    mask = x <= 0
    keep = dout.copy()
    for kwargs, err, match in [
        (dict(x=x, mask=mask), TypeError, "exactly one of x and mask"),
        (dict(), TypeError, "exactly one of x and mask"),
        (dict(mask=mask.astype(np.uint8)), TypeError, "bool numpy.ndarray"),
        (dict(mask=mask.tolist()), TypeError, "bool numpy.ndarray"),
        (dict(mask=mask[:2]), ValueError, r"mask has shape \(2, 4\)"),
        (dict(mask=mask, out=np.empty((3, 4), np.float32)), ValueError, "dtype float32"),
    ]:
        with pytest.raises(err, match=match):
            fastconv.relu_backward(dout, **kwargs)
        assert_exact(dout, keep, "dout after a refused call")
