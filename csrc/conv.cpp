#include "conv.hpp"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <optional>
#include <vector>

#include "gemm/driver.hpp"
#include "parallel.hpp"
#include "isa/isa.hpp"

namespace fastconv {

using gemm::AlignedBuffer;
using gemm::ceil_div;
using gemm::MicroKernel;
using gemm::panel_elems;
using gemm::round_up;

namespace {

// Per-call tables the image packers share, so their inner loops do no division:
// the valid output columns of each tap column j, and each tap's (c, i, j).
struct TapTables {
    std::vector<Range> cols;  // [j]: output columns whose input column is inside the image
    explicit TapTables(const Conv2dParams& p) : cols(static_cast<std::size_t>(p.win.kw)) {
        for (index_t j = 0; j < p.win.kw; ++j) cols[j] = valid_outputs(p.ow, p.win.sw, p.win.pw, j, p.w);
    }
};

// dst[q] = src[2 q] for q < n: the stride-2 rows of the forward pack (a ResNet stem). For
// float, the even elements of pairs of 16-byte loads, one shuffle per 4 (resnet-stem f32
// forward -15 %); double gains nothing at this width. Reads never pass src[2 n - 2].
template <class T>
inline void copy_stride2(T* __restrict dst, const T* __restrict src, index_t n) {
    index_t q = 0;
#if defined(__GNUC__)
    if constexpr (sizeof(T) == 4) {
        typedef T V __attribute__((vector_size(16)));
        for (; q + 4 < n; q += 4) {
            V a, b;
            std::memcpy(&a, src + 2 * q, sizeof(V));
            std::memcpy(&b, src + 2 * q + 4, sizeof(V));
#if defined(__clang__)
            const V even = __builtin_shufflevector(a, b, 0, 2, 4, 6);
#else
            typedef std::int32_t M __attribute__((vector_size(16)));
            const V even = __builtin_shuffle(a, b, M{0, 2, 4, 6});
#endif
            std::memcpy(dst + q, &even, sizeof(V));
        }
    }
#endif
    for (; q < n; ++q) dst[q] = src[2 * q];
}

// One output row's share of a B panel: panel columns [jj, jj+len) are pixels (oh, ow0 + q).
struct PixelRun {
    const void* image;  // the run's image (a run never crosses an output row, so never an image)
    index_t jj, len, oh, ow0;
};

// pack_b_image for a 1x1 window at stride 1 without padding: B is each image's channel planes
// as they are, so a panel's columns split into one run per image, not one per output row (a
// 7x7 plane's 48-wide panels ran ~7 runs of 7 pixels each; NOTES section 46).
template <class T>
void pack_b_pointwise(const Conv2dParams& p, const T* __restrict x, int nr, index_t pc, index_t kc, index_t px0,
                      index_t npx, T* __restrict dst) {
    const index_t P = p.out_plane(), image_size = p.c * P;
    for (index_t q0 = 0; q0 < npx; q0 += nr, dst += kc * nr) {
        const index_t cols = std::min<index_t>(nr, npx - q0);
        for (index_t jj = 0; jj < cols;) {
            const index_t g = px0 + q0 + jj, pix = g % P, len = std::min<index_t>(cols - jj, P - pix);
            const T* __restrict src = x + (g / P) * image_size + pc * P + pix;
            for (index_t kk = 0; kk < kc; ++kk)
                for (index_t q = 0; q < len; ++q) dst[kk * nr + jj + q] = src[kk * P + q];
            jj += len;
        }
        for (index_t kk = 0; kk < kc; ++kk)
            for (index_t jj = cols; jj < nr; ++jj) dst[kk * nr + jj] = T(0);
    }
}

// B panels of the forward GEMM straight from one image: rows k = (c, i, j) in [pc, pc+kc),
// columns = output pixels [px0, px0+npx). A panel's pixels split into runs on one output row
// each (computed once per panel); every row of the panel then copies its runs with the
// bounds hoisted -- at stride 1 an inline, vectorised copy.
template <class T>
void pack_b_image(const Conv2dParams& p, const TapTables& taps, const T* __restrict x, int nr, index_t pc,
                  index_t kc, index_t px0, index_t npx, Span<T> panels) {
    panels.need(panel_elems(npx, nr, kc), "pack_b_image", "B panels");
    T* __restrict dst = panels.data;
    const Window& w = p.win;
    if (w.kh == 1 && w.kw == 1 && w.sh == 1 && w.sw == 1 && w.ph == 0 && w.pw == 0)
        return pack_b_pointwise(p, x, nr, pc, kc, px0, npx, dst);
    // Columns are pixels of the whole batch (column g is pixel g % P of image g / P), so one
    // panel may hold the end of one image and the start of the next.
    const index_t P = p.out_plane(), image_size = p.c * p.in_plane();
    const index_t khw = w.kh * w.kw;
    PixelRun runs[gemm::kMaxNr];
    for (index_t q0 = 0; q0 < npx; q0 += nr, dst += kc * nr) {
        const index_t cols = std::min<index_t>(nr, npx - q0);
        int n_runs = 0;
        for (index_t jj = 0; jj < cols;) {
            const index_t g = px0 + q0 + jj, pix = g % P;
            const index_t oh = pix / p.ow, ow0 = pix % p.ow;
            const index_t len = std::min<index_t>(cols - jj, p.ow - ow0);
            runs[n_runs++] = {x + (g / P) * image_size, jj, len, oh, ow0};
            jj += len;
        }
        index_t c = pc / khw, i = (pc % khw) / w.kw, j = pc % w.kw;
        for (index_t kk = 0; kk < kc; ++kk) {
            T* __restrict d = dst + kk * nr;
            const Range valid = taps.cols[j];
            for (int r = 0; r < n_runs; ++r) {
                const PixelRun& run = runs[r];
                const T* __restrict plane = static_cast<const T*>(run.image) + c * p.in_plane();
                T* __restrict out = d + run.jj;  // out[ow - ow0] for ow in [ow0, ow0 + len)
                const index_t ih = run.oh * w.sh - w.ph + i;
                if (ih < 0 || ih >= p.h) {
                    for (index_t q = 0; q < run.len; ++q) out[q] = T(0);
                    continue;
                }
                const index_t end = run.ow0 + run.len;
                const index_t lo = std::clamp(valid.lo, run.ow0, end), hi = std::clamp(valid.hi, lo, end);
                const T* __restrict src = plane + (ih * p.w - w.pw + j);  // + ow * sw
                for (index_t ow = run.ow0; ow < lo; ++ow) out[ow - run.ow0] = T(0);
                if (w.sw == 1) {
                    for (index_t ow = lo; ow < hi; ++ow) out[ow - run.ow0] = src[ow];
                } else if (w.sw == 2) {
                    copy_stride2(out + (lo - run.ow0), src + 2 * lo, hi - lo);
                } else {
                    for (index_t ow = lo; ow < hi; ++ow) out[ow - run.ow0] = src[ow * w.sw];
                }
                for (index_t ow = hi; ow < end; ++ow) out[ow - run.ow0] = T(0);
            }
            for (index_t jj = cols; jj < nr; ++jj) d[jj] = T(0);
            if (++j == w.kw) {
                j = 0;
                if (++i == w.kh) {
                    i = 0;
                    ++c;
                }
            }
        }
    }
}

// The panel of channels [c0, c0 + cols) of an unstrided unpadded 1x1 layer: its im2col^T rows
// are the planes' pixels, so each run of pixels inside one image transposes a block of planes.
template <class T>
void pack_b_planes_t(const Conv2dParams& p, const T* img, int nr, index_t first, index_t kc, index_t c0, int cols,
                     T* dst) {
    const index_t P = p.in_plane();
    for (index_t pp = 0, g = first; pp < kc;) {
        const index_t run = std::min(kc - pp, P - g % P);
        gemm::transpose_panel(img + (g / P * p.c + c0) * P + g % P, P, cols, nr, run, dst + pp * nr);
        pp += run;
        g += run;
    }
}

// B panels of the weight-gradient GEMM: the transposed im2col matrix of image `img` and those
// after it, depth = output pixels [px0 + pc, +kc) counted on across images, columns
// k = (c, i, j) in [k0, k0+nk). Pixel-major so each panel row is written contiguously; taps
// are gathered through precomputed offsets, and only windows that cross the border pay a
// bounds check; an unstrided unpadded 1x1 transposes blocks of planes instead.
template <class T>
void pack_b_image_t(const Conv2dParams& p, const T* __restrict img, int nr, index_t px0, index_t pc, index_t kc,
                    index_t k0, index_t nk, Span<T> panels) {
    panels.need(panel_elems(nk, nr, kc), "pack_b_image_t", "B panels");
    T* __restrict dst = panels.data;
    const Window& w = p.win;
    const index_t khw = w.kh * w.kw;
    const bool planes = khw == 1 && w.sh == 1 && w.sw == 1 && w.ph == 0 && w.pw == 0;
    index_t offset[gemm::kMaxNr], tap_h[gemm::kMaxNr], tap_w[gemm::kMaxNr];
    for (index_t q0 = 0; q0 < nk; q0 += nr, dst += kc * nr) {
        const int cols = static_cast<int>(std::min<index_t>(nr, nk - q0));
        if (planes) {  // 0.9 M instructions where the gather took 4.5 M (s3_expand@b8 dW, NOTES 51)
            pack_b_planes_t(p, img, nr, px0 + pc, kc, k0 + q0, cols, dst);
            continue;
        }
        for (int jj = 0; jj < cols; ++jj) {
            const index_t k = k0 + q0 + jj;
            const index_t c = k / khw, i = (k % khw) / w.kw, j = k % w.kw;
            tap_h[jj] = i - w.ph;
            tap_w[jj] = j - w.pw;
            offset[jj] = c * p.in_plane() + tap_h[jj] * p.w + tap_w[jj];
        }
        const index_t first = px0 + pc;
        const T* __restrict image = img + first / p.out_plane() * p.c * p.in_plane();
        index_t oh = first % p.out_plane() / p.ow, ow = first % p.ow;
        for (index_t pp = 0; pp < kc; ++pp) {
            T* d = dst + pp * nr;
            const index_t ih0 = oh * w.sh, iw0 = ow * w.sw;  // window origin, padding not yet removed
            const bool interior = ih0 >= w.ph && ih0 - w.ph + w.kh <= p.h && iw0 >= w.pw && iw0 - w.pw + w.kw <= p.w;
            if (interior) {
                const T* base = image + ih0 * p.w + iw0;
                for (int jj = 0; jj < cols; ++jj) d[jj] = base[offset[jj]];
            } else {
                for (int jj = 0; jj < cols; ++jj) {
                    const index_t ih = ih0 + tap_h[jj], iw = iw0 + tap_w[jj];
                    d[jj] = (ih >= 0 && ih < p.h && iw >= 0 && iw < p.w) ? image[offset[jj] + ih0 * p.w + iw0] : T(0);
                }
            }
            for (int jj = cols; jj < nr; ++jj) d[jj] = T(0);
            if (++ow == p.ow) {
                ow = 0;
                if (++oh == p.oh) {
                    oh = 0;
                    image += p.c * p.in_plane();
                }
            }
        }
    }
}

#if defined(__GNUC__)
#define FASTCONV_NOINLINE __attribute__((noinline))
#elif defined(_MSC_VER)
#define FASTCONV_NOINLINE __declspec(noinline)
#else
#define FASTCONV_NOINLINE
#endif

}  // namespace

// Kept out of line: inlined into data_grad_item, GCC 12 made its sums 5 % longer in
// instructions (AlexNet conv1 batch 8 backward +8 % wall; NOTES section 32).
template <class T>
FASTCONV_NOINLINE void col2im_rows(const Conv2dParams& p, const T* __restrict dcol, index_t ld, index_t c0, index_t nc,
                                   index_t oh0, index_t noh, T* __restrict dx) {
    const Window& w = p.win;
    for (index_t c = c0; c < c0 + nc; ++c) {
        T* plane = dx + c * p.in_plane();
        for (index_t i = 0; i < w.kh; ++i) {
            const Range rows = valid_outputs(p.oh, w.sh, w.ph, i, p.h);
            const index_t r_lo = std::max(rows.lo, oh0), r_hi = std::min(rows.hi, oh0 + noh);
            for (index_t j = 0; j < w.kw; ++j) {
                const Range cols = valid_outputs(p.ow, w.sw, w.pw, j, p.w);
                const T* src = dcol + (((c - c0) * w.kh + i) * w.kw + j) * ld;
                for (index_t oh = r_lo; oh < r_hi; ++oh) {
                    const index_t dst = (oh * w.sh - w.ph + i) * p.w - w.pw + j;
                    const T* s = src + (oh - oh0) * p.ow;
                    if (w.sw == 1) {
                        for (index_t ow = cols.lo; ow < cols.hi; ++ow) plane[dst + ow] += s[ow];
                    } else {
                        for (index_t ow = cols.lo; ow < cols.hi; ++ow) plane[dst + ow * w.sw] += s[ow];
                    }
                }
            }
        }
    }
}

template void col2im_rows<float>(const Conv2dParams&, const float*, index_t, index_t, index_t, index_t, index_t,
                                 float*);
template void col2im_rows<double>(const Conv2dParams&, const double*, index_t, index_t, index_t, index_t, index_t,
                                  double*);

namespace {

// Sum of n values in a fixed order that still vectorises: 16 running lanes, then a tree.
template <class T>
T lane_sum(const T* __restrict v, index_t n) {
    constexpr int kLanes = 16;
    T lanes[kLanes] = {};
    index_t q = 0;
    for (; q + kLanes <= n; q += kLanes)
        for (int l = 0; l < kLanes; ++l) lanes[l] += v[q + l];
    T tail = T(0);
    for (; q < n; ++q) tail += v[q];
    for (int width = kLanes / 2; width > 0; width /= 2)
        for (int l = 0; l < width; ++l) lanes[l] += lanes[l + width];
    return lanes[0] + tail;
}

// Splits `total` columns into chunks (multiples of `align`, at most `max_chunk`), enough of
// them that `outer * chunks` items keep every thread busy.
inline index_t chunk_size(index_t total, index_t outer, index_t align, index_t max_chunk, int threads) {
    if (total <= 0) return 1;
    index_t chunks = ceil_div(total, max_chunk);
    const index_t want = 4 * threads;
    if (outer * chunks < want) chunks = std::max(chunks, std::min(ceil_div(want, std::max<index_t>(outer, 1)),
                                                                  ceil_div(total, align)));
    return round_up(ceil_div(total, chunks), align);
}

// Bytes of dcol scratch one dx item may use: fits in a core's L2 together with the packs.
constexpr index_t kDcolBudgetBytes = 512 * 1024;
// dx items per thread below which overlapping windows split their rows into waves of chunks.
constexpr index_t kRowWaveItems = 4;
constexpr double kRowWaveMinFlop = 8e6;

// Bytes of the zero-padded dout copy one dot-product unit may use.
constexpr index_t kDotsBudgetBytes = 256 * 1024;

// The operands of weight_grad_dots for output rows [oh0, oh0+noh) of one image, in scratch.
template <class T>
class DotsOperands {
   public:
    // Row pitch of the padded image; at stride 1, OW = Wp - kw + 1.
    static index_t pitch(const Conv2dParams& p) { return p.w + 2 * p.win.pw; }
    static index_t dout_ld(const Conv2dParams& p, index_t rows) { return round_up(rows * pitch(p), 16) + kDotsPad; }
    static index_t image_elems(const Conv2dParams& p, index_t rows) {
        return p.c * (rows + p.win.kh - 1) * pitch(p) + p.win.kw + kDotsPad;
    }
    static index_t elems(const Conv2dParams& p, index_t rows) {
        const index_t offset_elems = ceil_div(p.patch() * index_t(sizeof(index_t)), index_t(sizeof(T)));
        return round_up(p.oc * dout_ld(p, rows), 64) + round_up(image_elems(p, rows), 64) + offset_elems;
    }

