"""im2col / col2im against the naive loops (exactly), the book's code, and each other."""
from __future__ import annotations

import functools

import numpy as np
import pytest

import book_reference as book
import fastconv
import naive
from cases import CASES, params
from support import assert_close, assert_exact, assert_result_array, coord_encoded, randn, rng_for, small_ints

BIG = 20000  # windows x taps above which the scalar reference loops get slow


@functools.lru_cache(maxsize=None)
def _ref_im2col(case):
    x = coord_encoded(case.x_shape)
    loops = naive.im2col if case.N * case.OH * case.OW * case.C * case.kh * case.kw < BIG else naive.im2col_fast_loops
    col = loops(x, case.kh, case.kw, case.stride, case.pad)
    col.flags.writeable = False
    return col


@functools.lru_cache(maxsize=None)
def _ref_col2im(case):
    col = small_ints(rng_for("col2im", case.id), case.col_shape, high=50)
    img = naive.col2im(col, case.x_shape, case.kh, case.kw, case.stride, case.pad)
    col.flags.writeable = False
    img.flags.writeable = False
    return col, img


@pytest.mark.parametrize("case", params(CASES))
def test_im2col_matches_naive_exactly(case, backend, dtype):
    x = coord_encoded(case.x_shape, dtype)
    col = fastconv.im2col(x, case.kh, case.kw, **case.geometry)
    assert_result_array(col, case.col_shape, dtype, f"im2col[{backend}]")
    assert_exact(col, _ref_im2col(case).astype(dtype), f"im2col[{backend}] vs naive loops")


@pytest.mark.parametrize("case", params(CASES))
def test_col2im_matches_naive_exactly(case, backend, dtype):
    col, ref = _ref_col2im(case)
    img = fastconv.col2im(col.astype(dtype), case.x_shape, case.kh, case.kw, **case.geometry)
    assert_result_array(img, case.x_shape, dtype, f"col2im[{backend}]")
    # Integer-valued data: every summation order is exact, so the sums must match bit for bit.
    assert_exact(img, ref.astype(dtype), f"col2im[{backend}] vs naive loops")


@pytest.mark.parametrize("case", params(CASES))
def test_col2im_of_im2col_counts_windows(case, backend):
    """Folding the unfolded image gives each element times the number of windows covering it."""
    x = coord_encoded(case.x_shape)
    back = fastconv.col2im(fastconv.im2col(x, case.kh, case.kw, **case.geometry), case.x_shape,
                           case.kh, case.kw, **case.geometry)
    counts = naive.window_counts(case.x_shape, case.kh, case.kw, case.stride, case.pad)
    assert_exact(back, x * counts, f"col2im(im2col(x))[{backend}]")


@pytest.mark.parametrize("case", params(CASES))
def test_im2col_col2im_are_adjoint(case, backend, rng):
    """<im2col(x), c> == <x, col2im(c)> for random float64 x and c."""
    x = randn(rng, case.x_shape)
    c = randn(rng, case.col_shape)
    lhs = float(np.sum(fastconv.im2col(x, case.kh, case.kw, **case.geometry) * c))
    rhs = float(np.sum(x * fastconv.col2im(c, case.x_shape, case.kh, case.kw, **case.geometry)))
    scale = float(np.sum(np.abs(x))) * float(np.abs(c).max(initial=1.0)) * case.kh * case.kw
    assert abs(lhs - rhs) <= 1e-12 * max(scale, 1.0), (lhs, rhs)


@pytest.mark.parametrize("case", params([c for c in CASES if c.int_geometry and c.N > 0]))
def test_matches_book_im2col_and_col2im(case, rng):
    """The book's own algorithm (common/util.py) gives the same float64 arrays.
    (The book's reshape(N*OH*OW, -1) cannot handle N = 0, so empty batches are left out.)"""
    x = randn(rng, case.x_shape)
    col = fastconv.im2col(x, case.kh, case.kw, case.stride, case.pad)
    assert_exact(col, book.im2col(x, case.kh, case.kw, case.stride, case.pad), "im2col vs book")
    c = randn(rng, case.col_shape)
    img = fastconv.col2im(c, case.x_shape, case.kh, case.kw, case.stride, case.pad)
    ref = book.col2im(c, case.x_shape, case.kh, case.kw, case.stride, case.pad)
    assert_close(img, ref, np.abs(ref) + 1, case.kh * case.kw, np.float64, "col2im vs book")


