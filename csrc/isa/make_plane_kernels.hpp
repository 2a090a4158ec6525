// The plane kernels' bodies: pooling forward over one (n, c) plane, written so the compiler
// vectorises the sweep along an output row, the weight-gradient dot and tap tiles, and ReLU's
// byte mask. Included only by the per-ISA translation units (csrc/isa/<family>.cpp), whose
// flags let the row sweeps use AVX2/AVX-512 selects: baseline SSE2 has no 64-bit blend.
#pragma once

#include <algorithm>
#include <cstdint>
#include <limits>
#include <type_traits>
#include <vector>

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

#include "plane_kernels.hpp"
#include "weight_grad_dots.hpp"
#include "weight_grad_taps.hpp"

namespace fastconv {

// Internal linkage: each per-ISA translation unit must keep its own copy (one shared weak
// symbol would let the linker hand the AVX-512 build to every caller).
namespace {
namespace planes {
// GCC 12's AVX-512 headers start widening/narrowing/extract intrinsics from an "undefined"
// vector that -Wmaybe-uninitialized then reports (a header false positive, not a bug here).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

// Per-plane lookups that would otherwise divide in the row loops: the valid output columns of
// tap column j, and the pixel offset of tap t from its window's origin. Stack tables for
// windows up to kMax taps per side / in all; larger windows compute them on demand.
class SmallWindowTables {
   public:
    static constexpr index_t kMax = kWindowTableMax;
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

#if defined(__AVX512F__)
// 2x2 windows, stride 2, no padding (the book's Pooling): the row sweeps below read every
// tap with stride 2 and, for short rows (12 outputs at 24x24), run mostly in scalar tails.
// Here each vector of L outputs loads the two input rows as contiguous (masked) pairs of
// vectors and splits them into even and odd columns, so one plane row costs a few loads,
// shuffles and compares. Same tap order and NaN rule as max_forward.
template <class T>
struct PoolAvx512;

template <>
struct PoolAvx512<double> {
    static constexpr int L = 8;
    using V = __m512d;
    using Mask = __mmask8;
    using Lane = std::int64_t;  // a tap number or a permute index
    static V lowest() { return _mm512_set1_pd(-std::numeric_limits<double>::infinity()); }
    static V load(Mask m, const double* p) { return _mm512_maskz_loadu_pd(m, p); }
    static V pick(V lo, __m512i idx, V hi) { return _mm512_permutex2var_pd(lo, idx, hi); }
    static __m512i even() { return _mm512_setr_epi64(0, 2, 4, 6, 8, 10, 12, 14); }
    static __m512i odd() { return _mm512_setr_epi64(1, 3, 5, 7, 9, 11, 13, 15); }
    static Mask takes(V v, V best) {
        return _mm512_cmp_pd_mask(v, best, _CMP_GT_OQ) |
               (_mm512_cmp_pd_mask(v, v, _CMP_UNORD_Q) & _mm512_cmp_pd_mask(best, best, _CMP_ORD_Q));
    }
    static Mask greater(Mask m, V v, V best) { return _mm512_mask_cmp_pd_mask(m, v, best, _CMP_GT_OQ); }
    static Mask unordered(V a, V b) { return _mm512_cmp_pd_mask(a, b, _CMP_UNORD_Q); }
    // Where m: v if v > best, else best (MAX returns its second operand on ties, -0 == +0
    // included, so the first maximum stays). NaN-free operands only.
    static V max_where(Mask m, V v, V best) { return _mm512_mask_max_pd(best, m, v, best); }
    static V blend(Mask m, V a, V b) { return _mm512_mask_blend_pd(m, a, b); }
    static __m512i blend_tap(Mask m, __m512i a, std::int64_t t) {
        return _mm512_mask_blend_epi64(m, a, _mm512_set1_epi64(t));
    }
    static void store(Mask m, double* out, V v) { _mm512_mask_storeu_pd(out, m, v); }
    // Output q's position = first + step[q] + tap[q]; taps hold int64 offsets. step_hi (the
    // float lanes 8-15) is unused.
    static void store_index(Mask m, std::int64_t* at, std::int64_t first, __m512i step_lo, __m512i, __m512i tap) {
        _mm512_mask_storeu_epi64(at, m, _mm512_add_epi64(_mm512_add_epi64(_mm512_set1_epi64(first), step_lo), tap));
    }
};

template <>
struct PoolAvx512<float> {
    static constexpr int L = 16;
    using V = __m512;
    using Mask = __mmask16;
    using Lane = std::int32_t;
    static V lowest() { return _mm512_set1_ps(-std::numeric_limits<float>::infinity()); }
    static V load(Mask m, const float* p) { return _mm512_maskz_loadu_ps(m, p); }
    static V pick(V lo, __m512i idx, V hi) { return _mm512_permutex2var_ps(lo, idx, hi); }
    static __m512i even() { return _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30); }
    static __m512i odd() { return _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31); }
    static Mask takes(V v, V best) {
        return _mm512_cmp_ps_mask(v, best, _CMP_GT_OQ) |
               (_mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q) & _mm512_cmp_ps_mask(best, best, _CMP_ORD_Q));
    }
    static Mask greater(Mask m, V v, V best) { return _mm512_mask_cmp_ps_mask(m, v, best, _CMP_GT_OQ); }
    static Mask unordered(V a, V b) { return _mm512_cmp_ps_mask(a, b, _CMP_UNORD_Q); }
    // Where m: v if v > best, else best (MAX returns its second operand on ties, -0 == +0
    // included, so the first maximum stays). NaN-free operands only.
    static V max_where(Mask m, V v, V best) { return _mm512_mask_max_ps(best, m, v, best); }
    static V blend(Mask m, V a, V b) { return _mm512_mask_blend_ps(m, a, b); }
    // Taps hold int32 offsets (the caller keeps W + 1 within int32), widened at the store.
    static __m512i blend_tap(Mask m, __m512i a, std::int64_t t) {
        return _mm512_mask_blend_epi32(m, a, _mm512_set1_epi32(static_cast<std::int32_t>(t)));
    }
    static void store(Mask m, float* out, V v) { _mm512_mask_storeu_ps(out, m, v); }
    static void store_index(Mask m, std::int64_t* at, std::int64_t first, __m512i step_lo, __m512i step_hi,
                            __m512i tap) {
        const __m512i lo = _mm512_cvtepi32_epi64(_mm512_castsi512_si256(tap));
        const __m512i hi = _mm512_cvtepi32_epi64(_mm512_extracti64x4_epi64(tap, 1));
        const __m512i base = _mm512_set1_epi64(first);
        _mm512_mask_storeu_epi64(at, static_cast<__mmask8>(m), _mm512_add_epi64(_mm512_add_epi64(base, step_lo), lo));
        if (m >> 8)
            _mm512_mask_storeu_epi64(at + 8, static_cast<__mmask8>(m >> 8),
                                     _mm512_add_epi64(_mm512_add_epi64(base, step_hi), hi));
    }
};

// The first n lanes (all of them from L on) of PoolAvx512<T>'s vectors.
template <class T>
typename PoolAvx512<T>::Mask first_lanes(index_t n) {
    constexpr int L = PoolAvx512<T>::L;
    return static_cast<typename PoolAvx512<T>::Mask>(n >= L ? ~0ull : (1ull << n) - 1);
}

template <class T>
void max_forward_2x2s2(const Conv2dParams& p, const T* __restrict in, T* __restrict out,
                       std::int64_t* __restrict argmax) {
    using K = PoolAvx512<T>;
    constexpr int L = K::L;
    const index_t W = p.w, OH = p.oh, OW = p.ow;
    const __m512i even = K::even(), odd = K::odd();
    const __m512i step_lo = _mm512_setr_epi64(0, 2, 4, 6, 8, 10, 12, 14);  // 2q: output q's first column
    const __m512i step_hi = _mm512_add_epi64(step_lo, _mm512_set1_epi64(16));
    const auto lanes = first_lanes<T>;
    for (index_t oh = 0; oh < OH; ++oh) {
        const T* r0 = in + 2 * oh * W;
        const T* r1 = r0 + W;
        for (index_t q0 = 0; q0 < OW; q0 += L) {
            const index_t n = std::min<index_t>(L, OW - q0);
            const auto m_lo = lanes(std::min<index_t>(2 * n, L)), m_hi = lanes(std::max<index_t>(2 * n - L, 0));
            const auto top_lo = K::load(m_lo, r0 + 2 * q0), top_hi = K::load(m_hi, r0 + 2 * q0 + L);
            const auto bot_lo = K::load(m_lo, r1 + 2 * q0), bot_hi = K::load(m_hi, r1 + 2 * q0 + L);
            auto best = K::pick(top_lo, even, top_hi);
            __m512i tap = _mm512_setzero_si512();
            const auto step = [&](typename K::V v, std::int64_t offset) {
                const auto take = K::takes(v, best);
                best = K::blend(take, best, v);
                tap = K::blend_tap(take, tap, offset);
            };
            step(K::pick(top_lo, odd, top_hi), 1);
            step(K::pick(bot_lo, even, bot_hi), W);
            step(K::pick(bot_lo, odd, bot_hi), W + 1);
            const auto m_out = lanes(n);
            K::store(m_out, out + oh * OW + q0, best);
            K::store_index(m_out, argmax + oh * OW + q0, 2 * oh * W + 2 * q0, step_lo, step_hi, tap);
        }
    }
}

// Integer lane arithmetic on the tap numbers and permute indices of PoolAvx512<T>.
template <class Lane>
struct LaneOps;

template <>
struct LaneOps<std::int32_t> {
    using Mask = __mmask16;
    static __m512i set1(std::int64_t v) { return _mm512_set1_epi32(static_cast<std::int32_t>(v)); }
    static __m512i add(__m512i a, __m512i b) { return _mm512_add_epi32(a, b); }
    static __m512i sub(__m512i a, __m512i b) { return _mm512_sub_epi32(a, b); }
    static __m512i max(__m512i a, __m512i b) { return _mm512_max_epi32(a, b); }
    static __m512i min(__m512i a, __m512i b) { return _mm512_min_epi32(a, b); }
    static Mask ge(Mask m, __m512i a, __m512i b) { return _mm512_mask_cmpge_epi32_mask(m, a, b); }
    static Mask lt(Mask m, __m512i a, __m512i b) { return _mm512_mask_cmplt_epi32_mask(m, a, b); }
};

template <>
struct LaneOps<std::int64_t> {
    using Mask = __mmask8;
    static __m512i set1(std::int64_t v) { return _mm512_set1_epi64(v); }
    static __m512i add(__m512i a, __m512i b) { return _mm512_add_epi64(a, b); }
    static __m512i sub(__m512i a, __m512i b) { return _mm512_sub_epi64(a, b); }
    static __m512i max(__m512i a, __m512i b) { return _mm512_max_epi64(a, b); }
    static __m512i min(__m512i a, __m512i b) { return _mm512_min_epi64(a, b); }
    static Mask ge(Mask m, __m512i a, __m512i b) { return _mm512_mask_cmpge_epi64_mask(m, a, b); }
    static Mask lt(Mask m, __m512i a, __m512i b) { return _mm512_mask_cmplt_epi64_mask(m, a, b); }
};

// Rows of at most one vector of outputs whose windows span at most two vectors of input
// columns (AlexNet's pool5, 13x13 -> 6x6 at stride 2; the seed CNN's padded 2x2 on 7x7).
// Each input row is loaded once as two masked vectors and each tap is one permute of them,
// where max_forward_narrow inserts its lanes one by one. Padding needs no copy: the lanes of
// a tap whose column lies in the padding are masked out of its compare. The winning tap is
// kept as i * W + j, as in max_forward_narrow.
template <class T>
bool row_vector_fits(index_t W, index_t OW, index_t kh, index_t kw, index_t sw, index_t pw) {
    constexpr index_t L = PoolAvx512<T>::L;
    static_assert(L * sizeof(T) == kRowVectorBytes, "plane_kernel_limits() reports this width");
    return OW <= L && kw <= 2 * L && std::min(W, (OW - 1) * sw + kw - pw) <= 2 * L &&
           kh * W < (index_t(1) << 30);  // tap numbers fit the lanes
}

// Per tap column j of one geometry: the permute that picks each output's column from a row's
// two vectors, and the outputs for which that column is in the image (those past the two
// vectors never are: row_vector_fits). Built once for a run of planes.
template <class T>
struct RowVectorTaps {
    using K = PoolAvx512<T>;
    using I = LaneOps<typename K::Lane>;
    static constexpr int L = K::L;
    __m512i pick[2 * L];
    typename K::Mask real[2 * L];
    __m512i first_column;      // each window's first real column, from its origin
    __m512i origin_lo, origin_hi;  // int64 q * sw - pw, outputs 0-7 and 8-15
    typename K::Mask row_lo, row_hi, outputs;