    DotsOperands(const Conv2dParams& p, index_t max_rows, Span<T> scratch)
        : p_(p), max_rows_(max_rows), Wp_(pitch(p)), ldd_(dout_ld(p, max_rows)), dout_(scratch.data),
          image_(scratch.data + round_up(p.oc * ldd_, 64)),
          offset_(reinterpret_cast<index_t*>(image_ + round_up(image_elems(p, max_rows), 64))) {
        scratch.need(elems(p, max_rows), "weight_grad_dots", "padded operands");
    }

    // Copies the padded input rows the unit reads; false when one of them is not finite: a
    // zero in an added dout column times inf would turn a sum NaN that the true one is not.
    bool load(const T* img, const T* dout_n, index_t oh0, index_t noh) {
        if (noh > max_rows_) throw_misfit("weight_grad_dots", "output rows", noh, max_rows_);
        const Window& w = p_.win;
        const index_t R = noh + w.kh - 1;
        T probe = T(0);
        for (index_t c = 0; c < p_.c; ++c)
            for (index_t r = 0; r < R; ++r) {
                T* dst = image_ + (c * R + r) * Wp_;
                const index_t ih = oh0 + r - w.ph;
                if (ih < 0 || ih >= p_.h) {
                    std::fill(dst, dst + Wp_, T(0));
                    continue;
                }
                const T* src = img + c * p_.in_plane() + ih * p_.w;
                std::fill(dst, dst + w.pw, T(0));
                for (index_t col = 0; col < p_.w; ++col) {
                    dst[w.pw + col] = src[col];
                    probe += src[col] - src[col];  // NaN for inf and NaN
                }
                std::fill(dst + w.pw + p_.w, dst + Wp_, T(0));
            }
        if (probe != T(0)) return false;
        std::fill(image_ + p_.c * R * Wp_, image_ + p_.c * R * Wp_ + w.kw + kDotsPad, T(0));
        const index_t khw = w.kh * w.kw;
        for (index_t k = 0; k < p_.patch(); ++k)
            offset_[k] = (k / khw) * R * Wp_ + ((k % khw) / w.kw) * Wp_ + k % w.kw;
        len_ = noh * Wp_;
        const index_t P = p_.out_plane();
        for (index_t f = 0; f < p_.oc; ++f) {
            T* row = dout_ + f * ldd_;
            for (index_t r = 0; r < noh; ++r) {
                const T* src = dout_n + f * P + (oh0 + r) * p_.ow;
                std::copy(src, src + p_.ow, row + r * Wp_);
                std::fill(row + r * Wp_ + p_.ow, row + (r + 1) * Wp_, T(0));
            }
            std::fill(row + len_, row + ldd_, T(0));
        }
        return true;
    }

