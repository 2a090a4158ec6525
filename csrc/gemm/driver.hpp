// The loops around the micro-kernel (BLIS's five loops, minus the parallel ones: callers
// split work items across threads, and each item runs this driver on its own scratch).
//
//   for jc in N by NC:            B block  KC x NC   (packed by pack_b)
//     for pc in K by KC:
//       for ic in M by MC:        A block  MC x KC   (packed by pack_a)
//         for jr in NC by NR:     B micro-panel stays in L1
//           for ir in MC by MR:   micro-kernel on an MR x NR tile of C
//
// Packers are callables so convolution can pack B straight from the image (implicit im2col).
//   pack_a(ic, mc, pc, kc, dst): rows [ic, ic+mc), depth [pc, pc+kc) as MR-row panels,
//       panel r at dst + r*kc*MR, element (i, p) at [p*MR + i], rows past M zero.
//   pack_b(pc, kc, jc, nc, dst): depth [pc, pc+kc), columns [jc, jc+nc) as NR-column panels,
//       panel q at dst + q*kc*NR, element (p, j) at [p*NR + j], columns past N zero.
// dst is a Span: every packer checks that its panels fit before it writes.
//
// A GemmPlan fixes the blocks and the scratch for every call up to (M, N, K) once, when the
// caller plans its work: a smaller call (a short last item) reuses the same KC, so no block
// size is derived twice, differently, for two calls sharing one scratch slice.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "../scratch.hpp"
#include "kernel.hpp"

