// Convolution forward for a handful of output pixels in all ("pixel dots"): LeNet-5's c5 at
// batch 1 has one. The implicit GEMM would pack all of W into MR panels for 1-4 used columns
// of its tiles; here the pixels' im2col rows are built once, as the columns of a K x NR block,
// and the micro-kernel multiplies them by W's rows read in place, MR filters at a time. A
// single pixel is one dot product per filter instead: the kernel's MR strided broadcasts per
// step read W slower than contiguous loads do (NOTES section 44).
#include <algorithm>
#include <optional>
#include <vector>

#include "conv.hpp"
#include "isa/isa.hpp"
#include "parallel.hpp"
#include "scratch.hpp"

namespace fastconv {

using gemm::ceil_div;
using gemm::MicroKernel;
using gemm::round_up;

namespace {

// The im2col rows (c, kh, kw order) of output pixels [g0, g0 + npx) of the whole batch, as the
// first npx columns of a K x ld block; the columns past them are zero.
template <class T>
void im2col_columns(const Conv2dParams& p, const T* x, index_t g0, index_t npx, index_t ld, T* cols) {
    const Window& w = p.win;
    const index_t P = p.out_plane(), K = p.patch();
    for (index_t k = 0; k < K; ++k) std::fill(cols + k * ld + npx, cols + (k + 1) * ld, T(0));
    for (index_t g = g0; g < g0 + npx; ++g) {
        const index_t n = g / P, oh = (g % P) / p.ow, ow = g % p.ow;
        T* col = cols + (g - g0);
        for (index_t c = 0; c < p.c; ++c) {
            const T* plane = x + (n * p.c + c) * p.in_plane();
            for (index_t i = 0; i < w.kh; ++i) {
                const index_t h = oh * w.sh - w.ph + i;
                for (index_t j = 0; j < w.kw; ++j, col += ld) {
                    const index_t v = ow * w.sw - w.pw + j;
                    *col = h >= 0 && h < p.h && v >= 0 && v < p.w ? plane[h * p.w + v] : T(0);
                }
            }
        }
    }
}

}  // namespace

// Auto rule (measured, benchmarks/NOTES.md sections 36 and 44): at most NR/2 output pixels in
// the whole batch, where the implicit GEMM's tiles would be at least half empty. LeNet-5 c5 f32
// (NR = 16): 1 pixel 84 -> 12 us, 8 pixels 112 -> 75 us as dot products.
template <class T>
bool plan_pixel_dots(const Conv2dParams& p, ConvForwardPlan<T>& plan) {
    const std::optional<ForwardAlgorithm> forced = forced_forward_algorithm();
    const index_t pixels = p.n * p.out_plane(), nr = plan.kern->nr, mr = plan.kern->mr;
    if (forced ? *forced != ForwardAlgorithm::pixel_dots : 2 * pixels > nr) return false;
    plan.algorithm = ForwardAlgorithm::pixel_dots;
    plan.chunk = std::min(pixels, nr);
    const index_t chunks = ceil_div(pixels, plan.chunk);
    // W is read once per chunk: with few chunks, blocks of MR-filter panels give every thread a
    // share of it (a 512x7x7 -> 512 7x7 layer at batch 1 reads 51 MB of W for one pixel).
    const index_t blocks = std::min<index_t>(ceil_div(p.oc, mr), ceil_div(4 * plan.threads, chunks));
    plan.filter_block = plan.threads > 1 ? round_up(ceil_div(p.oc, blocks), mr) : std::max<index_t>(p.oc, 1);
    plan.filter_blocks = ceil_div(p.oc, plan.filter_block);
    plan.items = chunks * plan.filter_blocks;
    ScratchBooking booking;
    if (plan.chunk == 1) {
        booking.book(p.patch());  // the one pixel's im2col row
    } else {
        booking.book(p.patch() * nr);  // the chunk's im2col columns (a last item of one pixel: its row)
        booking.book(mr * nr);         // one C tile
    }
    plan.thread_elems = booking.total();
    return true;
}

template <class T>
void pixel_dots_forward(const Conv2dParams& p, const ConvForwardPlan<T>& plan, const T* x, const T* w,
                        const T* bias, T* out) {
    const MicroKernel<T>& kern = *plan.kern;
    const index_t K = p.patch(), P = p.out_plane(), pixels = p.n * P, nr = kern.nr, mr = kern.mr;
    ThreadScratch<T> scratch(plan.thread_elems, plan.threads, "conv2d_forward pixel dots");
    std::vector<const T*> row_tables(plan.chunk > 1 ? static_cast<std::size_t>(plan.threads * K) : 0);
    parallel_for_flush(plan.items, [&](index_t item) {
        const index_t g0 = (item / plan.filter_blocks) * plan.chunk, npx = std::min(plan.chunk, pixels - g0);
        const index_t f0 = (item % plan.filter_blocks) * plan.filter_block;
        const index_t f1 = std::min(p.oc, f0 + plan.filter_block);
        Span<T> mine = scratch.mine();
        if (npx == 1) {  // one im2col row: W's rows streamed once as dot products
            const Span<T> row = mine.take(K, "conv2d_forward pixel dots", "im2col row");
            im2col_columns(p, x, g0, 1, 1, row.data);
            T* o = out + (g0 / P) * p.oc * P + g0 % P;
            constexpr index_t kFilters = 64;  // sums a call, on the stack
            T sums[kFilters];
            for (index_t f = f0; f < f1; f += kFilters) {
                const index_t nf = std::min(kFilters, f1 - f);
                isa::plane_kernels<T>().dots(nf, K, w + f * K, K, row.data, sums);
                for (index_t i = 0; i < nf; ++i) o[(f + i) * P] = sums[i] + (bias ? bias[f + i] : T(0));
            }
            return;
        }
        const Span<T> cols = mine.take(K * nr, "conv2d_forward pixel dots", "im2col columns");
        const Span<T> tile = mine.take(mr * nr, "conv2d_forward pixel dots", "C tile");
        im2col_columns(p, x, g0, npx, nr, cols.data);
        const T** rows = row_tables.data() + thread_index() * K;
        for (index_t k = 0; k < K; ++k) rows[k] = cols.data + k * nr;
        for (index_t f = f0; f < f1; f += mr) {
            const int m = int(std::min<index_t>(mr, f1 - f));
            kern.run_b_gather(K, w + f * K, K, rows, 0, tile.data, nr, m, int(npx), false, bias ? bias + f : nullptr);
            for (index_t i = 0; i < m; ++i)
                for (index_t j = 0; j < npx; ++j) {
                    const index_t g = g0 + j;
                    out[(g / P) * p.oc * P + (f + i) * P + g % P] = tile.data[i * nr + j];
                }
        }
    }, 1, plan.threads);
    scratch.verify();
}

template bool plan_pixel_dots<float>(const Conv2dParams&, ConvForwardPlan<float>&);
template bool plan_pixel_dots<double>(const Conv2dParams&, ConvForwardPlan<double>&);
template void pixel_dots_forward<float>(const Conv2dParams&, const ConvForwardPlan<float>&, const float*,
                                        const float*, const float*, float*);
template void pixel_dots_forward<double>(const Conv2dParams&, const ConvForwardPlan<double>&, const double*,
                                         const double*, const double*, double*);

}  // namespace fastconv