    template <class Dots>
    void accumulate(Dots dots, T* dw) const {
        dots(p_.oc, p_.patch(), dout_, ldd_, image_, offset_, len_, dw, p_.patch());
    }

   private:
    const Conv2dParams& p_;
    index_t max_rows_, Wp_, ldd_, len_ = 0;
    T* dout_;
    T* image_;
    index_t* offset_;
};

}  // namespace

// --- forward ---------------------------------------------------------------------

// The time of packing one element, in FLOP of the same core's GEMM, per NR of vector width:
// 5-7 NR on Zen 3 (packing a 2048 x 512 W four times instead of once cost ~3.5 ms of 13).
constexpr double kPackFlopsPerNr = 5.0;

struct ChunkBlocks {
    index_t chunk, filter_block;
};

// Columns of B one thread's GEMM scratch holds beside an A block of `rows` rows (depth K)
// within `budget` elements: a multiple of NR, at least one panel.
template <class T>
index_t budget_columns(const MicroKernel<T>& kern, index_t rows, index_t K, index_t budget) {
    const gemm::GemmPlan g = gemm::plan_gemm(kern, rows, 1, K);
    return std::max<index_t>((budget - g.a_elems) / g.kc / kern.nr, 1) * kern.nr;
}

// Items of one GEMM (M rows, depth K, `total` columns) as column chunks x row blocks: the
// forward's batch chunks (pixels x filters) and dW's blocks (taps x filters). Each item packs
// its rows of A (mb x K) and its chunk's B panels (K x chunk), so more chunks re-pack A and
// more row blocks re-pack B; the estimate of the slowest thread (rounds of items, each its
// tiles' FLOP plus its packs) picks both. A fixed 4 items per thread had packed a batch-1
// 512-filter, 49-pixel layer's 1.2 M weights four times at one thread (0.46x NumPy). Chunks
// keep a thread's packs within `budget` elements (the workspace budget's share).
template <class T>
ChunkBlocks gemm_item_blocks(const MicroKernel<T>& kern, index_t M, index_t K, index_t total, int threads,
                             index_t budget) {
    const double pack = kPackFlopsPerNr * kern.nr;
    const index_t spread = 8 * std::max(threads, 1);
    // A block of at most MC filters reads each packed B panel once: such chunks keep their B
    // block in half of L2 (AlexNet conv1 at batch 1, 96 filters: 3025-pixel chunks ran 14 %
    // slower than 768). More filters re-read it per MC block, from L3, as BLIS does.
    const index_t kc = gemm::plan_gemm(kern, 1, 1, K).kc;
    const index_t l2_cols = std::max<index_t>(gemm::cache_sizes().l2 / 2 / (kc * index_t(sizeof(T))), kern.nr);
    ChunkBlocks best{total, M};
    double best_cost = -1.0;
    for (index_t fb = 1; fb <= std::min(spread, ceil_div(M, kern.mr)); ++fb) {
        const index_t mb = round_up(ceil_div(M, fb), kern.mr);
        const index_t max_chunk = std::min(mb <= kern.mc ? std::min(l2_cols, kern.nc) : kern.nc,
                                           budget_columns(kern, mb, K, budget));
        const index_t min_chunks = ceil_div(total, max_chunk);
        for (index_t cb = min_chunks; cb <= std::min(min_chunks + spread, ceil_div(total, kern.nr)); ++cb) {
            const index_t tiled = round_up(ceil_div(total, cb), kern.nr), chunk = std::min(tiled, total);
            const index_t items = ceil_div(M, mb) * ceil_div(total, chunk);
            const double item = 2.0 * double(mb) * double(tiled) * double(K) + pack * double(K) * double(mb + tiled);
            const double cost = double(ceil_div(items, threads)) * item;
            if (best_cost < 0 || cost < best_cost * 0.999) {
                best_cost = cost;
                best = {chunk, mb};
            }
        }
    }
    return best;
}

// Float64 layers with deep patches (K >= 2304: 256 or more channels of 3x3) over >= 196 of the
// batch's pixels ran 1.05-1.2x faster on the implicit path than on the shifted rows, at 1 and
// 2 threads (its B packed and aligned, where two of every three taps start a gathered row
// mid-line); float32 ones, shallower patches and 7x7 planes at batch 1-2 did not (NOTES 51).
template <class T>
bool deep_float64_patch(const Conv2dParams& p) {
    const Window& w = p.win;
    return sizeof(T) == 8 && w.sh == 1 && w.sw == 1 && w.kh * w.kw > 1 && p.patch() >= 2304 &&
           p.n * p.out_plane() >= 196;
}

template <class T>
ConvForwardPlan<T> plan_conv_forward(const Conv2dParams& p, int threads) {
    ConvForwardPlan<T> plan;
    const MicroKernel<T>& kern = isa::gemm_kernel<T>();
    plan.kern = &kern;
    const index_t M = p.oc, K = p.patch(), P = p.out_plane();
    plan.threads = threads_for_flop(2.0 * double(p.n * P) * double(M * K), std::max(threads, 1));
    if (p.n == 0 || M == 0 || P == 0) return plan;
    if (plan_pixel_dots<T>(p, plan)) return plan;
    ConvForwardPlan<T> shifted = plan;
    if (plan_shifted_rows<T>(p, shifted)) {
        if (forced_forward_algorithm() || !deep_float64_patch<T>(p)) return shifted;
        plan.shifted_rows_declined = true;
    }
    ScratchBooking booking;
    if (P % kern.nr == 0 || P >= kern.nc) {
        plan.layout = ForwardLayout::image_tiles;
        const index_t share = thread_budget_elems<T>(p, plan.threads);
        const index_t max_chunk = std::min(kern.nc, budget_columns(kern, M, K, share));
        plan.chunk = chunk_size(P, p.n, kern.nr, max_chunk, plan.threads);
        plan.per_image = ceil_div(P, plan.chunk);
        plan.items = p.n * plan.per_image;
    } else {
        // Small images whose pixel count is not a multiple of NR (mnist-cnn-l2: 196 = 4 x 48 + 4)
        // would leave a mostly empty last tile per image: chunks of the whole batch's pixels
        // keep the tiles full, their tiles written into each image (ImageColumnsC).
        plan.layout = ForwardLayout::batch_chunks;
        const ChunkBlocks blocks =
            gemm_item_blocks(kern, M, K, p.n * P, plan.threads, thread_budget_elems<T>(p, plan.threads));
        plan.chunk = blocks.chunk;
        plan.filter_block = blocks.filter_block;
        plan.items = ceil_div(p.n * P, plan.chunk);
    }
    if (plan.filter_block == 0 || plan.filter_block > M) plan.filter_block = M;
    plan.filter_blocks = ceil_div(M, plan.filter_block);
    if (plan.layout == ForwardLayout::batch_chunks) plan.items *= plan.filter_blocks;
    plan.gemm = gemm::plan_gemm(kern, plan.filter_block, plan.chunk, K);
    booking.book(plan.gemm.scratch_elems());
    plan.thread_elems = booking.total();
    return plan;
}

template <class T>
void conv2d_forward(const Conv2dParams& p, const T* x, const T* w, const T* bias, T* out) {
    const ConvForwardPlan<T> plan = plan_conv_forward<T>(p, num_threads());
    if (plan.items == 0) return;
    if (plan.algorithm == ForwardAlgorithm::shifted_rows) return shifted_rows_forward(p, plan, x, w, bias, out);
    if (plan.algorithm == ForwardAlgorithm::pixel_dots) return pixel_dots_forward(p, plan, x, w, bias, out);
    const MicroKernel<T>& kern = *plan.kern;
    const index_t M = p.oc, K = p.patch(), P = p.out_plane();
    const Span<T> output{out, p.n * M * P};
    const TapTables taps(p);
    // Filters [m0, m0 + mb) of pixels [g0, g0 + npx) of the whole batch into c.
    auto run_gemm = [&](index_t m0, index_t mb, index_t g0, index_t npx, const auto& target, Span<T> scratch) {
        gemm::gemm_blocked_into(
            kern, plan.gemm, mb, npx, K,
            [&](index_t ic, index_t mc, index_t pc, index_t kc, Span<T> dst) {
                gemm::pack_a_rows(w + m0 * K, K, mb, kern.mr, ic, mc, pc, kc, dst);
            },
            [&](index_t pc, index_t kc, index_t jc, index_t nc, Span<T> dst) {
                pack_b_image(p, taps, x, kern.nr, pc, kc, g0 + jc, nc, dst);
            },
            target, false, bias ? bias + m0 : nullptr, scratch);
    };
    ThreadScratch<T> scratch(plan.thread_elems, plan.threads, "conv2d_forward");
    if (plan.layout == ForwardLayout::image_tiles) {
        parallel_for_flush(plan.items, [&](index_t item) {
            const index_t n = item / plan.per_image, px0 = (item % plan.per_image) * plan.chunk;
            const gemm::MatrixC<T> tiles{output.from(n * M * P + px0, "conv2d_forward"), P};
            run_gemm(0, M, n * P + px0, std::min(plan.chunk, P - px0), tiles, scratch.mine());
        }, 1, plan.threads);
    } else {
        const index_t total = p.n * P;
        parallel_for_flush(plan.items, [&](index_t item) {
            const index_t g0 = (item / plan.filter_blocks) * plan.chunk, npx = std::min(plan.chunk, total - g0);
            const index_t m0 = (item % plan.filter_blocks) * plan.filter_block, mb = std::min(plan.filter_block, M - m0);
            const gemm::ImageColumnsC<T> block{output.from(m0 * P, "conv2d_forward"), P, M * P, g0};
            run_gemm(m0, mb, g0, npx, block, scratch.mine());
        }, 1, plan.threads);
    }
    scratch.verify();
}

// --- backward --------------------------------------------------------------------

template <class T>
void set_weight_grad_units(const Conv2dParams& p, ConvBackwardPlan<T>& plan, index_t rows) {
    plan.rows_per_unit = std::max<index_t>(rows, 1);
    plan.px_per_unit = plan.rows_per_unit * p.ow;
    plan.units_per_image = ceil_div(p.oh, plan.rows_per_unit);
    plan.units = p.out_plane() == 0 ? 0 : p.n * plan.units_per_image;
    plan.groups = std::max<index_t>(std::min<index_t>(plan.units, 8), 1);
}
template void set_weight_grad_units<float>(const Conv2dParams&, ConvBackwardPlan<float>&, index_t);
template void set_weight_grad_units<double>(const Conv2dParams&, ConvBackwardPlan<double>&, index_t);

// dW = sum over images of dout_n (FN x P) . im2col_n^T (P x K), and db = row sums of the
// same dout_n slices. Units (image, output rows) are dealt to a fixed number of groups,
// each summing into its own partial dW and db, so the result is the same for any thread
// count and needs no atomics. Whole images per unit when the batch can feed 8 groups.
template <class T>
void plan_weight_grad(const Conv2dParams& p, ConvBackwardPlan<T>& plan) {
    const index_t FN = p.oc, K = p.patch(), P = p.out_plane();
    const PlaneKernels<T>& kernels = isa::plane_kernels<T>();
    const std::optional<WeightGradAlgorithm> forced = forced_weight_grad_algorithm();
    const bool stride1 = p.win.sh == 1 && p.win.sw == 1;
    // 1x1 windows have no shifted rows to share: dW is a plain GEMM over the pixels, which ran
    // ResNet-50's 64-channel 1x1 layers 1.05-1.46x faster than the dots (NOTES section 41).
    plan.use_dots = kernels.weight_grad_dots && stride1 &&
                    (forced ? *forced == WeightGradAlgorithm::dots
                            : K <= kDotsMaxPatch && (p.win.kh > 1 || p.win.kw > 1));
    index_t rows = p.n >= 8 ? p.oh : ceil_div(p.oh, ceil_div(8, std::max<index_t>(p.n, 1)));
    if (plan.use_dots)
        rows = std::min(rows, kDotsBudgetBytes / index_t(sizeof(T)) /
                                  std::max<index_t>(FN * DotsOperands<T>::pitch(p), 1));
    set_weight_grad_units(p, plan, rows);
    plan.dots_elems = plan.use_dots ? DotsOperands<T>::elems(p, plan.rows_per_unit) : 0;
    // Each group keeps a full partial dW: on small planes (a batch of <= 64 pixels per group)
    // their writes and reduction cost more than the GEMM (single 7x7x512 layer: 27 -> 8 ms;
    // 56x56 stays: columns were +20 %, NOTES section 31; at batch 8, 7x7 2048 -> 512 1x1 in
    // f64 wrote 8 partials of 8 MB: 0.36x NumPy, NOTES section 38). Column blocks need no
    // partials, and each element's sum runs over images and pixels in the same order for any
    // block size, so the blocks may follow the thread count.
    // Each block packs its filters' dout rows (A) and its columns of the image (B); the forward's
    // batch-chunk estimate picks both sizes (column blocks alone had packed a batch-1 1024-filter
    // layer's dout 8 times: 256 -> 1024 on 14x14 ran 0.75x NumPy).
    // The patch must span >= 8 cache lines: 8 NR panels of AVX2's tile, where sections 38-42 ran.
    // Counted in NR panels, AVX-512's 48-wide f32 tile sent ResNet-50's 256 -> 1024 1x1 at
    // batch 1 to 7 partials of 1 MB each (0.58x NumPy; NOTES section 43).
    // A 1x1 layer with at least twice as many filters as channels (ResNet's expansions, and its
    // projections up to batch 8) also takes column blocks, on any plane: 8 partials of FN x C
    // cost up to 1.5x over the columns. Strided at batch 32, the columns' gathered packs lost
    // (0.7-0.95x; NOTES section 50).
    // The taps read the im2col in place, where the GEMM packs it: up to 2.7x faster outside the
    // column blocks (f32 DeepConvNet conv2 at batch 100; the 1x1 layers at batch 8 0.95-1.27x),
    // but a window narrower than its stride leaves most of each cache line it reads unused (1x1
    // stride 2: 0.8x). NOTES section 42. Where not even two of the GEMM's group partials fit
    // the workspace budget, its column blocks keep none (the taps have channel blocks).
    const bool taps_fit = p.win.kh >= p.win.sh && p.win.kw >= p.win.sw;
    const index_t fitted_groups = groups_within_budget<T>(p, plan.groups, FN * K * index_t(sizeof(T)), 1);
    const bool partials_overflow = !taps_fit && plan.groups > 1 && fitted_groups == 1;
    const bool wide_patch = K * index_t(sizeof(T)) >= 8 * 64;
    const bool expanding_1x1 = p.win.kh == 1 && p.win.kw == 1 && p.c > 0 && FN >= 2 * p.c &&
                               (stride1 || p.n <= 8);
    plan.by_columns = !plan.use_dots && P > 0 &&
                      ((p.n * P <= 64 * plan.groups && wide_patch) || expanding_1x1 || partials_overflow);
    plan.use_taps = kernels.weight_grad_taps && !plan.use_dots &&
                    (forced ? *forced == WeightGradAlgorithm::taps : taps_fit && !plan.by_columns);
    if (plan.use_taps) {
        plan.by_columns = false;
        plan_weight_taps(p, plan, rows);
    }
    if (plan.by_columns) {
        const ChunkBlocks blocks =
            gemm_item_blocks(*plan.kern, FN, p.n * P, K, plan.threads, thread_budget_elems<T>(p, plan.threads));
        plan.col_block = blocks.chunk;
        plan.col_items = ceil_div(K, plan.col_block);
        plan.wgrad_filter_block = std::max<index_t>(std::min(blocks.filter_block, FN), 1);  // FN may be 0
        plan.wgrad_filter_blocks = ceil_div(FN, plan.wgrad_filter_block);
        plan.groups = 1;
    }
    if (plan.use_taps) return;  // no GEMM; the dots keep one for units that hold inf or NaN
    if (!plan.use_dots && !plan.by_columns) plan.groups = fitted_groups;
    plan.wgrad_gemm = plan.by_columns ? gemm::plan_gemm(*plan.kern, plan.wgrad_filter_block, plan.col_block, p.n * P)
                                      : gemm::plan_gemm(*plan.kern, FN, K, plan.px_per_unit);
}

// Per (image, channel block): dcol = W^T (rows of those channels) . dout_n, then col2im into
// those channels only -- channel blocks never share a pixel, so no races. A block's dcol is
// capped by the budget, so wide blocks come with output-row chunks. The block count trades
// the GEMM's tile efficiency (M = block rows over MR, N = chunk pixels over NR) against
// streaming dout_n (the GEMM's B) once per block: in vector-cycles per image, the GEMM takes
// ~C*khw*FN*P / (2 L eff) and each pass over dout_n ~FN*P / L, so minimise
// C*khw / (2 eff) + blocks (NOTES section 20, measured when B was still packed). Unfused, the
// batch needs 8 items to feed the threads (a fixed number, like the dW groups: the row chunks
// set the order of col2im's sums, which must not depend on threads).
template <class T>
void plan_data_grad(const Conv2dParams& p, ConvBackwardPlan<T>& plan) {
    const MicroKernel<T>& kern = *plan.kern;
    const index_t khw = p.win.kh * p.win.kw;
    const index_t budget = kDcolBudgetBytes / index_t(sizeof(T));
    const index_t N1 = std::max<index_t>(p.n, 1), C1 = std::max<index_t>(p.c, 1), OH1 = std::max<index_t>(p.oh, 1);
    // kh <= sh: output rows never share an input row, so row chunks may be items of their own
    // and the 8 items come from chunks, not from narrower channel blocks that each re-read dout
    // (batch-1 64 -> 256 1x1 on 56x56, f64: 20 -> 3.2 ms). Each item packs its block of W^T, so
    // the chunks must keep >= 4 NR pixels (2048 -> 512 on 7x7: 1-row chunks were 2.5x slower).
    // Windows that never overlap (kh <= sh, kw <= sw) add one term per dx element: then neither
    // the blocks nor the chunks change a sum, and 2 items per thread suffice (a batch-1 1x1 on
    // 14x14 had 11 channel blocks, each streaming its 1024 x 196 dout from L3) ...
    const bool disjoint = p.win.kh <= p.win.sh && p.win.kw <= p.win.sw;
    // Overlapping rows (kh > sh) with too few images x channels to keep the threads busy (a
    // 3-channel first layer at batch 1 had 3 items for 2 threads, of 9-row blocks): row chunks
    // become items too, in two waves -- even chunks, then odd ones -- so no two items of a wave
    // add into one dx row (dx is zeroed first).
    // Below a few MFLOP the zeroing pass and the second fork cost more (LeNet-5's c1@b1 f64
    // backward: 17 -> 19 us).
    const double dx_flop = 2.0 * double(p.n * p.out_plane()) * double(p.oc * p.patch());
    const bool row_waves = !plan.fused && p.win.kh > p.win.sh && N1 * C1 < kRowWaveItems * plan.threads &&
                           dx_flop >= kRowWaveMinFlop;
    const index_t chunk_items = row_waves ? 2 * kRowWaveItems : 8;
    const index_t min_chunk_rows = ceil_div(OH1, ceil_div(chunk_items, N1));
    const bool row_items = !plan.fused && (p.win.kh <= p.win.sh || row_waves) && min_chunk_rows * p.ow >= 4 * kern.nr;
    index_t min_blocks = plan.fused || row_items ? 1 : std::min(C1, ceil_div(disjoint ? 2 * plan.threads : 8, N1));
    // ... but below a batch of 8, blocks of at most MC rows (256 channels of a 14x14 plane in
    // float64, a 400 KB dcol, ran 0.74x; at batch 8, 1024 channels on 7x7 ran 1.2x faster whole).
    if (disjoint && p.n < 8) min_blocks = std::max(min_blocks, std::min(C1, ceil_div(C1 * khw, kern.mc)));
    const bool one_pixel = p.out_plane() == 1 && !plan.fused;
    if (one_pixel) {
        // One pixel an image (data_grad_one_pixel): each channel block packs dout^T and W's
        // edge panel again, so only as many blocks as the threads need beside the MR-image
        // groups (LeNet-5's c5@b1 f64: dx 15.6 -> 10.9 us with one block instead of 8).
        const index_t groups = ceil_div(N1, kern.mr);
        plan.c_block = ceil_div(C1, std::min(C1, ceil_div(plan.threads, groups)));
        plan.oh_chunk = 1;
    }
    // A chunk's dcol and B panels also stay within a thread's share of the workspace budget
    // (ResNet-50's s1_expand at batch 8, f64: 18-row chunks held 0.42 of its im2col).
    const index_t share = thread_budget_elems<T>(p, kBudgetThreads);
    double best = -1.0;
    for (index_t blocks = min_blocks; !one_pixel && blocks <= C1; ++blocks) {
        const index_t cb = ceil_div(C1, blocks);
        if (blocks > min_blocks && cb == ceil_div(C1, blocks - 1)) continue;  // same block size
        const index_t rows = cb * khw;
        const gemm::GemmPlan g = gemm::plan_gemm(kern, rows, 1, p.oc);  // its A block and depth
        const index_t ow = std::max<index_t>(p.ow, 1);
        const index_t fits = std::min(budget / std::max<index_t>(rows * p.ow, 1),
                                      std::max<index_t>(share - g.a_elems, 0) / ((rows + g.kc) * ow));
        index_t chunk = std::clamp<index_t>(fits, 1, OH1);
        if (row_items)
            chunk = std::min(chunk, ceil_div(OH1, ceil_div(chunk_items, N1 * ceil_div(C1, cb))));
        if (row_items && row_waves)  // chunks 2 apart must not reach one input row
            chunk = std::max(chunk, ceil_div(p.win.kh - p.win.sh, p.win.sh));
        const index_t npx = std::max<index_t>(chunk * p.ow, 1);
        const double eff = double(rows) / double(round_up(rows, kern.mr)) *  // full tiles in M and N
                           double(npx) / double(round_up(npx, kern.nr));
        const double cost = double(C1 * khw) / (2.0 * eff) + double(ceil_div(C1, cb));
        if (best < 0 || cost < best) {
            best = cost;
            plan.c_block = cb;
            plan.oh_chunk = chunk;
        }
    }
    plan.c_blocks = ceil_div(p.c, plan.c_block);
    plan.dx_row_items = row_items ? ceil_div(OH1, plan.oh_chunk) : 1;
    plan.dx_row_waves = row_items && row_waves && plan.dx_row_items > 1;
    plan.px_chunk = plan.oh_chunk * p.ow;
    // Planes of fewer than 4 NR pixels: whole images side by side fill the GEMM's columns
    // (LeNet-5's c5, one pixel an image, ran one-column GEMMs that each packed W^T's block).
    const index_t P = p.out_plane();
    plan.dx_images = 1;
    if (!plan.fused && P > 0 && P < 4 * kern.nr && plan.oh_chunk >= p.oh)
        plan.dx_images = std::clamp<index_t>(std::min(ceil_div(4 * kern.nr, P), budget / (plan.c_block * khw * P)), 1,
                                             N1);
    const index_t item_px = plan.dx_images * plan.px_chunk;
    plan.dx_gemm = gemm::plan_gemm(kern, plan.c_block * khw, item_px, p.oc);
    plan.dx_one_pixel = P == 1;
    ScratchBooking item;
    plan.dcol_elems = item.book(plan.c_block * khw * item_px);
    if (plan.dx_one_pixel) {  // data_grad_one_pixel's two panels instead of the GEMM's
        item.book(p.oc * kern.mr);
        item.book(p.oc * kern.nr);
    } else {
        item.book(plan.dx_gemm.scratch_elems());
    }
    plan.dx_item_elems = item.total();
}

// The forward convolution whose output is dx: dout's OC channels in, C filters out, W flipped
// and transposed, stride 1 and padding kh - 1 - ph (the same OH x OW -> H x W map back).
inline Conv2dParams transposed_forward_params(const Conv2dParams& p) {
    const Window& w = p.win;
    return make_params(p.n, p.oc, p.oh, p.ow, p.c, Window{w.kh, w.kw, 1, 1, w.kh - 1 - w.ph, w.kw - 1 - w.pw});
}

// Measured (NOTES section 37): a whole backward 1.07-1.22x faster this way at batch 8-100 with
// 16-128 input channels on 7x7-56x56 planes; with C < 16 the forward's few filters fill MR
// rows poorly (C = 1: 2-4x slower), and at batch 1 its single row block loses to col2im. An
// output plane smaller than the kernel is mostly padding there (LeNet-5's c5, 1x1 out of 5x5
// taps: 25x the FLOPs; NOTES section 39).
template <class T>
bool use_dx_as_forward(const Conv2dParams& p, int threads, ConvGrads grads) {
    const Window& w = p.win;
    if (!grads.data || w.sh != 1 || w.sw != 1 || w.ph >= w.kh || w.pw >= w.kw || p.oc == 0) return false;
    const std::optional<DataGradAlgorithm> forced = forced_data_grad_algorithm();
    if (forced) return *forced == DataGradAlgorithm::transposed_forward;
    if (p.n < 8 || p.c < 16 || p.oh < w.kh || p.ow < w.kw) return false;
    // A 1x1's transposed forward is a 1x1 again, which the implicit path also runs on the planes
    // as they are (pack_b_pointwise) and, from 4 tiles of pixels, faster (NOTES section 46).
    // Its flipped copy of W, the forward's packed W and the threads' scratch (counted for
    // kBudgetThreads, so the choice does not follow the thread count) must fit the workspace
    // budget or one L2: AlexNet's conv3 at batch 8 (f64) held 0.41 of its im2col, 0.28 of it
    // the copy (the flipped W could be packed straight from W where the forward packs it).
    const ConvForwardPlan<T> budgeted = plan_conv_forward<T>(transposed_forward_params(p), kBudgetThreads);
    const index_t elems = p.oc * p.patch() + budgeted.shared_elems + budgeted.threads * budgeted.thread_elems;
    if (elems * index_t(sizeof(T)) > std::max(workspace_budget_bytes<T>(p), gemm::cache_sizes().l2)) return false;
    const ConvForwardPlan<T> forward = plan_conv_forward<T>(transposed_forward_params(p), threads);
    return forward.algorithm == ForwardAlgorithm::shifted_rows || forward.shifted_rows_declined ||
           (w.kh == 1 && w.kw == 1);
}

template <class T>
ConvBackwardPlan<T> plan_conv_backward(const Conv2dParams& p, int threads, ConvGrads grads) {
    ConvBackwardPlan<T> plan;
    plan.kern = &isa::gemm_kernel<T>();
    const double gemm_flop = 2.0 * double(p.n * p.out_plane()) * double(p.oc * p.patch());
    plan.threads = threads_for_flop(gemm_flop * (int(grads.data) + int(grads.weight)), std::max(threads, 1));
    plan.dx_pixel_rows = grads.data && plan_pixel_rows_dx(p, plan);
    plan.dx_as_forward = !plan.dx_pixel_rows && use_dx_as_forward<T>(p, threads, grads);
    if (plan.dx_as_forward || plan.dx_pixel_rows) grads.data = false;  // the rest of the plan is the dW half
    if (plan.dx_as_forward)  // the transposed forward plans its own threads
        plan.threads = threads_for_flop(gemm_flop * int(grads.weight), std::max(threads, 1));
    plan_weight_grad(p, plan);
    // With whole images per unit, each image's dx follows its dW on the same thread while
    // dout_n is still in that core's cache (it is read cold otherwise: ~15 % of the time).
    plan.fused = grads.data && grads.weight && !plan.by_columns && plan.taps_channel_block == 0 &&
                 plan.units_per_image == 1 && plan.units >= 8 && p.c > 0;
    if (!plan.dx_pixel_rows) plan_data_grad(p, plan);
    ScratchBooking wgrad;
    if (grads.weight) {
        wgrad.book(plan.wgrad_gemm.scratch_elems());
        wgrad.book(plan.dots_elems);
        wgrad.book(plan.taps_elems);
    }
    // Fused, a thread holds both halves' scratch: only within its share of the workspace
    // budget (ResNet-18's l2_down3x3 at batch 8 held an image's padded rows and a dx chunk a
    // thread: 0.35 of its im2col).
    if (plan.fused && wgrad.total() + plan.dx_item_elems > thread_budget_elems<T>(p, kBudgetThreads)) {
        plan.fused = false;
        plan_data_grad(p, plan);
    }
    if (plan.fused) wgrad.book(plan.dx_item_elems);
    plan.wgrad_thread_elems = wgrad.total();
    plan.dx_thread_elems = (grads.data && !plan.fused) || plan.dx_pixel_rows ? plan.dx_item_elems : 0;
    return plan;
}

namespace {

// The input rows [first, end) that output rows [oh0, oh1) own in dx: with kh <= sh the rows
// they reach, plus the rows no output reaches (zero) up to the next chunk's first.
inline Range owned_input_rows(const Conv2dParams& p, index_t oh0, index_t oh1) {
    const index_t first = oh0 == 0 ? 0 : oh0 * p.win.sh - p.win.ph;
    const index_t end = oh1 >= p.oh ? p.h : oh1 * p.win.sh - p.win.ph;
    return {std::clamp<index_t>(first, 0, p.h), std::clamp<index_t>(end, 0, p.h)};
}

// A panels of rows [ic, ic + mc) of M, depth [pc, pc + kc) counted across images: element
// (i, k) at a[(k / P) * image_ld + i * P + k % P] (dout's rows, image after image).
template <class T>
void pack_a_images(const T* a, index_t image_ld, index_t P, index_t M, int mr, index_t ic, index_t mc, index_t pc,
                   index_t kc, Span<T> out) {
    out.need(gemm::panel_elems(mc, mr, kc), "pack_a_images", "A panels");
    for (index_t r0 = 0; r0 < mc; r0 += mr) {
        T* dst = out.data + (r0 / mr) * kc * mr;
        const index_t rows = std::min<index_t>(mr, M - (ic + r0));
        for (index_t k = 0; k < kc;) {  // runs of depth inside one image: no division per element
            const index_t image = (pc + k) / P, q0 = (pc + k) % P, len = std::min(kc - k, P - q0);
            gemm::transpose_panel(a + image * image_ld + (ic + r0) * P + q0, P, rows, mr, len, dst + k * mr);
            k += len;
        }
    }
}

// One output pixel an image (LeNet-5's c5, 5x5 -> 1x1): dcol^T (images x rows) = dout^T
// (images x FN) times W's columns of this channel block (FN x rows), W's rows read in place as
// the micro-kernel's B. The general path packs that block of W^T as A for `images` columns
// only, which cost more than the product (c5@b1 f64: 26 us of the backward's 35).
template <class T>
void data_grad_one_pixel(const Conv2dParams& p, const ConvBackwardPlan<T>& plan, const T* dout, const T* w, T* dx,
                         index_t n0, index_t images, index_t c0, Span<T> dcol, Span<T> scratch) {
    const MicroKernel<T>& kern = *plan.kern;
    const index_t FN = p.oc, K = p.patch(), khw = p.win.kh * p.win.kw;
    const index_t nc = std::min(plan.c_block, p.c - c0), rows = nc * khw, full = rows / kern.nr * kern.nr;
    const T* b = w + c0 * khw;  // B element (f, r) at b[f * K + r]
    const Span<T> a = scratch.take(FN * kern.mr, "conv2d_backward dx", "dout^T panel");
    const Span<T> edge = scratch.take(FN * kern.nr, "conv2d_backward dx", "W edge panel");
    if (full < rows) gemm::pack_b_rows(b, K, rows, kern.nr, 0, FN, full, rows - full, edge);  // NR columns readable
    for (index_t i0 = 0; i0 < images; i0 += kern.mr) {
        const int m = int(std::min<index_t>(kern.mr, images - i0));
        for (index_t f = 0; f < FN; ++f)
            for (int i = 0; i < kern.mr; ++i) a.data[f * kern.mr + i] = i < m ? dout[(n0 + i0 + i) * FN + f] : T(0);
        T* c = dcol.data + i0 * rows;
        for (index_t j0 = 0; j0 < full; j0 += kern.nr)
            kern.run_b_rows(FN, a.data, b + j0, K, c + j0, rows, m, kern.nr, false, nullptr);
        if (full < rows) kern.run(FN, a.data, edge.data, c + full, rows, m, int(rows - full), false, nullptr);
    }
    // The pixel's window is input rows [-ph, kh - ph) x columns [-pw, kw - pw): its taps inside
    // the plane go straight to dx (col2im_rows' per-tap output ranges cost ~2 us an image here).
    const index_t i_lo = std::max<index_t>(0, p.win.ph), i_hi = std::min<index_t>(p.win.kh, p.h + p.win.ph);
    const index_t j_lo = std::max<index_t>(0, p.win.pw), j_hi = std::min<index_t>(p.win.kw, p.w + p.win.pw);
    for (index_t n = 0; n < images; ++n)
        for (index_t c = 0; c < nc; ++c) {
            T* plane = dx + ((n0 + n) * p.c + c0 + c) * p.in_plane();
            const T* taps = dcol.data + n * rows + c * khw;
            for (index_t i = i_lo; i < i_hi; ++i)
                for (index_t j = j_lo; j < j_hi; ++j)
                    plane[(i - p.win.ph) * p.w + j - p.win.pw] += taps[i * p.win.kw + j];
        }
}

// dx of channels [c0, c0 + c_block) of images [n0, n0 + images) from output rows
// [oh_begin, oh_end) (all of them when images > 1), in oh_chunk chunks through dcol; zeroes
// the input rows those outputs own first (with row waves, data_grad has zeroed all of dx).
template <class T>
void data_grad_item(const Conv2dParams& p, const ConvBackwardPlan<T>& plan, const T* dout, const T* w, T* dx,
                    index_t n0, index_t images, index_t c0, index_t oh_begin, index_t oh_end, Span<T> scratch) {
    const MicroKernel<T>& kern = *plan.kern;
    const index_t FN = p.oc, K = p.patch(), P = p.out_plane(), khw = p.win.kh * p.win.kw;
    const index_t nc = std::min(plan.c_block, p.c - c0), rows = nc * khw;
    const Range owned = owned_input_rows(p, oh_begin, oh_end);
    for (index_t n = n0; !plan.dx_row_waves && n < n0 + images; ++n)
        for (index_t c = c0; c < c0 + nc; ++c) {
            T* plane = dx + (n * p.c + c) * p.in_plane();
            std::fill(plane + owned.lo * p.w, plane + owned.hi * p.w, T(0));
        }
    if (P == 0) return;
    const Span<T> dcol = scratch.take(plan.dcol_elems, "conv2d_backward dx", "dcol");
    if (plan.dx_one_pixel) return data_grad_one_pixel(p, plan, dout, w, dx, n0, images, c0, dcol, scratch);
    const T* d = dout + n0 * FN * P;
    const T* wt = w + c0 * khw;  // W^T rows of this block: element (k, f) at wt[f*K + k]
    const auto pack_wt = [&](index_t ic, index_t mc, index_t pc, index_t kc, Span<T> dst) {
        gemm::pack_a_cols(wt, K, rows, kern.mr, ic, mc, pc, kc, dst);
    };
    if (images > 1) {
        gemm::gemm_blocked(
            kern, plan.dx_gemm, rows, images * P, FN, pack_wt,
            [&](index_t pc, index_t kc, index_t jc, index_t ncol, Span<T> dst) {
                pack_dout_pixels(d, FN, P, kern.nr, jc, ncol, pc, kc, dst);
            },
            dcol, images * P, false, static_cast<const T*>(nullptr), scratch);
        for (index_t i = 0; i < images; ++i)
            col2im_rows(p, dcol.data + i * P, images * P, c0, nc, 0, p.oh, dx + (n0 + i) * p.c * p.in_plane());
        return;
    }
    for (index_t oh0 = oh_begin; oh0 < oh_end; oh0 += plan.oh_chunk) {
        const index_t noh = std::min(plan.oh_chunk, oh_end - oh0), npx = noh * p.ow, px0 = oh0 * p.ow;
        gemm::gemm_blocked(
            kern, plan.dx_gemm, rows, npx, FN, pack_wt,
            [&](index_t pc, index_t kc, index_t jc, index_t ncol, Span<T> dst) {
                gemm::pack_b_rows(d + px0, P, npx, kern.nr, pc, kc, jc, ncol, dst);
            },
            dcol, npx, false, static_cast<const T*>(nullptr), scratch,
            gemm::BRows<T>{d + px0, P});  // dout_n's rows are B: no copy of full panels
        col2im_rows(p, dcol.data, npx, c0, nc, oh0, noh, dx + n0 * p.c * p.in_plane());
    }
}

// The dW and db partial sums of one group of units (with each unit's dx when fused).
template <class T>
void weight_grad_group(const Conv2dParams& p, const ConvBackwardPlan<T>& plan, const T* dout, const T* x,
                       const T* w, T* dx, index_t g, Span<T> acc, T* acc_db, Span<T> scratch) {
    const MicroKernel<T>& kern = *plan.kern;
    const index_t FN = p.oc, K = p.patch(), P = p.out_plane();
    std::fill(acc.data, acc.data + acc.size, T(0));
    std::fill(acc_db, acc_db + FN, T(0));
    const Span<T> gemm_scratch = scratch.take(plan.wgrad_gemm.scratch_elems(), "conv2d_backward dW", "GEMM");
    const Span<T> dots_scratch = scratch.take(plan.dots_elems, "conv2d_backward dW", "dot operands");
    const Span<T> taps_scratch = scratch.take(plan.taps_elems, "conv2d_backward dW", "taps operands");
    std::optional<DotsOperands<T>> operands;
    if (plan.use_dots) operands.emplace(p, plan.rows_per_unit, dots_scratch);
    for (index_t u = g * plan.units / plan.groups; u < (g + 1) * plan.units / plan.groups; ++u) {
        const index_t n = u / plan.units_per_image, oh0 = (u % plan.units_per_image) * plan.rows_per_unit;
        const index_t px0 = oh0 * p.ow, npx = std::min(plan.px_per_unit, P - px0);
        const T* img = x + n * p.c * p.in_plane();
        const T* d = dout + n * FN * P + px0;
        for (index_t f = 0; f < FN; ++f) acc_db[f] += lane_sum(d + f * P, npx);
        if (plan.use_taps) {
            weight_taps_unit(p, plan, img, dout + n * FN * P, oh0, npx / p.ow, 0, p.c, acc.data, taps_scratch);
        } else if (operands && operands->load(img, dout + n * FN * P, oh0, npx / p.ow)) {
            operands->accumulate(isa::plane_kernels<T>().weight_grad_dots, acc.data);
        } else {
            gemm::gemm_blocked(
                kern, plan.wgrad_gemm, FN, K, npx,
                [&](index_t ic, index_t mc, index_t pc, index_t kc, Span<T> dst) {
                    gemm::pack_a_rows(d, P, FN, kern.mr, ic, mc, pc, kc, dst);
                },
                [&](index_t pc, index_t kc, index_t jc, index_t nc, Span<T> dst) {
                    pack_b_image_t(p, img, kern.nr, px0, pc, kc, jc, nc, dst);
                },
                acc, K, true, static_cast<const T*>(nullptr), gemm_scratch);
        }
        if (plan.fused)
            for (index_t c0 = 0; c0 < p.c; c0 += plan.c_block)
                data_grad_item(p, plan, dout, w, dx, n, 1, c0, 0, p.oh, scratch);
    }
}

// dW[:, k0:k0+nk] as one GEMM whose depth runs over every image's pixels in order, and nothing
// else (db is summed apart). A is dout_n's rows, image after image.
template <class T>
void weight_grad_columns(const Conv2dParams& p, const ConvBackwardPlan<T>& plan, const T* dout, const T* x,
                         T* dw, index_t item, Span<T> scratch) {
    const MicroKernel<T>& kern = *plan.kern;
    const index_t FN = p.oc, K = p.patch(), P = p.out_plane();
    const index_t k0 = (item % plan.col_items) * plan.col_block, nk = std::min(plan.col_block, K - k0);
    const index_t f0 = (item / plan.col_items) * plan.wgrad_filter_block;
    const index_t nf = std::min(plan.wgrad_filter_block, FN - f0);
    gemm::gemm_blocked(
        kern, plan.wgrad_gemm, nf, nk, p.n * P,
        [&](index_t ic, index_t mc, index_t pc, index_t kc, Span<T> dst) {
            pack_a_images(dout + f0 * P, FN * P, P, nf, kern.mr, ic, mc, pc, kc, dst);
        },
        [&](index_t pc, index_t kc, index_t jc, index_t nc, Span<T> dst) {
            pack_b_image_t(p, x, kern.nr, 0, pc, kc, k0 + jc, nc, dst);
        },
        Span<T>{dw + f0 * K + k0, (FN - f0) * K - k0}, K, false, static_cast<const T*>(nullptr), scratch);
}

// db[f] = the sum of filter f's output gradient over images and pixels, in image order.
template <class T>
void bias_grad(const Conv2dParams& p, const T* dout, T* db) {
    const index_t P = p.out_plane();
    for (index_t f = 0; f < p.oc; ++f) {
        T sum = T(0);
        for (index_t n = 0; n < p.n; ++n) sum += lane_sum(dout + (n * p.oc + f) * P, P);
        db[f] = sum;
    }
}

// dW (and db, when not null) by column blocks or by groups of partial sums; with a fused plan,
// each image's dx too.
template <class T>
void weight_grad(const Conv2dParams& p, const ConvBackwardPlan<T>& plan, const T* dout, const T* x, const T* w,
                 T* dx, T* dw, T* db) {
    const index_t FN = p.oc, dw_size = FN * p.patch();
    if (plan.by_columns || plan.taps_channel_block > 0) {
        if (db) bias_grad(p, dout, db);
        if (!plan.by_columns) return weight_taps_by_channels(p, plan, dout, x, dw);
        ThreadScratch<T> scratch(plan.wgrad_thread_elems, plan.threads, "conv2d_backward dW columns");
        parallel_for_flush(plan.col_items * plan.wgrad_filter_blocks, [&](index_t item) {
            weight_grad_columns(p, plan, dout, x, dw, item, scratch.mine());
        }, 1, plan.threads);
        scratch.verify();
        return;
    }
    // Group 0 sums straight into dW, except with the taps: their partials are transposed.
    const index_t own = plan.use_taps ? 0 : 1, part_size = plan.use_taps ? p.patch() * plan.taps_ld : dw_size;
    AlignedBuffer<T> partial((plan.groups - own) * part_size), partial_db(plan.groups * FN);
    ThreadScratch<T> scratch(plan.wgrad_thread_elems, plan.threads, "conv2d_backward dW");
    parallel_for_flush(plan.groups, [&](index_t g) {
        const Span<T> acc{g < own ? dw : partial.get() + (g - own) * part_size, part_size};
        weight_grad_group(p, plan, dout, x, w, dx, g, acc, partial_db.get() + g * FN, scratch.mine());
    }, 1, plan.threads);
    scratch.verify();
    for (index_t f = 0; db && f < FN; ++f) {
        T sum = T(0);
        for (index_t g = 0; g < plan.groups; ++g) sum += partial_db.get()[g * FN + f];
        db[f] = sum;
    }
    if (plan.use_taps) return add_transposed_partials(p, plan, partial.get(), dw);
    if (plan.groups == 1) return;
    parallel_for_flush(ceil_div(dw_size, 4096), [&](index_t blk) {
        const index_t lo = blk * 4096, hi = std::min(dw_size, lo + 4096);
        for (index_t g = 1; g < plan.groups; ++g) {
            const T* src = partial.get() + (g - 1) * dw_size;
            for (index_t e = lo; e < hi; ++e) dw[e] += src[e];
        }
    }, 1, plan.threads);
}

// dx alone, in (image group, channel block, output-row chunk) items; with row waves, dx zeroed
// first, then the even chunks, then the odd ones.
template <class T>
void data_grad(const Conv2dParams& p, const ConvBackwardPlan<T>& plan, const T* dout, const T* w, T* dx) {
    ThreadScratch<T> scratch(plan.dx_thread_elems, plan.threads, "conv2d_backward dx");
    const index_t groups = ceil_div(p.n, plan.dx_images);
    const index_t rows_per_item = plan.dx_row_items == 1 ? p.oh : plan.oh_chunk;
    const int waves = plan.dx_row_waves ? 2 : 1;
    if (plan.dx_row_waves) {
        const index_t size = p.n * p.c * p.in_plane(), block = 1 << 15;
        parallel_for(ceil_div(size, block), [&](index_t b) {
            std::fill(dx + b * block, dx + std::min(size, (b + 1) * block), T(0));
        }, 1, plan.threads);
    }
    for (int wave = 0; wave < waves; ++wave) {
        // This wave's chunks of each block: chunk = wave + waves * j.
        const index_t chunks = (plan.dx_row_items - wave + waves - 1) / waves;
        const index_t per_group = plan.c_blocks * chunks;
        parallel_for_flush(groups * per_group, [&](index_t item) {
            const index_t n0 = item / per_group * plan.dx_images, block = item % per_group / chunks;
            const index_t oh0 = (wave + waves * (item % chunks)) * rows_per_item;
            data_grad_item(p, plan, dout, w, dx, n0, std::min(plan.dx_images, p.n - n0), block * plan.c_block, oh0,
                           std::min(p.oh, oh0 + rows_per_item), scratch.mine());
        }, 1, plan.threads);
    }
    scratch.verify();
}

}  // namespace

// dx = conv2d_forward(dout, W^T flipped) on transposed_forward_params(p).
template <class T>
void data_grad_as_forward(const Conv2dParams& p, const T* dout, const T* w, T* dx) {
    const index_t khw = p.win.kh * p.win.kw;
    AlignedBuffer<T> flipped(p.c * p.oc * khw);
    T* wt = flipped.get();  // wt[c][f][t] = w[f][c][khw - 1 - t]
    for (index_t c = 0; c < p.c; ++c)
        for (index_t f = 0; f < p.oc; ++f)
            for (index_t t = 0; t < khw; ++t) wt[(c * p.oc + f) * khw + t] = w[(f * p.c + c) * khw + khw - 1 - t];
    conv2d_forward<T>(transposed_forward_params(p), dout, wt, nullptr, dx);
}

template <class T>
void conv2d_backward(const Conv2dParams& p, const T* dout, const T* x, const T* w, T* dx, T* dw, T* db) {
    const ConvGrads grads{dx != nullptr, dw != nullptr};
    const ConvBackwardPlan<T> plan = plan_conv_backward<T>(p, num_threads(), grads);
    if (grads.weight) {
        weight_grad(p, plan, dout, x, w, dx, dw, db);
    } else if (db) {
        bias_grad(p, dout, db);
    }
    if (plan.dx_as_forward) return data_grad_as_forward(p, dout, w, dx);
    if (plan.dx_pixel_rows) return pixel_rows_data_grad(p, plan, dout, w, dx);
    if (grads.data && !plan.fused && p.n > 0 && p.c > 0) data_grad(p, plan, dout, w, dx);
}

template ConvForwardPlan<float> plan_conv_forward<float>(const Conv2dParams&, int);
template ConvForwardPlan<double> plan_conv_forward<double>(const Conv2dParams&, int);
template ConvBackwardPlan<float> plan_conv_backward<float>(const Conv2dParams&, int, ConvGrads);
template ConvBackwardPlan<double> plan_conv_backward<double>(const Conv2dParams&, int, ConvGrads);
template void conv2d_forward<float>(const Conv2dParams&, const float*, const float*, const float*, float*);
template void conv2d_forward<double>(const Conv2dParams&, const double*, const double*, const double*, double*);
template void conv2d_backward<float>(const Conv2dParams&, const float*, const float*, const float*, float*, float*,
                                     float*);
template void conv2d_backward<double>(const Conv2dParams&, const double*, const double*, const double*, double*,
                                      double*, double*);

}  // namespace fastconv
