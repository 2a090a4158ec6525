"""Seeded shapes at the sizes users run, aimed at every blocking constant of every kernel family.

The constants come from the kernel table itself (``_core.gemm_kernel_table()``,
``_core.plane_kernel_limits()``), so a retuned kernel moves its tests with it. For each family
and dtype the convolution shapes put each GEMM's dimensions -- forward (M filters, N pixels, K
patch), weight gradient (M filters, N patch, K unit pixels) and dx (M block rows, N chunk
pixels, K filters) -- just below, at and above KC, MC and NC, as the plan of the call reports
them (``_core.conv2d_plan``); random real-size layers (batch 1-17, strides 1-5 per axis,
kernels up to 11x11, pads up to the kernel) add the remainders of MR and NR and the short last
work items. ``coverage()`` tells which targets a shape list reached, so a test can fail when
the generator stops reaching one.

A shape is a plain dict (printed on failure): N, C, H, W, FN, kh, kw, sh, sw, ph, pw, plus
``family``, ``dtype`` and ``why`` (the target it was drawn for).
"""
from __future__ import annotations

import itertools
import os
from typing import Dict, Iterator, List, Optional, Tuple

from fastconv import _core
from support import SEED, forward_algorithm, gemm_family, rng_for, under_asan, weight_grad_algorithm

DTYPE_NAMES = ("float32", "float64")
MAX_KERNEL = 11
# Work per shape: forward multiply-adds x 2 and the reference's im2col matrix.
MAX_FLOP = 400e6
MAX_IM2COL = 6e6


def families() -> List[str]:
    return list(_core.gemm_kernels())


def kernel_of(family: str, dtype: str) -> Dict:
    """The table entry set_gemm_kernel(family) selects for dtype: the first of its ISA."""
    table = _core.gemm_kernel_table(usable_only=True)[DTYPE_NAMES.index(dtype)]
    return next(k for k in table if k["isa"] == family)


forced = gemm_family  # the family the plans and kernels of a block use


# --- geometry --------------------------------------------------------------------

def out_size(n: int, k: int, s: int, p: int) -> int:
    return (n + 2 * p - k) // s + 1


def in_size(out: int, k: int, s: int, p: int, rng) -> int:
    """An input size whose output size is `out` (any of the s sizes that give it)."""
    base = (out - 1) * s + k - 2 * p
    size = base + int(rng.integers(0, s))
    return max(size, 1)


def conv_shape(rng, *, N, C, kh, kw, FN, OH, OW, sh=None, sw=None, ph=None, pw=None, why="") -> Optional[Dict]:
    """A valid layer with these output sizes (stride and pad drawn when not given)."""
    sh = int(rng.integers(1, 6)) if sh is None else sh
    sw = int(rng.integers(1, 6)) if sw is None else sw
    ph = int(rng.integers(0, kh + 1)) if ph is None else ph
    pw = int(rng.integers(0, kw + 1)) if pw is None else pw
    H, W = in_size(OH, kh, sh, ph, rng), in_size(OW, kw, sw, pw, rng)
    # Every window must touch the image, and the padded input must hold the kernel.
    if H + 2 * ph < kh or W + 2 * pw < kw or ph >= H + kh - 1 or pw >= W + kw - 1:
        return None
    if out_size(H, kh, sh, ph) != OH or out_size(W, kw, sw, pw) != OW:
        return None
    return dict(N=N, C=C, H=H, W=W, FN=FN, kh=kh, kw=kw, sh=sh, sw=sw, ph=ph, pw=pw, why=why)


def cost_ok(s: Dict) -> bool:
    OH, OW = out_size(s["H"], s["kh"], s["sh"], s["ph"]), out_size(s["W"], s["kw"], s["sw"], s["pw"])
    K, P = s["C"] * s["kh"] * s["kw"], OH * OW
    return 2.0 * s["N"] * s["FN"] * K * P <= MAX_FLOP and s["N"] * P * K <= MAX_IM2COL


