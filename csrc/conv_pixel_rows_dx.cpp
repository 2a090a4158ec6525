// dx with the batch's output pixels as the GEMM's rows ("pixel rows"): on small output planes
// the pixels are few and W is large, so dx^T is computed in blocks of input channels,
//     dx^T block (N*P x channels*khw) = dout^T (N*P x FN) . W[:, block] (FN x channels*khw),
// one GEMM a block, which packs its slice of W once for the whole batch (the col2im
// orientation packs W^T's block once per image and row chunk: 16 times for ResNet-18's
// l4_down3x3 at batch 8) and fills 6-row tiles with pixels. An unpadded 1x1 layer scatters a
// block's columns straight onto the pixels the windows read; a larger window transposes each
// image's rows of the block into dcol and sums them with col2im_rows.
#include <algorithm>

#include "conv.hpp"
#include "parallel.hpp"
#include "scratch.hpp"

namespace fastconv {

using gemm::ceil_div;
using gemm::MicroKernel;
using gemm::round_up;

namespace {

constexpr const char* kDataGradNames[] = {"gemm_col2im", "pixel_rows", "transposed_forward"};
ForcedSetting<DataGradAlgorithm, 3> g_data_grad_algorithm{kDataGradNames, "set_data_grad_algorithm"};

// Output pixels per image at most: every channel block re-packs dout^T, which costs more than
// the col2im path's tiles lose once planes pass 7x7 (1x1 on 14x14: 0.69-1.08x, 56x56:
// 0.43-0.69x; 7x7: 1.04-1.73x; NOTES section 39; 3x3 on 14x14 and 28x28 planes ran within the
// noise of col2im, section 51). The batch's pixels at most bound the block.
constexpr index_t kMaxPlane = 64;
constexpr index_t kMaxPixels = 4096;
// A k x k block's dx^T at most (the 1x1 blocks keep the widths NOTES section 39 measured).
constexpr index_t kBlockBudgetBytes = 512 * 1024;

bool pointwise(const Window& w) { return w.kh == 1 && w.kw == 1 && w.ph == 0 && w.pw == 0; }

// A k x k window takes the pixel rows once W outgrows 4 L2s: below, the col2im orientation's
// per-item repack of W^T stays cheap and its wide M tiles won (128 -> 256 3x3 stride 2 onto 7x7
// at batch 8, 1.2 MB of f32 weights: pixel rows 0.8-1.0x; 64 -> 64 on 7x7 at batch 1: 0.9x);
// above it they ran 1.2-1.8x faster (ResNet-18's l4 3x3 layers at batch 1 and 8, 4.7-9.4 MB;
// NOTES section 51).
template <class T>
bool weights_outgrow_l2(const Conv2dParams& p) {
    const double bytes = double(p.oc) * double(p.patch()) * double(sizeof(T));
    return bytes >= 4.0 * double(gemm::cache_sizes().l2);
}

// Channels [c0, c0 + nc) of dx from a 1x1 block's dx^T (row = batch pixel, ld = its width).
template <class T>
void scatter_pointwise(const Conv2dParams& p, const T* block, index_t ld, index_t c0, index_t nc, T* dx) {
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

// dcol (cols x P, row stride P) = the P rows of `rows` (row stride ld) transposed, 8 columns
// at a time so each source row's piece is one contiguous read.
template <class T>
void transpose_rows(const T* __restrict rows, index_t ld, index_t P, index_t cols, T* __restrict dcol) {
    for (index_t r0 = 0; r0 < cols; r0 += 8) {
        const index_t r1 = std::min(r0 + 8, cols);
        for (index_t j = 0; j < P; ++j)
            for (index_t r = r0; r < r1; ++r) dcol[r * P + j] = rows[j * ld + r];
    }
}

// Channels [c0, c0 + nc) of every image's dx from a k x k block's dx^T.
template <class T>
void col2im_block(const Conv2dParams& p, const T* block, index_t ld, index_t c0, index_t nc, T* dcol, T* dx) {
    const index_t P = p.out_plane(), cols = nc * p.win.kh * p.win.kw;
    for (index_t n = 0; n < p.n; ++n) {
        T* image = dx + n * p.c * p.in_plane();
        std::fill(image + c0 * p.in_plane(), image + (c0 + nc) * p.in_plane(), T(0));
        transpose_rows(block + n * P * ld, ld, P, cols, dcol);
        col2im_rows(p, dcol, P, c0, nc, 0, p.oh, image);
    }
}

// Channels a block: two blocks a thread, each re-packing dout^T (its sums do not depend on the
// width, so the count may follow the threads), fewer where a block's dx^T and B panels would
// outgrow the thread's share of the workspace budget (a 1x1 block of half the channels a
// thread was half the im2col at two threads). A 1x1 block is whole NR panels; a k x k block
// also keeps its dx^T within kBlockBudgetBytes.
template <class T>
index_t channel_block(const Conv2dParams& p, const MicroKernel<T>& kern, int threads) {
    const index_t per_thread = ceil_div(p.c, 2 * std::max(threads, 1));
    const index_t pixels = p.n * p.out_plane(), khw = p.win.kh * p.win.kw;
    const gemm::GemmPlan g = gemm::plan_gemm(kern, pixels, 1, p.oc);  // its A block and depth
    const index_t share = thread_budget_elems<T>(p, threads);
    const index_t budget_cols = std::max<index_t>((share - g.a_elems) / (pixels + g.kc), 1);
    if (pointwise(p.win))
        return std::min(round_up(per_thread, kern.nr), std::max<index_t>(budget_cols / kern.nr, 1) * kern.nr);
    const index_t row_bytes = pixels * khw * index_t(sizeof(T));
    return std::clamp<index_t>(std::min(kBlockBudgetBytes / row_bytes, budget_cols / khw), 1, per_thread);
}

}  // namespace

void set_data_grad_algorithm(const std::string& name) { g_data_grad_algorithm.set(name); }
std::string data_grad_algorithm_setting() { return g_data_grad_algorithm.name(); }
std::optional<DataGradAlgorithm> forced_data_grad_algorithm() { return g_data_grad_algorithm.forced(); }

template <class T>
bool plan_pixel_rows_dx(const Conv2dParams& p, ConvBackwardPlan<T>& plan) {
    const MicroKernel<T>& kern = *plan.kern;
    const index_t P = p.out_plane(), pixels = p.n * P;
    if (pixels == 0 || p.c == 0) return false;
    const std::optional<DataGradAlgorithm> forced = forced_data_grad_algorithm();
    if (forced && *forced != DataGradAlgorithm::pixel_rows) return false;
    if (!forced && (P > kMaxPlane || pixels > kMaxPixels || p.c < kern.nr ||
                    !(pointwise(p.win) || (P > 1 && weights_outgrow_l2<T>(p)))))
        return false;
    const index_t khw = p.win.kh * p.win.kw, cb = channel_block(p, kern, plan.threads);
    plan.dx_col_block = cb;
    plan.dx_col_items = ceil_div(p.c, cb);
    plan.dx_gemm = gemm::plan_gemm(kern, pixels, cb * khw, p.oc);
    ScratchBooking item;
    item.book(pixels * cb * khw);
    if (!pointwise(p.win)) plan.dcol_elems = item.book(cb * khw * P);
    item.book(plan.dx_gemm.scratch_elems());
    plan.dx_item_elems = item.total();
    return true;
}

template <class T>
void pixel_rows_data_grad(const Conv2dParams& p, const ConvBackwardPlan<T>& plan, const T* dout, const T* w, T* dx) {
    const MicroKernel<T>& kern = *plan.kern;
    const index_t P = p.out_plane(), pixels = p.n * P, khw = p.win.kh * p.win.kw, K = p.c * khw;
    const index_t cb = plan.dx_col_block, ld = cb * khw;
    ThreadScratch<T> scratch(plan.dx_item_elems, plan.threads, "conv2d_backward pixel-rows dx");
    parallel_for_flush(plan.dx_col_items, [&](index_t item) {
        const index_t c0 = item * cb, nc = std::min(cb, p.c - c0);
        Span<T> mine = scratch.mine();
        const Span<T> block = mine.take(pixels * ld, "conv2d_backward pixel-rows dx", "dx^T block");
        const Span<T> dcol = pointwise(p.win) ? Span<T>{} : mine.take(plan.dcol_elems, "conv2d_backward pixel-rows dx", "dcol");
        gemm::gemm_blocked(
            kern, plan.dx_gemm, pixels, nc * khw, p.oc,
            [&](index_t ic, index_t mc, index_t pc, index_t kc, Span<T> dst) {
                pack_dout_pixels(dout, p.oc, P, kern.mr, ic, mc, pc, kc, dst);  // dout^T
            },
            [&](index_t pc, index_t kc, index_t jc, index_t ncol, Span<T> dst) {
                gemm::pack_b_rows(w + c0 * khw, K, nc * khw, kern.nr, pc, kc, jc, ncol, dst);  // W is FN x K
            },
            block, ld, false, static_cast<const T*>(nullptr), mine);
        if (pointwise(p.win))
            scatter_pointwise(p, block.data, ld, c0, nc, dx);
        else
            col2im_block(p, block.data, ld, c0, nc, dcol.data, dx);
    }, 1, plan.threads);
    scratch.verify();
}

template bool plan_pixel_rows_dx<float>(const Conv2dParams&, ConvBackwardPlan<float>&);
template bool plan_pixel_rows_dx<double>(const Conv2dParams&, ConvBackwardPlan<double>&);
template void pixel_rows_data_grad<float>(const Conv2dParams&, const ConvBackwardPlan<float>&, const float*,
                                          const float*, float*);
template void pixel_rows_data_grad<double>(const Conv2dParams&, const ConvBackwardPlan<double>&, const double*,
                                           const double*, double*);

}  // namespace fastconv
