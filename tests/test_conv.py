"""conv2d and conv2d_backward against the naive loops, finite differences and the dtype rule."""
from __future__ import annotations

import functools

import numpy as np
import pytest

import fastconv
import naive
from cases import CASES, SMALL_CASES, params
from real_sizes import kernel_of
from support import (DATA_GRAD_ALGORITHMS, FORWARD_ALGORITHMS, WEIGHT_GRAD_ALGORITHMS, assert_close, assert_exact,
                     assert_result_array, backend_context, data_grad_algorithm, forward_algorithm, gemm_family, randn, rng_for, seed_note, shifted_rows_tiles,
                     small_ints, weight_grad_algorithm)


@functools.lru_cache(maxsize=None)
def _random_problem(case, kind):
    """Inputs and naive float64 references for a case, shared by the backend/dtype variants.
    ``kind`` is "normal" (standard normal data) or "ints" (small non-zero integers)."""
    rng = rng_for("conv", case.id, kind)
    make = randn if kind == "normal" else small_ints
    x = make(rng, case.x_shape)
    w = make(rng, case.w_shape)
    b = make(rng, (case.FN,))
    dout = make(rng, case.out_shape)
    data = dict(x=x, w=w, b=b, dout=dout)
    for a in data.values():
        a.flags.writeable = False
    return data


@functools.lru_cache(maxsize=None)
def _reference(case, kind, dtype_name, with_abs):
    """Naive results on the inputs rounded to ``dtype`` (and, with_abs, on their absolute
    values: the tolerance scale)."""
    d = _random_problem(case, kind)
    f = (lambda a: np.abs(a.astype(dtype_name))) if with_abs else (lambda a: a.astype(dtype_name))
    x, w, b, dout = f(d["x"]), f(d["w"]), f(d["b"]), f(d["dout"])
    out_nb = naive.conv2d(x, w, None, case.stride, case.pad)
    out_b = out_nb + b.astype(np.float64)[None, :, None, None]
    dx, dw, db = naive.conv2d_backward(dout, x, w, case.stride, case.pad)
    return out_nb, out_b, dx, dw, db


def _assert_grad_matches_naive(case, dtype, grad, got, what):
    """One gradient ("dx", "dW" or "db") of the case's normal inputs against the naive loops,
    with their bound on the absolute values and the number of terms each element sums."""
    i = ("dx", "dW", "db").index(grad)
    ref = _reference(case, "normal", dtype.name, False)[2 + i]
    bound = _reference(case, "normal", dtype.name, True)[2 + i]
    terms = naive.conv_terms(case.x_shape, case.w_shape, case.stride, case.pad)[1 + i]
    assert_close(got, ref, bound, terms, dtype, f"{grad}[{what}]")


def _inputs(case, kind, dtype):
    d = _random_problem(case, kind)
    return (d["x"].astype(dtype), d["w"].astype(dtype), d["b"].astype(dtype), d["dout"].astype(dtype))


