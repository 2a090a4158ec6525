// Stride-1 convolution forward without im2col packing ("shifted rows").
//
// With the input zero-padded into rows of pitch Wp, the im2col row of tap (i, j) and channel c
// is the padded plane of c read from offset i*Wp + j: for output pixel q = oh*Wp + ow,
// x_pad[c][oh + i][ow + j] = plane_c[q + i*Wp + j]. Each row is pw zeros, then W values, then
// zeros up to Wp >= W + pw: a row's right padding reads on into the next row's left zeros, so
// neighbours share one gap of pw columns. So the whole convolution of an item is one GEMM
//     out_block (filters x rows*Wp) = W (filters x C*kh*kw) . B (C*kh*kw x rows*Wp)
// whose B row (c, i, j) is the padded plane of c from offset i*Wp + j: the micro-kernel reads
// it in place through a table of row pointers (run_b_gather), one table per thread, built once.
// The Wp - OW pad columns of each row are computed and dropped when the block is copied out.
// A strided window first splits each channel's rows into its sh x sw phases (phase (a, b):
// input row oh*sh + a, column ow*sw + b, at pitch Wp = OW + ceil(kw / sw) - 1): tap (i, j) is
// then phase (i % sh, j % sw) read from offset (i / sh)*Wp + j / sw, a stride-1 tap of a
// ceil(kh / sh) x ceil(kw / sw) window (a strided 1x1 is one phase: its subsampled rows).
// The implicit-im2col path instead packs kh*kw copies of the image per item.
#include <algorithm>
#include <cstring>
#include <stdexcept>
#include <vector>

#include "conv.hpp"
#include "parallel.hpp"