namespace fastconv::gemm {

inline index_t ceil_div(index_t a, index_t b) { return (a + b - 1) / b; }
inline index_t round_up(index_t a, index_t b) { return ceil_div(a, b) * b; }

struct GemmPlan {
    index_t m_max = 0, n_max = 0, k_max = 0;  // the largest call this plan serves
    index_t kc = 1, mc = 1, nc = 1;           // depth, row and column blocks
    index_t a_elems = 0, b_elems = 0;         // packed A block and B block (multiples of 64)
    index_t scratch_elems() const { return a_elems + b_elems; }
};

// KC for a depth of K: at most kc_max (default kern.kc), with the blocks as even as possible.
template <class T>
GemmPlan plan_gemm(const MicroKernel<T>& kern, index_t M, index_t N, index_t K, index_t kc_max = 0) {
    GemmPlan g;
    g.m_max = std::max<index_t>(M, 0);
    g.n_max = std::max<index_t>(N, 0);
    g.k_max = std::max<index_t>(K, 0);
    if (kc_max <= 0) kc_max = kern.kc;
    g.kc = K > 0 ? ceil_div(K, ceil_div(K, kc_max)) : 1;
    g.mc = kern.mc;
    g.nc = kern.nc;
    g.a_elems = scratch_round(round_up(std::min(g.m_max, g.mc), kern.mr) * g.kc);
    g.b_elems = scratch_round(g.kc * round_up(std::min(g.n_max, g.nc), kern.nr));
    return g;
}

// B_rows: optionally, B is already a row-major matrix (element (p, j) at rows.b[p*rows.ld + j]);
// its full NR-wide panels are then read in place and only a partial last panel is packed.
template <class T>
struct BRows {
    const T* b = nullptr;
    index_t ld = 0;
};

// Where the driver writes C. A target checks its span once per call (`check`), hands the
// micro-kernel each tile as (pointer, row stride) (`tile`), and gives single elements for the
// empty sum (`at`).
template <class T>
struct MatrixC {  // row-major, row stride ldc
    Span<T> c;
    index_t ldc;
    void check(index_t M, index_t N) const { c.need((M - 1) * ldc + N, "gemm_blocked", "C"); }
    T* at(index_t i, index_t j) const { return c.data + i * ldc + j; }
    template <class Run>
    void tile(index_t i, index_t j, int, int, bool, Run&& run) const {
        run(c.data + i * ldc + j, ldc);
    }
};

// Columns are the pixels of consecutive images: column j is pixel (j0 + j) % P of image
// (j0 + j) / P, and row i of an image's block starts i*P after it (an NCHW output, or a block
// of its filters). A tile that spans two images is computed in a stack tile and scattered.
template <class T>
struct ImageColumnsC {
    Span<T> c;  // from image 0, row 0
    index_t plane, image_ld, j0;
    void check(index_t M, index_t N) const {
        if (M * plane > image_ld) throw_misfit("gemm_blocked", "rows of an image's block", M * plane, image_ld);
        const index_t last = j0 + N - 1;
        c.need(last / plane * image_ld + (M - 1) * plane + last % plane + 1, "gemm_blocked", "C");
    }
    T* at(index_t i, index_t j) const {
        const index_t g = j0 + j;
        return c.data + g / plane * image_ld + i * plane + g % plane;
    }
    template <class Run>
    void tile(index_t i, index_t j, int m, int n, bool accumulate, Run&& run) const {
        index_t g = j0 + j;
        if (g % plane + n <= plane) return run(at(i, j), plane);
        // One contiguous segment of the tile's columns per image, copied row by row (loops
        // that vectorise, where a column-by-column pointer table did not; on a batch-8 7x7 1x1
        // layer, whose 48-wide tiles nearly all span two images, the two ran within the noise:
        // NOTES section 46).
        struct Segment {
            T* row0;
            int q0, len;
        };
        Segment seg[kMaxNr];
        int segments = 0;
        for (int q = 0; q < n; ++segments) {
            const index_t pixel = g % plane;
            const int len = static_cast<int>(std::min<index_t>(n - q, plane - pixel));
            seg[segments] = {at(i, j + q), q, len};
            q += len;
            g += len;
        }
        alignas(64) T split[kMaxMr * kMaxNr];
        for (int r = 0; accumulate && r < m; ++r)
            for (int s = 0; s < segments; ++s) copy_row(split + r * kMaxNr + seg[s].q0, seg[s].row0 + r * plane, seg[s].len);
        run(split, index_t(kMaxNr));
        for (int r = 0; r < m; ++r)
            for (int s = 0; s < segments; ++s) copy_row(seg[s].row0 + r * plane, split + r * kMaxNr + seg[s].q0, seg[s].len);
    }
    static void copy_row(T* __restrict dst, const T* __restrict src, int len) {
        for (int q = 0; q < len; ++q) dst[q] = src[q];
    }
};

// C (M x N, at `target`) = (accumulate ? C : 0) + A . B (+ bias on the last depth block).
// Checks the call against its plan, C against its span and the scratch against the plan's
// booking before anything is written.
template <class T, class PackA, class PackB, class Target>
void gemm_blocked_into(const MicroKernel<T>& kern, const GemmPlan& plan, index_t M, index_t N, index_t K,
                       PackA&& pack_a, PackB&& pack_b, const Target& target, bool accumulate, const T* bias,
                       Span<T> scratch, const BRows<T>& b_rows = {}) {
    if (M <= 0 || N <= 0) return;
    if (M > plan.m_max || N > plan.n_max || K > plan.k_max)
        throw_misfit("gemm_blocked", "a call larger than its plan (M+N+K)", M + N + K,
                     plan.m_max + plan.n_max + plan.k_max);
    target.check(M, N);
    if (K <= 0) {  // empty sum: C = (accumulate ? C : 0) + bias
        for (index_t i = 0; i < M; ++i)
            for (index_t j = 0; j < N; ++j) {
                T* e = target.at(i, j);
                *e = (accumulate ? *e : T(0)) + (bias ? bias[i] : T(0));
            }
        return;
    }
    const index_t mr = kern.mr, nr = kern.nr, kc_max = plan.kc;
    const Span<T> a_buf = scratch.take(plan.a_elems, "gemm_blocked", "packed A block");
    const Span<T> b_buf = scratch.take(plan.b_elems, "gemm_blocked", "packed B block");
    for (index_t jc = 0; jc < N; jc += plan.nc) {
        const index_t nc = std::min(plan.nc, N - jc);
        // With B in place, only the columns past the last full panel are packed.
        const index_t packed_from = b_rows.b ? nc / nr * nr : 0;
        for (index_t pc = 0; pc < K; pc += kc_max) {
            const index_t kc = std::min(kc_max, K - pc);
            if (packed_from < nc) pack_b(pc, kc, jc + packed_from, nc - packed_from, b_buf);
            const bool acc = accumulate || pc > 0;
            const bool last = pc + kc >= K;
            for (index_t ic = 0; ic < M; ic += plan.mc) {
                const index_t mc = std::min(plan.mc, M - ic);
                pack_a(ic, mc, pc, kc, a_buf);
                for (index_t jr = 0; jr < nc; jr += nr) {
                    const bool in_place = jr < packed_from;
                    const T* b_panel = in_place ? b_rows.b + pc * b_rows.ld + jc + jr
                                                : b_buf.data + ((jr - packed_from) / nr) * kc * nr;
                    const int n = static_cast<int>(std::min(nr, nc - jr));
                    for (index_t ir = 0; ir < mc; ir += mr) {
                        const int m = static_cast<int>(std::min(mr, mc - ir));
                        const T* a_panel = a_buf.data + (ir / mr) * kc * mr;
                        const T* tile_bias = (last && bias) ? bias + ic + ir : nullptr;
                        target.tile(ic + ir, jc + jr, m, n, acc, [&](T* c_tile, index_t ldc) {
                            if (in_place)
                                kern.run_b_rows(kc, a_panel, b_panel, b_rows.ld, c_tile, ldc, m, n, acc, tile_bias);
                            else
                                kern.run(kc, a_panel, b_panel, c_tile, ldc, m, n, acc, tile_bias);
                        });
                    }
                }
            }
        }
    }
}

// C a row-major matrix (row stride ldc).
template <class T, class PackA, class PackB>
void gemm_blocked(const MicroKernel<T>& kern, const GemmPlan& plan, index_t M, index_t N, index_t K,
                  PackA&& pack_a, PackB&& pack_b, Span<T> c, index_t ldc, bool accumulate, const T* bias,
                  Span<T> scratch, const BRows<T>& b_rows = {}) {
    gemm_blocked_into(kern, plan, M, N, K, pack_a, pack_b, MatrixC<T>{c, ldc}, accumulate, bias, scratch, b_rows);
}

// Elements a packer writes for `count` rows (A) or columns (B) of depth kc.
inline index_t panel_elems(index_t count, index_t width, index_t kc) { return ceil_div(count, width) * width * kc; }

// --- packers for plain matrices -------------------------------------------------

// One panel of `width` rows of a row-major block (row stride ld) over depth [0, len):
// dst[q*width + i] = src[i*ld + q], rows past `rows` zero. A full panel of a tile's width runs
// with the width fixed at compile time, in blocks of 8 depths: each row's block is one
// contiguous read, and no inner loop of a runtime trip count runs per element (the runtime
// loop was 17 % of a batch-1 1x1 dW, NOTES section 50).
template <int Width, class T>
void transpose_panel_fixed(const T* __restrict src, index_t ld, index_t len, T* __restrict dst) {
    constexpr index_t kBlock = 8;
    index_t q = 0;
    for (; q + kBlock <= len; q += kBlock) {
        T block[Width][kBlock];
        for (int i = 0; i < Width; ++i)
            for (index_t t = 0; t < kBlock; ++t) block[i][t] = src[i * ld + q + t];
        for (index_t t = 0; t < kBlock; ++t)
            for (int i = 0; i < Width; ++i) dst[(q + t) * Width + i] = block[i][t];
    }
    for (; q < len; ++q)
        for (int i = 0; i < Width; ++i) dst[q * Width + i] = src[i * ld + q];
}

// Calls run(std::integral_constant<int, width>) for the widths of the tiles (every MR and NR,
// the taps' 16), and returns false for any other width.
template <class Run>
bool with_tile_width(int width, Run&& run) {
    switch (width) {
        case 4: return run(std::integral_constant<int, 4>{}), true;
        case 6: return run(std::integral_constant<int, 6>{}), true;
        case 8: return run(std::integral_constant<int, 8>{}), true;
        case 16: return run(std::integral_constant<int, 16>{}), true;
        case 24: return run(std::integral_constant<int, 24>{}), true;
        case 48: return run(std::integral_constant<int, 48>{}), true;
        default: return false;
    }
}

template <class T>
void transpose_panel(const T* src, index_t ld, index_t rows, int width, index_t len, T* dst) {
    const auto fixed = [&](auto w) { transpose_panel_fixed<decltype(w)::value>(src, ld, len, dst); };
    if (rows == width && with_tile_width(width, fixed)) return;
    for (index_t q = 0; q < len; ++q)
        for (index_t i = 0; i < width; ++i) dst[q * width + i] = i < rows ? src[i * ld + q] : T(0);
}

// A row-major (element (i, p) at a[i*lda + p]).
template <class T>
void pack_a_rows(const T* a, index_t lda, index_t M, int mr, index_t ic, index_t mc, index_t pc, index_t kc,
                 Span<T> out) {
    out.need(panel_elems(mc, mr, kc), "pack_a_rows", "A panels");
    T* dst = out.data;
    for (index_t r0 = 0; r0 < mc; r0 += mr, dst += kc * mr)
        transpose_panel(a + (ic + r0) * lda + pc, lda, std::min<index_t>(mr, M - (ic + r0)), mr, kc, dst);
}

// One panel of `width` columns of a row-major block (row stride ld) over depth [0, len):
// dst[q*width + i] = src[q*ld + i], columns past `count` zero. A full panel of a tile's width
// copies a fixed-size run per depth: the runtime-count copy and zero loops cost ~7
// instructions an element, and a strided layer's dx packs W^T once per item (NOTES section 50).
template <int Width, class T>
void copy_panel_fixed(const T* __restrict src, index_t ld, index_t len, T* __restrict dst) {
    for (index_t q = 0; q < len; ++q)
        for (int i = 0; i < Width; ++i) dst[q * Width + i] = src[q * ld + i];
}

template <class T>
void copy_panel(const T* src, index_t ld, index_t count, int width, index_t len, T* dst) {
    const auto fixed = [&](auto w) { copy_panel_fixed<decltype(w)::value>(src, ld, len, dst); };
    if (count == width && with_tile_width(width, fixed)) return;
    for (index_t q = 0; q < len; ++q) {
        T* d = dst + q * width;
        index_t i = 0;
        for (; i < count; ++i) d[i] = src[q * ld + i];
        for (; i < width; ++i) d[i] = T(0);
    }
}

// A given transposed (element (i, p) at a[p*lda + i]): rows of the panel are contiguous.
template <class T>
void pack_a_cols(const T* a, index_t lda, index_t M, int mr, index_t ic, index_t mc, index_t pc, index_t kc,
                 Span<T> out) {
    out.need(panel_elems(mc, mr, kc), "pack_a_cols", "A panels");
    T* dst = out.data;
    for (index_t r0 = 0; r0 < mc; r0 += mr, dst += kc * mr)
        copy_panel(a + pc * lda + ic + r0, lda, std::min<index_t>(mr, M - (ic + r0)), mr, kc, dst);
}

// B row-major (element (p, j) at b[p*ldb + j]).
template <class T>
void pack_b_rows(const T* b, index_t ldb, index_t N, int nr, index_t pc, index_t kc, index_t jc, index_t nc,
                 Span<T> out) {
    out.need(panel_elems(nc, nr, kc), "pack_b_rows", "B panels");
    T* dst = out.data;
    for (index_t q0 = 0; q0 < nc; q0 += nr, dst += kc * nr)
        copy_panel(b + pc * ldb + jc + q0, ldb, std::min<index_t>(nr, N - (jc + q0)), nr, kc, dst);
}

// B given transposed (element (p, j) at b[j*ldb + p]): each column of a panel is contiguous.
template <class T>
void pack_b_cols(const T* b, index_t ldb, index_t N, int nr, index_t pc, index_t kc, index_t jc, index_t nc,
                 Span<T> out) {
    out.need(panel_elems(nc, nr, kc), "pack_b_cols", "B panels");
    T* dst = out.data;
    for (index_t q0 = 0; q0 < nc; q0 += nr, dst += kc * nr) {
        const index_t cols = std::min<index_t>(nr, N - (jc + q0));
        for (index_t j = 0; j < nr; ++j) {
            const T* src = b + (jc + q0 + j) * ldb + pc;
            for (index_t p = 0; p < kc; ++p) dst[p * nr + j] = j < cols ? src[p] : T(0);
        }
    }
}

}  // namespace fastconv::gemm