@pytest.mark.parametrize("with_bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("case", params(CASES))
def test_forward_matches_naive(case, backend, dtype, with_bias):
    x, w, b, _ = _inputs(case, "normal", dtype)
    out = fastconv.conv2d(x, w, b if with_bias else None, **case.geometry)
    assert_result_array(out, case.out_shape, dtype, f"conv2d[{backend}]")
    ref_nb, ref_b, *_ = _reference(case, "normal", dtype.name, False)
    abs_nb, abs_b, *_ = _reference(case, "normal", dtype.name, True)
    nterms = naive.conv_terms(case.x_shape, case.w_shape, case.stride, case.pad)[0]
    if with_bias:
        assert_close(out, ref_b, abs_b, nterms, dtype, f"conv2d[{backend}] with bias")
    else:
        assert_close(out, ref_nb, abs_nb, nterms, dtype, f"conv2d[{backend}] without bias")


@pytest.mark.parametrize("algorithm", FORWARD_ALGORITHMS)
@pytest.mark.parametrize("family", fastconv._core.gemm_kernels())
@pytest.mark.parametrize("case", params(CASES))
def test_every_forward_algorithm_matches_naive(case, family, algorithm, dtype):
    """Each native forward algorithm forced over the case table, with every GEMM kernel family
    (strided windows run shifted rows on their phase rows; every algorithm falls back to
    implicit_gemm on an empty output; the plan says which)."""
    x, w, b, _ = _inputs(case, "normal", dtype)
    with forward_algorithm(algorithm), backend_context(f"native:{family}"):
        out = fastconv.conv2d(x, w, b, **case.geometry)
        chosen = fastconv.explain_plan(case.x_shape, case.w_shape, dtype=dtype, **case.geometry)["forward"]
    runs = 0 not in case.out_shape
    assert chosen["algorithm"] == (algorithm if runs else "implicit_gemm"), chosen
    _, ref_b, *_ = _reference(case, "normal", dtype.name, False)
    _, abs_b, *_ = _reference(case, "normal", dtype.name, True)
    nterms = naive.conv_terms(case.x_shape, case.w_shape, case.stride, case.pad)[0]
    assert_close(out, ref_b, abs_b, nterms, dtype, f"conv2d[{algorithm}, {family}]")


@pytest.mark.parametrize("algorithm", WEIGHT_GRAD_ALGORITHMS)
@pytest.mark.parametrize("family", fastconv._core.gemm_kernels())
@pytest.mark.parametrize("case", params(CASES))
def test_every_weight_grad_algorithm_matches_naive(case, family, algorithm, dtype):
    """Each native weight-gradient algorithm forced over the case table, with every kernel
    family: dW and db of the whole backward and of dW alone (forced dots take the GEMM where the
    stride is not 1; a forced GEMM runs in groups or column blocks; the plan says which)."""
    x, w, _, dout = _inputs(case, "normal", dtype)
    with weight_grad_algorithm(algorithm), backend_context(f"native:{family}"):
        _, dw, db = fastconv.conv2d_backward(dout, x, w, **case.geometry)
        dw_alone = fastconv.conv2d_backward_weight(dout, x, case.kh, case.kw, **case.geometry)
        chosen = fastconv.explain_plan(case.x_shape, case.w_shape, dtype=dtype, **case.geometry)["backward"]
    expected = {"gemm": ("gemm", "gemm_columns"), "dots": ("dots",) if (case.sh, case.sw) == (1, 1) else
                ("gemm", "gemm_columns"), "taps": ("taps",)}[algorithm]
    assert chosen["weight_grad"] in expected, chosen
    _assert_grad_matches_naive(case, dtype, "dW", dw, f"{algorithm}, {family}")
    _assert_grad_matches_naive(case, dtype, "dW", dw_alone, f"alone, {algorithm}, {family}")
    _assert_grad_matches_naive(case, dtype, "db", db, f"{algorithm}, {family}")


@pytest.mark.parametrize("algorithm", DATA_GRAD_ALGORITHMS)
@pytest.mark.parametrize("family", fastconv._core.gemm_kernels())
@pytest.mark.parametrize("case", params(CASES))
def test_every_data_grad_algorithm_matches_naive(case, family, algorithm, dtype):
    """Each native data-gradient algorithm forced over the case table, with every kernel family:
    dx of the whole backward and of dx alone (a forced transposed forward takes the col2im path
    where the stride is not 1 or the padding reaches the window, forced pixel rows on an empty
    batch or plane; col2im on one output pixel an image is its one-pixel variant; the plan says
    which)."""
    x, w, _, dout = _inputs(case, "normal", dtype)
    with data_grad_algorithm(algorithm), backend_context(f"native:{family}"):
        dx, _, _ = fastconv.conv2d_backward(dout, x, w, **case.geometry)
        dx_alone = fastconv.conv2d_backward_input(dout, w, case.x_shape, **case.geometry)
        chosen = fastconv.explain_plan(case.x_shape, case.w_shape, dtype=dtype, **case.geometry)["backward"]
    col2im = ("gemm_col2im", "one_pixel")  # one output pixel an image: col2im's own two panels
    expected = col2im if algorithm == "gemm_col2im" else (algorithm,)
    if algorithm == "transposed_forward" and ((case.sh, case.sw) != (1, 1) or case.ph >= case.kh or case.pw >= case.kw):
        expected = col2im
    if algorithm == "pixel_rows" and (0 in case.out_shape or 0 in case.x_shape):
        expected = col2im
    assert chosen["data_grad"] in expected, chosen
    _assert_grad_matches_naive(case, dtype, "dx", dx, f"{algorithm}, {family}")
    _assert_grad_matches_naive(case, dtype, "dx", dx_alone, f"alone, {algorithm}, {family}")


@pytest.mark.parametrize("case", params(CASES))
def test_backward_matches_naive(case, backend, dtype):
    x, w, _, dout = _inputs(case, "normal", dtype)
    dx, dw, db = fastconv.conv2d_backward(dout, x, w, **case.geometry)
    assert_result_array(dx, case.x_shape, dtype, f"dx[{backend}]")
    assert_result_array(dw, case.w_shape, dtype, f"dW[{backend}]")
    assert_result_array(db, (case.FN,), dtype, f"db[{backend}]")
    for grad, got in (("dx", dx), ("dW", dw), ("db", db)):
        _assert_grad_matches_naive(case, dtype, grad, got, backend)


@pytest.mark.parametrize("N, H, W", [(1, 7, 7), (1, 14, 14), (1, 28, 28), (8, 7, 7), (8, 14, 14),
                                     (1, 1, -1), (1, 1, 0), (1, 1, 1)])  # W <= 1: 4 NR + W pixels in a row
@pytest.mark.parametrize("family", fastconv._core.gemm_kernels())
def test_unstrided_pointwise_rule_counts_tiles_of_pixels(N, H, W, family, dtype):
    """An unstrided 1x1 layer takes the implicit path (its B panels packed from the planes as
    they are) from 4 NR-wide tiles of the batch's pixels up; a batch-1 layer below that takes
    shifted rows, whose weights are read in place (a 7x7 plane: 1.3-1.5x faster there)."""
    kern = kernel_of(family, dtype.name)
    if W <= 1:
        W += 4 * kern["nr"]
    x_shape, w_shape = (N, 64, H, W), (256, 64, 1, 1)
    with backend_context(f"native:{family}"):
        chosen = fastconv.explain_plan(x_shape, w_shape, dtype=dtype)["forward"]["algorithm"]
    assert chosen == ("implicit_gemm" if N * H * W >= 4 * kern["nr"] else "shifted_rows"), kern


@pytest.mark.parametrize("H", [14, 28, 56])
@pytest.mark.parametrize("family", fastconv._core.gemm_kernels())
def test_strided_pointwise_tile_rule_counts_the_edge_tile_in_vectors(H, family, dtype):
    """At batch > 1 a strided 1x1 layer takes shifted rows only where an item's pixels fill
    90 % of the lanes it runs, its last tile counted in vectors of the kernel's width (a 14x14
    output fills 196 of 208 lanes of a 48-wide float32 AVX-512 tile, not 196 of 240)."""
    x_shape, w_shape = (8, 64, H, H), (256, 64, 1, 1)
    kern = kernel_of(family, dtype.name)
    with backend_context(f"native:{family}"):
        with forward_algorithm("shifted_rows"):
            forced = fastconv.explain_plan(x_shape, w_shape, stride=2, dtype=dtype)["forward"]
        chosen = fastconv.explain_plan(x_shape, w_shape, stride=2, dtype=dtype)["forward"]["algorithm"]
    npx, nr, lanes = forced["rows"] * forced["pitch"], kern["nr"], kern["lanes"]
    run = npx // nr * nr + -(-(npx % nr) // lanes) * lanes
    assert forced["algorithm"] == "shifted_rows", forced
    assert chosen == ("shifted_rows" if 10 * npx >= 9 * run else "implicit_gemm"), (forced, kern)


@pytest.mark.parametrize("N", [1, 2, 8])
@pytest.mark.parametrize("scale", [0.5, 1.0, 1.01, 4.0])  # W bytes / half of L2
@pytest.mark.parametrize("family", fastconv._core.gemm_kernels())
def test_strided_pointwise_weights_beyond_half_l2_take_the_implicit_path(N, scale, family, dtype):
    """At batch > 1 a strided 1x1 layer whose weights exceed half of L2 takes the implicit path
    (shifted rows stream W once per item of a few rows); up to half of L2, and at batch 1, the
    rules before it decide (a 14x14 plane's items fill their tiles, so shifted rows)."""
    half_l2 = fastconv._core.cache_sizes()["l2"] // 2
    C = 64
    FN = max(1, int(scale * half_l2 / (C * dtype.itemsize)))
    x_shape, w_shape = (N, C, 28, 28), (FN, C, 1, 1)
    with backend_context(f"native:{family}"):
        with forward_algorithm("shifted_rows"):
            forced = fastconv.explain_plan(x_shape, w_shape, stride=2, dtype=dtype)["forward"]
        chosen = fastconv.explain_plan(x_shape, w_shape, stride=2, dtype=dtype)["forward"]["algorithm"]
    kern = kernel_of(family, dtype.name)
    npx, nr, lanes = forced["rows"] * forced["pitch"], kern["nr"], kern["lanes"]
    fills_tiles = N == 1 or 10 * npx >= 9 * (npx // nr * nr + -(-(npx % nr) // lanes) * lanes)
    # Items narrower than one tile go to the implicit path whatever W's size: 8192 float32
    # filters (4 x half of a 1 MiB L2) leave items of 2 rows x 14 pixels, under a 48-wide tile.
    wide = npx >= nr and forced["items"] >= forced["threads"]
    beyond = FN * C * dtype.itemsize > half_l2
    expected = "implicit_gemm" if (N > 1 and beyond) or not (fills_tiles and wide) else "shifted_rows"
    assert chosen == expected, (FN, forced, kern)


@pytest.mark.parametrize("N, C, H, W, FN, k, stride, pad", [
    (1, 3, 47, 47, 13, 11, 4, 0),     # AlexNet conv1's window: 3 x 3 phase taps of 4 x 4 phases
    (2, 3, 30, 27, 17, 7, 2, 3),      # the ResNet stem's window, odd widths
    (3, 40, 9, 11, 9, 3, 2, 1),       # K = 360 crosses every KC; 9 filters: a ragged MR panel
    (2, 5, 12, 13, 6, 2, 3, 1),       # stride > kernel: 2 x 2 of the 3 x 3 phases are read
    (2, 4, 11, 14, 7, 3, (2, 1), 1),  # strided rows only
    (1, 6, 10, 19, 5, 5, (1, 3), 2),  # strided columns only, 5x5
    (1, 2, 5, 5, 4, 5, 4, 2),         # every output window mostly padding
])
@pytest.mark.parametrize("forced", [True, False], ids=["forced", "auto"])
def test_strided_windows_on_phase_rows(N, C, H, W, FN, k, stride, pad, forced, dtype, poisoned, threads_restored):
    """A strided window runs on shifted rows from its rows split into phases (tap (i, j) is
    phase (i % sh, j % sw) at offset (i // sh, j // sw)); against the naive loops with buffers
    poisoned, forced and under the auto rule, on 1 and 2 threads."""
    rng = rng_for("phase-rows", N, C, H, W, FN, k, stride, pad)
    x, w, b = randn(rng, (N, C, H, W), dtype), randn(rng, (FN, C, k, k), dtype), randn(rng, (FN,), dtype)
    ref = naive.conv2d(x, w, b, stride, pad)
    absref = naive.conv2d(np.abs(x), np.abs(w), np.abs(b), stride, pad)
    for threads in (1, 2):
        fastconv.set_num_threads(threads)
        with forward_algorithm("shifted_rows" if forced else "auto"):
            plan = fastconv.explain_plan(x.shape, w.shape, stride=stride, pad=pad, dtype=dtype)["forward"]
            out = fastconv.conv2d(x, w, b, stride, pad)
        if forced:
            assert plan["algorithm"] == "shifted_rows", plan
        assert_close(out, ref, absref, C * k * k + 1, dtype, f"phase rows ({plan['algorithm']}, {threads} threads)")


@pytest.mark.parametrize("N, C, H, W, FN, stride", [
    (1, 64, 14, 14, 128, 2),  # ResNet's downsampling projection at batch 1
    (2, 24, 15, 9, 41, 2),    # odd sizes: the last input row and column are skipped
    (3, 16, 13, 13, 20, 3),   # stride 3
    (1, 8, 7, 12, 9, (2, 1)),  # different strides per axis
])
def test_strided_pointwise_on_shifted_rows(N, C, H, W, FN, stride, dtype, poisoned):
    """A strided 1x1 conv runs on shifted rows from subsampled copies of its rows; against the
    naive loops with buffers poisoned, forced and by the auto rule."""
    rng = rng_for("strided-1x1", N, C, H, W, FN, stride)
    x, w, b = randn(rng, (N, C, H, W), dtype), randn(rng, (FN, C, 1, 1), dtype), randn(rng, (FN,), dtype)
    ref = naive.conv2d(x, w, b, stride, 0)
    absref = naive.conv2d(np.abs(x), np.abs(w), np.abs(b), stride, 0)
    with forward_algorithm("shifted_rows"):
        assert fastconv.explain_plan(x.shape, w.shape, stride=stride, dtype=dtype)["forward"]["algorithm"] == "shifted_rows"
        assert_close(fastconv.conv2d(x, w, b, stride, 0), ref, absref, C + 1, dtype, "strided 1x1, forced")
    assert_close(fastconv.conv2d(x, w, b, stride, 0), ref, absref, C + 1, dtype, "strided 1x1, auto")


def _forced_shifted_rows(x, w, b, stride, pad, family, tiles):
    """(threads, forward plan, output) of the forward forced onto shifted rows with `tiles`,
    under `family`, on 1 and then 2 threads."""
    for threads in (1, 2):
        fastconv.set_num_threads(threads)
        with backend_context(f"native:{family}"), forward_algorithm("shifted_rows"), shifted_rows_tiles(tiles):
            plan = fastconv.explain_plan(x.shape, w.shape, stride=stride, pad=pad, dtype=x.dtype)["forward"]
            out = fastconv.conv2d(x, w, b, stride, pad)
        yield threads, plan, out


@pytest.mark.parametrize("N, C, H, W, k, stride, pad, filters", [
    (5, 16, 7, 7, 3, 1, 1, "2 NR + 2 lanes"),  # 7 full MR panels of pixels per image
    (3, 40, 9, 11, 3, 1, 1, "NR - 1"),         # K = 360 crosses KC; 9 x 12 = 108 pixels: a short MR panel
    (2, 8, 6, 5, 3, 1, 0, "NR"),               # 4 x 4 = 16 pixels (pitch 4, no pad columns)
    (1, 24, 30, 31, 3, 1, 1, "NR + 1"),        # several row items, a short last one; a one-column edge
    (2, 5, 13, 12, 5, 2, 2, "2 NR + lanes"),   # phase rows; a one-vector edge
    (1, 3, 23, 23, 11, 4, 0, "NR + 1"),        # AlexNet conv1's window: 3 x 3 taps of 4 x 4 phases
])
@pytest.mark.parametrize("family", fastconv._core.gemm_kernels())
def test_shifted_rows_pixel_tiles(N, C, H, W, k, stride, pad, filters, family, dtype, poisoned, threads_restored):
    """The shifted-rows GEMM computed transposed -- MR-pixel panels copied from the rows, W^T in
    NR-filter panels packed once, the bias added as the block is copied out -- against the
    naive loops with buffers poisoned, forced on 1 and 2 threads (batch 1: filter blocks of
    whole NR panels), under every family, with filters around NR and its vector edges."""
    kern = kernel_of(family, dtype.name)
    nr, lanes = kern["nr"], kern["lanes"]
    FN = {"NR - 1": nr - 1, "NR": nr, "NR + 1": nr + 1, "2 NR + lanes": 2 * nr + lanes,
          "2 NR + 2 lanes": 2 * nr + 2 * lanes}[filters]
    rng = rng_for("pixel-tiles", N, C, H, W, k, stride, pad, FN, family)
    x, w, b = randn(rng, (N, C, H, W), dtype), randn(rng, (FN, C, k, k), dtype), randn(rng, (FN,), dtype)
    ref = naive.conv2d(x, w, b, stride, pad)
    absref = naive.conv2d(np.abs(x), np.abs(w), np.abs(b), stride, pad)
    for threads, plan, out in _forced_shifted_rows(x, w, b, stride, pad, family, "pixels_by_filters"):
        assert plan["algorithm"] == "shifted_rows" and plan["tiles"] == "pixels_by_filters", plan
        assert plan["filter_block"] == FN or plan["filter_block"] % nr == 0, plan
        assert_close(out, ref, absref, C * k * k + 1, dtype, f"pixel tiles ({family}, {threads} threads)")


def _row_lanes(n, nr, lanes):
    """Lanes the tiles of one output row of n pixels compute: whole NR tiles, then the edge in
    whole vectors."""
    return n // nr * nr + -(-(n % nr) // lanes) * lanes


@pytest.mark.parametrize("N, C, H, width, k, stride, pad, FN, expect", [
    (1, 3, 9, "NR", 3, 1, 1, 13, "rows_in_place"),         # batch 1: filter blocks on 2 threads
    (2, 40, 6, "2 * NR", 3, 1, 1, 7, "rows_in_place"),     # K = 360 > KC: sums kept in the output
    (1, 5, 5, "NR - 1", 3, 1, 1, 9, "rows_in_place"),      # the edge tile reads the pad column
    (2, 4, 7, "NR + 1", 3, 1, 1, 6, "block_copy"),         # a one-column edge: more lanes than the pitch
    (2, 4, 6, "NR + lanes", 3, 1, 1, 6, None),             # two tiles a row: the block has fewer at NR > 4
    (3, 2, 4, "2 * NR", 3, 1, 0, 5, "rows_in_place"),      # no padding: pitch W, OW = W - 2
    (1, 3, 21, "2 * NR + 6", 7, 2, 3, 8, None),            # phase rows (the ResNet stem's window)
])
@pytest.mark.parametrize("family", fastconv._core.gemm_kernels())
def test_shifted_rows_store_rows_in_place(N, C, H, width, k, stride, pad, FN, expect, family, dtype, poisoned,
                                          threads_restored):
    """Where an output row's tiles read no further than its pitch and number no more than the
    item's block has, the shifted-rows GEMM stores them straight into the output (no block
    copied out): the plan says which, by the rule recomputed here, and the result matches the
    naive loops with every buffer poisoned, on 1 and 2 threads, under every family."""
    kern = kernel_of(family, dtype.name)
    nr, lanes = kern["nr"], kern["lanes"]
    W = {"NR": nr, "2 * NR": 2 * nr, "NR - 1": nr - 1, "NR + 1": nr + 1, "NR + lanes": nr + lanes,
         "2 * NR + 6": 2 * nr + 6}[width]
    rng = rng_for("rows-in-place", N, C, H, W, k, stride, pad, FN, family)
    x, w, b = randn(rng, (N, C, H, W), dtype), randn(rng, (FN, C, k, k), dtype), randn(rng, (FN,), dtype)
    ref = naive.conv2d(x, w, b, stride, pad)
    absref = naive.conv2d(np.abs(x), np.abs(w), np.abs(b), stride, pad)
    ow = ref.shape[3]
    for threads, plan, out in _forced_shifted_rows(x, w, b, stride, pad, family, "filters_by_pixels"):
        rows, pitch = plan["rows"], plan["pitch"]
        fits = _row_lanes(ow, nr, lanes) <= pitch and rows * -(-ow // nr) <= -(-rows * pitch // nr)
        rule = "rows_in_place" if fits else "block_copy"
        assert plan["output"] == rule == (expect or rule), (plan, rule)
        assert_close(out, ref, absref, C * k * k + 1, dtype, f"{rule} ({family}, {threads} threads)")


def _columns_run(n, nr, lanes):
    """Columns n costs in tiles: whole NR tiles, then the edge in vectors, one vector of a tile
    of three or more as 1.5."""
    edge = -(-(n % nr) // lanes)
    return n // nr * nr + (1.5 if edge == 1 and nr >= 3 * lanes else edge) * lanes


@pytest.mark.parametrize("N, H, FN", [
    (100, 7, 128),  # the seed CNN's conv3 at batch 100
    (100, 8, 64),   # DeepConvNet's conv6: 64 filters end in a one-vector tile
    (1, 7, 128),    # batch 1: W read in place
    (100, 14, 128),  # 210 pixels fill 48-wide tiles well
    (100, 28, 16),  # DeepConvNet's conv2: 812 pixels, more than MC rows of panels
])
@pytest.mark.parametrize("family", fastconv._core.gemm_kernels())
def test_pixel_tiles_rule_weighs_tile_edges(N, H, FN, family, threads_restored):
    """The auto rule computes the block transposed where pixels in MR panels and filters in
    NR-wide tiles cost a twelfth less than the other way round, a one-vector edge of a
    three-vector tile counted one and a half, only where W is packed anyway and the item's
    pixels fit MC rows; on AVX-512 that is float32's 7x7 planes with 128 filters at batch 100
    alone (float64's 8-lane tiles already fit 56 pixels), on AVX2 none of these."""
    fastconv.set_num_threads(2)
    for dtype in ("float32", "float64"):
        kern = kernel_of(family, dtype)
        with backend_context(f"native:{family}"):
            f = fastconv.explain_plan((N, 64, H, H), (FN, 64, 3, 3), pad=1, dtype=dtype)["forward"]
        assert f["algorithm"] == "shifted_rows", f
        npx, mr, nr, lanes = f["rows"] * f["pitch"], kern["mr"], kern["nr"], kern["lanes"]
        by_pixels = npx / _columns_run(npx, nr, lanes) * FN / (-(-FN // mr) * mr)
        by_filters = npx / (-(-npx // mr) * mr) * FN / _columns_run(FN, nr, lanes)
        packed = N * -(-H // f["rows"]) > 8 * 2
        fits_mc = npx <= kern["mc"]
        want = ("pixels_by_filters" if packed and fits_mc and 12 * by_filters >= 13 * by_pixels
                else "filters_by_pixels")
        assert f["tiles"] == want, (dtype, f, kern)
        if family == "avx512f":
            assert (want == "pixels_by_filters") == ((N, H, FN, dtype) == (100, 7, 128, "float32")), (dtype, f)
        if family == "avx2":
            assert want == "filters_by_pixels", (dtype, f)


def _assert_backward_matches_naive(dout, x, w, stride, pad, dtype, what):
    """dx, dW and db of one conv2d_backward call against the naive loops; returns the naive
    dx and its |.| bound for a dx-only call to compare with."""
    N, FN, OH, OW = dout.shape
    k = w.shape[2]
    dx, dw, db = fastconv.conv2d_backward(dout, x, w, stride, pad)
    rdx, rdw, rdb = naive.conv2d_backward(dout, x, w, stride, pad)
    adx, adw, adb = naive.conv2d_backward(np.abs(dout), np.abs(x), np.abs(w), stride, pad)
    assert_close(dx, rdx, adx, FN * k * k, dtype, f"dx {what}")
    assert_close(dw, rdw, adw, N * OH * OW, dtype, f"dW {what}")
    assert_close(db, rdb, adb, N * OH * OW, dtype, f"db {what}")
    return rdx, adx


def _assert_dx_path_matches_naive(x_shape, w_shape, stride, pad, dtype, what, plan_takes):
    """Fresh inputs for one dx path: the plan must take it (plan_takes(backward plan)); then
    dx, dW and db of the whole backward and dx alone against the naive loops."""
    rng = rng_for("dx-path", what, *x_shape, *w_shape, stride, pad)
    (N, C, H, W), (FN, _, k, kw) = x_shape, w_shape
    x, w = randn(rng, x_shape, dtype), randn(rng, w_shape, dtype)
    OH, OW = naive.geometry(H, W, k, kw, stride, pad)[4:]
    dout = randn(rng, (N, FN, OH, OW), dtype)
    plan = fastconv.explain_plan(x_shape, w_shape, stride=stride, pad=pad, dtype=dtype)["backward"]
    assert plan_takes(plan), plan
    rdx, adx = _assert_backward_matches_naive(dout, x, w, stride, pad, dtype, f"with dx {what}")
    alone = fastconv.conv2d_backward_input(dout, w, x_shape, stride=stride, pad=pad)
    assert_close(alone, rdx, adx, FN * k * k, dtype, f"dx alone {what}")


def _flipped_weights_fit(x_shape, w_shape, pad, dtype):
    """The transposed forward's workspace rule: W's flipped copy, the forward's packed W and 4
    threads' scratch within a quarter of the layer's im2col, or within one L2."""
    (N, C, H, W), (FN, _, kh, kw) = x_shape, w_shape
    OH, OW = H + 2 * pad - kh + 1, W + 2 * pad - kw + 1
    before = fastconv.get_num_threads()
    fastconv.set_num_threads(4)
    try:
        t = fastconv.explain_plan((N, FN, OH, OW), (C, FN, kh, kw), pad=(kh - 1 - pad, kw - 1 - pad), dtype=dtype)
    finally:
        fastconv.set_num_threads(before)
    elems = FN * C * kh * kw + t["forward"]["shared_elems"] + t["forward"]["threads"] * t["forward"]["thread_elems"]
    itemsize = np.dtype(dtype).itemsize
    return elems * itemsize <= max(N * OH * OW * C * kh * kw * itemsize // 4, fastconv._core.cache_sizes()["l2"])


@pytest.mark.parametrize("N, C, H, FN", [
    (1, 256, 14, 256),  # K = 2304 over 196 pixels: the smallest deep patch the rule takes
    (8, 512, 7, 512),   # ResNet-18's l4 at batch 8
    (2, 384, 13, 384),  # AlexNet's conv4 at batch 2
])
def test_deep_float64_patches_take_the_implicit_path(N, C, H, FN, poisoned):
    """Float64 3x3 layers with >= 256 channels over >= 196 batch pixels run the implicit GEMM
    where the shifted rows' rule would take them (the plan says so), float32 ones and shallower
    or smaller ones keep the shifted rows; a forced shifted-rows forward still runs there; the
    transposed forward of dx keeps its choice; results against the naive loops."""
    rng = rng_for("deep-f64", N, C, H, FN)
    x, w = randn(rng, (N, C, H, H), np.float64), randn(rng, (FN, C, 3, 3), np.float64)
    plan = fastconv.explain_plan(x.shape, w.shape, pad=1, dtype=np.float64)["forward"]
    assert plan["algorithm"] == "implicit_gemm" and plan["shifted_rows_declined"], plan
    # float32; K = 2295 (255 channels); 169 pixels (one 13x13 image)
    for shape, dt in ((x.shape, np.float32), ((N, 255, H, H), np.float64), ((1, C, 13, 13), np.float64)):
        other = fastconv.explain_plan(shape, (FN, shape[1], 3, 3), pad=1, dtype=dt)["forward"]
        assert other["algorithm"] == "shifted_rows" and not other["shifted_rows_declined"], (shape, dt, other)
    with forward_algorithm("shifted_rows"):
        assert fastconv.explain_plan(x.shape, w.shape, pad=1, dtype=np.float64)["forward"]["algorithm"] == "shifted_rows"
    out = fastconv.conv2d(x, w, None, 1, 1)
    assert_close(out, naive.conv2d(x, w, None, 1, 1), naive.conv2d(np.abs(x), np.abs(w), None, 1, 1), C * 9,
                 np.float64, "deep float64 patch on the implicit path")
    big = fastconv.explain_plan((8, C, H, H), w.shape, pad=1, dtype=np.float64)["backward"]["data_grad"]
    fits = _flipped_weights_fit((8, C, H, H), w.shape, 1, np.float64)
    assert big in (("transposed_forward", "pixel_rows") if fits else ("gemm_col2im", "pixel_rows")), (big, fits)


@pytest.mark.parametrize("N, C, H, W, FN, k, pad", [
    (8, 16, 12, 12, 8, 3, 1),   # the smallest batch and channel count the rule takes
    (9, 17, 13, 11, 24, 3, 0),  # a valid conv: the transposed forward pads by kh - 1
    (8, 24, 10, 12, 41, 5, 2),  # 5x5, 41 filters (not a multiple of MR)
    (8, 16, 12, 12, 130, 1, 0),  # 1x1: dout's 130 channels in
])
def test_data_grad_as_transposed_forward(N, C, H, W, FN, k, pad, dtype, poisoned):
    """Stride 1, a batch of >= 8, >= 16 channels: dx runs as the forward convolution of dout
    with W flipped and transposed; dx, dW and db against the naive loops, buffers poisoned,
    through the whole backward and through dx alone."""
    rng = rng_for("dx-as-forward", N, C, H, W, FN, k, pad)
    x, w = randn(rng, (N, C, H, W), dtype), randn(rng, (FN, C, k, k), dtype)
    OH, OW = H + 2 * pad - k + 1, W + 2 * pad - k + 1
    dout = randn(rng, (N, FN, OH, OW), dtype)
    plan = fastconv.explain_plan(x.shape, w.shape, pad=pad, dtype=dtype)["backward"]
    assert _flipped_weights_fit(x.shape, w.shape, pad, dtype)
    assert plan["data_grad"] == "transposed_forward", plan
    rdx, adx = _assert_backward_matches_naive(dout, x, w, 1, pad, dtype, "with dx as a transposed forward")
    alone = fastconv.conv2d_backward_input(dout, w, x.shape, stride=1, pad=pad)
    assert_close(alone, rdx, adx, FN * k * k, dtype, "dx alone as a transposed forward")
    # Where the transposed forward would not take shifted rows, dx goes through col2im -- but a
    # 1x1's transposed forward is a 1x1, served as well on the implicit path.
    with forward_algorithm("implicit_gemm"):
        forced = fastconv.explain_plan(x.shape, w.shape, pad=pad, dtype=dtype)["backward"]["data_grad"]
    assert forced == ("transposed_forward" if k == 1 else "gemm_col2im"), forced


@pytest.mark.parametrize("N, C, H, W, FN, stride", [
    (1, 512, 7, 7, 300, 1),   # ResNet-50's s4 at batch 1, scaled: K = 300 filters crosses KC
    (8, 100, 7, 7, 13, 1),    # batch 8: 392 pixel rows cross MC; 100 channels >= every NR (8-48), a short last block
    (3, 49, 5, 8, 9, 1),      # channels one past a full NR block of every tile (8-48), 40-pixel planes
    (2, 64, 8, 8, 7, 1),      # 64 pixels an image: the largest plane the rule takes
    (1, 256, 14, 14, 130, 2), # ResNet-50's s4 projection at batch 1, scaled: 7x7 outputs at stride 2
    (2, 49, 13, 13, 9, 2),    # odd plane at stride 2: the last input row and column get gradient
    (3, 50, 10, 11, 17, 3),   # stride 3: two of every three rows and columns stay zero
    (2, 60, 7, 16, 20, (1, 2)),  # per-axis strides: every row, alternate columns
    (1, 48, 16, 16, 12, 2),   # 64 outputs at stride 2: the largest plane the rule takes
])
def test_pointwise_data_grad(N, C, H, W, FN, stride, dtype, poisoned):
    """1x1 without padding on small output planes, at any stride: dx^T in channel blocks, one
    GEMM over the batch's pixels each, transposed into dx (at a stride, onto the pixels the
    windows read, the rest zero); dx alone and beside dW against the naive loops, buffers
    poisoned."""
    _assert_dx_path_matches_naive((N, C, H, W), (FN, C, 1, 1), stride, 0, dtype, "in pixel rows",
                                  lambda plan: plan["data_grad"] == "pixel_rows")
    sh, sw = naive.pair(stride)
    wider = (N, C, 9 * sh, 9 * sw)  # 81 output pixels an image: past the rule, the col2im path
    assert fastconv.explain_plan(wider, (FN, C, 1, 1), stride=stride, dtype=dtype)["backward"]["data_grad"] != "pixel_rows"
    padded = fastconv.explain_plan((N, C, H, W), (FN, C, 1, 1), stride=stride, pad=1, dtype=dtype)["backward"]
    assert padded["data_grad"] != "pixel_rows", padded  # padding drops border pixels: not a plain scatter


# Weights of at least 8 MiB in float32: past 4 L2s on every machine kind (512 KiB - 2 MiB).
@pytest.mark.parametrize("N, C, H, W, FN, k, stride, pad", [
    (1, 512, 7, 7, 512, 3, 1, 1),     # ResNet-18's l4 3x3 at batch 1: 49 pixel rows, one plane
    (8, 256, 14, 14, 1024, 3, 2, 1),  # l4_down3x3 at batch 8 with twice its filters: 392 rows cross MC
    (3, 640, 9, 8, 400, 3, 1, 0),     # a valid 3x3 (7x6 outputs), FN = 400 crosses KC, 3 images
    (2, 400, 11, 13, 256, 5, 2, 2),   # 5x5 stride 2, padded: 6x7 outputs, borders clipped
])
def test_pixel_rows_data_grad_for_large_windows(N, C, H, W, FN, k, stride, pad, dtype, poisoned):
    """A k x k window on a small plane with weights past 4 L2s: dx^T in channel blocks over the
    batch's pixels, each image's rows transposed into dcol and summed by col2im; dx alone and
    beside dW against the naive loops, buffers poisoned. Smaller weights keep the col2im path."""
    _assert_dx_path_matches_naive((N, C, H, W), (FN, C, k, k), stride, pad, dtype, "in pixel rows",
                                  lambda plan: plan["data_grad"] == "pixel_rows")
    small = fastconv.explain_plan((N, C // 16, H, W), (FN // 16, C // 16, k, k), stride=stride, pad=pad, dtype=dtype)
    assert small["backward"]["data_grad"] != "pixel_rows", small["backward"]


@pytest.mark.parametrize("N, C, H, W, FN, k, stride, pad", [
    (2, 50, 7, 7, 9, 3, 1, 1),      # 50 channels: blocks of 13 at 2 threads, a short last one
    (1, 3, 12, 9, 300, 5, 2, 2),    # 3 channels, FN = 300 crosses KC, odd planes at stride 2
    (4, 7, 8, 16, 11, 3, (1, 2), 1),  # per-axis strides
    (1, 9, 6, 6, 5, 7, 1, 3),       # a window larger than the plane: most taps in the padding
    (30, 5, 5, 5, 4, 3, 1, 0),      # 270 pixel rows cross MC at 3x3 outputs
])
@pytest.mark.parametrize("threads", [1, 2])
def test_forced_pixel_rows_data_grad(N, C, H, W, FN, k, stride, pad, threads, dtype, poisoned, threads_restored):
    """The pixel-rows dx forced where the rule would not take it: channel blocks that do not
    divide C, depths past KC, rows past MC, clipped borders; at 1 and 2 threads, bit-exact
    across them (each dx element's sums do not depend on the blocks)."""
    results = []
    for t in (1, threads):
        fastconv.set_num_threads(t)
        with data_grad_algorithm("pixel_rows"):
            _assert_dx_path_matches_naive((N, C, H, W), (FN, C, k, k), stride, pad, dtype, f"forced pixel rows, {t} T",
                                          lambda plan: plan["data_grad"] == "pixel_rows")
            rng = rng_for("forced-pixel-rows", N, C, H, W, FN, k, stride, pad)
            w = randn(rng, (FN, C, k, k), dtype)
            OH, OW = naive.geometry(H, W, k, k, stride, pad)[4:]
            dout = randn(rng, (N, FN, OH, OW), dtype)
            results.append(fastconv.conv2d_backward_input(dout, w, (N, C, H, W), stride=stride, pad=pad))
    assert_exact(results[1], results[0], f"pixel-rows dx at {threads} threads vs 1")


@pytest.mark.parametrize("N, C, H, W, FN, k, stride, pad", [
    (1, 3, 128, 100, 16, 3, 1, 1),   # VGG conv1_1's window: 3 channels, rows overlapping by 2
    (1, 3, 227, 227, 24, 11, 4, 0),  # AlexNet conv1's: chunks of >= 2 rows so alternate ones never meet
    (1, 1, 201, 400, 9, 5, 2, 2),    # one channel, 5x5 stride 2, a short last chunk
    (2, 1, 200, 200, 16, 3, 1, 0),   # two images: items of (image, chunk)
    (1, 2, 97, 300, 33, 7, 3, 3),    # 7x7 stride 3, 33 filters
])
@pytest.mark.parametrize("threads", [1, 2])
def test_data_grad_in_row_waves(N, C, H, W, FN, k, stride, pad, threads, dtype, poisoned, threads_restored):
    """Overlapping windows with too few images x channels for the threads (and at least 8 MFLOP
    of dx): dx zeroed, then its output-row chunks in two waves, even chunks then odd ones; dx
    with dW and alone against the naive loops, buffers poisoned. A tiny layer keeps one wave."""
    fastconv.set_num_threads(threads)
    _assert_dx_path_matches_naive((N, C, H, W), (FN, C, k, k), stride, pad, dtype, f"in row waves, {threads} threads",
                                  lambda plan: plan["dx_row_waves"] and plan["dx_row_items"] > 2)
    assert not fastconv.explain_plan((1, 1, 28, 28), (6, 1, 5, 5), dtype=dtype)["backward"]["dx_row_waves"]


@pytest.mark.parametrize("N, C, H, W, FN, k, stride, pad", [
    (1, 16, 5, 5, 120, 5, 1, 0),   # LeNet-5's c5 at batch 1: 400 rows, 16 full NR tiles of 24 and an edge
    (8, 16, 5, 5, 120, 5, 1, 0),   # ... at batch 8: one MR tile of images
    (9, 3, 4, 4, 5, 4, 1, 0),      # 9 images: an MR tile and one more; 48 rows, whole tiles at NR 16, 24, 48
    (17, 2, 3, 3, 1, 5, 3, 1),     # one filter; the window reaches into the padding on every side
    (3, 1, 2, 7, 70, 3, 9, 1),     # stride past the plane, one channel: 9 rows, a lone edge panel
    (2, 64, 7, 7, 33, 7, 1, 0),    # a 7x7 -> 1x1 layer: 3136 rows in channel blocks
])
def test_data_grad_one_pixel(N, C, H, W, FN, k, stride, pad, dtype, poisoned):
    """One output pixel an image: dcol^T = dout^T x W with W's rows read in place by the
    micro-kernel (data_grad_one_pixel), images in MR tiles, the last partial NR panel of W packed;
    dx with dW and alone against the naive loops, buffers poisoned, under every kernel family."""
    for isa in fastconv._core.gemm_kernels():
        with gemm_family(isa):
            _assert_dx_path_matches_naive((N, C, H, W), (FN, C, k, k), stride, pad, dtype, f"one pixel, {isa}",
                                          lambda plan: plan["data_grad"] == "one_pixel")


@pytest.mark.parametrize("N, C, H, W, FN, k, stride, pad", [
    (7, 7, 7, 7, 11, 3, 2, 1),     # 16 pixels an image, 7 images: the last item is short
    (5, 3, 6, 9, 4, 2, 2, 0),      # 2x2 stride 2: 3x4 planes
    (7, 20, 8, 8, 24, 1, 2, 1),    # padded strided 1x1 on 5x5 outputs: a few images per item
])
def test_data_grad_in_image_groups(N, C, H, W, FN, k, stride, pad, dtype, poisoned):
    """Output planes of fewer than 4 NR pixels: dx's items take several whole images, their
    pixels side by side as the GEMM's columns, each image then summed back by col2im; dx
    alone and beside dW against the naive loops, buffers poisoned."""
    _assert_dx_path_matches_naive((N, C, H, W), (FN, C, k, k), stride, pad, dtype, "in image groups",
                                  lambda plan: plan["data_grad"] == "gemm_col2im" and plan["dx_images"] > 1)


@pytest.mark.parametrize("N, C, H, W, FN, k, stride, pad", [
    (1, 8, 56, 56, 16, 1, 1, 0),   # ResNet-50's s1 expansion, scaled down: 8 row chunks of 7
    (1, 6, 81, 95, 13, 1, 2, 0),   # strided 1x1, odd sizes: input rows between outputs stay zero
    (2, 5, 60, 65, 7, 2, 2, 1),    # 2x2 stride 2 padded: the first chunk owns row 0 alone
    (1, 4, 74, 149, 9, 3, 3, 2),   # 3x3 stride 3, pad 2: kh == sh, the last chunk owns the tail
    (1, 3, 100, 145, 5, 1, 3, 0),  # stride > kh: two of every three input rows get no gradient
])
def test_data_grad_in_row_chunk_items(N, C, H, W, FN, k, stride, pad, dtype, poisoned):
    """kh <= sh at a small batch: dx's items are output-row chunks of one channel block (no
    chunk reaches another's input rows), each zeroing the rows it owns; dx alone and beside
    dW against the naive loops, buffers poisoned."""
    _assert_dx_path_matches_naive((N, C, H, W), (FN, C, k, k), stride, pad, dtype, "in row-chunk items",
                                  lambda plan: plan["data_grad"] == "gemm_col2im" and plan["dx_row_items"] > 1)


@pytest.mark.parametrize("N, C, H, W, FN, k, stride", [
    (1, 300, 9, 9, 40, 1, 1),    # 1x1 on an 81-pixel plane: channel blocks of at most MC rows
    (2, 250, 17, 17, 30, 1, 2),  # strided 1x1 on 9x9 outputs, past the pointwise dx's planes
    (1, 130, 8, 8, 20, 2, 2),    # 2x2 windows at stride 2: disjoint, four taps per block row
    (1, 200, 32, 32, 16, 1, 1),  # row-chunk items whose blocks are MC-capped too
])
def test_data_grad_disjoint_windows_in_blocks(N, C, H, W, FN, k, stride, dtype, poisoned, threads_restored):
    """Windows that never overlap (kh <= sh, kw <= sw) at a small batch: dx's channel blocks follow
    the threads and stay under MC rows. Against the naive loops at one and two threads, buffers
    poisoned, and bit for bit the same dx at both (one term per dx element from each block)."""
    rng = rng_for("dx-disjoint", N, C, H, W, FN, k, stride)
    x, w = randn(rng, (N, C, H, W), dtype), randn(rng, (FN, C, k, k), dtype)
    OH, OW = (H - k) // stride + 1, (W - k) // stride + 1
    dout = randn(rng, (N, FN, OH, OW), dtype)
    dxs = []
    for threads in (1, 2):
        fastconv.set_num_threads(threads)
        plan = fastconv.explain_plan(x.shape, w.shape, stride=stride, dtype=dtype)["backward"]
        assert plan["data_grad"] == "gemm_col2im" and plan["c_block"] < C, plan
        _assert_backward_matches_naive(dout, x, w, stride, 0, dtype, f"dx of disjoint windows, {threads} threads")
        dxs.append(fastconv.conv2d_backward_input(dout, w, x.shape, stride=stride, pad=0))
    assert_exact(dxs[1], dxs[0], "dx at two threads against one")


@pytest.mark.parametrize("N, C, H, W, FN, k, pad", [
    (8, 48, 7, 7, 24, 3, 1),   # ResNet-18's last stage at batch 8, scaled down (K = 432)
    (9, 400, 5, 5, 16, 1, 0),  # a 1x1 on 5x5 planes, odd batch, K past the dot products
    (8, 16, 5, 5, 120, 5, 0),  # LeNet-5's c5 at batch 8: one pixel per image
])
def test_weight_grad_columns_at_batch_8(N, C, H, W, FN, k, pad, dtype, poisoned):
    """A batch of >= 8 on a small plane (<= 64 pixels per group in all): dW in column blocks,
    no partial copies, and dx beside it (it no longer rides along the dW groups) against the
    naive loops, buffers poisoned."""
    rng = rng_for("wgrad-columns-b8", N, C, H, W, FN, k, pad)
    x, w = randn(rng, (N, C, H, W), dtype), randn(rng, (FN, C, k, k), dtype)
    OH, OW = H + 2 * pad - k + 1, W + 2 * pad - k + 1
    dout = randn(rng, (N, FN, OH, OW), dtype)
    plan = fastconv.explain_plan(x.shape, w.shape, pad=pad, dtype=dtype)["backward"]
    assert plan["col_block"] > 0 and not plan["fused"], plan
    _assert_backward_matches_naive(dout, x, w, 1, pad, dtype, "with dW in column blocks")


def test_weight_grad_column_blocks_from_the_patch_bytes(dtype):
    """Small planes take dW column blocks once the patch spans 8 cache lines (512 bytes), under
    every GEMM kernel family: counted in NR panels, AVX-512's 48-wide f32 tile had sent a
    256-channel 1x1 at batch 1 to 7 partial dW of 1 MB each. As many filters as channels here:
    with twice as many, the expanding-1x1 rule takes the columns whatever the patch."""
    k_min = 512 // np.dtype(dtype).itemsize
    for isa in fastconv._core.gemm_kernels():
        with gemm_family(isa):
            for C, expected in ((k_min, "gemm_columns"), (k_min - 1, "taps")):
                plan = fastconv.explain_plan((1, C, 14, 14), (C, C, 1, 1), dtype=dtype)["backward"]
                assert plan["weight_grad"] == expected, (isa, C, plan)


def _assert_dw_columns_match_at_1_and_2_threads(dout, x, w, stride, pad, dtype, what, plan_check=None):
    """dW in column blocks at one and two threads: the plan takes them (and plan_check(plan,
    threads) holds), the whole backward matches the naive loops, and dW alone is bit for bit the
    same at both thread counts (every element sums the same pixels in the same order)."""
    dws = []
    for threads in (1, 2):
        fastconv.set_num_threads(threads)
        plan = fastconv.explain_plan(x.shape, w.shape, stride=stride, pad=pad, dtype=dtype)["backward"]
        assert plan["weight_grad"] == "gemm_columns", plan
        assert plan_check is None or plan_check(plan, threads), plan
        _assert_backward_matches_naive(dout, x, w, stride, pad, dtype, f"{what}, {threads} threads")
        dws.append(fastconv.conv2d_backward_weight(dout, x, w.shape[2], w.shape[3], stride=stride, pad=pad))
    assert_exact(dws[1], dws[0], "dW at two threads against one")


@pytest.mark.parametrize("N, C, H, W, FN, stride", [
    (1, 24, 30, 30, 48, 1),     # FN = 2C exactly on 900 pixels, a patch of one or two NR panels
    (1, 40, 59, 61, 130, 2),    # strided, odd sizes: 30 x 31 outputs
    (1, 130, 24, 24, 260, 1),   # 576 pixels deep (crosses KC), 130 columns (an edge panel)
    (1, 3, 64, 64, 600, 1),     # three channels, 600 filters: filter blocks past MC
    (3, 20, 17, 19, 70, 1),     # three images summed in one depth, odd plane
    (8, 16, 25, 25, 40, 2),     # strided at batch 8, the largest batch the projections take
    (9, 12, 12, 12, 30, 1),     # unstrided at batch 9
])
def test_weight_grad_columns_for_expanding_1x1(N, C, H, W, FN, stride, dtype, poisoned, threads_restored):
    """A 1x1 with at least twice as many filters as channels (strided: up to batch 8) takes dW
    column blocks on any plane, where 8 partial dW of FN x C had cost more than the columns;
    against the naive loops at one and two threads (buffers poisoned) and bit for bit the same
    dW at both. One filter fewer, or a strided layer at batch 9, keeps the groups (every layer
    here has > 512 output pixels, past the small planes that take the columns anyway)."""
    rng = rng_for("wgrad-expanding-1x1", N, C, H, W, FN, stride)
    x, w = randn(rng, (N, C, H, W), dtype), randn(rng, (FN, C, 1, 1), dtype)
    OH, OW = (H - 1) // stride + 1, (W - 1) // stride + 1
    dout = randn(rng, (N, FN, OH, OW), dtype)
    _assert_dw_columns_match_at_1_and_2_threads(dout, x, w, stride, 0, dtype, "expanding 1x1 dW in columns")
    others = [fastconv.explain_plan(x.shape, (2 * C - 1, C, 1, 1), stride=stride, dtype=dtype)["backward"]]
    if stride > 1:
        others.append(fastconv.explain_plan((9, C, H, W), w.shape, stride=stride, dtype=dtype)["backward"])
    for plan in others:
        assert plan["weight_grad"] != "gemm_columns", plan


@pytest.mark.parametrize("N, C, H, W, FN", [
    (1, 64, 28, 28, 96),   # ResNet-50's 64-channel 1x1 at batch 1, a quarter of its plane
    (9, 17, 11, 13, 40),   # odd sizes, K = 17
])
def test_weight_grad_of_small_1x1_is_not_dots(N, C, H, W, FN, dtype, poisoned):
    """A 1x1 with K <= 64 has no shifted rows for the dot products to share: its dW runs as a
    GEMM over the pixels (the taps read its image in place), against the naive loops with
    buffers poisoned."""
    rng = rng_for("wgrad-1x1-gemm", N, C, H, W, FN)
    x, w = randn(rng, (N, C, H, W), dtype), randn(rng, (FN, C, 1, 1), dtype)
    plan = fastconv.explain_plan(x.shape, w.shape, dtype=dtype)["backward"]
    assert plan["weight_grad"] in ("gemm", "gemm_columns", "taps"), plan
    _assert_backward_matches_naive(randn(rng, (N, FN, H, W), dtype), x, w, 1, 0, dtype, "1x1 dW, not dots")


@pytest.mark.parametrize("N, C, H, W, FN, k", [
    (1, 40, 6, 6, 300, 3),     # two filter blocks at two threads
    (1, 64, 5, 5, 400, 3),     # two column blocks at two threads
    (2, 48, 4, 4, 250, 3),     # two images, 250 filters, K = 432
    (1, 512, 7, 7, 1000, 1),   # ResNet-50's stage-4 1x1 at batch 1, narrower: more filters than MC
])
def test_weight_grad_filter_and_column_blocks(N, C, H, W, FN, k, dtype, poisoned, threads_restored):
    """Batch-1 dW by blocks of filters x columns, each packing only its rows of dout and its
    columns of the image: against the naive loops at one and two threads (buffers poisoned),
    and bit for bit the same dW at both (every element sums the same pixels in the same order)."""
    rng = rng_for("wgrad-blocks", N, C, H, W, FN, k)
    x, w = randn(rng, (N, C, H, W), dtype), randn(rng, (FN, C, k, k), dtype)
    pad = k // 2
    dout = randn(rng, (N, FN, H, W), dtype)
    _assert_dw_columns_match_at_1_and_2_threads(
        dout, x, w, 1, pad, dtype, "with dW in filter x column blocks",
        lambda plan, threads: threads == 1 or plan["col_block"] < C * k * k or plan["wgrad_filter_block"] < FN)


def _taps_groups(x_shape, w_shape, stride, pad, plan, dtype):
    """The taps' group count: min(units, 8), halved to a power of two while the groups' transposed
    partials (patch x taps_ld each) exceed half the workspace budget and one L2."""
    (N, C, H, W), (FN, _, kh, kw) = x_shape, w_shape
    OH, OW = (H + 2 * pad - kh) // stride + 1, (W + 2 * pad - kw) // stride + 1
    itemsize = np.dtype(dtype).itemsize
    part = C * kh * kw * plan["taps_ld"] * itemsize
    limit = max(N * OH * OW * C * kh * kw * itemsize // 4 // 2, fastconv._core.cache_sizes()["l2"])
    groups = min(plan["units"], 8)
    while groups > 1 and groups * part > limit:
        groups = 1 << ((groups - 1).bit_length() - 1)  # the largest power of two below it
    return groups


@pytest.mark.parametrize("N, C, H, FN, k, stride, channel_blocks", [
    (8, 32, 14, 32, 3, 1, False),    # DeepConvNet's conv4 at batch 8: whole images, dx fused
    (1, 16, 40, 16, 3, 1, False),    # batch 1: eight units of 5 rows
    (3, 20, 33, 40, 3, 2, False),    # stride 2, 40 filters: an edge panel
    (2, 260, 24, 40, 3, 1, True),    # K = 2,340: channel blocks, the last one short
    (8, 96, 16, 96, 3, 1, False),    # 8 partials outgrow half the workspace budget: 2 or 4 groups
    (4, 64, 20, 16, 1, 1, False),    # an unpadded 1x1: the input rows read in place
])
def test_weight_grad_taps(N, C, H, FN, k, stride, channel_blocks, dtype, poisoned, threads_restored):
    """dW with the im2col read in place (the taps), in groups of units or in channel blocks:
    against the naive loops at one and two threads (buffers poisoned), and bit for bit the same
    at both (the groups are fixed; a channel block sums its rows over the units in order). The
    groups are 8, or halved until their partials fit half the workspace budget or one L2."""
    rng = rng_for("wgrad-taps", N, C, H, FN, k, stride)
    x, w = randn(rng, (N, C, H, H), dtype), randn(rng, (FN, C, k, k), dtype)
    pad = k // 2
    OH = (H + 2 * pad - k) // stride + 1
    dout = randn(rng, (N, FN, OH, OH), dtype)
    dws = []
    for threads in (1, 2):
        fastconv.set_num_threads(threads)
        plan = fastconv.explain_plan(x.shape, w.shape, stride=stride, pad=pad, dtype=dtype)["backward"]
        assert plan["weight_grad"] == "taps" and (plan["taps_channel_block"] > 0) == channel_blocks, plan
        if not channel_blocks:
            assert plan["groups"] == _taps_groups(x.shape, w.shape, stride, pad, plan, dtype), plan
        _assert_backward_matches_naive(dout, x, w, stride, pad, dtype, f"with dW on the taps, {threads} threads")
        dws.append(fastconv.conv2d_backward_weight(dout, x, k, k, stride=stride, pad=pad))
    assert_exact(dws[1], dws[0], "dW at two threads against one")


@pytest.mark.parametrize("case", params(CASES))
def test_exact_on_small_integers(case, backend, dtype):
    """Integer-valued data: every product and partial sum is exact, whatever the summation
    order or blocking, so forward and backward must equal the naive loops bit for bit (a single
    missing or duplicated term shows even in float32)."""
    x, w, b, dout = _inputs(case, "ints", dtype)
    out = fastconv.conv2d(x, w, b, **case.geometry)
    _, ref, rdx, rdw, rdb = _reference(case, "ints", dtype.name, False)
    assert np.abs(ref).max(initial=0) < 2**24 and np.abs(rdw).max(initial=0) < 2**24
    assert_exact(out, ref.astype(dtype), f"conv2d[{backend}] on integers")
    dx, dw, db = fastconv.conv2d_backward(dout, x, w, **case.geometry)
    assert_exact(dx, rdx.astype(dtype), f"dx[{backend}] on integers")
    assert_exact(dw, rdw.astype(dtype), f"dW[{backend}] on integers")
    assert_exact(db, rdb.astype(dtype), f"db[{backend}] on integers")


@pytest.mark.parametrize("case", params(SMALL_CASES))
def test_gradients_match_finite_differences(case, backend, rng, threads_restored):
    """float64 central differences of L = sum(conv2d(x, W, b) * G) for dx, dW and db.
    (One native thread: thousands of tiny calls, where a busy machine makes fork/join costly;
    thread counts are covered by test_views_threads.py.)"""
    fastconv.set_num_threads(1)
    x = randn(rng, case.x_shape)
    w = randn(rng, case.w_shape)
    b = randn(rng, (case.FN,))
    g = randn(rng, case.out_shape)

    def loss():
        return float(np.sum(fastconv.conv2d(x, w, b, **case.geometry) * g))

    dx, dw, db = fastconv.conv2d_backward(g, x, w, **case.geometry)
    for name, analytic, arr in (("dx", dx, x), ("dW", dw, w), ("db", db, b)):
        numeric = naive.numerical_grad(loss, arr, h=1e-5)
        np.testing.assert_allclose(analytic, numeric, rtol=1e-6, atol=1e-7,
                                   err_msg=f"{name}[{backend}] vs finite differences {seed_note()}")


def test_book_example_shape(backend, rng):
    """The ch07 SimpleConvNet convolution: (100, 1, 28, 28) with 30 filters 5x5 -> (100, 30, 24, 24)."""
    x = randn(rng, (100, 1, 28, 28))
    w = 0.01 * randn(rng, (30, 1, 5, 5))
    b = randn(rng, (30,))
    out = fastconv.conv2d(x, w, b)
    assert out.shape == (100, 30, 24, 24)
    assert_close(out, naive.conv2d(x, w, b), naive.conv2d(np.abs(x), np.abs(w), np.abs(b)), 26, np.float64,
                 "book conv")


# --- dtype rule ------------------------------------------------------------------------------

F32, F64 = np.float32, np.float64


@pytest.mark.parametrize(
    "xt, wt, bt, expected",
    [
        (F32, F32, F32, F32), (F32, F32, None, F32), (F64, F64, F64, F64),
        (F32, F64, F64, F64), (F64, F32, F32, F64), (F32, F32, F64, F64),
        (np.int32, F32, None, F64), (np.int64, np.int64, np.int64, F64), (np.bool_, F64, None, F64),
        (np.uint8, F32, F32, F64), (np.bool_, F32, F32, F64), (F32, F32, np.int8, F64),
        (np.float16, F32, F32, F32), (np.float16, np.float16, None, F32),
    ],
    ids=lambda t: "none" if t is None else np.dtype(t).name,
)
def test_forward_dtype_rule(xt, wt, bt, expected, backend, rng):
    xi = rng.integers(-3, 4, size=(2, 2, 6, 5))
    wi = rng.integers(-3, 4, size=(3, 2, 3, 2))
    bi = rng.integers(-3, 4, size=3)
    x = (xi > 0) if xt is np.bool_ else xi.astype(xt)
    w = wi.astype(wt)
    b = None if bt is None else bi.astype(bt)
    out = fastconv.conv2d(x, w, b, stride=(2, 1), pad=1)
    ref = naive.conv2d(x.astype(np.float64), w, None if b is None else b.astype(np.float64), (2, 1), 1)
    assert_result_array(out, ref.shape, expected, "conv2d dtype")
    assert_exact(out, ref.astype(expected), "conv2d on promoted integers")


@pytest.mark.parametrize(
    "dt, xt, wt, expected",
    [(F32, F32, F32, F32), (F64, F32, F32, F64), (F32, F64, F32, F64), (F32, F32, F64, F64),
     (np.int32, F32, F32, F64), (F32, np.int16, F32, F64), (np.float16, F32, F32, F32)],
    ids=lambda t: np.dtype(t).name,
)
def test_backward_dtype_rule(dt, xt, wt, expected, backend, rng):
    x = rng.integers(-3, 4, size=(2, 2, 5, 6)).astype(xt)
    w = rng.integers(-3, 4, size=(3, 2, 2, 3)).astype(wt)
    d = rng.integers(-3, 4, size=(2, 3, 4, 3)).astype(dt)
    dx, dw, db = fastconv.conv2d_backward(d, x, w, stride=(1, 2), pad=(0, 1))
    rdx, rdw, rdb = naive.conv2d_backward(d, x, w, (1, 2), (0, 1))
    for name, got, ref in (("dx", dx, rdx), ("dW", dw, rdw), ("db", db, rdb)):
        assert_result_array(got, ref.shape, expected, name)
        assert_exact(got, ref.astype(expected), name)


def test_bias_as_list_and_scalar_types(backend, rng):
    x = randn(rng, (2, 3, 5, 5))
    w = randn(rng, (2, 3, 3, 3))
    ref = naive.conv2d(x, w, [1.5, -2.0])
    out = fastconv.conv2d(x, w, [1.5, -2.0])
    assert_close(out, ref, naive.conv2d(np.abs(x), np.abs(w)) + 2, 28, np.float64, "bias list")
    out_nb = fastconv.conv2d(x, w)
    assert_close(out - out_nb, np.broadcast_to(np.array([1.5, -2.0])[None, :, None, None], out.shape),
                 np.abs(ref) + 2, 28, np.float64, "bias adds per filter")


@pytest.mark.parametrize("N, C, H, k, forced, weight_grad, data_grad", [
    (1, 64, 5, 3, "auto", "gemm_columns", "gemm_col2im"),  # a small plane: dW in filter x column blocks
    (1, 7, 5, 3, "auto", "dots", "gemm_col2im"),           # a small patch (K = 63): dW as dot products
    (2, 64, 20, 3, "gemm", "gemm", "gemm_col2im"),         # dW in partial-sum groups
    (2, 64, 20, 3, "auto", "taps", "gemm_col2im"),         # the taps in groups
    (2, 1024, 20, 3, "auto", "taps channels", "gemm_col2im"),  # the taps in channel blocks (partials > a 2 MiB L2)
    (1, 512, 7, 1, "auto", "gemm_columns", "pixel_rows"),  # a 1x1 on 49 pixels: dx in pixel rows
])
def test_no_filters(N, C, H, k, forced, weight_grad, data_grad, backend, dtype, rng):
    """A layer of zero filters (the plan's block sizes must not divide by its filter count): an
    empty output and empty dW / db, and dx exactly zero, on each dW path."""
    x = randn(rng, (N, C, H, H), dtype)
    w = np.empty((0, C, k, k), dtype=dtype)
    with weight_grad_algorithm(forced):
        plan = fastconv.explain_plan(x.shape, w.shape, pad=k // 2, dtype=dtype)["backward"]
        path = plan["weight_grad"] + (" channels" if plan["taps_channel_block"] else "")
        assert (path, plan["data_grad"]) == (weight_grad, data_grad), plan
        assert_result_array(fastconv.conv2d(x, w, np.empty(0, dtype), pad=k // 2), (N, 0, H, H), dtype,
                            "conv2d FN=0")
        dx, dw, db = fastconv.conv2d_backward(np.empty((N, 0, H, H), dtype), x, w, pad=k // 2)
    assert_result_array(dw, w.shape, dtype, "dW FN=0")
    assert_result_array(db, (0,), dtype, "db FN=0")
    assert_exact(dx, np.zeros_like(x), "dx of a layer without filters")


def test_empty_batch(backend, dtype, rng):
    x = np.empty((0, 3, 7, 6), dtype=dtype)
    w = randn(rng, (4, 3, 3, 2), dtype)
    b = randn(rng, (4,), dtype)
    out = fastconv.conv2d(x, w, b, stride=2, pad=1)
    assert_result_array(out, (0, 4, 4, 4), dtype, "conv2d N=0")
    dx, dw, db = fastconv.conv2d_backward(np.empty((0, 4, 4, 4), dtype), x, w, stride=2, pad=1)
    assert_result_array(dx, (0, 3, 7, 6), dtype, "dx N=0")
    assert_result_array(dw, w.shape, dtype, "dW N=0")
    assert_result_array(db, (4,), dtype, "db N=0")
    # No samples: the weight and bias gradients are exactly zero.
    assert_exact(dw, np.zeros_like(w), "dW of an empty batch")
    assert_exact(db, np.zeros(4, dtype), "db of an empty batch")


def test_stride_and_pad_as_pairs_equal_ints(backend, rng):
    x = randn(rng, (2, 3, 9, 8))
    w = randn(rng, (4, 3, 3, 3))
    b = randn(rng, (4,))
    a = fastconv.conv2d(x, w, b, 2, 1)
    assert_exact(fastconv.conv2d(x, w, b, stride=(2, 2), pad=(1, 1)), a, "pair vs int")
    assert_exact(fastconv.conv2d(x, w, b, stride=[2, 2], pad=np.array([1, 1])), a, "list/ndarray")
    d = randn(rng, a.shape)
    for u, v in zip(fastconv.conv2d_backward(d, x, w, 2, 1), fastconv.conv2d_backward(d, x, w, (2, 2), [1, 1])):
        assert_exact(u, v, "backward pair vs int")


def test_linearity_in_x(backend, rng):
    """conv2d(a*x1 + x2) == a*conv2d(x1) + conv2d(x2) (no bias)."""
    x1 = randn(rng, (2, 2, 7, 6))
    x2 = randn(rng, (2, 2, 7, 6))
    w = randn(rng, (3, 2, 3, 2))
    lhs = fastconv.conv2d(2.5 * x1 + x2, w, None, (2, 1), (1, 2))
    rhs = 2.5 * fastconv.conv2d(x1, w, None, (2, 1), (1, 2)) + fastconv.conv2d(x2, w, None, (2, 1), (1, 2))
    np.testing.assert_allclose(lhs, rhs, rtol=1e-12, atol=1e-12 * np.abs(rhs).max(), err_msg=seed_note())


@pytest.mark.parametrize("special", ["nan", "inf"])
def test_non_finite_inputs_propagate_like_the_definition(special, backend, dtype, rng):
    """A NaN (or inf) in x reaches exactly the outputs whose windows contain it, as in the
    naive sum (NaN * w and inf * w are non-finite for any w != 0; padding is 0)."""
    x = randn(rng, (2, 3, 9, 8), dtype)
    w = randn(rng, (4, 3, 3, 2), dtype)
    value = np.nan if special == "nan" else np.inf
    x[0, 1, 4, 5] = value
    x[1, 2, 0, 0] = value
    out = fastconv.conv2d(x, w, None, (2, 1), (1, 1))
    ref = naive.conv2d(x, w, None, (2, 1), (1, 1))
    assert np.array_equal(np.isfinite(out), np.isfinite(ref)), f"non-finite pattern differs {seed_note()}"
    finite = np.isfinite(ref)
    assert_close(out[finite], ref[finite], naive.conv2d(np.abs(np.nan_to_num(x, posinf=0.0)), np.abs(w),
                                                        None, (2, 1), (1, 1))[finite], 19, dtype, "finite outputs")


@pytest.mark.parametrize("W", [3, 5, 8, 9, 10, 11, 16, 17, 23, 40])
def test_stride2_rows_every_width(W, backend, dtype):
    """Stride-2 columns are packed with an even/odd shuffle for float32 (conv.cpp copy_stride2):
    full vectors, the scalar tail, pads on both sides; small integers make the sums exact."""
    rng = rng_for("stride2", W, np.dtype(dtype).name)
    x = small_ints(rng, (2, 3, 7, W), dtype)
    w = small_ints(rng, (4, 3, 3, 3), dtype)
    b = small_ints(rng, (4,), dtype)
    for pad in (0, 1, (0, 2)):
        if W + 2 * (pad[1] if isinstance(pad, tuple) else pad) < 3:
            continue
        out = fastconv.conv2d(x, w, b, 2, pad)
        assert_exact(out, naive.conv2d(x, w, b, 2, pad).astype(dtype), f"stride-2 conv, width {W}, pad {pad}")


@pytest.fixture
def poisoned():
    fastconv._core.set_debug_poison(True)
    yield
    fastconv._core.set_debug_poison(False)


@pytest.mark.parametrize("N, C, H, W, k, FN", [
    (1, 16, 5, 5, 5, 120),  # LeNet-5's c5 at batch 1: one pixel, K = 400, one dot per filter
    (1, 65, 1, 1, 1, 9),    # one pixel, K = 65: a block of 64 float lanes (two of 32 doubles) and a tail
    (1, 15, 1, 1, 1, 7),    # one pixel, K under one lane block
    (2, 11, 6, 6, 3, 7),    # 32 pixels of two images, fewer filters than MR
    (3, 5, 9, 9, 3, 17),    # 147 pixels: items of NR split images, the last short; 17 filters
])
@pytest.mark.parametrize("family", fastconv._core.gemm_kernels())
def test_pixel_dots_across_its_items_tiles_and_lanes(N, C, H, W, k, FN, family, dtype, poisoned):
    """The pixel-dots forward forced, with outputs and scratch poisoned: items of NR pixels
    (the last one short, or a single pixel's dot products), MR-filter tiles with a short last
    one, under every kernel family; and the auto rule picks it only where the whole batch has
    at most NR/2 output pixels."""
    rng = rng_for("pixel-dots", N, C, H, W, k, FN)
    x, w, b = randn(rng, (N, C, H, W), dtype), randn(rng, (FN, C, k, k), dtype), randn(rng, (FN,), dtype)
    with backend_context(f"native:{family}"):
        with forward_algorithm("pixel_dots"):
            out = fastconv.conv2d(x, w, b, 1, 0)
            assert fastconv.explain_plan(x.shape, w.shape, dtype=dtype)["forward"]["algorithm"] == "pixel_dots"
        plan = fastconv.explain_plan(x.shape, w.shape, dtype=dtype)
    ref = naive.conv2d(x, w, b, 1, 0)
    absref = naive.conv2d(np.abs(x), np.abs(w), np.abs(b), 1, 0)
    assert_close(out, ref, absref, C * k * k + 1, dtype, f"pixel_dots, {family}")
    pixels = N * (H - k + 1) * (W - k + 1)
    assert (plan["forward"]["algorithm"] == "pixel_dots") == (2 * pixels <= plan["nr"]), plan["forward"]


@pytest.mark.parametrize("family", fastconv._core.gemm_kernels())
def test_single_pixel_dots_around_their_lanes(family, dtype, poisoned):
    """One output pixel: each filter is a dot product of kDotLanes running lanes, filters four
    at a time then one by one, in blocks of 64 (PlaneKernels::dots): K = lanes - 1, lanes,
    lanes + 1 and 2 lanes + 1, filter counts across the four-row groups and the 64-filter block."""
    lanes = fastconv._core.plane_kernel_limits()[f"dot_lanes_{'f32' if dtype == np.float32 else 'f64'}"]
    rng = rng_for("single-pixel-dots", family, lanes)
    for K in (lanes - 1, lanes, lanes + 1, 2 * lanes + 1):
        for FN in (1, 3, 4, 5, 63, 64, 65, 69):
            x, w, b = randn(rng, (1, K, 1, 1), dtype), randn(rng, (FN, K, 1, 1), dtype), randn(rng, (FN,), dtype)
            with backend_context(f"native:{family}"), forward_algorithm("pixel_dots"):
                out = fastconv.conv2d(x, w, b, 1, 0)
            assert_close(out, naive.conv2d(x, w, b, 1, 0), naive.conv2d(np.abs(x), np.abs(w), np.abs(b), 1, 0),
                         K + 1, dtype, f"single-pixel dots, K = {K}, {FN} filters, {family}")


@pytest.mark.parametrize("family", fastconv._core.gemm_kernels())
def test_pixel_dots_items_around_one_tile(family, dtype, poisoned):
    """Forced on NR - 1, NR, NR + 1 and 2 NR + 1 pixels (1x1 outputs, so pixel = image), with
    2 MR + 1 filters: full and short tiles, and a last item of one pixel that takes the dots."""
    kern = kernel_of(family, dtype.name)
    nr, mr = kern["nr"], kern["mr"]
    rng = rng_for("pixel-dots-tile", family, nr, mr)
    for N in (nr - 1, nr, nr + 1, 2 * nr + 1):
        x, w = randn(rng, (N, 6, 3, 3), dtype), randn(rng, (2 * mr + 1, 6, 3, 3), dtype)
        b = randn(rng, (2 * mr + 1,), dtype)
        with backend_context(f"native:{family}"), forward_algorithm("pixel_dots"):
            out = fastconv.conv2d(x, w, b, 1, 0)
        assert_close(out, naive.conv2d(x, w, b, 1, 0), naive.conv2d(np.abs(x), np.abs(w), np.abs(b), 1, 0),
                     6 * 9 + 1, dtype, f"pixel_dots, {N} pixels, {family}")


@pytest.mark.parametrize("N, C, H, W, FN", [
    (1, 64, 7, 7, 200),    # ResNet layer-4-like: 49 pixels, 200 filters: blocks of MR rows, a ragged last
    (2, 32, 5, 6, 131),    # 60 pixels over two images, 131 filters (not a multiple of MR)
    (1, 48, 13, 13, 384),  # AlexNet conv3-like: 169 pixels under 384 filters
])
@pytest.mark.parametrize("algorithm", ["implicit_gemm", "shifted_rows"])
def test_forward_filter_blocks(N, C, H, W, FN, algorithm, dtype, poisoned, threads_restored):
    """Few pixels, more filters: both GEMM paths split the filters instead of the pixels (the
    implicit one in its batch-chunks layout, each item packing only its rows of W; shifted rows
    reading its slice of W packed once); checked against the naive loops, buffers poisoned."""
    fastconv.set_num_threads(2)
    rng = rng_for("filter-blocks", N, C, H, W, FN)
    x, w, b = randn(rng, (N, C, H, W), dtype), randn(rng, (FN, C, 3, 3), dtype), randn(rng, (FN,), dtype)
    with forward_algorithm(algorithm):
        plan = fastconv.explain_plan(x.shape, w.shape, pad=1, dtype=dtype)["forward"]
        out = fastconv.conv2d(x, w, b, 1, 1)
    assert plan["algorithm"] == algorithm and plan["filter_block"] < FN, plan
    if algorithm == "implicit_gemm":
        assert plan["layout"] == "batch_chunks" and plan["chunk"] == N * H * W, plan
    assert_close(out, naive.conv2d(x, w, b, 1, 1), naive.conv2d(np.abs(x), np.abs(w), np.abs(b), 1, 1),
                 C * 9 + 1, dtype, "filter blocks")


@pytest.mark.parametrize("N, C, H, W, FN, k, stride", [
    (3, 600, 7, 7, 40, 1, 1),   # 49-pixel planes: tiles span two images; K = 600 > 2 KC, so they accumulate
    (9, 300, 2, 5, 17, 1, 1),   # 10-pixel planes: the 1x1 pack's panels and tiles span up to six images
    (5, 40, 3, 5, 13, 3, 1),    # 15 pixels: one 16-wide tile spans three images; K = 360
    (4, 300, 14, 14, 70, 1, 2),  # strided 1x1 onto 7x7, more filters than one MR panel
])
@pytest.mark.parametrize("threads", [1, 2])
def test_batch_chunk_tiles_across_images(N, C, H, W, FN, k, stride, threads, dtype, poisoned, threads_restored):
    """The implicit path's batch chunks write each GEMM tile straight into the images it covers;
    a tile spanning two or three images goes through a stack tile, read back at every later
    depth block. Checked against the naive loops with the output poisoned."""
    fastconv.set_num_threads(threads)
    rng = rng_for("batch-chunk-tiles", N, C, H, W, FN, k, stride)
    x, w, b = randn(rng, (N, C, H, W), dtype), randn(rng, (FN, C, k, k), dtype), randn(rng, (FN,), dtype)
    pad = k // 2
    with forward_algorithm("implicit_gemm"):
        explained = fastconv.explain_plan(x.shape, w.shape, stride=stride, pad=pad, dtype=dtype)
        out = fastconv.conv2d(x, w, b, stride, pad)
    plan, P = explained["forward"], ((H + 2 * pad - k) // stride + 1) * ((W + 2 * pad - k) // stride + 1)
    assert plan["layout"] == "batch_chunks" and plan["gemm"]["kc"] < C * k * k, plan
    assert plan["chunk"] > P and P % explained["nr"] != 0, plan  # some tile holds two images
    assert_close(out, naive.conv2d(x, w, b, stride, pad), naive.conv2d(np.abs(x), np.abs(w), np.abs(b), stride, pad),
                 C * k * k + 1, dtype, "batch chunk tiles")


@pytest.mark.parametrize("threads", [1, 2])
def test_batch_chunks_pack_weights_once_per_thread(threads, dtype, threads_restored):
    """A batch-1 layer with far more weights than pixels (ResNet-18's 3x3 stride-2 layer onto
    7x7) is one chunk of every pixel: at one thread one item, at two one filter block each, so W
    is packed once in all (four chunks at one thread had packed it four times: 0.46x NumPy)."""
    fastconv.set_num_threads(threads)
    with forward_algorithm("implicit_gemm"):  # the auto rule takes phase rows here (NOTES section 46)
        plan = fastconv.explain_plan((1, 256, 14, 14), (512, 256, 3, 3), stride=2, pad=1, dtype=dtype)["forward"]
    assert plan["algorithm"] == "implicit_gemm" and plan["layout"] == "batch_chunks", plan
    assert plan["chunk"] == 49 and plan["items"] == threads, plan
    assert plan["filter_block"] * threads >= 512 > plan["filter_block"] * (threads - 1), plan


def test_forcing_an_unknown_algorithm_names_the_known_ones():
    """A misspelt forced algorithm is refused, the setting unchanged, and the message lists the
    names that exist."""
    for set_, get, known in ((fastconv._core.set_forward_algorithm, fastconv._core.get_forward_algorithm,
                              "auto, implicit_gemm, shifted_rows or pixel_dots"),
                             (fastconv._core.set_weight_grad_algorithm, fastconv._core.get_weight_grad_algorithm,
                              "auto, gemm, dots or taps"),
                             (fastconv._core.set_data_grad_algorithm, fastconv._core.get_data_grad_algorithm,
                              "auto, gemm_col2im, pixel_rows or transposed_forward")):
        before = get()
        with pytest.raises(ValueError, match=f"'tap' is not {known}"):
            set_("tap")
        assert get() == before
