// Convolution forward for a handful of output pixels in all ("pixel dots"): LeNet-5's c5 at
// batch 1 has one. The GEMM would run NR-wide tiles (16-48 columns) with 1-4 of them used and
// pack all of W for it; here each pixel's im2col row is built once and dotted with every
// filter's row of W, read in place.
#include <algorithm>
#include <optional>

#include "conv.hpp"
#include "parallel.hpp"
#include "scratch.hpp"

namespace fastconv {

using gemm::ceil_div;

namespace {

// Pixels per item when the algorithm is forced onto a large shape (their rows are scratch).
constexpr index_t kPixelsPerItem = 64;

// The im2col rows (c, kh, kw order) of output pixels [g0, g0 + npx) of the whole batch.
template <class T>
void im2col_pixels(const Conv2dParams& p, const T* x, index_t g0, index_t npx, T* rows) {
    const Window& w = p.win;
    const index_t P = p.out_plane();
    for (index_t g = g0; g < g0 + npx; ++g) {
        const index_t n = g / P, oh = (g % P) / p.ow, ow = g % p.ow;
        T* row = rows + (g - g0) * p.patch();
        for (index_t c = 0; c < p.c; ++c) {
            const T* plane = x + (n * p.c + c) * p.in_plane();
            for (index_t i = 0; i < w.kh; ++i) {
                const index_t h = oh * w.sh - w.ph + i;
                for (index_t j = 0; j < w.kw; ++j) {
                    const index_t v = ow * w.sw - w.pw + j;
                    *row++ = h >= 0 && h < p.h && v >= 0 && v < p.w ? plane[h * p.w + v] : T(0);
                }
            }
        }
    }
}

// Dot product in a fixed order that still vectorises: 16 running lanes, then a tree.
template <class T>
T lane_dot(const T* __restrict a, const T* __restrict b, index_t n) {
    constexpr int kLanes = 16;
    T lanes[kLanes] = {};
    index_t q = 0;
    for (; q + kLanes <= n; q += kLanes)
        for (int l = 0; l < kLanes; ++l) lanes[l] += a[q + l] * b[q + l];
    T tail = T(0);
    for (; q < n; ++q) tail += a[q] * b[q];
    for (int width = kLanes / 2; width > 0; width /= 2)
        for (int l = 0; l < width; ++l) lanes[l] += lanes[l + width];
    return lanes[0] + tail;
}

}  // namespace

// Auto rule (measured, benchmarks/NOTES.md section 36): at most NR/2 output pixels in the whole
// batch, where the GEMM's tiles would be at least half empty. LeNet-5 c5 f32 (NR = 16): 1 pixel
// 84 -> 12 us, 8 pixels 112 -> 75 us, 16 pixels 136 vs 149 us; a 1x1 layer with K = 64 and 16
// pixels was 15 vs 32 us (short dots pay their lane reduction).
template <class T>
bool plan_pixel_dots(const Conv2dParams& p, ConvForwardPlan<T>& plan) {
    const std::optional<ForwardAlgorithm> forced = forced_forward_algorithm();
    const index_t pixels = p.n * p.out_plane();
    if (forced ? *forced != ForwardAlgorithm::pixel_dots : 2 * pixels > plan.kern->nr) return false;
    plan.algorithm = ForwardAlgorithm::pixel_dots;
    plan.chunk = std::min<index_t>(pixels, kPixelsPerItem);
    const index_t chunks = ceil_div(pixels, plan.chunk);
    // W is read once per chunk: with few chunks, blocks of filters give every thread a share
    // of it (a 512x7x7 -> 512 7x7 layer at batch 1 reads 51 MB of W for one pixel).
    const index_t blocks = std::min<index_t>(p.oc, ceil_div(4 * plan.threads, chunks));
    plan.filter_block = ceil_div(p.oc, plan.threads > 1 ? blocks : 1);
    plan.filter_blocks = ceil_div(p.oc, plan.filter_block);
    plan.items = chunks * plan.filter_blocks;
    plan.thread_elems = plan.chunk * p.patch();
    return true;
}

template <class T>
void pixel_dots_forward(const Conv2dParams& p, const ConvForwardPlan<T>& plan, const T* x, const T* w,
                        const T* bias, T* out) {
    const index_t K = p.patch(), P = p.out_plane(), pixels = p.n * P;
    ThreadScratch<T> scratch(plan.thread_elems, plan.threads, "conv2d_forward pixel dots");
    parallel_for_flush(plan.items, [&](index_t item) {
        const index_t g0 = (item / plan.filter_blocks) * plan.chunk, npx = std::min(plan.chunk, pixels - g0);
        const index_t f0 = (item % plan.filter_blocks) * plan.filter_block;
        const index_t f1 = std::min(p.oc, f0 + plan.filter_block);
        const Span<T> rows = scratch.mine().take(npx * K, "conv2d_forward pixel dots", "im2col rows");
        im2col_pixels(p, x, g0, npx, rows.data);
        for (index_t g = g0; g < g0 + npx; ++g) {
            T* o = out + (g / P) * p.oc * P + g % P;
            const T* row = rows.data + (g - g0) * K;
            for (index_t f = f0; f < f1; ++f) o[f * P] = lane_dot(w + f * K, row, K) + (bias ? bias[f] : T(0));
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
