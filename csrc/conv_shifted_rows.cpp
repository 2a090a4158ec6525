// Stride-1 convolution forward without im2col packing ("shifted rows").
//
// With the input zero-padded into rows of pitch Wp = W + 2 pw, the im2col row of tap (i, j) and
// channel c is the padded plane of c read from offset i*Wp + j: for output pixel q = oh*Wp + ow,
// x_pad[c][oh + i][ow + j] = plane_c[q + i*Wp + j]. So each tap is a GEMM
//     out_block (filters x rows*Wp) += W[:, :, i, j] (filters x C) . shifted planes (C x rows*Wp)
// whose B is a row-major matrix (ld = the channel stride) read in place by the micro-kernel; the
// Wp - OW pad columns of each row are computed and dropped when the block is copied out. The
// implicit-im2col path instead packs kh*kw copies of the image per item.
#include <algorithm>
#include <atomic>
#include <stdexcept>

#include "conv.hpp"
#include "parallel.hpp"

namespace fastconv {

using gemm::ceil_div;
using gemm::MicroKernel;
using gemm::round_up;

namespace {

// Input plus output block of one item, per thread: about half a core's L2.
constexpr index_t kShiftedBudgetBytes = 1024 * 1024;
// The channel stride avoids multiples of 4 KiB: the micro-kernel reads NR elements of up to KC
// channel rows at once, and rows 4 KiB apart share L1 sets.
index_t channel_stride(index_t elems, index_t elem_bytes) {
    index_t ld = round_up(elems, 16);
    while ((ld * elem_bytes) % 4096 < 256 || (ld * elem_bytes) % 4096 > 4096 - 256) ld += 16;
    return ld;
}

// Weights of tap t as the A operand: element (f, c) at w[f*K + c*khw + t].
template <class T>
void pack_a_tap(const T* w, index_t K, index_t khw, index_t t, index_t M, int mr, index_t ic, index_t mc,
                index_t pc, index_t kc, Span<T> out) {
    out.need(gemm::panel_elems(mc, mr, kc), "pack_a_tap", "A panels");
    T* dst = out.data;
    for (index_t r0 = 0; r0 < mc; r0 += mr, dst += kc * mr) {
        const index_t rows = std::min<index_t>(mr, M - (ic + r0));
        for (index_t p = 0; p < kc; ++p)
            for (index_t i = 0; i < mr; ++i)
                dst[p * mr + i] = i < rows ? w[(ic + r0 + i) * K + (pc + p) * khw + t] : T(0);
    }
}

// Rows [oh0 - ph, oh0 + noh + kh - 1 - ph) of every channel, zero-padded, into buf.
template <class T>
void load_padded_rows(const Conv2dParams& p, const ConvForwardPlan<T>& plan, const T* img, index_t oh0,
                      index_t noh, Span<T> buf) {
    const Window& w = p.win;
    const index_t R = noh + w.kh - 1, Wp = plan.pitch;
    buf.need(p.c * plan.channel_ld, "shifted_rows_forward", "padded rows");
    for (index_t c = 0; c < p.c; ++c) {
        T* plane = buf.data + c * plan.channel_ld;
        for (index_t r = 0; r < R; ++r) {
            T* dst = plane + r * Wp;
            const index_t ih = oh0 + r - w.ph;
            if (ih < 0 || ih >= p.h) {
                std::fill(dst, dst + Wp, T(0));
                continue;
            }
            const T* src = img + c * p.in_plane() + ih * p.w;
            std::fill(dst, dst + w.pw, T(0));
            std::copy(src, src + p.w, dst + w.pw);
            std::fill(dst + w.pw + p.w, dst + Wp, T(0));
        }
        std::fill(plane + R * Wp, plane + plan.channel_ld, T(0));  // the last taps read past row R
    }
}

// Forced by tests: -1 auto, else a ForwardAlgorithm.
std::atomic<int> g_forward_algorithm{-1};
constexpr const char* kAlgorithmNames[] = {"implicit_gemm", "shifted_rows", "pixel_dots"};

}  // namespace

void set_forward_algorithm(const std::string& name) {
    if (name == "auto") {
        g_forward_algorithm = -1;
        return;
    }
    for (int i = 0; i < 3; ++i) {
        if (name == kAlgorithmNames[i]) {
            g_forward_algorithm = i;
            return;
        }
    }
    throw std::invalid_argument("set_forward_algorithm: '" + name +
                                "' is not auto, implicit_gemm, shifted_rows or pixel_dots");
}

std::string forward_algorithm_setting() {
    const int forced = g_forward_algorithm.load();
    return forced < 0 ? "auto" : kAlgorithmNames[forced];
}

std::optional<ForwardAlgorithm> forced_forward_algorithm() {
    const int forced = g_forward_algorithm.load();
    if (forced < 0) return std::nullopt;
    return static_cast<ForwardAlgorithm>(forced);
}

// Auto rule (measured, benchmarks/NOTES.md section 34): few channels per tap (C <= 32, where
// packing kh*kw image copies costs the implicit path most; 1.5-2.2x faster there) or a 1x1
// kernel without padding (1.5x); dropped pad columns at most 25 % of the output width; items of
// at least 4 NR pixels and one per thread. Many channels (C = 64 on 8x8, C = 128-256 on 28-56
// planes) ran 0.7-0.8x: B rows a channel plane apart, read in place, miss the TLB.
template <class T>
bool plan_shifted_rows(const Conv2dParams& p, ConvForwardPlan<T>& plan) {
    const Window& w = p.win;
    const std::optional<ForwardAlgorithm> forced = forced_forward_algorithm();
    if (w.sh != 1 || w.sw != 1 || (forced && *forced != ForwardAlgorithm::shifted_rows)) return false;
    const MicroKernel<T>& kern = *plan.kern;
    const index_t Wp = p.w + 2 * w.pw, bytes = sizeof(T);
    // Output rows per item: the largest count whose buffers fit the budget, at least one, then
    // fewer while the batch gives too few items to keep every thread busy and items stay wide.
    const auto item_bytes = [&](index_t rows) {
        return (p.c * ((rows + w.kh - 1) * Wp + w.kw) + p.oc * rows * Wp) * bytes;
    };
    index_t rows = p.oh;
    while (rows > 1 && item_bytes(rows) > kShiftedBudgetBytes) rows = ceil_div(rows, 2);
    while (rows > 1 && p.n * ceil_div(p.oh, rows) < 4 * plan.threads && ceil_div(rows, 2) * Wp >= 4 * kern.nr)
        rows = ceil_div(rows, 2);
    const bool pointwise = w.kh == 1 && w.kw == 1 && w.ph == 0 && w.pw == 0;
    const bool cheap_taps = p.c <= 32 && p.c >= 8 && 4 * Wp <= 5 * p.ow;
    const bool wide = rows * Wp >= 4 * kern.nr && p.n * ceil_div(p.oh, rows) >= plan.threads;
    if (!forced && !((pointwise || cheap_taps) && wide)) return false;
    plan.algorithm = ForwardAlgorithm::shifted_rows;
    plan.rows = rows;
    plan.row_items = ceil_div(p.oh, rows);
    plan.items = p.n * plan.row_items;
    plan.pitch = Wp;
    plan.channel_ld = channel_stride((rows + w.kh - 1) * Wp + w.kw, bytes);
    ScratchBooking booking;
    plan.image_elems = booking.book(p.c * plan.channel_ld);
    plan.c_block_elems = booking.book(p.oc * rows * Wp);
    plan.gemm = gemm::plan_gemm(kern, p.oc, rows * Wp, p.c);
    booking.book(plan.gemm.scratch_elems());
    plan.thread_elems = booking.total();
    plan.chunk = rows * Wp;
    return true;
}

template <class T>
void shifted_rows_forward(const Conv2dParams& p, const ConvForwardPlan<T>& plan, const T* x, const T* w,
                          const T* bias, T* out) {
    const MicroKernel<T>& kern = *plan.kern;
    const index_t M = p.oc, K = p.patch(), khw = p.win.kh * p.win.kw, Wp = plan.pitch;
    ThreadScratch<T> scratch(plan.thread_elems, plan.threads, "shifted_rows_forward");
    parallel_for_flush(plan.items, [&](index_t item) {
        const index_t n = item / plan.row_items, oh0 = (item % plan.row_items) * plan.rows;
        const index_t noh = std::min(plan.rows, p.oh - oh0), npx = noh * Wp;
        Span<T> mine = scratch.mine();
        const Span<T> buf = mine.take(plan.image_elems, "shifted_rows_forward", "padded rows");
        const Span<T> block = mine.take(plan.c_block_elems, "shifted_rows_forward", "output block");
        load_padded_rows(p, plan, x + n * p.c * p.in_plane(), oh0, noh, buf);
        for (index_t t = 0; t < khw; ++t) {
            const T* shifted = buf.data + (t / p.win.kw) * Wp + t % p.win.kw;
            gemm::gemm_blocked(
                kern, plan.gemm, M, npx, p.c,
                [&](index_t ic, index_t mc, index_t pc, index_t kc, Span<T> dst) {
                    pack_a_tap(w, K, khw, t, M, kern.mr, ic, mc, pc, kc, dst);
                },
                [&](index_t pc, index_t kc, index_t jc, index_t nc, Span<T> dst) {
                    gemm::pack_b_rows(shifted, plan.channel_ld, npx, kern.nr, pc, kc, jc, nc, dst);
                },
                block, npx, t > 0, t + 1 == khw ? bias : nullptr, mine, gemm::BRows<T>{shifted, plan.channel_ld});
        }
        for (index_t f = 0; f < M; ++f)
            for (index_t r = 0; r < noh; ++r) {
                const T* src = block.data + f * npx + r * Wp;
                std::copy(src, src + p.ow, out + ((n * M + f) * p.oh + oh0 + r) * p.ow);
            }
    }, 1, plan.threads);
    scratch.verify();
}

template bool plan_shifted_rows<float>(const Conv2dParams&, ConvForwardPlan<float>&);
template bool plan_shifted_rows<double>(const Conv2dParams&, ConvForwardPlan<double>&);
template void shifted_rows_forward<float>(const Conv2dParams&, const ConvForwardPlan<float>&, const float*,
                                          const float*, const float*, float*);
template void shifted_rows_forward<double>(const Conv2dParams&, const ConvForwardPlan<double>&, const double*,
                                           const double*, const double*, double*);

}  // namespace fastconv
