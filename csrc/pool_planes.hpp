// Pooling forward over one (n, c) plane, written so the compiler vectorises the sweep along
// an output row. Included by each per-ISA translation unit (csrc/gemm/kernels_*.cpp), which
// is what lets the row sweeps use AVX2/AVX-512 selects: baseline SSE2 has no 64-bit blend.
#pragma once

#include <algorithm>
#include <cstdint>
#include <limits>
#include <vector>

#include "params.hpp"

namespace fastconv {

template <class T>
struct PoolPlanes {
    const char* isa;
    void (*max_forward)(const Conv2dParams& p, const T* in, T* out, std::int64_t* argmax);
    void (*avg_forward)(const Conv2dParams& p, const T* in, T* out);
};

// Internal linkage: each per-ISA translation unit must keep its own copy (one shared weak
// symbol would let the linker hand the AVX-512 build to every caller).
namespace {
namespace planes {

// Per-plane lookups that would otherwise divide in the row loops: the valid output columns of
// tap column j, and the pixel offset of tap t from its window's origin. Stack tables for
// windows up to kMax taps per side / in all; larger windows compute them on demand.
class SmallWindowTables {
   public:
    static constexpr index_t kMax = 64;
    SmallWindowTables(index_t OW, index_t W, index_t kh, index_t kw, index_t sw, index_t pw)
        : OW_(OW), W_(W), kw_(kw), sw_(sw), pw_(pw), cols_cached_(kw <= kMax), offsets_cached_(kh * kw <= kMax) {
        if (cols_cached_)
            for (index_t j = 0; j < kw; ++j) cols_[j] = valid_outputs(OW, sw, pw, j, W);
        if (offsets_cached_)
            for (index_t t = 0; t < kh * kw; ++t) offsets_[t] = (t / kw) * W + t % kw;
    }
    Range cols(index_t j) const { return cols_cached_ ? cols_[j] : valid_outputs(OW_, sw_, pw_, j, W_); }
    index_t offset(index_t t) const { return offsets_cached_ ? offsets_[t] : (t / kw_) * W_ + t % kw_; }