def patches(K: int) -> List[Tuple[int, int, int]]:
    """(C, kh, kw) with C * kh * kw == K, kernels up to 11 x 11."""
    return [(K // (a * b), a, b) for a in range(1, MAX_KERNEL + 1) for b in range(1, MAX_KERNEL + 1)
            if K % (a * b) == 0]


def planes(P: int, max_side: int = 1100) -> List[Tuple[int, int]]:
    """(OH, OW) with OH * OW == P, sides up to max_side when P allows."""
    both = [(a, P // a) for a in range(1, P + 1) if P % a == 0]
    return [hw for hw in both if max(hw) <= max_side] or both


def plan_of(s: Dict, dtype: str, algorithm: str = "implicit_gemm", weight_grad: str = "gemm") -> Dict:
    """The plan of the shape; the tier's targets are the implicit-GEMM forward's and the GEMM
    weight gradient's blocks (the shifted rows and the taps have their own shapes,
    shifted_rows_shapes and taps_shapes)."""
    with forward_algorithm(algorithm), weight_grad_algorithm(weight_grad):
        return _core.conv2d_plan([s["N"], s["C"], s["H"], s["W"]], [s["FN"], s["C"], s["kh"], s["kw"]],
                                 s["sh"], s["sw"], s["ph"], s["pw"], dtype)


def gemm_dims(s: Dict, dtype: str) -> Dict[str, Tuple[int, int, int]]:
    """(M, N, K) of the largest call of each GEMM in the plan of s."""
    plan = plan_of(s, dtype)
    fwd, bwd = plan["forward"]["gemm"], plan["backward"]
    dims = {"fwd": (fwd["m_max"], fwd["n_max"], fwd["k_max"])}
    if bwd["weight_grad"] != "dots":
        g = bwd["wgrad_gemm"]
        dims["wgrad"] = (g["m_max"], g["n_max"], g["k_max"])
    g = bwd["dx_gemm"]
    dims["dx"] = (g["m_max"], g["n_max"], g["k_max"])
    return dims


# --- targeted shapes -----------------------------------------------------------------

ROLES = ("fwd", "wgrad", "dx")
DIMS = {"m": 0, "n": 1, "k": 2}
CONST = {"m": "mc", "n": "nc", "k": "kc"}


def _candidates(role: str, dim: str, value: int, rng) -> Iterator[Dict]:
    """Layers likely to give GEMM `role` the size `value` in `dim` (the plan decides)."""
    small = lambda lo, hi: int(rng.integers(lo, hi + 1))  # noqa: E731
    for _ in range(40):
        if role == "fwd" and dim == "k" or role == "wgrad" and dim == "n":
            # The weight gradient's N is the whole patch only when the batch's pixels exceed 64
            # per group (8 groups): fewer are split into column blocks.
            C, kh, kw = patches(value)[small(0, len(patches(value)) - 1)]
            OH, OW = (small(7, 9), small(7, 9)) if role == "wgrad" else (small(3, 8), small(3, 8))
            N = small(11, 12) if role == "wgrad" else small(1, 3)
            yield conv_shape(rng, N=N, C=C, kh=kh, kw=kw, FN=small(4, 40), OH=OH, OW=OW,
                             why=f"{role}.{dim}={value}")
        elif dim == "m" and role in ("fwd", "wgrad"):
            kh, kw = small(1, 5), small(1, 5)
            yield conv_shape(rng, N=small(1, 9), C=small(1, 24), kh=kh, kw=kw, FN=value, OH=small(4, 20),
                             OW=small(4, 20), why=f"{role}.{dim}={value}")
        elif role == "dx" and dim == "k":
            kh, kw = small(1, 5), small(1, 5)
            yield conv_shape(rng, N=small(1, 9), C=small(1, 12), kh=kh, kw=kw, FN=value, OH=small(4, 20),
                             OW=small(4, 20), why=f"{role}.{dim}={value}")
        elif role == "fwd" and dim == "n":
            # A whole image per item: batch 8 feeds the threads, P a multiple of NR or >= NC.
            OH, OW = planes(value)[small(0, len(planes(value)) - 1)]
            kh, kw = small(1, 3), small(1, 3)
            yield conv_shape(rng, N=8, C=small(1, 3), kh=kh, kw=kw, FN=small(4, 12), OH=OH, OW=OW, sh=1, sw=1,
                             why=f"{role}.{dim}={value}")
        elif role == "wgrad" and dim == "k":
            # Whole images per unit (batch >= 8) of `value` pixels, through the GEMM (K > 64).
            OH, OW = planes(value)[small(0, len(planes(value)) - 1)]
            kh, kw = small(2, 4), small(2, 4)
            C = max(1, 65 // (kh * kw) + small(0, 2))
            yield conv_shape(rng, N=8 + small(0, 1), C=C, kh=kh, kw=kw, FN=small(4, 24), OH=OH, OW=OW,
                             why=f"{role}.{dim}={value}")
        elif role == "dx" and dim == "m":
            C, kh, kw = patches(value)[small(0, len(patches(value)) - 1)]
            yield conv_shape(rng, N=8 + small(0, 2), C=C, kh=kh, kw=kw, FN=small(4, 24), OH=small(3, 10),
                             OW=small(3, 10), why=f"{role}.{dim}={value}")
        elif role == "dx" and dim == "n":
            # One chunk of `value` pixels: few block rows, so the whole image fits the dcol budget.
            OH, OW = planes(value)[small(0, len(planes(value)) - 1)]
            kh, kw = small(1, 3), small(1, 3)
            yield conv_shape(rng, N=small(1, 9), C=small(1, 3), kh=kh, kw=kw, FN=small(4, 12), OH=OH, OW=OW,
                             why=f"{role}.{dim}={value}")


def targets(family: str, dtype: str) -> List[Tuple[str, str, int]]:
    """(role, dim, value) the tier must reach for this family and dtype."""
    kern = kernel_of(family, dtype)
    out = []
    for role, dim in itertools.product(ROLES, DIMS):
        c = kern[CONST[dim]]
        values = [c - 1, c, c + 1]
        if role == "fwd" and dim == "n":
            values = [c - kern["nr"], c]  # items never exceed NC: the plan splits larger images
        if dim == "k" and role == "fwd":
            values.append(2 * c + 1)  # three depth blocks, resumed mid-window
        out += [(role, dim, v) for v in values]
    return out


def targeted_shapes(family: str, dtype: str) -> List[Dict]:
    shapes = []
    with forced(family):
        for role, dim, value in targets(family, dtype):
            rng = rng_for("real-sizes", family, dtype, role, dim, value)
            for s in _candidates(role, dim, value, rng):
                if s is None or not cost_ok(s):
                    continue
                dims = gemm_dims(s, dtype)
                if role in dims and dims[role][DIMS[dim]] == value:
                    shapes.append(dict(s, family=family, dtype=dtype))
                    break
        # Images of NC + 1 pixels: per-image items whose last tile is partial.
        rng = rng_for("real-sizes-partial", family, dtype)
        OH, OW = planes(kernel_of(family, dtype)["nc"] + 1)[-1 if rng.integers(2) else 0]
        s = conv_shape(rng, N=int(rng.integers(1, 4)), C=2, kh=3, kw=2, FN=int(rng.integers(3, 20)), OH=OH, OW=OW,
                       sh=1, sw=1, ph=1, pw=1, why="fwd partial last tile")
        shapes.append(dict(s, family=family, dtype=dtype))
    return shapes


# --- random real-size layers -------------------------------------------------------------

def random_shapes(family: str, dtype: str, count: int) -> List[Dict]:
    rng = rng_for("real-sizes-random", family, dtype)
    shapes: List[Dict] = []
    while len(shapes) < count:
        kh, kw = int(rng.integers(1, MAX_KERNEL + 1)), int(rng.integers(1, MAX_KERNEL + 1))
        C = int(rng.choice([1, 3, int(rng.integers(2, 64)), int(rng.integers(64, 301))]))
        FN = int(rng.choice([int(rng.integers(1, 64)), int(rng.integers(64, 301))]))
        OH, OW = int(rng.integers(1, 60)), int(rng.integers(1, 60))
        s = conv_shape(rng, N=int(rng.integers(1, 18)), C=C, kh=kh, kw=kw, FN=FN, OH=OH, OW=OW,
                       why="random")
        if s is not None and max(s["H"], s["W"]) <= 227 and cost_ok(s):
            shapes.append(dict(s, family=family, dtype=dtype))
    return shapes


# Known crashes before the plans (issue "Memory-safe at every size"), kept as fixed cases.
REGRESSIONS = [
    dict(N=2, C=3, H=227, W=227, FN=96, kh=11, kw=11, sh=4, sw=4, ph=0, pw=0, why="AlexNet conv1, training"),
    dict(N=2, C=300, H=14, W=14, FN=24, kh=3, kw=5, sh=1, sw=1, ph=1, pw=3, why="silent wrong dW (batch 2)"),
    dict(N=1, C=3, H=75, W=75, FN=32, kh=3, kw=3, sh=2, sw=2, ph=0, pw=0, why="RGB stride 2, odd image"),
]


def slice_name() -> str:
    """'full' in the normal build, 'asan' under the sanitizer build; FASTCONV_REAL_SIZES overrides."""
    return os.environ.get("FASTCONV_REAL_SIZES") or ("asan" if under_asan() else "full")


def tier(name: Optional[str] = None) -> List[Dict]:
    """The convolution shapes of one run: every family's targets in both dtypes, the known
    crashes, and random real-size layers -- 30 per family and dtype in the 'full' tier, 4 in
    the 'asan' slice (the sanitizer build runs ~3x slower)."""
    name = name or slice_name()
    out: List[Dict] = []
    for family in families():
        for dtype in DTYPE_NAMES:
            out += targeted_shapes(family, dtype)
            out += random_shapes(family, dtype, 30 if name == "full" else 4)
            out += [dict(r, family=family, dtype=dtype) for r in REGRESSIONS]
    return out


def coverage(shapes: List[Dict]) -> Dict[Tuple[str, str], List[Tuple[str, str, int]]]:
    """For each (family, dtype) among the shapes, the targets none of them reached."""
    missing = {}
    for family in families():
        for dtype in DTYPE_NAMES:
            mine = [s for s in shapes if s["family"] == family and s["dtype"] == dtype]
            if not mine:
                continue
            with forced(family):
                reached = set()
                for s in mine:
                    for role, dims in gemm_dims(s, dtype).items():
                        for dim, idx in DIMS.items():
                            reached.add((role, dim, dims[idx]))
            missing[(family, dtype)] = [t for t in targets(family, dtype) if t not in reached]
    return missing


def describe(s: Dict) -> str:
    return (f"{s.get('family')} {s.get('dtype')} x=({s['N']}, {s['C']}, {s['H']}, {s['W']}) "
            f"W=({s['FN']}, {s['C']}, {s['kh']}, {s['kw']}) stride=({s['sh']}, {s['sw']}) "
            f"pad=({s['ph']}, {s['pw']}) [{s['why']}] FASTCONV_TEST_SEED={SEED}")


# --- pooling ---------------------------------------------------------------------------

def pool_shapes(family: str, dtype: str, count: int) -> List[Dict]:
    """Pooling windows at the plane kernels' blocks: rows of row_block +- 1 outputs, windows of
    window_table +- 1 taps (in all and per side), the 2x2 stride-2 fast path on odd planes, the
    row-vector kernel's one vector of outputs and two of columns +- 1, plus random real-size
    windows. Pads at most half the window (the pooling rule)."""
    lim = _core.plane_kernel_limits()
    rng = rng_for("real-sizes-pool", family, dtype)
    shapes = []

    def add(N, C, H, W, kh, kw, sh, sw, ph, pw, why):
        if H + 2 * ph >= kh and W + 2 * pw >= kw and 2 * ph <= kh and 2 * pw <= kw:
            shapes.append(dict(N=N, C=C, H=H, W=W, kh=kh, kw=kw, sh=sh, sw=sw, ph=ph, pw=pw, why=why,
                               family=family, dtype=dtype))

    row = lim["row_block"]
    for OW in (row - 1, row, row + 1, 2 * row + 1):
        sw = int(rng.integers(1, 3))
        add(2, 3, int(rng.integers(3, 9)), (OW - 1) * sw + 1, 3, 3, 1, sw, 1, 1, f"pool row {OW}")
    # Short max-pooling rows: groups of row_group (float rows longer than that: row_group_wide)
    # outputs below narrow_row, the last group's lanes past the row repeating its last output.
    for OW in (1, lim["row_group"] - 1, lim["row_group"], lim["row_group"] + 1, lim["row_group_wide"] - 1,
               lim["row_group_wide"], lim["row_group_wide"] + 1, lim["narrow_row"] - 1, lim["narrow_row"],
               lim["narrow_row"] + 1):
        sw, pw = int(rng.integers(1, 3)), int(rng.integers(0, 2))
        add(2, 3, int(rng.integers(5, 14)), (OW - 1) * sw + 3 - 2 * pw, 3, 3, 2, sw, pw, pw, f"short row {OW}")
    # AVX-512's row-vector kernel: rows of one vector of outputs +- 1 whose windows span two
    # vectors of columns +- 1.
    lanes = lim["row_vector_bytes"] // (4 if dtype == "float32" else 8)
    for OW, span in itertools.product((lanes - 1, lanes, lanes + 1), (2 * lanes - 1, 2 * lanes, 2 * lanes + 1)):
        sw, pw = int(rng.integers(1, 3)), int(rng.integers(0, 2))
        kw = span - (OW - 1) * sw + pw
        if kw >= max(1, 2 * pw):
            add(2, 3, int(rng.integers(3, 12)), (OW - 1) * sw + kw - 2 * pw, 3, kw, 2, sw, 1, pw,
                f"row vector, {OW} outputs spanning {span} columns")
    # Short padded rows copy their plane to the stack up to narrow_plane elements.
    W = 2 * (lim["narrow_row"] - 2) + 1
    for H in (lim["narrow_plane"] // (W + 2), lim["narrow_plane"] // (W + 2) + 1):
        add(1, 2, H, W, 3, 3, 2, 2, 1, 1, f"short rows, padded plane {H * (W + 2)}")
    taps = lim["window_table"]
    for kh, kw in ((7, 9), (8, 8), (5, 13), (1, taps + 1), (taps + 1, 1)):
        add(1, 2, kh + int(rng.integers(0, 9)), kw + int(rng.integers(0, 9)), kh, kw,
            int(rng.integers(1, 4)), int(rng.integers(1, 4)), kh // 2, kw // 2, f"window {kh}x{kw}")
    for H, W in ((24, 24), (25, 23), (7, 129), (112, 113)):
        add(int(rng.integers(1, 5)), int(rng.integers(1, 9)), H, W, 2, 2, 2, 2, 0, 0, "2x2 stride 2")
    while len(shapes) < count:
        kh, kw = int(rng.integers(1, 8)), int(rng.integers(1, 8))
        add(int(rng.integers(1, 18)), int(rng.integers(1, 65)), int(rng.integers(kh, 120)),
            int(rng.integers(kw, 120)), kh, kw, int(rng.integers(1, 6)), int(rng.integers(1, 6)),
            int(rng.integers(0, kh // 2 + 1)), int(rng.integers(0, kw // 2 + 1)), "random")
    return shapes


def pool_tier(name: Optional[str] = None) -> List[Dict]:
    name = name or slice_name()
    return [s for family in families() for dtype in DTYPE_NAMES
            for s in pool_shapes(family, dtype, 30 if name == "full" else 16)]


def describe_pool(s: Dict) -> str:
    return (f"{s['family']} {s['dtype']} x=({s['N']}, {s['C']}, {s['H']}, {s['W']}) window {s['kh']}x{s['kw']} "
            f"stride=({s['sh']}, {s['sw']}) pad=({s['ph']}, {s['pw']}) [{s['why']}] FASTCONV_TEST_SEED={SEED}")



# --- dense layers (gemm_parallel) ------------------------------------------------------------

def affine_shapes(family: str, dtype: str) -> List[Dict]:
    """Affine layers (batch N, D inputs, H outputs) whose three GEMMs -- forward (N x H, depth
    D), dx (N x D, depth H) and dW (D x H, depth N) -- put rows, columns and depth below, at and
    above MR, NR, KC, MC and NC of the family's kernel, and give a thread no rows or a short
    last item (N just above 2 MR splits the batch across two threads)."""
    k = kernel_of(family, dtype)
    mr, nr, kc, mc, nc = k["mr"], k["nr"], k["kc"], k["mc"], k["nc"]
    picks = [
        (1, 1, 1), (mr - 1, kc + 1, nr + 1), (2 * mr + 1, 2 * kc + 1, nr - 1), (mc - 1, kc, 2 * nr),
        (mc, kc - 1, nr), (mc + 1, 3 * kc + 1, 3), (100, 4320, 100), (100, nc + 1, 10), (7, nc - 1, mr),
        (kc + 1, mc + 1, nc + 1), (3, 5, nc), (2 * mc + 1, mr + 1, nr * 2 + 1),
    ]
    return [dict(family=family, dtype=dtype, N=N, D=D, H=H, why=f"N{N}-D{D}-H{H}") for N, D, H in picks]


def affine_tier(name: Optional[str] = None) -> List[Dict]:
    name = name or slice_name()
    shapes = [s for f in families() for dt in DTYPE_NAMES for s in affine_shapes(f, dt)]
    return shapes if name == "full" else shapes[::3]


# --- the shifted-rows forward ------------------------------------------------------------------

def shifted_rows_shapes(family: str, dtype: str) -> List[Dict]:
    """Layers for the shifted-rows forward (run forced): channels per tap below, at and above
    KC, filters around MC, items wider than NC (a 1,100-pixel row), several row items per image
    with a short last one, 1x1 without padding, non-square kernels and pads; and strided
    windows on phase rows: AlexNet's conv1, a stride above the kernel, strides per axis, the
    same block edges."""
    k = kernel_of(family, dtype)
    kc, mc = k["kc"], k["mc"]

    def layer(N, C, H, W, FN, kh, kw, ph, pw, why, sh=1, sw=1):
        return dict(N=N, C=C, H=H, W=W, FN=FN, kh=kh, kw=kw, sh=sh, sw=sw, ph=ph, pw=pw, why=why,
                    family=family, dtype=dtype)

    return [
        layer(2, kc - 1, 6, 7, 5, 3, 3, 1, 1, "C = KC - 1"),
        layer(1, kc, 5, 9, 9, 3, 3, 1, 1, "C = KC"),
        layer(2, kc + 1, 7, 5, 3, 3, 3, 1, 1, "C = KC + 1"),
        layer(3, 16, 12, 13, mc - 1, 3, 3, 1, 1, "FN = MC - 1"),
        layer(1, 16, 9, 10, mc + 1, 3, 3, 1, 1, "FN = MC + 1"),
        layer(8, 8, 9, 1100, 4, 3, 3, 1, 1, "item wider than NC"),
        layer(1, 24, 83, 61, 7, 3, 3, 1, 1, "row items, short last"),
        layer(4, 40, 9, 11, 6, 1, 1, 0, 0, "1x1 pad 0"),
        layer(2, 9, 11, 8, 5, 3, 5, 0, 2, "3x5 kernel, pad (0, 2)"),
        layer(1, 1, 8, 8, 3, 5, 5, 4, 4, "C = 1, pad = kernel - 1"),
        layer(1, 3, 227, 227, 96, 11, 11, 0, 0, "AlexNet conv1: 11x11 stride 4", 4, 4),
        layer(2, kc + 1, 9, 10, 5, 3, 3, 1, 1, "stride 2, C = KC + 1", 2, 2),
        layer(1, 16, 31, 20, mc + 1, 5, 5, 2, 2, "stride 3, FN = MC + 1", 3, 3),
        layer(4, 8, 9, 2200, 4, 3, 3, 1, 1, "stride (1, 2), item wider than NC", 1, 2),
        layer(1, 24, 165, 61, 7, 7, 7, 3, 3, "stride (2, 1) 7x7, row items, short last", 2, 1),
        layer(3, 7, 14, 17, 6, 2, 2, 1, 0, "2x2 stride 3: phases past the kernel unread", 3, 3),
    ]


def shifted_rows_tier(name: Optional[str] = None) -> List[Dict]:
    shapes = [s for f in families() for dt in DTYPE_NAMES for s in shifted_rows_shapes(f, dt)]
    return shapes if (name or slice_name()) == "full" else shapes[::2]


# --- the taps weight gradient ------------------------------------------------------------------

def taps_tile(family: str, dtype: str) -> Tuple[int, int]:
    """(taps per tile, filters per panel) of the family's taps kernel, as its plans report them."""
    with forced(family):
        bwd = _core.conv2d_plan([1, 1, 4, 4], [1, 1, 3, 3], 1, 1, 1, 1, dtype)["backward"]
    return bwd["taps_mr"], bwd["taps_nr"]


def taps_shapes(family: str, dtype: str) -> List[Dict]:
    """Layers for the taps weight gradient (run forced, and by the auto rule): patches of MR +- 1
    taps, filters of NR +- 1 and 2 NR + 1, output rows wider than a depth block and planes whose
    last block is short, filters so many that L2 narrows the block, a unit cut by the image
    budget, channel blocks with a short last one, strides 2-4 (and a 1x1 at stride 2, never the
    auto choice), a non-square kernel and pads, a batch of 8 (dx fused with the units)."""
    mr, nr = taps_tile(family, dtype)
    lim = _core.weight_grad_limits()
    block = lim["taps_block_pixels"]
    itemsize = 4 if dtype == "float32" else 8
    # C x 128 x 128 in one image of 8 units: each unit's 16 rows overflow the copy budget.
    budget_c = 2 * lim["taps_image_budget_bytes"] // (itemsize * 128 * 16) + 1

    def layer(N, C, H, W, FN, kh, kw, s, ph, pw, why):
        return dict(N=N, C=C, H=H, W=W, FN=FN, kh=kh, kw=kw, sh=s, sw=s, ph=ph, pw=pw, why=why,
                    family=family, dtype=dtype)

    return [
        layer(3, 1, 9, 10, nr - 1, 1, mr - 1, 1, 0, 1, "K = MR - 1, FN = NR - 1"),
        layer(2, 1, 8, 11, nr, 1, mr + 1, 1, 0, 2, "K = MR + 1, FN = NR"),
        layer(2, 13, 12, 9, nr + 1, 3, 3, 1, 1, 1, "K = 117, FN = NR + 1"),
        layer(1, 7, 11, 10, 2 * nr + 1, 3, 3, 1, 1, 1, "K = 63, FN = 2 NR + 1"),
        layer(2, 3, 5, block + 1, 6, 3, 3, 1, 1, 1, "rows wider than a depth block"),
        layer(8, 2, 3 * (block // 16) + 5, 16, 5, 3, 3, 1, 1, 1, "16-pixel rows: whole blocks, short last"),
        layer(8, 2, 12, 12, 1100, 3, 3, 1, 1, 1, "1,100 filters: L2 narrows the depth block"),
        layer(1, budget_c, 128, 128, 5, 1, 1, 1, 0, 0, "units cut by the image budget"),
        layer(2, 260, 10, 10, 40, 3, 3, 1, 1, 1, "channel blocks, short last"),
        layer(3, 5, 17, 19, 33, 3, 3, 2, 1, 1, "3x3 stride 2"),
        layer(2, 3, 31, 29, 20, 5, 5, 3, 2, 2, "5x5 stride 3"),
        layer(2, 3, 67, 67, 24, 11, 11, 4, 2, 2, "11x11 stride 4"),
        layer(2, 24, 15, 9, 41, 1, 1, 2, 0, 0, "1x1 stride 2 (forced only)"),
        layer(2, 9, 11, 8, 14, 3, 5, 1, 0, 2, "3x5 kernel, pad (0, 2)"),
        layer(8, 12, 13, 14, 18, 3, 3, 1, 1, 1, "batch 8: dx fused with the units"),
        layer(1, 17, 23, 21, 19, 3, 3, 1, 1, 1, "batch 1: 8 units, short last"),
    ]


def taps_tier(name: Optional[str] = None) -> List[Dict]:
    shapes = [s for f in families() for dt in DTYPE_NAMES for s in taps_shapes(f, dt)]
    return shapes if (name or slice_name()) == "full" else shapes[::2]
