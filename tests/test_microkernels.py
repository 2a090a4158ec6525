"""Every GEMM micro-kernel of the table, tested on its own (the way XNNPACK's
gemm-microkernel-tester tests each kernel): every entry (``run`` on packed panels, ``run_b_rows``
on B rows read in place, ``run_b_gather`` on B rows through a pointer table with A packed or read
in place), with and without accumulation and bias, on every edge tile m <= MR, n <= NR (tiles
of n <= NR - L columns run the narrower kernels of fewer vectors), at depths k = 0, 1, KC - 1,
KC, KC + 1 -- against a float64 product.

The C array is larger than the tile and filled around it with random values checked bit for bit
afterwards: a write outside the tile changes them, accumulating or not.
"""
from __future__ import annotations

import numpy as np
import pytest

from fastconv import _core
from support import assert_close, rng_for, seed_note


def _table():
    out = []
    for dtype, kernels in zip((np.float32, np.float64), _core.gemm_kernel_table(usable_only=True)):
        for kern in kernels:
            out.append(pytest.param(dtype, kern, id=kern["name"]))
    return out


KERNELS = _table()


def _depths(kern):
    return sorted({0, 1, kern["kc"] - 1, kern["kc"], kern["kc"] + 1})


ENTRIES = ["run", "run_b_rows", "run_b_gather", "run_b_gather_a_rows"]


def _check_tile(dtype, kern, k, m, n, accumulate, with_bias, entry, rng):
    MR, NR = kern["mr"], kern["nr"]
    a_ld = k + 3 if entry == "run_b_gather_a_rows" else 0
    a = rng.standard_normal((MR, a_ld) if a_ld else k * MR).astype(dtype)
    if a_ld:  # rows past m: NaN, so a kernel that mixed them into the tile would show it
        a[m:] = np.nan
    ldb = 0 if entry == "run" else NR + 5
    b = rng.standard_normal((k, ldb) if ldb else k * NR).astype(dtype)
    bias = rng.standard_normal(MR).astype(dtype) if with_bias else None
    c = rng.standard_normal((MR + 2, NR + 3)).astype(dtype)
    around = c.copy()
    start = c[:m, :n].copy()
    # Rows in a shuffled order with repeats, as a convolution's taps revisit one image.
    gather = rng.integers(0, max(k, 1), size=k) if entry.startswith("run_b_gather") else None
    _core.ukernel(kern["name"], k, a, b, c, m, n, accumulate, bias, ldb, gather, a_ld)

    A = (a[:, :k].T if a_ld else a.reshape(k, MR)).astype(np.float64)[:, :m]
    if entry == "run":
        B = b.reshape(k, NR)
    elif entry == "run_b_rows":
        B = b[:, :NR]
    else:
        B = b[gather, 1:NR + 1]
    B = B.astype(np.float64)[:, :n]
    expected = A.T @ B
    absref = np.abs(A).T @ np.abs(B)
    if accumulate:
        expected += start
        absref += np.abs(start)
    if with_bias:
        expected += bias[:m, None].astype(np.float64)
        absref += np.abs(bias[:m, None].astype(np.float64))
    what = (f"{kern['name']} {entry} k={k} m={m} n={n} "
            f"accumulate={accumulate} bias={with_bias}")
    assert_close(c[:m, :n], expected, absref, max(k, 1) + 2, dtype, what)
    c[:m, :n] = around[:m, :n]
    assert c.tobytes() == around.tobytes(), f"{what}: wrote outside the m x n tile {seed_note()}"


@pytest.mark.parametrize("entry", ENTRIES)
@pytest.mark.parametrize("dtype,kern", KERNELS)
def test_every_edge_tile(dtype, kern, entry):
    """Every (m, n) edge at depths 1 and KC + 1, every flag combination in turn."""
    rng = rng_for("ukernel-edges", kern["name"], entry)
    flags = [(acc, bias) for acc in (False, True) for bias in (False, True)]
    step = 0
    for k in (1, kern["kc"] + 1):
        for m in range(1, kern["mr"] + 1):
            for n in range(1, kern["nr"] + 1):
                acc, bias = flags[step % len(flags)]
                step += 1
                _check_tile(dtype, kern, k, m, n, acc, bias, entry, rng)


@pytest.mark.parametrize("entry", ENTRIES)
@pytest.mark.parametrize("dtype,kern", KERNELS)
def test_every_depth_and_flag(dtype, kern, entry):
    """k = 0, 1, KC - 1, KC, KC + 1 with accumulate and bias on and off, on the full tile and
    on the smallest and largest edges."""
    rng = rng_for("ukernel-depths", kern["name"], entry)
    MR, NR = kern["mr"], kern["nr"]
    tiles = sorted({(MR, NR), (1, 1), (1, NR), (MR, 1), (MR - 1 or 1, NR - 1 or 1)})
    for k in _depths(kern):
        for m, n in tiles:
            for acc in (False, True):
                for bias in (False, True):
                    _check_tile(dtype, kern, k, m, n, acc, bias, entry, rng)


def test_table_covers_every_family():
    """Each family _core.gemm_kernels() offers has a float32 and a float64 entry under test."""
    f32, f64 = _core.gemm_kernel_table(usable_only=True)
    for isa in _core.gemm_kernels():
        assert any(k["isa"] == isa for k in f32), f"no float32 kernel of {isa} under test"
        assert any(k["isa"] == isa for k in f64), f"no float64 kernel of {isa} under test"


def test_ukernel_rejects_bad_tiles():
    kern = _core.gemm_kernel_table()[0][0]
    a = np.zeros(kern["mr"], np.float32)
    b = np.zeros(kern["nr"], np.float32)
    c = np.zeros((kern["mr"], kern["nr"]), np.float32)
    with pytest.raises(ValueError, match="MR"):
        _core.ukernel(kern["name"], 1, a, b, c, kern["mr"] + 1, 1, False, None)
    with pytest.raises(ValueError, match="no usable kernel"):
        _core.ukernel("no-such-kernel", 1, a, b, c, 1, 1, False, None)
    rows = np.zeros((1, kern["nr"] + 1), np.float32)
    with pytest.raises(ValueError, match=r"\[0, k\)"):
        _core.ukernel(kern["name"], 1, a, rows, c, 1, 1, False, None, kern["nr"] + 1, np.array([1]))
    with pytest.raises(ValueError, match="ldb > NR"):
        _core.ukernel(kern["name"], 1, a, rows[:, :-1].copy(), c, 1, 1, False, None, kern["nr"], np.array([0]))
