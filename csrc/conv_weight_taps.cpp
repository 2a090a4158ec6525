// The weight gradient with the im2col read in place (weight_grad_taps.hpp). Per unit (image,
// output rows): one zero-padded copy of the input rows the unit reads, then per block of
// output rows dout^T packed in panels of NR filters, and every tap's row of A is a view of the
// copy. Sums go into a transposed partial dW (patch x filters, filters padded to whole
// panels) per group, added into dW at the end; or, where those partials would outgrow L2, into
// one transposed dW by channel blocks, each over every unit.
#include <algorithm>

#include "conv.hpp"
#include "parallel.hpp"
#include "isa/isa.hpp"
#include "scratch.hpp"

namespace fastconv {

using gemm::ceil_div;
using gemm::round_up;

namespace {

constexpr const char* kWeightGradNames[] = {"gemm", "dots", "taps"};
ForcedSetting<WeightGradAlgorithm, 3> g_weight_grad_algorithm{kWeightGradNames, "set_weight_grad_algorithm"};

index_t input_pitch(const Conv2dParams& p) { return p.w + 2 * p.win.pw; }
index_t input_rows(const Conv2dParams& p, index_t out_rows) { return (out_rows - 1) * p.win.sh + p.win.kh; }

// An unpadded window reads the unit's input rows in place, planes H x W apart: their copy
// was a whole image a thread on ResNet-50's 1x1 layers (1.6 MB of 56 x 56 x 64 in f64).
bool rows_in_place(const Window& w) { return w.ph == 0 && w.pw == 0; }

// The pieces of one thread's scratch, in order: the padded input rows (none in place), the tap
// offsets (index_t, counted in elements of T), the packed B block, a channel block's sums.
template <class T>
struct TapsScratch {
    index_t image, offsets, panels;
    index_t block_rows;  // channel blocks: the block's transposed dW rows, summed before they go to dW
    static TapsScratch of(const Conv2dParams& p, const ConvBackwardPlan<T>& plan) {
        const index_t channels = plan.taps_channel_block > 0 ? plan.taps_channel_block : p.c;
        const index_t taps = channels * p.win.kh * p.win.kw;
        return {rows_in_place(p.win) ? 0 : channels * input_rows(p, plan.rows_per_unit) * input_pitch(p),
                ceil_div(taps * index_t(sizeof(index_t)), index_t(sizeof(T))),
                plan.taps_ld * plan.taps_block_rows * p.ow, plan.taps_channel_block > 0 ? taps * plan.taps_ld : 0};
    }
};

// Copies input rows [ih0, ih0 + R) of channels [c0, c0 + nc) of one image (ih0 may be
// negative) with pw zero columns on each side and zero rows outside the image: R x pitch per
// channel, channels R * pitch apart.
template <class T>
void copy_padded_rows(const Conv2dParams& p, const T* img, index_t c0, index_t nc, index_t ih0, index_t R, T* dst) {
    const index_t pitch = input_pitch(p), pw = p.win.pw;
    for (index_t c = c0; c < c0 + nc; ++c)
        for (index_t r = 0; r < R; ++r, dst += pitch) {
            const index_t ih = ih0 + r;
            if (ih < 0 || ih >= p.h) {
                std::fill(dst, dst + pitch, T(0));
                continue;
            }
            const T* src = img + c * p.in_plane() + ih * p.w;
            std::fill(dst, dst + pw, T(0));
            std::copy(src, src + p.w, dst + pw);
            std::fill(dst + pw + p.w, dst + pitch, T(0));
        }
}

}  // namespace

void set_weight_grad_algorithm(const std::string& name) { g_weight_grad_algorithm.set(name); }
std::string weight_grad_algorithm_setting() { return g_weight_grad_algorithm.name(); }
std::optional<WeightGradAlgorithm> forced_weight_grad_algorithm() { return g_weight_grad_algorithm.forced(); }

// Bytes of one group's transposed partial dW.
template <class T>
index_t taps_partial_bytes(const Conv2dParams& p, const ConvBackwardPlan<T>& plan) {
    return p.patch() * plan.taps_ld * index_t(sizeof(T));
}

// Channels per item when dW is split by channel blocks, or 0 for groups of units. The groups'
// partials cost more than the GEMM's FMAs once they outgrow L2 (8 partials of 2304 x 256 taps
// x filters for ResNet-18's l3 at batch 8: 0.89x with blocks, f64) where the patch holds 8
// blocks; elsewhere they are fewer where 8 outgrow the workspace budget, and blocks only where
// not even two fit (8 partials of 1024 x 256 for ResNet-50's s3_reduce at batch 8 were 1.3x
// its im2col; an AlexNet conv1's 3 channels in blocks ran 0.8x). Each block packs dout^T again
// for its taps, so it holds >= kTapsBlockTaps of them unless that leaves fewer than two blocks
// a thread; the choice itself must not depend on the thread count (the two sum in different
// orders), the block size may.
template <class T>
index_t taps_channel_block(const Conv2dParams& p, const ConvBackwardPlan<T>& plan) {
    const index_t khw = p.win.kh * p.win.kw, threads = plan.threads, part = taps_partial_bytes(p, plan);
    const bool deep = p.patch() >= 8 * kTapsBlockTaps && plan.groups * part > gemm::cache_sizes().l2;
    const index_t fitted = groups_within_budget<T>(p, plan.groups, part, 0);
    const bool overflow = fitted == 1 && (plan.groups > 1 || part > partials_budget_bytes<T>(p));
    if (!deep && !overflow) return 0;
    return std::min(ceil_div(p.c, 2 * threads), std::max(ceil_div(kTapsBlockTaps, khw), ceil_div(p.c, 4 * threads)));
}

template <class T>
void plan_weight_taps(const Conv2dParams& p, ConvBackwardPlan<T>& plan, index_t rows) {
    const PlaneKernels<T>& kernels = isa::plane_kernels<T>();
    plan.use_taps = true;
    plan.taps_ld = round_up(std::max<index_t>(p.oc, 1), kernels.taps_nr);
    plan.taps_channel_block = taps_channel_block<T>(p, plan);
    const index_t channels = plan.taps_channel_block > 0 ? plan.taps_channel_block : p.c;
    const index_t row_elems = std::max<index_t>(channels * input_pitch(p) * p.win.sh, 1);
    const index_t image_rows = std::max<index_t>(kTapsImageBudgetBytes / index_t(sizeof(T)) / row_elems, 1);
    set_weight_grad_units(p, plan, std::min(rows, image_rows));
    if (plan.taps_channel_block == 0)
        plan.groups = groups_within_budget<T>(p, plan.groups, taps_partial_bytes(p, plan), 0);
    const index_t l2_pixels = gemm::cache_sizes().l2 / 2 / (plan.taps_ld * index_t(sizeof(T)));
    const index_t block_pixels = std::min(kTapsBlockPixels, l2_pixels);
    plan.taps_block_rows = std::clamp<index_t>(block_pixels / std::max<index_t>(p.ow, 1), 1, plan.rows_per_unit);
    const TapsScratch<T> s = TapsScratch<T>::of(p, plan);
    ScratchBooking booking;
    booking.book(s.image);
    booking.book(s.offsets);
    booking.book(s.panels);
    booking.book(s.block_rows);
    plan.taps_elems = booking.total();
}

// dW[f][k] = rows[k - k0][f] for taps [k0, k1).
template <class T>
void transpose_rows(const Conv2dParams& p, const ConvBackwardPlan<T>& plan, const T* rows, index_t k0, index_t k1,
                    T* dw) {
    const index_t K = p.patch();
    for (index_t f = 0; f < p.oc; ++f)
        for (index_t k = k0; k < k1; ++k) dw[f * K + k] = rows[(k - k0) * plan.taps_ld + f];
}

template <class T>
void weight_taps_unit(const Conv2dParams& p, const ConvBackwardPlan<T>& plan, const T* img, const T* dout_n,
                      index_t oh0, index_t noh, index_t c0, index_t nc, T* dwt, Span<T> scratch) {
    if (noh > plan.rows_per_unit) throw_misfit("weight_grad_taps", "output rows", noh, plan.rows_per_unit);
    const TapsScratch<T> s = TapsScratch<T>::of(p, plan);
    const Window& w = p.win;
    const index_t R = input_rows(p, noh), pitch = input_pitch(p), khw = w.kh * w.kw, nk = nc * khw;
    const bool in_place = rows_in_place(w);
    const index_t plane = in_place ? p.in_plane() : R * pitch;
    const Span<T> image = scratch.take(s.image, "weight_grad_taps", "padded input rows");
    const Span<T> offset_elems = scratch.take(s.offsets, "weight_grad_taps", "tap offsets");
    const Span<T> panels = scratch.take(s.panels, "weight_grad_taps", "dout panels");
    offset_elems.need(ceil_div(nk * index_t(sizeof(index_t)), index_t(sizeof(T))), "weight_grad_taps", "offsets");
    const T* src = in_place ? img + c0 * p.in_plane() + oh0 * w.sh * p.w : image.data;
    if (!in_place) {
        image.need(nc * R * pitch, "weight_grad_taps", "padded input rows");
        copy_padded_rows(p, img, c0, nc, oh0 * w.sh - w.ph, R, image.data);
    }
    index_t* offset = reinterpret_cast<index_t*>(offset_elems.data);
    for (index_t k = 0; k < nk; ++k) offset[k] = (k / khw) * plane + ((k % khw) / w.kw) * pitch + k % w.kw;
    const PlaneKernels<T>& kernels = isa::plane_kernels<T>();
    const index_t P = p.out_plane(), nr = kernels.taps_nr, n_panels = plan.taps_ld / nr;
    for (index_t r0 = 0; r0 < noh; r0 += plan.taps_block_rows) {
        const index_t rows = std::min(plan.taps_block_rows, noh - r0), npx = rows * p.ow;
        gemm::pack_a_rows(dout_n + (oh0 + r0) * p.ow, P, p.oc, int(nr), 0, plan.taps_ld, 0, npx, panels);
        kernels.weight_grad_taps(nk, offset, src + r0 * w.sh * pitch, rows, p.ow, w.sh * pitch, w.sw,
                                 n_panels, panels.data, dwt, plan.taps_ld);
    }
}

// dW (not db) by channel blocks: each item sums its taps' rows of a transposed dW over every
// unit in order, in its thread's scratch, then writes them into dW's columns, so no partials
// are kept and the blocks may follow the thread count.
template <class T>
void weight_taps_by_channels(const Conv2dParams& p, const ConvBackwardPlan<T>& plan, const T* dout, const T* x,
                             T* dw) {
    const index_t khw = p.win.kh * p.win.kw, ld = plan.taps_ld, cb = plan.taps_channel_block;
    const index_t P = p.out_plane();
    const TapsScratch<T> s = TapsScratch<T>::of(p, plan);
    ThreadScratch<T> scratch(plan.wgrad_thread_elems, plan.threads, "conv2d_backward dW taps");
    parallel_for_flush(ceil_div(p.c, cb), [&](index_t item) {
        const index_t c0 = item * cb, nc = std::min(cb, p.c - c0);
        Span<T> mine = scratch.mine();
        const Span<T> rows = mine.take(s.block_rows, "weight_grad_taps", "block rows");
        rows.need(nc * khw * ld, "weight_grad_taps", "block rows");
        std::fill(rows.data, rows.data + nc * khw * ld, T(0));
        for (index_t u = 0; u < plan.units; ++u) {
            const index_t n = u / plan.units_per_image, oh0 = (u % plan.units_per_image) * plan.rows_per_unit;
            const index_t noh = std::min(plan.rows_per_unit, p.oh - oh0);
            weight_taps_unit(p, plan, x + n * p.c * p.in_plane(), dout + n * p.oc * P, oh0, noh, c0, nc, rows.data,
                             mine);
        }
        transpose_rows(p, plan, rows.data, c0 * khw, (c0 + nc) * khw, dw);
    }, 1, plan.threads);
    scratch.verify();
}

// dW[f][k] = sum over groups g of partials[g][k][f] (each group's transposed partial, taps_ld
// filters apart), in group order. Per block of taps: the groups' rows added into group 0's,
// contiguously, then the block transposed into dW (summing each element across the groups'
// partials in one go strided by megabytes: 11 % of ResNet-18 l3's dW at batch 8 in f64).
template <class T>
void add_transposed_partials(const Conv2dParams& p, const ConvBackwardPlan<T>& plan, T* partials, T* dw) {
    constexpr index_t kRows = 32;
    const index_t K = p.patch(), ld = plan.taps_ld, part = K * ld;
    parallel_for_flush(ceil_div(K, kRows), [&](index_t blk) {
        const index_t k0 = blk * kRows, k1 = std::min(K, k0 + kRows);
        T* sum = partials + k0 * ld;
        for (index_t g = 1; g < plan.groups; ++g) {
            const T* src = partials + g * part + k0 * ld;
            for (index_t e = 0; e < (k1 - k0) * ld; ++e) sum[e] += src[e];
        }
        transpose_rows(p, plan, sum, k0, k1, dw);
    }, 1, plan.threads);
}

template void plan_weight_taps<float>(const Conv2dParams&, ConvBackwardPlan<float>&, index_t);
template void plan_weight_taps<double>(const Conv2dParams&, ConvBackwardPlan<double>&, index_t);
template void weight_taps_unit<float>(const Conv2dParams&, const ConvBackwardPlan<float>&, const float*,
                                      const float*, index_t, index_t, index_t, index_t, float*, Span<float>);
template void weight_taps_unit<double>(const Conv2dParams&, const ConvBackwardPlan<double>&, const double*,
                                       const double*, index_t, index_t, index_t, index_t, double*, Span<double>);
template void weight_taps_by_channels<float>(const Conv2dParams&, const ConvBackwardPlan<float>&, const float*,
                                             const float*, float*);
template void weight_taps_by_channels<double>(const Conv2dParams&, const ConvBackwardPlan<double>&, const double*,
                                              const double*, double*);
template void add_transposed_partials<float>(const Conv2dParams&, const ConvBackwardPlan<float>&, float*, float*);
template void add_transposed_partials<double>(const Conv2dParams&, const ConvBackwardPlan<double>&, double*,
                                              double*);

}  // namespace fastconv