    RowVectorTaps(index_t W, index_t OW, index_t kw, index_t sw, index_t pw) {
        const auto lanes = first_lanes<T>;
        typename K::Lane origin[L];
        std::int64_t origin64[16];
        for (index_t q = 0; q < 16; ++q) origin64[q] = q * sw - pw;
        for (index_t q = 0; q < L; ++q) origin[q] = static_cast<typename K::Lane>(origin64[q]);
        const __m512i column = _mm512_loadu_si512(origin), zero = I::set1(0);
        origin_lo = _mm512_loadu_si512(origin64);
        origin_hi = _mm512_loadu_si512(origin64 + 8);
        outputs = lanes(OW);
        for (index_t j = 0; j < kw; ++j) {
            const __m512i c = I::add(column, I::set1(j));
            pick[j] = I::min(I::max(c, zero), I::set1(2 * L - 1));
            real[j] = I::lt(I::ge(outputs, c, zero), c, I::set1(W));
        }
        first_column = I::max(I::sub(zero, column), zero);
        row_lo = lanes(std::min<index_t>(W, L));
        row_hi = lanes(std::clamp<index_t>(W - L, 0, L));
    }
};

// R output rows whose windows start sh rows apart and cover window rows [i_lo, i_hi), as R
// independent chains (one chain of selects is latency-bound). Without the NaN rule the best
// value is a running max and a strict '>' moves the tap; it returns false when a loaded row
// held a NaN, and the caller sweeps the rows again with the rule (the first NaN wins, stays).
template <class T, bool kNanRule, int R>
bool max_rows_vector(const RowVectorTaps<T>& taps, const T* plane, index_t h0, index_t sh, index_t W, index_t kw,
                     index_t i_lo, index_t i_hi, typename PoolAvx512<T>::V* best, __m512i* tap) {
    using K = PoolAvx512<T>;
    using I = LaneOps<typename K::Lane>;
    typename K::Mask nan = 0;
    for (int r = 0; r < R; ++r) {
        best[r] = K::lowest();
        tap[r] = I::add(taps.first_column, I::set1(i_lo * W));
    }
    for (index_t i = i_lo; i < i_hi; ++i) {
        typename K::V lo[R], hi[R];
        for (int r = 0; r < R; ++r) {
            const T* row = plane + (h0 + r * sh + i) * W;  // in the image: i_lo <= i < i_hi
            lo[r] = K::load(taps.row_lo, row);
            hi[r] = W > K::L ? K::load(taps.row_hi, row + K::L) : lo[r];
            if (!kNanRule) nan |= K::unordered(lo[r], hi[r]);
        }
        for (index_t j = 0; j < kw; ++j) {
            for (int r = 0; r < R; ++r) {
                const auto v = K::pick(lo[r], taps.pick[j], hi[r]);
                if (kNanRule) {
                    const auto take = static_cast<typename K::Mask>(taps.real[j] & K::takes(v, best[r]));
                    best[r] = K::blend(take, best[r], v);
                    tap[r] = K::blend_tap(take, tap[r], i * W + j);
                } else {  // the compare feeds only the tap; best's chain is one max a tap
                    tap[r] = K::blend_tap(K::greater(taps.real[j], v, best[r]), tap[r], i * W + j);
                    best[r] = K::max_where(taps.real[j], v, best[r]);
                }
            }
        }
    }
    return nan == 0;
}

// Output rows oh .. oh + R - 1 of one plane, which share their window rows' range.
template <class T, int R>
void max_forward_rows(const Conv2dParams& p, const RowVectorTaps<T>& taps, const T* in, T* out,
                      std::int64_t* argmax, index_t oh, index_t i_lo, index_t i_hi) {
    using K = PoolAvx512<T>;
    const index_t W = p.w, OW = p.ow, sh = p.win.sh, h0 = oh * sh - p.win.ph;
    typename K::V best[R];
    __m512i tap[R];
    if (!max_rows_vector<T, false, R>(taps, in, h0, sh, W, p.win.kw, i_lo, i_hi, best, tap))
        max_rows_vector<T, true, R>(taps, in, h0, sh, W, p.win.kw, i_lo, i_hi, best, tap);
    for (int r = 0; r < R; ++r) {
        K::store(taps.outputs, out + (oh + r) * OW, best[r]);
        K::store_index(taps.outputs, argmax + (oh + r) * OW, (h0 + r * sh) * W, taps.origin_lo,
                       taps.origin_hi, tap[r]);
    }
}

template <class T>
void max_forward_row_vector(const Conv2dParams& p, const T* __restrict in, T* __restrict out,
                            std::int64_t* __restrict argmax, index_t planes) {
    const index_t H = p.h, OH = p.oh, kh = p.win.kh, sh = p.win.sh, ph = p.win.ph;
    const RowVectorTaps<T> taps(p.w, p.ow, p.win.kw, p.win.sw, p.win.pw);
    const auto rows_of = [&](index_t oh) {  // the window rows [i_lo, i_hi) inside the image
        const index_t h0 = oh * sh - ph;
        return std::make_pair(std::max<index_t>(-h0, 0), std::min<index_t>(kh, H - h0));
    };
    for (index_t plane = 0; plane < planes; ++plane) {
        const T* x = in + plane * p.in_plane();
        T* o = out + plane * p.out_plane();
        std::int64_t* a = argmax + plane * p.out_plane();
        for (index_t oh = 0; oh < OH;) {
            const auto range = rows_of(oh);
            if (oh + 1 < OH && rows_of(oh + 1) == range) {
                max_forward_rows<T, 2>(p, taps, x, o, a, oh, range.first, range.second);
                oh += 2;
            } else {
                max_forward_rows<T, 1>(p, taps, x, o, a, oh, range.first, range.second);
                oh += 1;
            }
        }
    }
}
#endif

// Short output rows, where the sweep below pays its per-tap setup (ranges, vector prologue,
// tails) for a handful of outputs (AlexNet's pool5, 13x13 -> 6x6: ~75 cycles an output; NOTES
// section 39): groups of kPoolGroup outputs keep their best values and winning taps in
// registers across the whole window, with branch-free vector selects. A group's chain of
// selects is latency-bound, so float rows of more than kPoolGroup outputs take groups of
// kPoolGroupWide (one 256-bit vector; doubles' 512-bit groups lost to their lane-by-lane
// loads); lanes past the row's end repeat its last output and are not stored. With side padding the plane is first copied between -inf
// columns, which never win a strict '>', and each lane starts at its window's first real
// pixel. A lane's winning tap is kept as its offset i * W + j in the image, so the argmax
// needs no division. Same tap order and NaN rule as the sweep.
template <class T, int G>
void max_forward_narrow(const Conv2dParams& p, const T* __restrict in, T* __restrict out,
                        std::int64_t* __restrict argmax) {
    using Lanes = std::conditional_t<sizeof(T) == 4, std::int32_t, std::int64_t>;
    typedef T V __attribute__((vector_size(G * sizeof(T))));
    typedef Lanes Tap __attribute__((vector_size(G * sizeof(T))));
    const index_t H = p.h, W = p.w, OH = p.oh, OW = p.ow;
    const index_t kh = p.win.kh, kw = p.win.kw, sh = p.win.sh, sw = p.win.sw, ph = p.win.ph, pw = p.win.pw;
    const index_t Wp = W + 2 * pw;
    T padded[kNarrowPlaneMax];  // max_forward sends only planes that fit
    const T* plane = in;
    if (pw > 0) {
        for (index_t h = 0; h < H; ++h) {
            T* row = padded + h * Wp;
            std::fill(row, row + pw, -std::numeric_limits<T>::infinity());
            std::copy(in + h * W, in + (h + 1) * W, row + pw);
            std::fill(row + pw + W, row + Wp, -std::numeric_limits<T>::infinity());
        }
        plane = padded;
    }
    for (index_t oh = 0; oh < OH; ++oh) {
        const index_t h0 = oh * sh - ph;
        const index_t i_lo = std::max<index_t>(-h0, 0), i_hi = std::min<index_t>(kh, H - h0);
        for (index_t g0 = 0; g0 < OW; g0 += G) {
            index_t col[G];  // each lane's window origin in the plane's rows
            V best = V{} - std::numeric_limits<T>::infinity();
            Tap tap;
            for (int g = 0; g < G; ++g) {
                col[g] = std::min<index_t>(g0 + g, OW - 1) * sw;
                tap[g] = Lanes(i_lo * W + std::max<index_t>(pw - col[g], 0));  // the first real pixel
            }
            for (index_t i = i_lo; i < i_hi; ++i) {
                const T* row = plane + (h0 + i) * Wp;
                for (index_t j = 0; j < kw; ++j) {
                    V v;
#pragma GCC unroll 8
                    for (int g = 0; g < G; ++g) v[g] = row[col[g] + j];
                    const Tap take = (v > best) | ((v != v) & (best == best));
                    best = take ? v : best;
                    tap = take ? Tap{} + Lanes(i * W + j) : tap;
                }
            }
            const index_t n = std::min<index_t>(G, OW - g0);
            for (index_t g = 0; g < n; ++g) {
                out[oh * OW + g0 + g] = best[g];
                argmax[oh * OW + g0 + g] = h0 * W + col[g] - pw + tap[g];
            }
        }
    }
}

// For each output row and each window tap (i, j), sweep the row: branch-free selects (random
// data would mispredict every other compare). Taps run in row-major window order, so a strict
// '>' keeps the first maximum; the first NaN wins and then stays.
template <class T>
void max_forward_sweep(const Conv2dParams& p, const T* __restrict in, T* __restrict out,
                       std::int64_t* __restrict argmax) {
    // Locals, not p.*: a store through argmax (int64) could otherwise alias the sizes.
    const index_t H = p.h, W = p.w, OH = p.oh, OW = p.ow;
    const index_t kh = p.win.kh, kw = p.win.kw, sh = p.win.sh, sw = p.win.sw, ph = p.win.ph, pw = p.win.pw;
    // The sweep tracks the winning tap as a 32-bit number (one vector of selects instead of
    // two for 64-bit positions); positions are formed once per output at the end.
    constexpr index_t kRow = kPoolRowBlock;
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

// Max pooling over `planes` consecutive planes, the kernel picked once for them all.
template <class T>
void max_forward(const Conv2dParams& p, const T* in, T* out, std::int64_t* argmax, index_t planes) {
    const auto each_plane = [&](auto kernel) {
        for (index_t plane = 0; plane < planes; ++plane)
            kernel(p, in + plane * p.in_plane(), out + plane * p.out_plane(), argmax + plane * p.out_plane());
    };
    const index_t H = p.h, W = p.w, OW = p.ow, kh = p.win.kh, kw = p.win.kw, sw = p.win.sw, pw = p.win.pw;
#if defined(__AVX512F__)
    if (kh == 2 && kw == 2 && p.win.sh == 2 && sw == 2 && p.win.ph == 0 && pw == 0 && W < (index_t(1) << 30))
        return each_plane(max_forward_2x2s2<T>);
    if (row_vector_fits<T>(W, OW, kh, kw, sw, pw)) return max_forward_row_vector(p, in, out, argmax, planes);
#endif
    if (OW < kPoolNarrowRow && (pw == 0 || H * (W + 2 * pw) <= kNarrowPlaneMax) &&
        kh * W < (index_t(1) << 30)) {  // tap offsets fit the lanes
        if (sizeof(T) == 4 && OW > kPoolGroup) return each_plane(max_forward_narrow<T, kPoolGroupWide>);
        return each_plane(max_forward_narrow<T, kPoolGroup>);
    }
    each_plane(max_forward_sweep<T>);
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

template <class T>
void relu_mask_forward(std::int64_t n, const T* __restrict x, T* __restrict y, bool* __restrict mask) {
    std::int64_t e = 0;
#if defined(__AVX512F__)
    if constexpr (sizeof(T) == 8) {
        for (; e + 8 <= n; e += 8) {
            const __m512d v = _mm512_loadu_pd(x + e);
            const __mmask8 off = _mm512_cmp_pd_mask(v, _mm512_setzero_pd(), _CMP_LE_OQ);
            _mm512_storeu_pd(y + e, _mm512_maskz_mov_pd(static_cast<__mmask8>(~off), v));
            _mm_storel_epi64(reinterpret_cast<__m128i*>(mask + e),
                             _mm512_cvtepi64_epi8(_mm512_maskz_set1_epi64(off, 1)));
        }
    } else {
        for (; e + 16 <= n; e += 16) {
            const __m512 v = _mm512_loadu_ps(x + e);
            const __mmask16 off = _mm512_cmp_ps_mask(v, _mm512_setzero_ps(), _CMP_LE_OQ);
            _mm512_storeu_ps(y + e, _mm512_maskz_mov_ps(static_cast<__mmask16>(~off), v));
            _mm_storeu_si128(reinterpret_cast<__m128i*>(mask + e),
                             _mm512_cvtepi32_epi8(_mm512_maskz_set1_epi32(off, 1)));
        }
    }
#endif
    for (; e < n; ++e) {
        const bool off = x[e] <= T(0);
        mask[e] = off;
        y[e] = off ? T(0) : x[e];
    }
}

template <class T>
void relu_mask_backward(std::int64_t n, const T* dout, const bool* __restrict mask, T* dx) {
    std::int64_t e = 0;
#if defined(__AVX512F__)
    // Any nonzero byte counts as True, as NumPy reads a bool array.
    if constexpr (sizeof(T) == 8) {
        for (; e + 8 <= n; e += 8) {
            const __m512i bytes = _mm512_cvtepu8_epi64(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(mask + e)));
            const __mmask8 off = _mm512_test_epi64_mask(bytes, bytes);
            _mm512_storeu_pd(dx + e, _mm512_maskz_loadu_pd(static_cast<__mmask8>(~off), dout + e));
        }
    } else {
        for (; e + 16 <= n; e += 16) {
            const __m512i bytes = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(mask + e)));
            const __mmask16 off = _mm512_test_epi32_mask(bytes, bytes);
            _mm512_storeu_ps(dx + e, _mm512_maskz_loadu_ps(static_cast<__mmask16>(~off), dout + e));
        }
    }
#endif
    for (; e < n; ++e) {
        const T g = dout[e];
        dx[e] = mask[e] ? T(0) : g;
    }
}

