"""The real-size tier: native against the NumPy reference on shapes that cross every blocking
constant of every kernel family (tests/real_sizes.py draws them from the kernel table), with
each family forced in turn and outputs and scratch poisoned, so an element no kernel wrote, or a
write past a thread's scratch slice, fails the test.

The normal run takes the 'full' tier; the sanitizer build (tools/sanitize.sh) a slice of it
('asan'); FASTCONV_REAL_SIZES=full|asan chooses. A failure prints the shape and the seed.
"""
from __future__ import annotations

import numpy as np
import pytest

import fastconv
from fastconv import _core
import real_sizes
from support import (FORWARD_ALGORITHMS, assert_close, assert_exact, backend_context, data_grad_algorithm,
                     forward_algorithm, rng_for, shifted_rows_tiles, weight_grad_algorithm)

CONV = real_sizes.tier()
POOL = real_sizes.pool_tier()


def _id(i, s):
    return f"{i}-{s['family']}-{s['dtype']}-{s['why'].replace(' ', '_')}"


@pytest.fixture
def poisoned():
    _core.set_debug_poison(True)
    yield
    _core.set_debug_poison(False)


def _window_input(s, key, what):
    """(generator, dtype, random input, window arguments) of a shape without filters."""
    rng = rng_for(key, what)
    dt = np.dtype(s["dtype"])
    x = rng.standard_normal((s["N"], s["C"], s["H"], s["W"])).astype(dt)
    return rng, dt, x, (s["kh"], s["kw"], (s["sh"], s["sw"]), (s["ph"], s["pw"]))


def _ref(fn, *args, **kwargs):
    """The numpy backend in float64 on the (already rounded) inputs."""
    with fastconv.use_backend("numpy"):
        return fn(*[a.astype(np.float64) if isinstance(a, np.ndarray) else a for a in args], **kwargs)


def _native(family, fn, *args, **kwargs):
    with backend_context(f"native:{family}"):
        return fn(*args, **kwargs)


@pytest.mark.parametrize("s", CONV, ids=[_id(i, s) for i, s in enumerate(CONV)])
def test_conv_forward_backward(s, poisoned):
    rng = rng_for("real-size-conv", real_sizes.describe(s))
    dt = np.dtype(s["dtype"])
    x = rng.standard_normal((s["N"], s["C"], s["H"], s["W"])).astype(dt)
    w = rng.standard_normal((s["FN"], s["C"], s["kh"], s["kw"])).astype(dt)
    b = rng.standard_normal(s["FN"]).astype(dt)
    stride, pad = (s["sh"], s["sw"]), (s["ph"], s["pw"])
    what = real_sizes.describe(s)
    K = s["C"] * s["kh"] * s["kw"]

    ref = _ref(fastconv.conv2d, x, w, b, stride, pad)
    absref = _ref(fastconv.conv2d, np.abs(x), np.abs(w), np.abs(b), stride, pad)
    for algorithm in FORWARD_ALGORITHMS:  # the targets are implicit-GEMM blocks; both must agree
        with forward_algorithm(algorithm):
            out = _native(s["family"], fastconv.conv2d, x, w, b, stride, pad)
        assert_close(out, ref, absref, K + 1, dt, f"forward ({algorithm}) {what}")

    dout = rng.standard_normal(out.shape).astype(dt)
    dx, dw, db = _native(s["family"], fastconv.conv2d_backward, dout, x, w, stride, pad)
    ref = _ref(fastconv.conv2d_backward, dout, x, w, stride, pad)
    absref = _ref(fastconv.conv2d_backward, np.abs(dout), np.abs(x), np.abs(w), stride, pad)
    pixels = s["N"] * out.shape[2] * out.shape[3]
    assert_close(dx, ref[0], absref[0], s["FN"] * s["kh"] * s["kw"], dt, f"dx {what}")
    assert_close(dw, ref[1], absref[1], pixels, dt, f"dW {what}")
    assert_close(db, ref[2], absref[2], pixels, dt, f"db {what}")
    # Each gradient alone runs its half of the plan unfused, with its own scratch booking; dx
    # also forced to the pixel rows (their blocks on every shape) and to col2im, dW also on the
    # GEMM, whose blocks the tier's targets are.
    for algorithm in ("auto", "pixel_rows", "gemm_col2im"):
        with data_grad_algorithm(algorithm):
            dx = _native(s["family"], fastconv.conv2d_backward_input, dout, w, x.shape, stride, pad)
        assert_close(dx, ref[0], absref[0], s["FN"] * s["kh"] * s["kw"], dt, f"dx alone ({algorithm}) {what}")
    for algorithm in ("auto", "gemm"):
        with weight_grad_algorithm(algorithm):
            dw = _native(s["family"], fastconv.conv2d_backward_weight, dout, x, s["kh"], s["kw"], stride, pad)
        assert_close(dw, ref[1], absref[1], pixels, dt, f"dW alone ({algorithm}) {what}")


