// Weight gradient of a convolution as a GEMM whose A, the im2col (taps x pixels), is read in
// place: row k of A is tap k's view of one zero-padded copy of the input rows, element (r, j)
// at x[offset[k] + r * run_ld + j * step] for output row r and column j. B is dout^T packed in
// panels of NR filters. The GEMM path packs the transposed im2col instead, which costs about as
// much as its FMAs when there are few filters (DeepConvNet's 32: each packed element serves 64
// FLOP); here nothing of the im2col is copied, and the tile's accumulators run along the
// filters, so no lane is summed across (the dot products' horizontal sums) and no pad column of
// the extended-pixel axis is computed.
// Included by each per-ISA translation unit, like the pooling sweeps.
#pragma once

#include <algorithm>
#include <cstdint>

#include "gemm/ukr_vector.hpp"

namespace fastconv {
namespace {
namespace taps {

#if defined(__GNUC__)
// One MR-tap x NR-filter tile over `runs` runs of `run` pixels: adds its sums to c (row stride
// ldc). STEP > 0 is the column step known at compile time (1: stride-1 layers); 0 reads `step`.
template <class T, int VBYTES, int MR, int NV, int STEP>
void taps_tile(const T* const* tap, std::int64_t runs, std::int64_t run, std::int64_t run_ld, std::int64_t step,
               const T* __restrict b, T* __restrict c, std::int64_t ldc, int m) {
    using X = gemm::VectorTile<T, MR, NV, VBYTES>;  // its loads, stores and broadcast
    using V = typename X::V;
    constexpr int L = X::L;
    const std::int64_t col_step = STEP > 0 ? STEP : step;
    V acc[MR][NV];
#pragma GCC unroll 32
    for (int i = 0; i < MR; ++i)
#pragma GCC unroll 8
        for (int v = 0; v < NV; ++v) acc[i][v] = V{};
    for (std::int64_t r = 0; r < runs; ++r) {
        const std::int64_t base = r * run_ld;
        for (std::int64_t j = 0; j < run; ++j, b += NV * L) {
            V bv[NV];
#pragma GCC unroll 8
            for (int v = 0; v < NV; ++v) bv[v] = X::load(b + v * L);
            const std::int64_t at = base + j * col_step;
#pragma GCC unroll 32
            for (int i = 0; i < MR; ++i) {
                const V a = X::splat(tap[i][at]);
#pragma GCC unroll 8
                for (int v = 0; v < NV; ++v) acc[i][v] += a * bv[v];
            }
        }
    }
    for (int i = 0; i < m; ++i)
#pragma GCC unroll 8
        for (int v = 0; v < NV; ++v) X::store(c + i * ldc + v * L, X::load(c + i * ldc + v * L) + acc[i][v]);
}

// dwt[k * ldc + f] += sum over the runs' pixels q of A(k, q) * b_panel(f / NR)[q * NR + f % NR]
// for k < nk and f < panels * NR; b holds `panels` panels of runs * run rows each. Rows of an
// edge tile (nk % MR) repeat the last tap; their sums are dropped. The fixed order of the sums
// makes the result depend on the operands only.
template <class T, int VBYTES, int MR, int NV>
void weight_grad_taps(std::int64_t nk, const std::int64_t* offset, const T* x, std::int64_t runs, std::int64_t run,
                      std::int64_t run_ld, std::int64_t step, std::int64_t panels, const T* b, T* dwt,
                      std::int64_t ldc) {
    constexpr int NR = gemm::VectorTile<T, MR, NV, VBYTES>::NR;
    const std::int64_t depth = runs * run;
    // Taps outermost: the tile's MR tap rows stay in L1 while every panel of B (the caller
    // sizes the depth block so that all of them fit in L2) passes by. Panels outermost had
    // re-streamed the whole padded image from L3 once per panel when it outgrew L2.
    for (std::int64_t k0 = 0; k0 < nk; k0 += MR) {
        const T* tap[MR];
        for (int i = 0; i < MR; ++i) tap[i] = x + offset[std::min<std::int64_t>(k0 + i, nk - 1)];
        const int m = int(std::min<std::int64_t>(MR, nk - k0));
        for (std::int64_t jp = 0; jp < panels; ++jp) {
            T* c = dwt + k0 * ldc + jp * NR;
            const T* panel = b + jp * depth * NR;
            if (step == 1)
                taps_tile<T, VBYTES, MR, NV, 1>(tap, runs, run, run_ld, 1, panel, c, ldc, m);
            else
                taps_tile<T, VBYTES, MR, NV, 0>(tap, runs, run, run_ld, step, panel, c, ldc, m);
        }
    }
}
#endif

}  // namespace taps
}  // namespace
}  // namespace fastconv