@pytest.mark.parametrize("src", [np.int32, np.int64, np.uint8, np.bool_, np.float16], ids=lambda t: np.dtype(t).name)
def test_non_float_inputs_are_promoted(src, backend, rng):
    """ints and bools compute in float64; float16 in float32 (documented dtype rule)."""
    x = rng.integers(0, 2 if src is np.bool_ else 7, size=(2, 2, 5, 4)).astype(src)
    expected_dtype = np.float32 if src is np.float16 else np.float64
    col = fastconv.im2col(x, 2, 3, (2, 1), 1)
    ref = naive.im2col(x.astype(np.float64), 2, 3, (2, 1), 1)
    assert_result_array(col, ref.shape, expected_dtype, "im2col")
    assert_exact(col, ref.astype(expected_dtype), "im2col of promoted input")
    c = rng.integers(-5, 6, size=ref.shape).astype(src if src is not np.bool_ else np.int8)
    img = fastconv.col2im(c, x.shape, 2, 3, (2, 1), 1)
    col_expected = np.float32 if src is np.float16 else np.float64
    assert img.dtype == col_expected
    assert_exact(img, naive.col2im(c.astype(np.float64), x.shape, 2, 3, (2, 1), 1).astype(col_expected),
                 "col2im of promoted input")


@pytest.mark.parametrize(
    "stride, pad",
    [((2, 1), (1, 0)), ([2, 1], [1, 0]), (np.array([2, 1]), np.array([1, 0])),
     ((np.int64(2), np.int32(1)), (np.int16(1), np.uint8(0)))],
    ids=["tuple", "list", "ndarray", "numpy-scalars"],
)
def test_stride_and_pad_forms(stride, pad, backend):
    x = coord_encoded((2, 2, 6, 7))
    ref = naive.im2col(x, 3, 2, (2, 1), (1, 0))
    assert_exact(fastconv.im2col(x, 3, 2, stride, pad), ref, "im2col pair forms")
    assert_exact(fastconv.im2col(x, np.int64(3), np.int32(2), stride=stride, pad=pad), ref, "numpy ints")
    c = small_ints(rng_for("forms"), ref.shape)
    assert_exact(fastconv.col2im(c, (2, 2, 6, 7), 3, 2, stride, pad),
                 naive.col2im(c, (2, 2, 6, 7), 3, 2, (2, 1), (1, 0)), "col2im pair forms")
    assert_exact(fastconv.col2im(c, [np.int64(2), 2, 6, 7], 3, 2, stride, pad),
                 naive.col2im(c, (2, 2, 6, 7), 3, 2, (2, 1), (1, 0)), "col2im list shape")


def test_int_stride_equals_pair(backend, rng):
    x = randn(rng, (2, 3, 9, 9))
    assert_exact(fastconv.im2col(x, 3, 3, 2, 1), fastconv.im2col(x, 3, 3, (2, 2), (1, 1)), "int vs pair")


def test_im2col_of_list_input(backend):
    x = coord_encoded((1, 2, 4, 4))
    assert_exact(fastconv.im2col(x.tolist(), 2, 2), naive.im2col(x, 2, 2), "nested list input")


def test_empty_batch_shapes(backend, dtype):
    x = np.empty((0, 3, 6, 5), dtype=dtype)
    col = fastconv.im2col(x, 3, 2, 2, 1)
    assert_result_array(col, (0, 3 * 3 * 2), dtype, "im2col N=0")
    img = fastconv.col2im(col, (0, 3, 6, 5), 3, 2, 2, 1)
    assert_result_array(img, (0, 3, 6, 5), dtype, "col2im N=0")