def test_tier_reaches_every_blocking_constant():
    """Every (GEMM, dimension) just below, at and above KC/MC/NC, for each family and dtype in
    the tier, as the calls' own plans report -- so the tier cannot drift away from the blocks."""
    missing = {k: v for k, v in real_sizes.coverage(CONV).items() if v}
    assert not missing, f"targets no shape of the tier reaches: {missing}"
    assert {s["family"] for s in CONV} == set(_core.gemm_kernels())


def test_tier_reaches_every_plan_branch():
    """Both forward layouts, the four weight-gradient paths of the auto rule, fused and unfused dx,
    and weight gradient units shorter at the end of an image (the AlexNet overflow) occur in the
    tier."""
    seen = set()
    for s in CONV:
        with real_sizes.forced(s["family"]):
            plan = real_sizes.plan_of(s, s["dtype"], weight_grad="auto")
        fwd, bwd = plan["forward"], plan["backward"]
        seen.add(fwd["layout"])
        seen.add(bwd["weight_grad"])
        seen.add("fused" if bwd["fused"] else "unfused")
        OH = real_sizes.out_size(s["H"], s["kh"], s["sh"], s["ph"])
        if OH % bwd["rows_per_unit"]:
            seen.add("short last unit")
        P = OH * real_sizes.out_size(s["W"], s["kw"], s["sw"], s["pw"])
        if fwd["layout"] == "image_tiles" and P % plan["nr"]:
            seen.add("partial last tile per image")
    assert seen >= {"image_tiles", "batch_chunks", "dots", "gemm", "gemm_columns", "taps", "fused", "unfused",
                    "short last unit", "partial last tile per image"}, seen


@pytest.mark.parametrize("s", POOL, ids=[_id(i, s) for i, s in enumerate(POOL)])
def test_pooling(s, poisoned):
    what = real_sizes.describe_pool(s)
    rng, dt, x, args = _window_input(s, "real-size-pool", what)

    out, idx = _native(s["family"], fastconv.max_pool2d, x, *args, return_indices=True)
    with fastconv.use_backend("numpy"):
        ref_out, ref_idx = fastconv.max_pool2d(x, *args, return_indices=True)
    assert_exact(out, ref_out, f"max forward {what}")
    assert_exact(idx, ref_idx, f"max indices {what}")
    dout = rng.standard_normal(out.shape).astype(dt)
    dx = _native(s["family"], fastconv.max_pool2d_backward, dout, x, *args, indices=idx)
    with fastconv.use_backend("numpy"):
        ref_dx = fastconv.max_pool2d_backward(dout.astype(np.float64), x.astype(np.float64), *args,
                                              indices=ref_idx)
    taps = s["kh"] * s["kw"]
    assert_close(dx, ref_dx, _ref(fastconv.max_pool2d_backward, np.abs(dout), x, *args, indices=ref_idx),
                 taps, dt, f"max backward {what}")
    zero_pad = _native(s["family"], fastconv.max_pool2d, x, *args, return_indices=True, pad_value=0)
    with fastconv.use_backend("numpy"):
        ref_zero_pad = fastconv.max_pool2d(x, *args, return_indices=True, pad_value=0)
    assert_exact(zero_pad[0], ref_zero_pad[0], f"max forward, zero padding {what}")
    assert_exact(zero_pad[1], ref_zero_pad[1], f"max indices, zero padding {what}")

    avg = _native(s["family"], fastconv.avg_pool2d, x, *args)
    assert_close(avg, _ref(fastconv.avg_pool2d, x, *args), _ref(fastconv.avg_pool2d, np.abs(x), *args),
                 taps, dt, f"avg forward {what}")
    davg = _native(s["family"], fastconv.avg_pool2d_backward, dout, x, *args)
    assert_close(davg, _ref(fastconv.avg_pool2d_backward, dout, x, *args),
                 _ref(fastconv.avg_pool2d_backward, np.abs(dout), x, *args), taps, dt, f"avg backward {what}")