// R dot products of W rows with one vector b, each in the fixed order of PlaneKernels::dots.
// Four rows at a time read b once for all four and give the FMA units four independent sums.
template <class T, int R>
void lane_dots(std::int64_t n, const T* __restrict a, std::int64_t lda, const T* __restrict b, T* __restrict out) {
    constexpr int L = kDotLanes<T>;
    T lanes[R][L] = {};
    std::int64_t q = 0;
    for (; q + L <= n; q += L)
        for (int r = 0; r < R; ++r)
            for (int l = 0; l < L; ++l) lanes[r][l] += a[r * lda + q + l] * b[q + l];
    for (int r = 0; r < R; ++r) {
        T tail = T(0);
        for (std::int64_t t = q; t < n; ++t) tail += a[r * lda + t] * b[t];
        for (int width = L / 2; width > 0; width /= 2)
            for (int l = 0; l < width; ++l) lanes[r][l] += lanes[r][l + width];
        out[r] = lanes[r][0] + tail;
    }
}

template <class T>
void dots(std::int64_t rows, std::int64_t n, const T* a, std::int64_t lda, const T* b, T* out) {
    std::int64_t r = 0;
    for (; r + 4 <= rows; r += 4) lane_dots<T, 4>(n, a + r * lda, lda, b, out + r);
    for (; r < rows; ++r) lane_dots<T, 1>(n, a + r * lda, lda, b, out + r);
}

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
}  // namespace planes