   private:
    index_t OW_, W_, kw_, sw_, pw_;
    bool cols_cached_, offsets_cached_;
    Range cols_[kMax];
    index_t offsets_[kMax];
};

// For each output row and each window tap (i, j), sweep the row: branch-free selects (random
// data would mispredict every other compare). Taps run in row-major window order, so a strict
// '>' keeps the first maximum; the first NaN wins and then stays.
template <class T>
void max_forward(const Conv2dParams& p, const T* __restrict in, T* __restrict out, std::int64_t* __restrict argmax) {
    // Locals, not p.*: a store through argmax (int64) could otherwise alias the sizes.
    const index_t H = p.h, W = p.w, OH = p.oh, OW = p.ow;
    const index_t kh = p.win.kh, kw = p.win.kw, sh = p.win.sh, sw = p.win.sw, ph = p.win.ph, pw = p.win.pw;
    // The sweep tracks the winning tap as a 32-bit number (one vector of selects instead of
    // two for 64-bit positions); positions are formed once per output at the end.
    constexpr index_t kRow = 256;
    std::int32_t tap[kRow];
    // No heap allocation here (this runs inside parallel regions, once per plane): the usual
    // small windows get their divisions hoisted into stack tables, large ones compute in place.
    const SmallWindowTables tables(OW, W, kh, kw, sw, pw);
    for (index_t oh = 0; oh < OH; ++oh) {
        const index_t h0 = oh * sh - ph;
        const index_t i_first = std::max<index_t>(-h0, 0);
        for (index_t ow0 = 0; ow0 < OW; ow0 += kRow) {
            const index_t n = std::min(kRow, OW - ow0);
            T* __restrict best = out + oh * OW + ow0;
            // -inf at the window's first real pixel: an all -inf window still reports a valid
            // index, and padding is never a candidate.
            for (index_t q = 0; q < n; ++q) {
                best[q] = -std::numeric_limits<T>::infinity();
                const index_t w0 = (ow0 + q) * sw - pw;
                tap[q] = static_cast<std::int32_t>(i_first * kw + (w0 < 0 ? -w0 : 0));
            }
            for (index_t i = i_first; i < kh; ++i) {
                const index_t ih = h0 + i;
                if (ih >= H) break;
                // Only taps j that reach the image for some output in [ow0, ow0 + n).
                const index_t j_lo = std::max<index_t>(0, pw - (ow0 + n - 1) * sw);
                const index_t j_hi = std::min<index_t>(kw, W + pw - ow0 * sw);
                for (index_t j = j_lo; j < j_hi; ++j) {
                    const Range r = tables.cols(j);
                    const index_t lo = std::max(r.lo, ow0) - ow0, hi = std::min(r.hi, ow0 + n) - ow0;
                    if (lo >= hi) continue;
                    const T* __restrict src = in + ih * W + (ow0 * sw - pw + j);  // q = 0 (may be a pad slot)
                    const std::int32_t t = static_cast<std::int32_t>(i * kw + j);
                    for (index_t q = lo; q < hi; ++q) {
                        const T v = src[q * sw];
                        const T b = best[q];
                        const bool take = (v > b) | ((v != v) & (b == b));
                        best[q] = take ? v : b;
                        tap[q] = take ? t : tap[q];
                    }
                }
            }
            std::int64_t* __restrict at = argmax + oh * OW + ow0;
            const index_t origin = h0 * W + ow0 * sw - pw;
            for (index_t q = 0; q < n; ++q) at[q] = origin + q * sw + tables.offset(tap[q]);
        }
    }
}

// Zero padding counts in the divisor (count_include_pad); taps summed in window order.
template <class T>
void avg_forward(const Conv2dParams& p, const T* __restrict in, T* __restrict out) {
    const index_t H = p.h, W = p.w, OH = p.oh, OW = p.ow;
    const index_t kh = p.win.kh, kw = p.win.kw, sh = p.win.sh, sw = p.win.sw, ph = p.win.ph, pw = p.win.pw;
    const T scale = T(1) / T(kh * kw);
    // Only taps j that reach the image for some output column.
    const index_t j_lo = std::max<index_t>(0, pw - (OW - 1) * sw), j_hi = std::min<index_t>(kw, W + pw);
    const SmallWindowTables tables(OW, W, kh, kw, sw, pw);
    for (index_t oh = 0; oh < OH; ++oh) {
        T* __restrict sum = out + oh * OW;
        std::fill(sum, sum + OW, T(0));
        const index_t i_lo = std::max<index_t>(0, ph - oh * sh), i_hi = std::min<index_t>(kh, H + ph - oh * sh);
        for (index_t i = i_lo; i < i_hi; ++i) {
            const index_t ih = oh * sh - ph + i;
            for (index_t j = j_lo; j < j_hi; ++j) {
                const Range r = tables.cols(j);
                const index_t base = ih * W - pw + j;
                for (index_t ow = r.lo; ow < r.hi; ++ow) sum[ow] += in[base + ow * sw];
            }
        }
        for (index_t ow = 0; ow < OW; ++ow) sum[ow] *= scale;
    }
}

}  // namespace planes

template <class T>
PoolPlanes<T> make_pool_planes(const char* isa) {
    return {isa, &planes::max_forward<T>, &planes::avg_forward<T>};
}
}  // namespace

// Defined in each per-ISA translation unit; `isa` is null when that ISA is not compiled in.
template <class T>
PoolPlanes<T> pool_planes_generic();
template <class T>
PoolPlanes<T> pool_planes_avx2();
template <class T>
PoolPlanes<T> pool_planes_avx512();

// The planes matching the GEMM's selected ISA (gemm::select_isa).
template <class T>
const PoolPlanes<T>& active_pool_planes();

}  // namespace fastconv