def test_pool_tier_reaches_the_plane_blocks():
    lim = _core.plane_kernel_limits()
    rows = {real_sizes.out_size(s["W"], s["kw"], s["sw"], s["pw"]) for s in POOL}
    taps = {s["kh"] * s["kw"] for s in POOL} | {max(s["kh"], s["kw"]) for s in POOL}
    r, t = lim["row_block"], lim["window_table"]
    assert {r - 1, r, r + 1} <= rows, sorted(rows)
    assert {t - 1, t, t + 1} <= taps, sorted(taps)


IM2COL = [s for s in CONV if s["why"] == "random"][::3]


@pytest.mark.parametrize("s", IM2COL, ids=[_id(i, s) for i, s in enumerate(IM2COL)])
def test_im2col_col2im(s, poisoned):
    what = real_sizes.describe(s)
    rng, dt, x, args = _window_input(s, "real-size-im2col", what)
    col = _native(s["family"], fastconv.im2col, x, *args)
    with fastconv.use_backend("numpy"):
        assert_exact(col, fastconv.im2col(x, *args), f"im2col {what}")
    back = _native(s["family"], fastconv.col2im, col, x.shape, *args)
    assert_close(back, _ref(fastconv.col2im, col, x.shape, *args), _ref(fastconv.col2im, np.abs(col), x.shape, *args),
                 s["kh"] * s["kw"], dt, f"col2im {what}")


