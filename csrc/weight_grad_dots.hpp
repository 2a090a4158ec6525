// Weight gradient of a stride-1 convolution with a small patch (K = C*kh*kw of a few dozen),
// as dot products over the output pixels instead of a GEMM. The GEMM formulation puts K in
// the micro-kernel's vector dimension, where K = 25 (the book's 5x5 single-channel filters)
// fills about half of a 24- or 48-wide tile; here the vectors run along the pixels and a tile
// is TF filters x TK taps of accumulators, so no lane is wasted on padding.
//
// The caller lays both operands out along one "extended pixel" axis q = oh * Wp + ow of the
// padded image (row pitch Wp = W + 2 * pw): the tap (c, i, j) of output q then sits at
// x[offset[k] + q] with offset[k] = c * plane + i * Wp + j, a contiguous stream; dout is
// copied with zeros in the columns ow >= OW that this axis adds, so they contribute nothing.
// Included by each per-ISA translation unit, like the pooling sweeps.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>

namespace fastconv {
namespace {
namespace dots {

#if defined(__GNUC__)
// dw[f * ldw + k] += sum_{q < len} d[f * ldd + q] * x[offset[k] + q], f < nf, k < nk.
// Rows of d and streams of x must be readable kDotsPad elements past len, and d must be
// zero there (the tail lanes are multiplied in). Fixed summation order: the result
// depends only on the operands, not on threads.
template <class T, int VBYTES, int TF, int TK>
void weight_grad_dots(std::int64_t nf, std::int64_t nk, const T* __restrict d, std::int64_t ldd,
                      const T* __restrict x, const std::int64_t* offset, std::int64_t len, T* __restrict dw,
                      std::int64_t ldw) {
    typedef T V __attribute__((vector_size(VBYTES)));
    constexpr int L = VBYTES / int(sizeof(T));
    const std::int64_t nv = (len + L - 1) / L;
    const auto load = [](const T* p) {
        V v;
        std::memcpy(&v, p, sizeof(V));
        return v;
    };
    for (std::int64_t f0 = 0; f0 < nf; f0 += TF) {
        // Edge tiles repeat the last row / tap; their sums are computed and dropped.
        const T* drow[TF];
        for (int a = 0; a < TF; ++a) drow[a] = d + std::min<std::int64_t>(f0 + a, nf - 1) * ldd;
        for (std::int64_t k0 = 0; k0 < nk; k0 += TK) {
            const T* xrow[TK];
            for (int b = 0; b < TK; ++b) xrow[b] = x + offset[std::min<std::int64_t>(k0 + b, nk - 1)];
            V acc[TF][TK];
#pragma GCC unroll 8
            for (int a = 0; a < TF; ++a)
#pragma GCC unroll 8
                for (int b = 0; b < TK; ++b) acc[a][b] = V{};
            for (std::int64_t v = 0; v < nv; ++v) {
                V dv[TF];
#pragma GCC unroll 8
                for (int a = 0; a < TF; ++a) dv[a] = load(drow[a] + v * L);
#pragma GCC unroll 8
                for (int b = 0; b < TK; ++b) {
                    const V xv = load(xrow[b] + v * L);
#pragma GCC unroll 8
                    for (int a = 0; a < TF; ++a) acc[a][b] += dv[a] * xv;
                }
            }
            const int fa = int(std::min<std::int64_t>(TF, nf - f0)), kb = int(std::min<std::int64_t>(TK, nk - k0));
            for (int a = 0; a < fa; ++a)
                for (int b = 0; b < kb; ++b) {
                    alignas(64) T lanes[L];
                    std::memcpy(lanes, &acc[a][b], sizeof(V));
                    for (int width = L / 2; width > 0; width /= 2)
                        for (int l = 0; l < width; ++l) lanes[l] += lanes[l + width];
                    dw[(f0 + a) * ldw + k0 + b] += lanes[0];
                }
        }
    }
}
#endif

}  // namespace dots
}  // namespace
}  // namespace fastconv