template <class T>
constexpr PlaneKernels<T> make_plane_kernels() {
    PlaneKernels<T> k{&planes::max_forward<T>, &planes::avg_forward<T>, nullptr, nullptr, 0, 0,
                      &planes::relu_mask_forward<T>, &planes::relu_mask_backward<T>, &planes::dots<T>};
#if defined(__GNUC__)
    // Register budgets: dots TF x TK accumulators + TF dout vectors + 1 tap; taps MR x NV
    // accumulators + NV B vectors + 1 broadcast.
#if defined(__AVX512F__)  // 32 registers
    constexpr int kBytes = 64, kTapsMr = 12;
    k.weight_grad_dots = &dots::weight_grad_dots<T, kBytes, 5, 5>;
#else  // 16 registers
#if defined(__AVX2__)
    constexpr int kBytes = 32, kTapsMr = 6;
#else
    constexpr int kBytes = 16, kTapsMr = 6;
#endif
    k.weight_grad_dots = &dots::weight_grad_dots<T, kBytes, 3, 4>;
#endif
    k.weight_grad_taps = &taps::weight_grad_taps<T, kBytes, kTapsMr, 2>;
    k.taps_mr = kTapsMr;
    k.taps_nr = 2 * kBytes / int(sizeof(T));
#endif
    return k;
}
}  // namespace

}  // namespace fastconv
