// dx of a 1x1 convolution without padding on small output planes ("pointwise dx"): one GEMM
// per block of input channels whose rows are every image's output pixels,
//     dx^T block (N*P x channels) = dout^T (N*P x FN) . W[:, block] (FN x channels),
// then each block is transposed into dx (at a stride, onto the pixels the windows read; the
// others are zero). In the col2im orientation a batch-1 7x7 layer ran
// M = its channel block, N = 49 pixels in 16-wide tiles, and packed W^T with reads a channel row
// apart; here M = 49 fills 6-row tiles to 91 %, and W's rows pack as contiguous runs.
#include <algorithm>

#include "conv.hpp"
#include "parallel.hpp"
#include "scratch.hpp"

namespace fastconv {

using gemm::ceil_div;
using gemm::MicroKernel;
using gemm::round_up;

namespace {

// Output pixels per image at most: every channel block re-packs dout^T, which costs more than
// the col2im path's tiles lose once planes pass 7x7 (14x14: 0.69-1.08x, 56x56: 0.43-0.69x;
// 7x7: 1.04-1.73x; NOTES section 39). The batch's pixels at most bound the dx^T block.
constexpr index_t kPointwiseMaxPlane = 64;
constexpr index_t kPointwiseMaxPixels = 4096;
// Channels [c0, c0 + nc) of dx from the block's dx^T (row = batch pixel, ld = its width).
template <class T>
void transpose_block(const Conv2dParams& p, const T* block, index_t ld, index_t c0, index_t nc, T* dx) {
    const Window& w = p.win;
    const index_t P = p.out_plane();
    const bool strided = w.sh != 1 || w.sw != 1;
    for (index_t n = 0; n < p.n; ++n)
        for (index_t c = c0; c < c0 + nc; ++c) {
            T* plane = dx + (n * p.c + c) * p.in_plane();
            const T* col = block + n * P * ld + (c - c0);
            if (strided) std::fill_n(plane, p.in_plane(), T(0));  // pixels no window reads
            for (index_t oy = 0; oy < p.oh; ++oy)
                for (index_t ox = 0; ox < p.ow; ++ox) plane[oy * w.sh * p.w + ox * w.sw] = col[(oy * p.ow + ox) * ld];
        }
}

}  // namespace

template <class T>
bool plan_pointwise_dx(const Conv2dParams& p, ConvBackwardPlan<T>& plan) {
    const Window& w = p.win;
    const MicroKernel<T>& kern = *plan.kern;
    const index_t pixels = p.n * p.out_plane();
    if (w.kh != 1 || w.kw != 1 || w.ph != 0 || w.pw != 0 || pixels == 0 ||
        p.out_plane() > kPointwiseMaxPlane || pixels > kPointwiseMaxPixels || p.c < kern.nr)
        return false;
    // Channel blocks of whole NR panels, two per thread: each block packs all of dout^T again.
    // (A block's sums do not depend on its width, so the count may follow the threads.)
    plan.dx_col_block = round_up(ceil_div(p.c, 2 * std::max(plan.threads, 1)), kern.nr);
    plan.dx_col_items = ceil_div(p.c, plan.dx_col_block);
    plan.dx_gemm = gemm::plan_gemm(kern, pixels, plan.dx_col_block, p.oc);
    ScratchBooking item;
    item.book(pixels * plan.dx_col_block);
    item.book(plan.dx_gemm.scratch_elems());
    plan.dx_item_elems = item.total();
    return true;
}

template <class T>
void pointwise_data_grad(const Conv2dParams& p, const ConvBackwardPlan<T>& plan, const T* dout, const T* w, T* dx) {
    const MicroKernel<T>& kern = *plan.kern;
    const index_t P = p.out_plane(), pixels = p.n * P, cb = plan.dx_col_block;
    ThreadScratch<T> scratch(plan.dx_item_elems, plan.threads, "conv2d_backward pointwise dx");
    parallel_for_flush(plan.dx_col_items, [&](index_t item) {
        const index_t c0 = item * cb, nc = std::min(cb, p.c - c0);
        Span<T> mine = scratch.mine();
        const Span<T> block = mine.take(pixels * cb, "conv2d_backward pointwise dx", "dx^T block");
        gemm::gemm_blocked(
            kern, plan.dx_gemm, pixels, nc, p.oc,
            [&](index_t ic, index_t mc, index_t pc, index_t kc, Span<T> dst) {
                pack_dout_pixels(dout, p.oc, P, kern.mr, ic, mc, pc, kc, dst);  // dout^T
            },
            [&](index_t pc, index_t kc, index_t jc, index_t ncol, Span<T> dst) {
                gemm::pack_b_rows(w + c0, p.c, nc, kern.nr, pc, kc, jc, ncol, dst);  // W is FN x C
            },
            block, cb, false, static_cast<const T*>(nullptr), mine);
        transpose_block(p, block.data, cb, c0, nc, dx);
    }, 1, plan.threads);
    scratch.verify();
}

template bool plan_pointwise_dx<float>(const Conv2dParams&, ConvBackwardPlan<float>&);
template bool plan_pointwise_dx<double>(const Conv2dParams&, ConvBackwardPlan<double>&);
template void pointwise_data_grad<float>(const Conv2dParams&, const ConvBackwardPlan<float>&, const float*,
                                         const float*, float*);
template void pointwise_data_grad<double>(const Conv2dParams&, const ConvBackwardPlan<double>&, const double*,
                                          const double*, double*);

}  // namespace fastconv
