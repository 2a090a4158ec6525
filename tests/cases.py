"""The table of geometry cases that feeds the parametrized tests.

One row is an input shape (N, C, H, W), a filter bank (FN, kh, kw) and a stride/pad (int or
(h, w) pair). Convolution and im2col tests use every row; pooling tests use the rows whose
padding is at most half the window (``pool_ok``), with the same kh x kw window.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple, Union

import pytest

Pair = Union[int, Tuple[int, int]]


def _pair(v: Pair) -> Tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


@dataclass(frozen=True)
class Case:
    id: str
    N: int
    C: int
    H: int
    W: int
    FN: int
    kh: int
    kw: int
    stride: Pair = 1
    pad: Pair = 0
    poolable: bool = True  # False keeps a case out of the pooling tables (naive pooling is slow)

    @property
    def sh(self) -> int:
        return _pair(self.stride)[0]

    @property
    def sw(self) -> int:
        return _pair(self.stride)[1]

    @property
    def ph(self) -> int:
        return _pair(self.pad)[0]

    @property
    def pw(self) -> int:
        return _pair(self.pad)[1]

    @property
    def OH(self) -> int:
        return (self.H + 2 * self.ph - self.kh) // self.sh + 1

    @property
    def OW(self) -> int:
        return (self.W + 2 * self.pw - self.kw) // self.sw + 1

    @property
    def x_shape(self):
        return (self.N, self.C, self.H, self.W)

    @property
    def w_shape(self):
        return (self.FN, self.C, self.kh, self.kw)

    @property
    def out_shape(self):
        return (self.N, self.FN, self.OH, self.OW)

    @property
    def pool_shape(self):
        return (self.N, self.C, self.OH, self.OW)

    @property
    def col_shape(self):
        return (self.N * self.OH * self.OW, self.C * self.kh * self.kw)

    @property
    def pool_ok(self) -> bool:
        return self.poolable and 2 * self.ph <= self.kh and 2 * self.pw <= self.kw

    @property
    def int_geometry(self) -> bool:
        """Plain int stride and pad (what the book's code accepts)."""
        return isinstance(self.stride, int) and isinstance(self.pad, int)

    @property
    def small(self) -> bool:
        """Small enough for element-by-element finite differences."""
        return 0 < self.N * self.C * self.H * self.W <= 600 and self.FN * self.C * self.kh * self.kw <= 100

    @property
    def geometry(self) -> dict:
        return dict(stride=self.stride, pad=self.pad)


CASES = [
    Case("basic_3x3", 2, 3, 7, 7, 4, 3, 3),
    Case("pad1_same", 2, 3, 6, 6, 5, 3, 3, 1, 1),
    Case("asym_stride_pad", 2, 3, 9, 11, 4, 3, 2, (2, 3), (1, 2)),
    Case("asym_stride_pad_poolable", 2, 2, 8, 9, 3, 3, 2, (2, 1), (1, 1)),
    Case("nonsquare_2x4", 1, 3, 6, 9, 2, 2, 4, 1, (0, 1)),
    Case("nonsquare_5x1", 2, 1, 8, 5, 3, 5, 1, (1, 2), (2, 0)),
    Case("kernel_1x1", 2, 3, 5, 4, 6, 1, 1),
    Case("kernel_1x1_s2_p1", 2, 3, 5, 6, 2, 1, 1, 2, 1),
    Case("out_1x1", 3, 2, 5, 5, 4, 5, 5),
    Case("out_1x1_kernel_over_input", 1, 3, 3, 4, 2, 5, 6, 1, 1),
    Case("stride_gt_kernel", 2, 3, 10, 11, 3, 2, 2, 3),
    Case("stride_gt_kernel_asym", 2, 1, 9, 13, 2, 2, 3, (4, 5), (1, 1)),
    Case("stride_gt_input", 2, 2, 4, 4, 2, 2, 2, 5),
    Case("pool_3x3_s2_p1", 2, 3, 7, 8, 2, 3, 3, 2, 1),
    Case("tall_thin", 1, 2, 15, 3, 2, 3, 3, (2, 1), (0, 1)),
    Case("deepconv_pad2", 2, 2, 14, 14, 3, 3, 3, 1, 2),
    # Padding wider than the kernel: the shifted-rows pitch is OW here, not W + pw.
    Case("kernel_1x1_pad1", 2, 3, 5, 4, 6, 1, 1, 1, 1),
    Case("pad_over_kernel_3x3", 2, 2, 6, 7, 3, 3, 3, 1, (1, 3)),
    Case("batch1_C1", 1, 1, 6, 7, 2, 3, 3),
    Case("batch1_C3", 1, 3, 8, 8, 4, 2, 2, 2),
    Case("single_filter_single_channel", 3, 1, 7, 6, 1, 2, 3, (1, 2)),
    # C*kh*kw = 360 and N*OH*OW = 200 exceed one GEMM block (kc = 256, mc = 128) in every
    # micro-kernel, so the blocked loops and their edges run.
    Case("wide_K_multi_block", 2, 40, 10, 10, 50, 3, 3, 1, 1),
    Case("many_filters", 2, 2, 6, 7, 130, 3, 3, 1, 1),  # FN > one GEMM row block (mc)
    # Large planes: the forward splits each image's pixels into several GEMM column chunks and
    # the backward processes output rows in chunks (one channel's dcol exceeds its scratch).
    Case("large_plane_5x5", 2, 1, 80, 80, 3, 5, 5, 1, (2, 1), poolable=False),
    # Backward paths chosen by size (conv.cpp): batch >= 8 runs each image's dx right after its
    # dW; stride 1 with C*kh*kw <= 64 takes the dot-product weight gradient (here with padding,
    # several channels, and with the output rows split into units when the batch is small);
    # the dx plan picks channel blocks and output-row chunks by a cost model.
    Case("fused_dx_row_chunks", 9, 24, 20, 20, 5, 3, 3, 1, 1, poolable=False),
    Case("dots_fused_pad", 10, 3, 9, 8, 7, 3, 3, 1, (1, 2)),
    Case("dots_row_units_pad", 2, 3, 12, 9, 7, 3, 3, 1, (2, 1)),
    Case("batch0", 0, 3, 6, 6, 2, 3, 3, 1, 1),
    Case("batch0_C1_s2", 0, 1, 5, 5, 1, 2, 2, 2),
    # ch07 SimpleConvNet: (100, 1, 28, 28) images, 30 filters 5x5 -> (100, 30, 24, 24),
    # then its 2x2 stride-2 pooling over (100, 30, 24, 24).
    Case("book_simpleconvnet", 100, 1, 28, 28, 30, 5, 5),
    Case("book_pool_2x2_s2", 100, 30, 24, 24, 2, 2, 2, 2),
]

assert len({c.id for c in CASES}) == len(CASES)

CONV_CASES = CASES
POOL_CASES = [c for c in CASES if c.pool_ok]
SMALL_CASES = [c for c in CASES if c.small]
SMALL_POOL_CASES = [c for c in POOL_CASES if c.small]


def params(cases):
    return [pytest.param(c, id=c.id) for c in cases]