namespace fastconv {

using gemm::ceil_div;
using gemm::MicroKernel;
using gemm::round_up;

namespace {

// Input plus output block of one item, per thread: about half a core's L2.
constexpr index_t kShiftedBudgetBytes = 1024 * 1024;
// Weights of at least this many elements are packed by every thread (a fork costs ~10 us).
constexpr index_t kParallelPackElems = 1 << 16;
// The channel stride avoids multiples of 4 KiB: the micro-kernel reads NR elements of up to KC
// channel rows at once, and rows 4 KiB apart share L1 sets.
index_t channel_stride(index_t elems, index_t elem_bytes) {
    index_t ld = round_up(elems, 16);
    while ((ld * elem_bytes) % 4096 < 256 || (ld * elem_bytes) % 4096 > 4096 - 256) ld += 16;
    return ld;
}

// How a window's taps split into stride-1 phases: `along_h` x `along_w` phase planes per
// channel (only phases some tap reads), each read by a `kh` x `kw` window.
struct PhaseSplit {
    index_t along_h, along_w, kh, kw;
    index_t per_channel() const { return along_h * along_w; }
};
PhaseSplit phase_split(const Window& w) {
    return {std::min(w.sh, w.kh), std::min(w.sw, w.kw), ceil_div(w.kh, w.sh), ceil_div(w.kw, w.sw)};
}

// Rows [oh0 - ph, oh0 + noh + kh - 1 - ph) of every channel, zero-padded, into buf.
template <class T>
void load_padded_rows(const Conv2dParams& p, const ConvForwardPlan<T>& plan, const T* img, index_t oh0,
                      index_t noh, Span<T> buf) {
    const Window& w = p.win;
    const index_t R = noh + w.kh - 1, Wp = plan.pitch;
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

// The same rows of a strided window, split into its phases: phase plane (c, a, b) holds
// x_pad[c][(oh0 + r) * sh + a][q * sw + b] at [r * Wp + q], zero outside the image.
template <class T>
void load_phase_rows(const Conv2dParams& p, const ConvForwardPlan<T>& plan, const T* img, index_t oh0,
                     index_t noh, Span<T> buf) {
    const Window& w = p.win;
    const PhaseSplit split = phase_split(w);
    const index_t R = noh + split.kh - 1, Wp = plan.pitch;
    for (index_t c = 0; c < p.c; ++c)
        for (index_t a = 0; a < split.along_h; ++a)
            for (index_t b = 0; b < split.along_w; ++b) {
                T* plane = buf.data + ((c * split.along_h + a) * split.along_w + b) * plan.channel_ld;
                // Columns q whose input column q * sw + b - pw lies inside the image.
                const index_t q_lo = std::min(Wp, ceil_div(std::max<index_t>(w.pw - b, 0), w.sw));
                const index_t q_hi = std::max(q_lo, std::min(Wp, ceil_div(std::max<index_t>(p.w + w.pw - b, 0), w.sw)));
                for (index_t r = 0; r < R; ++r) {
                    T* dst = plane + r * Wp;
                    const index_t ih = (oh0 + r) * w.sh + a - w.ph;
                    if (ih < 0 || ih >= p.h) {
                        std::fill(dst, dst + Wp, T(0));
                        continue;
                    }
                    const T* src = img + c * p.in_plane() + ih * p.w;
                    std::fill(dst, dst + q_lo, T(0));
                    for (index_t q = q_lo; q < q_hi; ++q) dst[q] = src[q * w.sw + b - w.pw];
                    std::fill(dst + q_hi, dst + Wp, T(0));
                }
                std::fill(plane + R * Wp, plane + plan.channel_ld, T(0));
            }
}

template <class T>
void load_item_rows(const Conv2dParams& p, const ConvForwardPlan<T>& plan, const T* img, index_t oh0, index_t noh,
                    Span<T> buf) {
    buf.need(plan.image_elems, "shifted_rows_forward", "padded rows");
    if (p.win.sh != 1 || p.win.sw != 1)
        load_phase_rows(p, plan, img, oh0, noh, buf);
    else
        load_padded_rows(p, plan, img, oh0, noh, buf);
    const index_t planes = p.c * phase_split(p.win).per_channel();
    std::fill(buf.data + planes * plan.channel_ld, buf.data + buf.size, T(0));
}

constexpr const char* kAlgorithmNames[] = {"implicit_gemm", "shifted_rows", "pixel_dots"};
ForcedSetting<ForwardAlgorithm, 3> g_forward_algorithm{kAlgorithmNames, "set_forward_algorithm"};

}  // namespace

int algorithm_index(const std::string& name, const char* const* names, int count, const char* setter) {
    if (name == "auto") return -1;
    std::string known = "auto";
    for (int i = 0; i < count; ++i) {
        if (name == names[i]) return i;
        known += std::string(i + 1 < count ? ", " : " or ") + names[i];
    }
    throw std::invalid_argument(std::string(setter) + ": '" + name + "' is not " + known);
}

void set_forward_algorithm(const std::string& name) { g_forward_algorithm.set(name); }
std::string forward_algorithm_setting() { return g_forward_algorithm.name(); }
std::optional<ForwardAlgorithm> forced_forward_algorithm() { return g_forward_algorithm.forced(); }

namespace {
constexpr const char* kTilesNames[] = {"filters_by_pixels", "pixels_by_filters"};
ForcedSetting<ShiftedTiles, 2> g_shifted_tiles{kTilesNames, "set_shifted_rows_tiles"};
}  // namespace

void set_shifted_rows_tiles(const std::string& name) { g_shifted_tiles.set(name); }
std::string shifted_rows_tiles_setting() { return g_shifted_tiles.name(); }

// Depth block of the gathered GEMM: its KC x NR slice of B rows fits L1 while the MR loop reuses
// it. Half of L1 (KC = 128 on a Xeon's 48 KiB) measured 3-7 % slower in float64 than all of it
// (NOTES section 37): fewer passes over the output block outweigh the L1 misses.
template <class T>
index_t gathered_kc(const MicroKernel<T>& kern) {
    const index_t fit = gemm::cache_sizes().l1d / (kern.nr * index_t(sizeof(T)));
    return std::clamp<index_t>(fit / 8 * 8, 16, kern.kc);
}

// Columns the tiles of n columns compute, and read: whole NR tiles, then the edge tile in whole
// vectors (MicroKernel::lanes).
template <class T>
index_t vector_columns(const MicroKernel<T>& kern, index_t n) {
    return n / kern.nr * kern.nr + round_up(n % kern.nr, kern.lanes);
}

// Output rows per item: the largest count whose buffers fit the budget, at least one, then
// fewer while the batch gives too few items to keep every thread busy and items stay wide.
template <class T>
index_t rows_per_item(const Conv2dParams& p, const ConvForwardPlan<T>& plan, index_t Wp) {
    const PhaseSplit split = phase_split(p.win);
    const auto item_bytes = [&](index_t rows) {
        const index_t plane = (rows + split.kh - 1) * Wp + split.kw;
        return (p.c * split.per_channel() * plane + p.oc * rows * Wp) * index_t(sizeof(T));
    };
    index_t rows = p.oh;
    while (rows > 1 && item_bytes(rows) > kShiftedBudgetBytes) rows = ceil_div(rows, 2);
    while (rows > 1 && p.n * ceil_div(p.oh, rows) < 4 * plan.threads && ceil_div(rows, 2) * Wp >= 4 * plan.kern->nr)
        rows = ceil_div(rows, 2);
    return rows;
}

// Filters per item: all of them, unless the row blocks alone leave threads idle (a batch-1
// 13x13 layer is one block): then blocks of whole MR panels. W is packed once per call, so a
// filter block only repeats the copy of its padded rows, a small fraction of its GEMM.
// `panel`: the filters of one tile (MR, or NR when the tiles are pixels by filters).
template <class T>
index_t filters_per_item(const Conv2dParams& p, const ConvForwardPlan<T>& plan, index_t row_blocks, index_t panel) {
    const index_t want = 4 * plan.threads;
    if (plan.threads <= 1 || row_blocks >= want || p.oc < 2 * panel) return p.oc;
    const index_t blocks = std::min(ceil_div(want, row_blocks), ceil_div(p.oc, panel));
    return round_up(ceil_div(p.oc, blocks), panel);
}

// The cost of n columns in tiles, in columns: whole NR tiles, then the edge in vectors, where
// an edge of one vector of a three-vector tile counts one and a half: its MR broadcasts per
// vector of FMAs bound it by loads (64 filters as 48 + 16 ran 8-24 % slower than 72 pixels as
// 48 + 32, NOTES section 47). Not measured so at AVX2's two-vector tiles, where counting it
// so chose the transposed block on layers that ran 5-12 % slower that way (section 48).
template <class T>
double columns_run(const MicroKernel<T>& kern, index_t n) {
    const index_t edge_vectors = ceil_div(n % kern.nr, kern.lanes);
    const bool load_bound_edge = edge_vectors == 1 && kern.nr >= 3 * kern.lanes;
    return double(n / kern.nr * kern.nr) + (load_bound_edge ? 1.5 : double(edge_vectors)) * kern.lanes;
}

// Pixels by filters where its tiles cost a twelfth less than filters by pixels (the pixel
// panels are copied, about 5 % of a 3x3's FMAs at 64 channels), and only where W is packed
// anyway: W^T cannot be read in place. A 7x7 plane at pitch 8 runs 56 pixels as 7 full MR
// panels, against a 48-wide and a 16-wide tile; 128 filters fill 48 + 48 + 32. The item's
// pixels must fit MC rows: their panels take a packed A block's place in L2, and the copy
// repeats each row once per tap -- 812 pixels of a 28x28 plane at 16 channels ran 1.4x slower
// transposed on AVX2 (NOTES section 48).
template <class T>
ShiftedTiles choose_tiles(const Conv2dParams& p, const MicroKernel<T>& kern, index_t npx, index_t filter_block,
                          bool weights_in_place) {
    if (const std::optional<ShiftedTiles> forced = g_shifted_tiles.forced()) return *forced;
    if (weights_in_place || p.win.kh * p.win.kw == 1 || npx > kern.mc) return ShiftedTiles::filters_by_pixels;
    const double by_pixels = npx / columns_run(kern, npx) * filter_block / double(round_up(filter_block, kern.mr));
    const double by_filters = npx / double(round_up(npx, kern.mr)) * filter_block / columns_run(kern, filter_block);
    return 12 * by_filters >= 13 * by_pixels ? ShiftedTiles::pixels_by_filters : ShiftedTiles::filters_by_pixels;
}

constexpr index_t kPointwiseImplicitTiles = 4;

// Auto rule (measured, benchmarks/NOTES.md sections 34, 37, 43 and 46): since one gathered GEMM
// covers every tap, this path ties or beats the implicit one on the stride-1 layers of 3x3 and
// larger measured (C = 1 to 512, 7x7 to 56x56 planes) as long as the dropped pad columns stay at
// most half the output width, items hold at least NR pixels and one item per thread, and a
// strided 1x1's fill its tiles. Strided windows on phase rows ran 0.93-1.54x the implicit
// path's speed (AlexNet conv1 1.22-1.36x, ResNet-18's 3x3 stride-2 layers 0.93-1.38x; NOTES
// section 46). Measured exceptions left to it: the 3-channel VGG conv1_1 and the 1-channel
// seed conv1 at batch 1, both bound by writing their output.
template <class T>
bool plan_shifted_rows(const Conv2dParams& p, ConvForwardPlan<T>& plan) {
    const Window& w = p.win;
    const std::optional<ForwardAlgorithm> forced = forced_forward_algorithm();
    const bool pointwise = w.kh == 1 && w.kw == 1 && w.ph == 0 && w.pw == 0;
    const bool strided = w.sh != 1 || w.sw != 1;
    if (forced && *forced != ForwardAlgorithm::shifted_rows) return false;
    const MicroKernel<T>& kern = *plan.kern;
    // An unstrided 1x1 packs its B panels from the planes as they are (pack_b_pointwise), so
    // the implicit path copies no more than this one and its packed panels run the
    // micro-kernel faster: 1.1-1.5x on ResNet-50's 1x1 layers from 14x14 at batch 1 up, at 1
    // and 2 threads (NOTES section 46). Below 4 tiles of pixels the packed weights serve too
    // few tiles: a 7x7 plane at batch 1 runs 1.3-1.5x faster here, W read in place.
    if (!forced && pointwise && w.sh == 1 && w.sw == 1 && p.n * p.out_plane() >= kPointwiseImplicitTiles * kern.nr)
        return false;
    // Shared pad columns: pitch W + pw, not W + 2 pw (7x7 3x3 layers compute 8 columns per
    // row, not 9); at least OW when the padding exceeds the kernel (a padded 1x1).
    const PhaseSplit split = phase_split(w);
    const index_t Wp = strided ? p.ow + split.kw - 1 : pointwise ? p.ow : std::max(p.w + w.pw, p.ow);
    const index_t rows = rows_per_item(p, plan, Wp), row_blocks = p.n * ceil_div(p.oh, rows);
    // Packing W pays once its panels serve many row blocks: read in place, batch-1 and batch-8
    // layers ran 1.1-1.4x faster (ResNet-18 layer 4, AlexNet conv4, VGG conv5); 100 images of
    // DeepConvNet's conv6 ran 3 % slower (NOTES section 37).
    const bool weights_in_place = row_blocks <= 8 * plan.threads;
    // Each item reads all of W once; a strided 1x1's items hold a few rows of one image, so at
    // batch > 1 a W beyond half of L2 streams from L3 once per item, where the implicit path's
    // chunks span images and read each packed block of W once per chunk: ResNet's projections
    // at batch 8 ran 1.03-1.21x faster there in float64 and 0.97-1.16x in float32 (AVX2,
    // NOTES section 49).
    const bool weights_outgrow_l2 = 2 * p.oc * p.patch() * index_t(sizeof(T)) > gemm::cache_sizes().l2;
    if (!forced && pointwise && strided && p.n > 1 && weights_outgrow_l2) return false;
    const ShiftedTiles tiles = choose_tiles(p, kern, rows * Wp, filters_per_item(p, plan, row_blocks, kern.mr),
                                            weights_in_place);
    const bool pixel_tiles = tiles == ShiftedTiles::pixels_by_filters;
    const index_t filter_block = filters_per_item(p, plan, row_blocks, pixel_tiles ? kern.nr : kern.mr);
    const index_t items = row_blocks * ceil_div(p.oc, filter_block);
    const bool few_pad_columns = 2 * Wp <= 3 * p.ow;
    const bool wide = rows * Wp >= kern.nr && items >= plan.threads;
    // A 1x1 kernel packs no taps on the implicit path, whose chunks of several images fill the
    // NR-wide tiles: it goes there from a tenth of its lanes lost, the edge tile counted in the
    // vectors it runs (7x7 at batch 8: 49 of 64 lanes, implicit 1.2-1.4x faster with 16-wide
    // tiles, NOTES section 40; 14x14 with 48-wide tiles: 196 of 208 lanes, shifted 1.10-1.25x
    // faster for 1024 -> 256, section 44). Larger windows stay here whatever their tiles:
    // since the narrow edge tiles, 3x3 on 7x7 planes ran 1.21-1.34x faster than the implicit
    // path at batch 8 and 100 (section 43; before them the implicit path won, section 37).
    const index_t npx = rows * Wp, tiled = vector_columns(kern, npx);
    const bool full_tiles = p.n == 1 || !pointwise || 10 * npx >= 9 * tiled;
    if (!forced && !((pointwise || few_pad_columns) && wide && full_tiles)) return false;
    plan.algorithm = ForwardAlgorithm::shifted_rows;
    plan.rows = rows;
    plan.row_items = ceil_div(p.oh, rows);
    plan.filter_block = filter_block;
    plan.filter_blocks = ceil_div(p.oc, filter_block);
    plan.items = items;
    plan.pitch = Wp;
    plan.channel_ld = channel_stride((rows + split.kh - 1) * Wp + split.kw, sizeof(T));
    ScratchBooking booking;
    // + NR: the last panel of the last channel's last tap reads up to NR - 1 columns past it.
    plan.image_elems = booking.book(p.c * split.per_channel() * plan.channel_ld + kern.nr);
    // The pad columns cost a copy of every item's block; tiles per output row store straight
    // into the output instead, where they read no further than the row's pitch and are no more
    // than the block's: VGG conv1_1 ran 1.25-1.3x faster (f32, 1 thread), but 7x7 rows on
    // one-vector tiles (f32) 0.7x (NOTES section 53).
    plan.rows_in_place = !pixel_tiles && vector_columns(kern, p.ow) <= Wp &&
                         rows * ceil_div(p.ow, index_t(kern.nr)) <= ceil_div(rows * Wp, index_t(kern.nr));
    plan.c_block_elems = plan.rows_in_place ? 0 : booking.book(filter_block * rows * Wp);
    plan.gemm = gemm::plan_gemm(kern, p.oc, rows * Wp, p.patch(), gathered_kc<T>(kern));
    plan.tiles = tiles;
    plan.pixel_panel_elems = pixel_tiles ? booking.book(round_up(rows * Wp, kern.mr) * plan.gemm.kc) : 0;
    plan.thread_elems = booking.total();
    plan.weights_in_place = weights_in_place && !pixel_tiles;
    plan.shared_elems = plan.weights_in_place ? 0 : round_up(p.oc, pixel_tiles ? kern.nr : kern.mr) * p.patch();
    plan.chunk = rows * Wp;
    return true;
}

// W (M x K) as the A panels of every depth block (block pc at packed + pc * round_up(M, MR)),
// or with `transposed` W^T as the B panels (NR filters each, block pc at pc * round_up(M, NR)):
// one panel per item (a 512-filter 3x3 layer's 9 MB of weights took a serial millisecond).
template <class T>
void pack_weights(const gemm::GemmPlan& g, int panel, bool transposed, const T* w, index_t M, index_t K,
                  Span<T> packed, int threads) {
    const index_t rows = round_up(M, panel), panels = rows / panel;
    packed.need(rows * K, "shifted_rows_forward", "packed weights");
    const int team = M * K >= kParallelPackElems ? threads : 1;
    parallel_for(ceil_div(K, g.kc) * panels, [&](index_t item) {
        const index_t pc = (item / panels) * g.kc, kc = std::min(g.kc, K - pc), i0 = (item % panels) * panel;
        const Span<T> dst = packed.from(pc * rows + i0 * kc, "pack_weights");
        if (transposed)
            gemm::pack_b_cols(w, K, M, panel, pc, kc, i0, panel, dst);
        else
            gemm::pack_a_rows(w, K, M, panel, i0, panel, pc, kc, dst);
    }, 1, team);
}

// The micro-kernel reads whole NR-wide panels, so the last row is read up to the item's pixel
// count rounded up to NR: checked here, once, against the buffer.
template <class T>
void tap_rows(const Conv2dParams& p, const ConvForwardPlan<T>& plan, Span<T> buf, const T** rows) {
    const Window& w = p.win;
    const PhaseSplit split = phase_split(w);
    const index_t khw = w.kh * w.kw;
    index_t farthest = 0;
    for (index_t k = 0; k < p.patch(); ++k) {
        const index_t c = k / khw, i = k % khw / w.kw, j = k % w.kw;
        const index_t phase = (c * split.along_h + i % w.sh) * split.along_w + j % w.sw;
        const index_t offset = phase * plan.channel_ld + (i / w.sh) * plan.pitch + j / w.sw;
        rows[k] = buf.data + offset;
        farthest = std::max(farthest, offset);
    }
    const index_t read = std::max(round_up(plan.chunk, plan.kern->nr), round_up(plan.chunk, plan.kern->mr));
    buf.need(farthest + read, "shifted_rows_forward", "rows read by the last panel");
}

// Where gemm_gathered stores: `lines` runs of `width` pixels, run r read from B column
// r * b_pitch and stored from column r * c_pitch of C (filter rows ldc apart). The item's
// block is one run of all its pixels; rows in place are its output rows, pad columns skipped.
template <class T>
struct GatheredTarget {
    T* c;
    index_t ldc, lines, width, b_pitch, c_pitch;
};

// target = rows [m0, m0 + mb) of W (M x K) . B + bias, B rows through `rows`; W packed (m0 a
// multiple of MR) or, with packed == nullptr, read in place from w.
template <class T>
void gemm_gathered(const MicroKernel<T>& kern, const gemm::GemmPlan& g, index_t M, index_t m0, index_t mb,
                   index_t K, const T* packed, const T* w, const T* const* rows, const T* bias,
                   const GatheredTarget<T>& to) {
    const index_t mr = kern.mr, nr = kern.nr, m_rows = round_up(M, mr);
    for (index_t ic = m0; ic < m0 + mb; ic += g.mc) {
        const index_t mc = std::min(g.mc, m0 + mb - ic);
        // Depth blocks outside the pixel panels: an MC x KC block of A stays in L2 across
        // the panels (read in place, a whole MC x K slice of W would stream once per panel).
        for (index_t pc = 0; pc < K; pc += g.kc) {
            const index_t kc = std::min(g.kc, K - pc);
            const bool last = pc + kc >= K;
            for (index_t line = 0; line < to.lines; ++line)
                for (index_t jr = 0; jr < to.width; jr += nr) {
                    const int n = static_cast<int>(std::min(nr, to.width - jr));
                    for (index_t ir = ic; ir < ic + mc; ir += mr) {
                        const int m = static_cast<int>(std::min(mr, m0 + mb - ir));
                        const T* a = packed ? packed + pc * m_rows + (ir / mr) * kc * mr : w + ir * K + pc;
                        kern.run_b_gather(kc, a, packed ? 0 : K, rows + pc, line * to.b_pitch + jr,
                                          to.c + (ir - m0) * to.ldc + line * to.c_pitch + jr, to.ldc, m, n,
                                          pc > 0, last && bias ? bias + ir : nullptr);
                    }
                }
        }
    }
}

// MR elements as a fixed-size copy at the kernels' MRs (a call to memmove per panel row cost an
// eighth of the time at MR = 8 and doubled it at MR = 6, NOTES sections 47-48).
template <int MR, class T>
inline void copy_fixed(const T* src, T* dst) {
    T row[MR];
    std::memcpy(row, src, sizeof row);
    std::memcpy(dst, row, sizeof row);
}

template <class T>
inline void copy_panel_row(const T* src, index_t mr, T* dst) {
    switch (mr) {
        case 4: return copy_fixed<4>(src, dst);
        case 6: return copy_fixed<6>(src, dst);
        case 8: return copy_fixed<8>(src, dst);
        default: std::copy_n(src, mr, dst);
    }
}

// block (npx x mb, row stride mb) = B^T . W^T for filters [m0, m0 + mb), m0 a multiple of NR:
// per depth block the item's pixels are copied into MR-row panels (pixel q of B row k is
// rows[k][q]) and each NR panel of the packed W^T stays in L1 across them.
template <class T>
void gemm_pixel_tiles(const MicroKernel<T>& kern, const gemm::GemmPlan& g, index_t M, index_t m0, index_t mb,
                      index_t K, index_t npx, const T* packed_wt, const T* const* rows, Span<T> panels,
                      Span<T> block) {
    block.need(npx * mb, "shifted_rows_forward", "transposed output block");
    const index_t mr = kern.mr, nr = kern.nr, cols = round_up(M, nr);
    for (index_t pc = 0; pc < K; pc += g.kc) {
        const index_t kc = std::min(g.kc, K - pc);
        panels.need(round_up(npx, mr) * kc, "shifted_rows_forward", "pixel panels");
        for (index_t ir = 0; ir < npx; ir += mr)
            for (index_t k = 0; k < kc; ++k) copy_panel_row(rows[pc + k] + ir, mr, panels.data + ir * kc + k * mr);
        for (index_t jr = 0; jr < mb; jr += nr) {
            const int n = static_cast<int>(std::min(nr, mb - jr));
            const T* b = packed_wt + pc * cols + (m0 + jr) * kc;
            for (index_t ir = 0; ir < npx; ir += mr)
                kern.run(kc, panels.data + ir * kc, b, block.data + ir * mb + jr, mb,
                         static_cast<int>(std::min(mr, npx - ir)), n, pc > 0, nullptr);
        }
    }
}

// The item's block into NCHW, pad columns dropped: row f of a filters-by-pixels block, or
// column f (plus its bias, which the transposed GEMM leaves out) of a pixels-by-filters one.
template <class T>
void copy_block_out(const Conv2dParams& p, const ConvForwardPlan<T>& plan, const T* block, index_t n, index_t m0,
                    index_t mb, index_t oh0, index_t noh, const T* bias, T* out) {
    const index_t Wp = plan.pitch, npx = noh * Wp;
    for (index_t f = 0; f < mb; ++f) {
        T* dst = out + ((n * p.oc + m0 + f) * p.oh + oh0) * p.ow;
        if (plan.tiles == ShiftedTiles::filters_by_pixels) {
            for (index_t r = 0; r < noh; ++r) std::copy_n(block + f * npx + r * Wp, p.ow, dst + r * p.ow);
            continue;
        }
        const T b = bias ? bias[m0 + f] : T(0);
        for (index_t r = 0; r < noh; ++r)
            for (index_t q = 0; q < p.ow; ++q) dst[r * p.ow + q] = block[(r * Wp + q) * mb + f] + b;
    }
}

template <class T>
void shifted_rows_forward(const Conv2dParams& p, const ConvForwardPlan<T>& plan, const T* x, const T* w,
                          const T* bias, T* out) {
    const MicroKernel<T>& kern = *plan.kern;
    const index_t M = p.oc, K = p.patch(), Wp = plan.pitch;
    const bool pixel_tiles = plan.tiles == ShiftedTiles::pixels_by_filters;
    gemm::AlignedBuffer<T> packed(plan.shared_elems);
    if (!plan.weights_in_place)
        pack_weights(plan.gemm, pixel_tiles ? kern.nr : kern.mr, pixel_tiles, w, M, K,
                     Span<T>{packed.get(), plan.shared_elems}, plan.threads);
    const T* packed_w = plan.weights_in_place ? nullptr : packed.get();
    ThreadScratch<T> scratch(plan.thread_elems, plan.threads, "shifted_rows_forward");
    std::vector<const T*> row_tables(static_cast<std::size_t>(plan.threads * K));
    std::vector<char> built(static_cast<std::size_t>(plan.threads), 0);
    // The row item each thread's buffer holds: its filter blocks follow one another in the item
    // order, so a thread that takes two of them copies the rows once (batch-1 layers split
    // into filter blocks copied all C channels' rows once per block).
    std::vector<index_t> loaded(static_cast<std::size_t>(plan.threads), -1);
    parallel_for_flush(plan.items, [&](index_t item) {
        const index_t row_item = item / plan.filter_blocks, m0 = (item % plan.filter_blocks) * plan.filter_block;
        const index_t n = row_item / plan.row_items, oh0 = (row_item % plan.row_items) * plan.rows;
        const index_t noh = std::min(plan.rows, p.oh - oh0), npx = noh * Wp, mb = std::min(plan.filter_block, M - m0);
        Span<T> mine = scratch.mine();
        const Span<T> buf = mine.take(plan.image_elems, "shifted_rows_forward", "padded rows");
        const Span<T> block = mine.take(plan.c_block_elems, "shifted_rows_forward", "output block");
        const T** rows = row_tables.data() + thread_index() * K;
        if (!built[thread_index()]) {  // the thread's buffer never moves: its table is built once
            tap_rows(p, plan, buf, rows);
            built[thread_index()] = 1;
        }
        if (loaded[thread_index()] != row_item) {
            load_item_rows(p, plan, x + n * p.c * p.in_plane(), oh0, noh, buf);
            loaded[thread_index()] = row_item;
        }
        if (pixel_tiles)
            gemm_pixel_tiles(kern, plan.gemm, M, m0, mb, K, npx, packed_w, rows,
                             mine.take(plan.pixel_panel_elems, "shifted_rows_forward", "pixel panels"), block);
        else if (plan.rows_in_place)
            gemm_gathered(kern, plan.gemm, M, m0, mb, K, packed_w, w, rows, bias,
                          {out + ((n * p.oc + m0) * p.oh + oh0) * p.ow, p.out_plane(), noh, p.ow, Wp, p.ow});
        else {
            block.need(mb * npx, "shifted_rows_forward", "output block");
            gemm_gathered(kern, plan.gemm, M, m0, mb, K, packed_w, w, rows, bias, {block.data, npx, 1, npx, 0, 0});
        }
        if (!plan.rows_in_place) copy_block_out(p, plan, block.data, n, m0, mb, oh0, noh, bias, out);
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
