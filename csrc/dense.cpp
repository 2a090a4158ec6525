#include "dense.hpp"

#include <algorithm>

#include "gemm/driver.hpp"
#include "isa/isa.hpp"
#include "parallel.hpp"

namespace fastconv {

namespace {

// Rows and columns of one work item: every row and at most the kernel's NC columns, so that
// each item packs its B block once for all its rows (MC-row items repacked B once per MC rows:
// 1024 x 2048 x 1024 float32 on 1 thread ran at 37 GFLOP/s on a 93 GFLOP/s core). The columns
// are dealt evenly over a multiple of the threads (NC = 1536 cut 2048 columns into 1536 + 512:
// 2048^3 float64 ran 1.26x faster on 2 threads than on 1), then rows are split while threads
// still lack an item; A is packed once per item either way.
struct GemmItems {
    index_t rows, cols, row_items, col_items;
    index_t count() const { return row_items * col_items; }
};

template <class T>
GemmItems split_gemm(const gemm::MicroKernel<T>& kern, index_t M, index_t N, int threads) {
    const index_t full_tiles = std::max<index_t>(1, N / kern.nr);
    const index_t col_items = std::min(gemm::round_up(gemm::ceil_div(N, kern.nc), threads), full_tiles);
    GemmItems it{std::max<index_t>(M, 1), gemm::round_up(gemm::ceil_div(N, col_items), kern.nr), 1, 0};
    it.col_items = gemm::ceil_div(N, it.cols);
    if (it.col_items < threads && M >= 2 * kern.mr) {
        const index_t row_items = std::max<index_t>(1, threads / it.col_items);
        it.rows = std::max<index_t>(kern.mr, gemm::round_up(gemm::ceil_div(M, row_items), kern.mr));
        it.row_items = gemm::ceil_div(M, it.rows);
    }
    return it;
}

template <class T>
void pack_a_block(MatrixRef<T> a, index_t i0, index_t m, int mr, index_t ic, index_t mc, index_t pc, index_t kc,
                  Span<T> dst) {
    if (a.transposed)
        gemm::pack_a_cols(a.data + i0, a.ld, m, mr, ic, mc, pc, kc, dst);
    else
        gemm::pack_a_rows(a.data + i0 * a.ld, a.ld, m, mr, ic, mc, pc, kc, dst);
}

template <class T>
void pack_b_block(MatrixRef<T> b, index_t j0, index_t n, int nr, index_t pc, index_t kc, index_t jc, index_t nc,
                  Span<T> dst) {
    if (b.transposed)
        gemm::pack_b_cols(b.data + j0 * b.ld, b.ld, n, nr, pc, kc, jc, nc, dst);
    else
        gemm::pack_b_rows(b.data + j0, b.ld, n, nr, pc, kc, jc, nc, dst);
}

}  // namespace

template <class T>
void gemm_parallel(index_t M, index_t N, index_t K, MatrixRef<T> a, MatrixRef<T> b, Span<T> c, bool accumulate,
                   index_t scratch_elems) {
    if (M <= 0 || N <= 0) return;
    const gemm::MicroKernel<T>& kern = isa::gemm_kernel<T>();
    const int threads = threads_for_flop(2.0 * double(M) * double(N) * double(K), num_threads());
    const GemmItems items = split_gemm(kern, M, N, threads);
    const gemm::GemmPlan plan = gemm::plan_gemm(kern, items.rows, items.cols, K);
    ThreadScratch<T> scratch(scratch_elems < 0 ? plan.scratch_elems() : scratch_elems, threads, "gemm");
    // B is always packed: read in place, rows thousands of elements apart alias in L1
    // (2048^3 float32 on 1 thread: 43 GFLOP/s in place, 77 packed; benchmarks/NOTES.md section 33).
    parallel_for_flush(items.count(), [&](index_t item) {
        const index_t i0 = (item / items.col_items) * items.rows, j0 = (item % items.col_items) * items.cols;
        const index_t m = std::min(items.rows, M - i0), n = std::min(items.cols, N - j0);
        gemm::gemm_blocked(
            kern, plan, m, n, K,
            [&](index_t ic, index_t mc, index_t pc, index_t kc, Span<T> dst) {
                pack_a_block(a, i0, m, kern.mr, ic, mc, pc, kc, dst);
            },
            [&](index_t pc, index_t kc, index_t jc, index_t nc, Span<T> dst) {
                pack_b_block(b, j0, n, kern.nr, pc, kc, jc, nc, dst);
            },
            c.from(i0 * N + j0, "gemm"), N, accumulate, static_cast<const T*>(nullptr), scratch.mine());
    }, 1, threads);
    scratch.verify();
}

template <class T>
void affine_forward(index_t N, index_t D, index_t H, const T* x, const T* w, const T* b, T* out) {
    for (index_t i = 0; i < N; ++i) std::copy(b, b + H, out + i * H);  // the GEMM adds onto the bias
    gemm_parallel<T>(N, H, D, {x, D}, {w, H}, {out, N * H}, true);
}

template <class T>
void affine_backward(index_t N, index_t D, index_t H, const T* dout, const T* x, const T* w, T* dx, T* dw, T* db) {
    gemm_parallel<T>(N, D, H, {dout, H}, {w, H, true}, {dx, N * D}, false);
    gemm_parallel<T>(D, H, N, {x, D, true}, {dout, H}, {dw, D * H}, false);
    std::fill(db, db + H, T(0));
    for (index_t i = 0; i < N; ++i)  // row after row: the order NumPy's sum(axis=0) adds them in
        for (index_t j = 0; j < H; ++j) db[j] += dout[i * H + j];
}

#define FASTCONV_INSTANTIATE_DENSE(T)                                                                        \
    template void gemm_parallel<T>(index_t, index_t, index_t, MatrixRef<T>, MatrixRef<T>, Span<T>, bool,    \
                                   index_t);                                                                 \
    template void affine_forward<T>(index_t, index_t, index_t, const T*, const T*, const T*, T*);            \
    template void affine_backward<T>(index_t, index_t, index_t, const T*, const T*, const T*, T*, T*, T*);
FASTCONV_INSTANTIATE_DENSE(float)
FASTCONV_INSTANTIATE_DENSE(double)
#undef FASTCONV_INSTANTIATE_DENSE

}  // namespace fastconv
