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
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <new>

#include "kernel.hpp"

namespace fastconv::gemm {

inline index_t ceil_div(index_t a, index_t b) { return (a + b - 1) / b; }
inline index_t round_up(index_t a, index_t b) { return ceil_div(a, b) * b; }

// KC for a depth of K: at most kern.kc, with the blocks as even as possible.
template <class T>
index_t depth_block(const MicroKernel<T>& kern, index_t K) {
    if (K <= 0) return 0;
    return ceil_div(K, ceil_div(K, kern.kc));
}

// Elements of packing scratch one driver call needs (A block + B block).
template <class T>
index_t scratch_elems(const MicroKernel<T>& kern, index_t M, index_t N, index_t K) {
    const index_t kc = std::max<index_t>(depth_block(kern, K), 1);
    const index_t mc = round_up(std::min(M, kern.mc), kern.mr);
    const index_t nc = round_up(std::min(N, kern.nc), kern.nr);
    // Both blocks start on a 64-byte boundary.
    return round_up(mc * kc, 64) + round_up(kc * nc, 64);
}

// B_rows: optionally, B is already a row-major matrix (element (p, j) at rows.b[p*rows.ld + j]);
// its full NR-wide panels are then read in place and only a partial last panel is packed.
template <class T>
struct BRows {
    const T* b = nullptr;
    index_t ld = 0;
};

template <class T, class PackA, class PackB>
void gemm_blocked(const MicroKernel<T>& kern, index_t M, index_t N, index_t K, PackA&& pack_a,
                  PackB&& pack_b, T* c, index_t ldc, bool accumulate, const T* bias, T* scratch,
                  const BRows<T>& b_rows = {}) {
    if (M <= 0 || N <= 0) return;
    if (K <= 0) {  // empty sum: C = (accumulate ? C : 0) + bias
        for (index_t i = 0; i < M; ++i) {
            T* row = c + i * ldc;
            const T shift = bias ? bias[i] : T(0);
            for (index_t j = 0; j < N; ++j) row[j] = (accumulate ? row[j] : T(0)) + shift;
        }
        return;
    }
    const index_t mr = kern.mr, nr = kern.nr;
    const index_t kc_max = depth_block(kern, K);
    T* a_buf = scratch;
    T* b_buf = scratch + round_up(round_up(std::min(M, kern.mc), mr) * kc_max, 64);
    for (index_t jc = 0; jc < N; jc += kern.nc) {
        const index_t nc = std::min(kern.nc, N - jc);
        // With B in place, only the columns past the last full panel are packed.
        const index_t packed_from = b_rows.b ? nc / nr * nr : 0;
        for (index_t pc = 0; pc < K; pc += kc_max) {
            const index_t kc = std::min(kc_max, K - pc);
            if (packed_from < nc) pack_b(pc, kc, jc + packed_from, nc - packed_from, b_buf);
            const bool acc = accumulate || pc > 0;
            const bool last = pc + kc >= K;
            for (index_t ic = 0; ic < M; ic += kern.mc) {
                const index_t mc = std::min(kern.mc, M - ic);
                pack_a(ic, mc, pc, kc, a_buf);
                for (index_t jr = 0; jr < nc; jr += nr) {
                    const bool in_place = jr < packed_from;
                    const T* b_panel = in_place ? b_rows.b + pc * b_rows.ld + jc + jr
                                                : b_buf + ((jr - packed_from) / nr) * kc * nr;
                    const int n = static_cast<int>(std::min(nr, nc - jr));
                    for (index_t ir = 0; ir < mc; ir += mr) {
                        const int m = static_cast<int>(std::min(mr, mc - ir));
                        const T* a_panel = a_buf + (ir / mr) * kc * mr;
                        T* c_tile = c + (ic + ir) * ldc + jc + jr;
                        const T* tile_bias = (last && bias) ? bias + ic + ir : nullptr;
                        if (in_place)
                            kern.run_b_rows(kc, a_panel, b_panel, b_rows.ld, c_tile, ldc, m, n, acc, tile_bias);
                        else
                            kern.run(kc, a_panel, b_panel, c_tile, ldc, m, n, acc, tile_bias);
                    }
                }
            }
        }
    }
}

// --- packers for plain matrices -------------------------------------------------

// A row-major (element (i, p) at a[i*lda + p]).
template <class T>
void pack_a_rows(const T* a, index_t lda, index_t M, int mr, index_t ic, index_t mc, index_t pc, index_t kc,
                 T* dst) {
    for (index_t r0 = 0; r0 < mc; r0 += mr, dst += kc * mr) {
        const index_t rows = std::min<index_t>(mr, M - (ic + r0));
        const T* src = a + (ic + r0) * lda + pc;
        if (rows == mr) {  // a transpose of mr rows, written in order
            for (index_t p = 0; p < kc; ++p)
                for (index_t i = 0; i < mr; ++i) dst[p * mr + i] = src[i * lda + p];
        } else {
            for (index_t p = 0; p < kc; ++p)
                for (index_t i = 0; i < mr; ++i) dst[p * mr + i] = i < rows ? src[i * lda + p] : T(0);
        }
    }
}

// A given transposed (element (i, p) at a[p*lda + i]): rows of the panel are contiguous.
template <class T>
void pack_a_cols(const T* a, index_t lda, index_t M, int mr, index_t ic, index_t mc, index_t pc, index_t kc,
                 T* dst) {
    for (index_t r0 = 0; r0 < mc; r0 += mr, dst += kc * mr) {
        const index_t rows = std::min<index_t>(mr, M - (ic + r0));
        for (index_t p = 0; p < kc; ++p) {
            const T* src = a + (pc + p) * lda + ic + r0;
            T* d = dst + p * mr;
            index_t i = 0;
            for (; i < rows; ++i) d[i] = src[i];
            for (; i < mr; ++i) d[i] = T(0);
        }
    }
}

// B row-major (element (p, j) at b[p*ldb + j]).
template <class T>
void pack_b_rows(const T* b, index_t ldb, index_t N, int nr, index_t pc, index_t kc, index_t jc, index_t nc,
                 T* dst) {
    for (index_t q0 = 0; q0 < nc; q0 += nr, dst += kc * nr) {
        const index_t cols = std::min<index_t>(nr, N - (jc + q0));
        for (index_t p = 0; p < kc; ++p) {
            const T* src = b + (pc + p) * ldb + jc + q0;
            T* d = dst + p * nr;
            index_t j = 0;
            for (; j < cols; ++j) d[j] = src[j];
            for (; j < nr; ++j) d[j] = T(0);
        }
    }
}

// --- scratch -----------------------------------------------------------------------

// Bytes of kernel scratch alive now, and the most ever alive at once (reset by tests):
// how the "no full im2col matrix" promise is measured.
struct ScratchStats {
    static void add(std::int64_t bytes);
    static std::int64_t current();
    static std::int64_t peak();
    static void reset_peak();
};

// 64-byte aligned, uninitialised storage; one allocation per call, sliced per thread.
template <class T>
class AlignedBuffer {
   public:
    explicit AlignedBuffer(index_t n)
        : ptr_(n > 0 ? static_cast<T*>(::operator new(static_cast<std::size_t>(n) * sizeof(T), std::align_val_t(64)))
                     : nullptr),
          bytes_(n > 0 ? n * index_t(sizeof(T)) : 0) {
        ScratchStats::add(bytes_);
    }
    ~AlignedBuffer() {
        if (ptr_) ::operator delete(ptr_, std::align_val_t(64));
        ScratchStats::add(-bytes_);
    }
    AlignedBuffer(const AlignedBuffer&) = delete;
    AlignedBuffer& operator=(const AlignedBuffer&) = delete;
    T* get() const { return ptr_; }

   private:
    T* ptr_;
    index_t bytes_;
};

}  // namespace fastconv::gemm