def test_explain_plan_matches_the_scratch_the_call_allocates(rng):
    """explain_plan's forward scratch per thread is what conv2d allocates (the high-water mark),
    and its backward names the weight-gradient algorithm the shape gets."""
    x = rng.standard_normal((3, 20, 30, 31)).astype(np.float32)
    w = rng.standard_normal((40, 20, 3, 5)).astype(np.float32)
    plan = fastconv.explain_plan(x.shape, w.shape, stride=(1, 2), pad=(1, 2))
    assert plan["kernel"] == real_sizes.kernel_of(_core.gemm_kernels()[0], "float32")["name"]
    with fastconv.use_backend("native"):
        _core.reset_scratch_peak()
        fastconv.conv2d(x, w, None, (1, 2), (1, 2))
        peak = _core.scratch_bytes()[1]
    threads = plan["threads"]
    assert peak == threads * ((plan["forward"]["thread_elems"] + 63) // 64 * 64) * 4, (peak, plan)
    assert plan["backward"]["weight_grad"] == "taps"  # stride 2: never the dot products; K = 300: the taps
    assert fastconv.explain_plan((1, 1, 28, 28), (30, 1, 5, 5), dtype=np.float64)["backward"]["weight_grad"] == "dots"
    with pytest.raises(ValueError, match="channel mismatch"):
        fastconv.explain_plan((1, 2, 8, 8), (4, 3, 3, 3))
    with pytest.raises(ValueError, match="smaller than kernel"):
        fastconv.explain_plan((1, 2, 2, 2), (4, 2, 3, 3))


# --- dense layers ----------------------------------------------------------------------------

AFFINE = real_sizes.affine_tier()


@pytest.mark.parametrize("s", AFFINE, ids=[_id(i, s) for i, s in enumerate(AFFINE)])
def test_affine_at_real_sizes(s, poisoned):
    rng = rng_for("affine", s["why"], s["family"], s["dtype"])
    dt = np.dtype(s["dtype"])
    N, D, H = s["N"], s["D"], s["H"]
    x, W, b = (rng.standard_normal(shape).astype(dt) for shape in ((N, D), (D, H), (H,)))
    dout = rng.standard_normal((N, H)).astype(dt)
    with backend_context(f"native:{s['family']}"):
        out = fastconv.affine(x, W, b)
        dx, dW, db = fastconv.affine_backward(dout, x, W)
    x64, W64, d64 = x.astype(np.float64), W.astype(np.float64), dout.astype(np.float64)
    what = f"{s['family']} {s['dtype']} {s['why']}"
    assert_close(out, x64 @ W64 + b, np.abs(x64) @ np.abs(W64) + np.abs(b), D + 1, dt, f"affine {what}")
    assert_close(dx, d64 @ W64.T, np.abs(d64) @ np.abs(W64.T), H, dt, f"affine dx {what}")
    assert_close(dW, x64.T @ d64, np.abs(x64.T) @ np.abs(d64), N, dt, f"affine dW {what}")
    assert_close(db, d64.sum(axis=0), np.abs(d64).sum(axis=0), N, dt, f"affine db {what}")


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_affine_columns_dealt_over_threads(dtype, threads, poisoned, threads_restored):
    """Outputs around 1, 2 and 3 NC blocks: the columns are dealt evenly over a multiple of the
    threads (NC + 1 as two halves, 2 NC + 1 as three or four items), each item's edge tile is
    short, and a thread count that does not divide the items leaves one thread a second item."""
    fastconv.set_num_threads(threads)
    for family in real_sizes.families():
        k = real_sizes.kernel_of(family, dtype)
        for N, D, H in [(k["mr"] + 1, 9, k["nc"] + 1), (3, k["kc"] + 3, 2 * k["nc"] + 1),
                        (2 * k["mr"] - 1, 5, 3 * k["nc"] - k["nr"] + 1)]:
            rng = rng_for("affine-columns", family, dtype, threads, N, D, H)
            dt = np.dtype(dtype)
            x, W, b = (rng.standard_normal(shape).astype(dt) for shape in ((N, D), (D, H), (H,)))
            with backend_context(f"native:{family}"):
                out = fastconv.affine(x, W, b)
            x64, W64 = x.astype(np.float64), W.astype(np.float64)
            assert_close(out, x64 @ W64 + b, np.abs(x64) @ np.abs(W64) + np.abs(b), D + 1, dt,
                         f"affine {family} {dtype} {N}x{D}x{H} on {threads} threads")


# --- the shifted-rows forward ------------------------------------------------------------------

SHIFTED = real_sizes.shifted_rows_tier()


@pytest.mark.parametrize("tiles", ["filters_by_pixels", "pixels_by_filters"])
@pytest.mark.parametrize("s", SHIFTED, ids=[_id(i, s) for i, s in enumerate(SHIFTED)])
def test_shifted_rows_forward(s, tiles, poisoned):
    """Both tile orientations: filters in MR panels over pixel tiles, and the block computed
    transposed (pixels in MR panels copied from the rows, W^T packed in NR-filter panels)."""
    rng = rng_for("shifted-rows", real_sizes.describe(s), tiles)
    dt = np.dtype(s["dtype"])
    x = rng.standard_normal((s["N"], s["C"], s["H"], s["W"])).astype(dt)
    w = rng.standard_normal((s["FN"], s["C"], s["kh"], s["kw"])).astype(dt)
    b = rng.standard_normal(s["FN"]).astype(dt)
    stride, pad = (s["sh"], s["sw"]), (s["ph"], s["pw"])
    with forward_algorithm("shifted_rows"), shifted_rows_tiles(tiles):
        out = _native(s["family"], fastconv.conv2d, x, w, b, stride, pad)
        with real_sizes.forced(s["family"]):
            plan = real_sizes.plan_of(s, s["dtype"], "shifted_rows")["forward"]
    assert plan["tiles"] == tiles, plan
    assert_close(out, _ref(fastconv.conv2d, x, w, b, stride, pad),
                 _ref(fastconv.conv2d, np.abs(x), np.abs(w), np.abs(b), stride, pad),
                 s["C"] * s["kh"] * s["kw"] + 1, dt, f"shifted-rows forward ({tiles}) {real_sizes.describe(s)}")


def test_shifted_rows_tier_reaches_its_blocks():
    """Per family and dtype, the forced plans cross KC (channels per tap), MC (filters) and NC
    (item pixels), and split an image into row items with a short last one -- at stride 1 and
    again with strided windows (phase rows)."""
    blocks = {"K > KC", "M > MC", "N > NC", "short last row item"}
    for family in _core.gemm_kernels():
        for dtype in real_sizes.DTYPE_NAMES:
            k = real_sizes.kernel_of(family, dtype)
            seen = set()
            for s in real_sizes.shifted_rows_shapes(family, dtype):
                with real_sizes.forced(family):
                    fwd = real_sizes.plan_of(s, dtype, "shifted_rows")["forward"]
                assert fwd["algorithm"] == "shifted_rows", s
                g = fwd["gemm"]
                hits = {name for name, hit in (("K > KC", g["k_max"] > k["kc"]), ("M > MC", g["m_max"] > k["mc"]),
                                               ("N > NC", g["n_max"] > k["nc"])) if hit}
                OH = real_sizes.out_size(s["H"], s["kh"], s["sh"], s["ph"])
                if fwd["rows"] < OH and OH % fwd["rows"]:
                    hits.add("short last row item")
                strided = (s["sh"], s["sw"]) != (1, 1)
                seen |= {name + (" (strided)" if strided else "") for name in hits}
            assert seen == blocks | {name + " (strided)" for name in blocks}, (family, dtype, seen)


# --- the taps weight gradient ----------------------------------------------------------------

TAPS = real_sizes.taps_tier()


@pytest.mark.parametrize("s", TAPS, ids=[_id(i, s) for i, s in enumerate(TAPS)])
def test_taps_weight_grad(s, poisoned):
    """The taps forced (the whole backward, dx fused where the plan fuses it, and dW alone) and
    the auto rule, against the NumPy reference with outputs and scratch poisoned."""
    rng = rng_for("taps", real_sizes.describe(s))
    dt = np.dtype(s["dtype"])
    x = rng.standard_normal((s["N"], s["C"], s["H"], s["W"])).astype(dt)
    w = rng.standard_normal((s["FN"], s["C"], s["kh"], s["kw"])).astype(dt)
    stride, pad = (s["sh"], s["sw"]), (s["ph"], s["pw"])
    OH, OW = (real_sizes.out_size(s["H"], s["kh"], s["sh"], s["ph"]),
              real_sizes.out_size(s["W"], s["kw"], s["sw"], s["pw"]))
    dout = rng.standard_normal((s["N"], s["FN"], OH, OW)).astype(dt)
    ref = _ref(fastconv.conv2d_backward, dout, x, w, stride, pad)
    absref = _ref(fastconv.conv2d_backward, np.abs(dout), np.abs(x), np.abs(w), stride, pad)
    pixels, what = s["N"] * OH * OW, real_sizes.describe(s)
    for algorithm in ("taps", "auto"):
        with weight_grad_algorithm(algorithm):
            dx, dw, db = _native(s["family"], fastconv.conv2d_backward, dout, x, w, stride, pad)
            dw_alone = _native(s["family"], fastconv.conv2d_backward_weight, dout, x, s["kh"], s["kw"], stride, pad)
        assert_close(dx, ref[0], absref[0], s["FN"] * s["kh"] * s["kw"], dt, f"dx ({algorithm}) {what}")
        assert_close(dw, ref[1], absref[1], pixels, dt, f"dW ({algorithm}) {what}")
        assert_close(dw_alone, ref[1], absref[1], pixels, dt, f"dW alone ({algorithm}) {what}")
        assert_close(db, ref[2], absref[2], pixels, dt, f"db ({algorithm}) {what}")


def test_taps_tier_reaches_its_blocks():
    """Per family and dtype, the forced plans put edge tiles on both tile sides, cut depth
    blocks to one row, end an image on a short block, narrow a block for L2, cut units at the
    copy budget, split dW by channel blocks with a short last one, stride, and fuse dx."""
    lim = _core.weight_grad_limits()
    for family in _core.gemm_kernels():
        for dtype in real_sizes.DTYPE_NAMES:
            mr, nr = real_sizes.taps_tile(family, dtype)
            seen = set()
            for s in real_sizes.taps_shapes(family, dtype):
                with real_sizes.forced(family):
                    bwd = real_sizes.plan_of(s, dtype, weight_grad="taps")["backward"]
                assert bwd["weight_grad"] == "taps", s
                OH = real_sizes.out_size(s["H"], s["kh"], s["sh"], s["ph"])
                OW = real_sizes.out_size(s["W"], s["kw"], s["sw"], s["pw"])
                K, rows, block = s["C"] * s["kh"] * s["kw"], bwd["rows_per_unit"], bwd["taps_block_rows"]
                default_rows = OH if s["N"] >= 8 else -(-OH // -(-8 // s["N"]))
                cb = bwd["taps_channel_block"]
                checks = {
                    "K % MR": K % mr != 0, "FN % NR": s["FN"] % nr != 0, "one-row blocks": block == 1 < rows,
                    "short last block": rows % block != 0 and block > 1,
                    "L2-narrowed block": block < min(lim["taps_block_pixels"] // OW, rows),
                    "budget-cut unit": rows < default_rows, "channel blocks": cb > 0,
                    "short last channel block": cb > 0 and s["C"] % cb != 0, "stride > 1": s["sh"] > 1,
                    "fused dx": bwd["fused"],
                }
                seen |= {name for name, hit in checks.items() if hit}
            assert seen == set(checks), (family, dtype, set(checks) - seen)
