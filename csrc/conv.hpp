// GEMM-based 2-D convolution (NCHW), forward and backward, without a full im2col matrix:
// the GEMM packs its B panels straight from the image (implicit im2col).
//
// Plan, then execute (oneDNN's init_conf / execute split): each entry first builds one plan
// from the shape -- layout, block sizes, work items, the GEMM plans and the scratch each thread
// books -- and execution only reads it. Tests read the plans (conv2d_plan in Python) to check
// that their shapes cross every block.
#pragma once

#include <atomic>
#include <optional>
#include <string>

#include "gemm/driver.hpp"
#include "params.hpp"

namespace fastconv {

enum class ForwardAlgorithm {
    implicit_gemm,  // one GEMM per item, B packed from the image (implicit im2col)
    shifted_rows,   // stride 1: B rows are the zero-padded image shifted per tap, read in place
    pixel_dots,     // a handful of output pixels: each one's im2col row dotted with W's rows
};

// The index of `name` among `names` (an algorithm forced by tests), -1 for "auto"; throws
// std::invalid_argument naming `setter` for anything else.
int algorithm_index(const std::string& name, const char* const* names, int count, const char* setter);
// The setting's name back: "auto" for -1.
inline std::string algorithm_name(int index, const char* const* names) { return index < 0 ? "auto" : names[index]; }

// A choice tests force among `Count` named values of `Choice` ("auto": the rule's, index -1).
template <class Choice, int Count>
struct ForcedSetting {
    const char* const* names;
    const char* setter;
    std::atomic<int> index{-1};
    void set(const std::string& name) { index = algorithm_index(name, names, Count, setter); }
    std::string name() const { return algorithm_name(index.load(), names); }
    std::optional<Choice> forced() const {
        const int i = index.load();
        return i < 0 ? std::nullopt : std::optional<Choice>(static_cast<Choice>(i));
    }
};

// Tests force an algorithm over the whole case table ("auto" restores the cost rule); a
// forced algorithm that cannot run a shape (shifted_rows at stride 2) falls back.
void set_forward_algorithm(const std::string& name);
std::string forward_algorithm_setting();
std::optional<ForwardAlgorithm> forced_forward_algorithm();  // nullopt: the auto rule

// The shifted-rows GEMM's tiles: MR filters by NR pixels (W . B), or MR pixels by NR filters
// (B^T . W^T, the block computed transposed), where a small plane's pitch fills MR rows
// better than NR-wide tiles.
enum class ShiftedTiles {
    filters_by_pixels,
    pixels_by_filters,
};
// Forced by tests like the algorithm ("auto", "filters_by_pixels" or "pixels_by_filters").
void set_shifted_rows_tiles(const std::string& name);
std::string shifted_rows_tiles_setting();

enum class WeightGradAlgorithm {
    gemm,  // dout . im2col^T, the transposed im2col packed as B (in groups, or in column blocks)
    dots,  // stride 1, small patches: dot products along the padded rows (weight_grad_dots.hpp)
    taps,  // the im2col read in place as A, dout^T packed as B (weight_grad_taps.hpp)
};

enum class DataGradAlgorithm {
    gemm_col2im,         // per image (group) and channel block: dcol = W^T . dout_n, then col2im
    pixel_rows,          // per channel block: dx^T = dout^T . W over the batch's pixels, then scattered
    transposed_forward,  // stride 1: the forward convolution of dout with W flipped and transposed
};
// Tests force a data-gradient algorithm ("auto", or a name above); a forced transposed forward
// takes gemm_col2im where the stride is not 1 or the padding reaches past the window.
void set_data_grad_algorithm(const std::string& name);
std::string data_grad_algorithm_setting();
std::optional<DataGradAlgorithm> forced_data_grad_algorithm();  // nullopt: the auto rule

// Tests force a weight-gradient algorithm the same way; forced dots fall back to the GEMM where
// the stride is not 1.
void set_weight_grad_algorithm(const std::string& name);
std::string weight_grad_algorithm_setting();
std::optional<WeightGradAlgorithm> forced_weight_grad_algorithm();  // nullopt: the auto rule

// Stride-1 patches up to this size take the dot-product weight gradient (weight_grad_dots.hpp):
// below it the taps' dout^T pack costs as much as their FMAs (VGG conv1_1 at batch 1, K = 27:
// 1.8x slower than the dots), beyond it the taps win.
constexpr index_t kDotsMaxPatch = 64;

// The scratch a call may hold beside its operands: a quarter of the im2col matrix it never
// builds (issue "Fast on every layer"). Algorithms whose buffers grow with the layer -- the
// weight gradient's partial sums, a GEMM's column blocks -- choose or size them to stay under
// it; below L2 (a small layer's partials, one thread's cache-sized panels) it is not asked,
// so layers under 4 x threads x L2 of im2col keep those instead.
template <class T>
index_t workspace_budget_bytes(const Conv2dParams& p) {
    return p.n * p.out_plane() * p.patch() * index_t(sizeof(T)) / 4;
}
// The share of it one thread's GEMM panels may take, in elements; never under one L2, which
// holds an A block and enough NR panels of B to repay its packing (a quarter of L2 left
// 1x1 layers' chunks one to four panels wide: 0.56-0.85x, NOTES section 54).
template <class T>
index_t thread_budget_elems(const Conv2dParams& p, int threads) {
    return std::max(workspace_budget_bytes<T>(p) / std::max(threads, 1), gemm::cache_sizes().l2) /
           index_t(sizeof(T));
}
// Blocks that set an order of sums (dx's row chunks, dW's units) must not follow the thread
// count: their share assumes this many threads.
constexpr int kBudgetThreads = 4;
// Bytes dW's partial sums may take: half the workspace budget, or L2.
template <class T>
index_t partials_budget_bytes(const Conv2dParams& p) {
    return std::max(workspace_budget_bytes<T>(p) / 2, gemm::cache_sizes().l2);
}
// Groups of dW partial sums (part_bytes each, `own` of them summed into dW itself) within
// partials_budget_bytes: `groups` halved to a power of two (2 and 4 threads stay balanced),
// or 1 where not even two fit -- the caller then splits dW into blocks instead. Never the
// thread count's: the groups set the sums' order.
template <class T>
index_t groups_within_budget(const Conv2dParams& p, index_t groups, index_t part_bytes, index_t own) {
    const index_t limit = partials_budget_bytes<T>(p);
    while (groups > 1 && (groups - own) * part_bytes > limit) {
        index_t halved = 1;
        while (2 * halved < groups) halved *= 2;
        groups = halved;
    }
    return groups;
}

// Blocking of the taps weight gradient (conv_weight_taps.cpp; tests aim their shapes at them).
// Output pixels per depth block at most (whole output rows, at least one); fewer when the
// block's B panels, all filters, would fill more than half of L2.
constexpr index_t kTapsBlockPixels = 256;
// Bytes of the padded input copy of one unit at most (a unit of fewer rows repeats kh - 1 of
// them).
constexpr index_t kTapsImageBudgetBytes = 2 * 1024 * 1024;
// Taps per channel block at least: its repacked dout^T then costs under ~10 % of its FMAs
// (blocks of 72 taps ran 1.1-1.2x slower than blocks of 288). Blocks are used only where the
// patch holds at least 8 of them.
constexpr index_t kTapsBlockTaps = 288;

enum class ForwardLayout {
    image_tiles,   // items (image, pixel chunk): the GEMM writes straight into NCHW
    batch_chunks,  // items = chunks of the whole batch's pixels, tiles written into their images
};

template <class T>
struct ConvForwardPlan {
    const gemm::MicroKernel<T>* kern = nullptr;
    int threads = 1;
    ForwardLayout layout = ForwardLayout::image_tiles;
    index_t chunk = 1;      // output pixels per item (the GEMM's N)
    index_t per_image = 1;  // items per image (image_tiles)
    index_t items = 0;
    index_t c_block_elems = 0;  // shifted_rows: the item's output block
    index_t filter_block = 0;   // filters per item (all of them unless batch_chunks or pixel_dots
    index_t filter_blocks = 1;  // split them: items are then (pixel chunk, filter block) pairs)
    gemm::GemmPlan gemm;        // M = filters, N = chunk, K = patch (shifted_rows: K = channels)
    index_t thread_elems = 0;   // scratch per thread
    // shifted_rows: items (image, block of `rows` output rows); each copies its rows' inputs,
    // zero-padded, to a buffer of channel stride `channel_ld` and row pitch `pitch` (W + pw),
    // computes `rows * pitch` pixels per filter into a block, the pad columns dropped as it is
    // copied out, or (rows_in_place) each output row's tiles straight into the output.
    ForwardAlgorithm algorithm = ForwardAlgorithm::implicit_gemm;
    index_t rows = 0, row_items = 0, pitch = 0, channel_ld = 0, image_elems = 0;
    index_t shared_elems = 0;       // shifted_rows: W packed once per call, read by every thread
    bool weights_in_place = false;  // shifted_rows: or W's rows read in place (shared_elems = 0)
    ShiftedTiles tiles = ShiftedTiles::filters_by_pixels;  // pixels_by_filters: W^T packed, shared
    index_t pixel_panel_elems = 0;  // pixels_by_filters: the item's pixels packed in MR panels
    bool rows_in_place = false;     // filters_by_pixels: tiles per output row, stored in the output
    bool shifted_rows_declined = false;  // implicit_gemm where the shifted rows' rule took it too
};

// Which gradients a backward call computes: dx alone is a transposed convolution, dW alone is
// what a framework's separate weight-gradient function asks for.
struct ConvGrads {
    bool data = true, weight = true;
};

template <class T>
struct ConvBackwardPlan {
    const gemm::MicroKernel<T>* kern = nullptr;
    int threads = 1;
    // Weight gradient: units (image, output rows) dealt to `groups` partial sums.
    bool use_dots = false;  // dot products (weight_grad_dots.hpp) instead of the GEMM
    // Or the im2col read in place (conv_weight_taps.cpp): each group sums into a transposed
    // partial (patch x taps_ld filters, padded to whole panels), in depth blocks of
    // taps_block_rows output rows.
    bool use_taps = false;
    index_t taps_ld = 0, taps_block_rows = 0, taps_elems = 0;
    index_t taps_channel_block = 0;  // > 0: items are blocks of channels (their taps) over all units
    // Small batches: items are blocks of dW (filters x patch taps), each summed over every
    // image in order -- no partial dW copies, no reduction (a 7x7x512 layer had 7 of 9.4 MB).
    bool by_columns = false;
    index_t col_block = 0, col_items = 0, wgrad_filter_block = 0, wgrad_filter_blocks = 1;
    index_t rows_per_unit = 1, px_per_unit = 0, units_per_image = 1, units = 0, groups = 1;
    gemm::GemmPlan wgrad_gemm;  // M = filters, N = patch, K = unit pixels
    index_t dots_elems = 0;
    // dx: items (image, channel block[, output-row chunk]), each in output-row chunks through a
    // dcol scratch; chunks are items of their own (dx_row_items per block) when kh <= sh, or
    // in two waves of alternate chunks (dx_row_waves) when overlapping rows leave too few items.
    // Small planes: items of dx_images whole images, their pixels side by side as GEMM columns.
    index_t c_block = 1, c_blocks = 0, oh_chunk = 1, px_chunk = 0, dcol_elems = 0, dx_row_items = 1;
    index_t dx_images = 1;
    bool dx_row_waves = false;
    bool dx_one_pixel = false;  // one output pixel an image: W's rows read in place (data_grad_one_pixel)
    gemm::GemmPlan dx_gemm;  // M = block rows (channels x taps), N = item pixels, K = filters
    index_t dx_item_elems = 0;
    bool fused = false;              // each image's dx right after its dW, on the same thread
    // Stride 1: dx as the forward convolution of dout with W flipped and transposed (padding
    // kh - 1 - ph), which then runs on the shifted-rows path instead of GEMM + col2im.
    bool dx_as_forward = false;
    // Small planes: dx^T blocks of dx_col_block channels, each one GEMM over the batch's pixels
    // (conv_pixel_rows_dx.cpp); dx_gemm, dcol_elems and dx_item_elems are its own then.
    bool dx_pixel_rows = false;
    index_t dx_col_block = 0, dx_col_items = 0;
    index_t wgrad_thread_elems = 0;  // scratch per thread of the dW phase (with dx when fused)
    index_t dx_thread_elems = 0;     // scratch per thread of the unfused dx phase
};

// Panels (A or B: `width` = MR or NR) of dout with the batch's pixels side by side: panel line
// j = pixel j % P of image j / P, depth k = filter pc + k, i.e. dout[(j / P) * FN * P +
// (pc + k) * P + j % P]; lines [j0, j0 + count), zero past them to whole panels.
template <class T>
void pack_dout_pixels(const T* dout, index_t FN, index_t P, int width, index_t j0, index_t count, index_t pc,
                      index_t kc, Span<T> out) {
    out.need(gemm::panel_elems(count, width, kc), "pack_dout_pixels", "panels");
    for (index_t q0 = 0; q0 < count; q0 += width) {
        T* dst = out.data + (q0 / width) * kc * width;
        const index_t lines = std::min<index_t>(width, count - q0), first = j0 + q0;
        // A panel inside one image is a block of its planes: one contiguous run per filter
        // (the table's element-by-element gather was ~14 % of a pointwise dx, NOTES section 51).
        if (first / P == (first + lines - 1) / P) {
            gemm::copy_panel(dout + (first / P * FN + pc) * P + first % P, P, lines, width, kc, dst);
            continue;
        }
        const T* src[gemm::kMaxNr];
        for (index_t i = 0; i < lines; ++i) {
            const index_t j = j0 + q0 + i;
            src[i] = dout + (j / P * FN + pc) * P + j % P;
        }
        for (index_t k = 0; k < kc; ++k) {
            index_t i = 0;
            for (; i < lines; ++i) dst[k * width + i] = src[i][k * P];
            for (; i < width; ++i) dst[k * width + i] = T(0);
        }
    }
}

template <class T>
ConvForwardPlan<T> plan_conv_forward(const Conv2dParams& p, int threads);
template <class T>
ConvBackwardPlan<T> plan_conv_backward(const Conv2dParams& p, int threads, ConvGrads grads = {});

// The shifted-rows forward (conv_shifted_rows.cpp): fills the plan's shifted_rows fields and
// returns true when the algorithm can run the shape; runs a plan that chose it.
template <class T>
bool plan_shifted_rows(const Conv2dParams& p, ConvForwardPlan<T>& plan);
template <class T>
void shifted_rows_forward(const Conv2dParams& p, const ConvForwardPlan<T>& plan, const T* x, const T* w,
                          const T* bias, T* out);

// The pixel-rows dx (conv_pixel_rows_dx.cpp): fills the plan's dx fields and returns true when
// it takes the shape; runs a plan that chose it.
template <class T>
bool plan_pixel_rows_dx(const Conv2dParams& p, ConvBackwardPlan<T>& plan);
template <class T>
void pixel_rows_data_grad(const Conv2dParams& p, const ConvBackwardPlan<T>& plan, const T* dout, const T* w, T* dx);

// Sums the dcol rows of channels [c0, c0+nc) for output rows [oh0, oh0+noh) into dx planes
// (already holding earlier rows' sums). dcol row (c-c0, i, j) starts ld entries after the one
// before and holds those rows' noh*OW entries first.
template <class T>
void col2im_rows(const Conv2dParams& p, const T* dcol, index_t ld, index_t c0, index_t nc, index_t oh0, index_t noh,
                 T* dx);

// dW's units (image, `rows` output rows) and their groups.
template <class T>
void set_weight_grad_units(const Conv2dParams& p, ConvBackwardPlan<T>& plan, index_t rows);

// The in-place-taps weight gradient (conv_weight_taps.cpp): its plan fields and units (of at
// most `rows` output rows), one unit's sums into a transposed dW (its group's partial, or
// its channel block's rows), dW by channel blocks, and the partials' sum into dW (group 0's
// partial is overwritten on the way).
template <class T>
void plan_weight_taps(const Conv2dParams& p, ConvBackwardPlan<T>& plan, index_t rows);
template <class T>
void weight_taps_unit(const Conv2dParams& p, const ConvBackwardPlan<T>& plan, const T* img, const T* dout_n,
                      index_t oh0, index_t noh, index_t c0, index_t nc, T* dwt, Span<T> scratch);
template <class T>
void weight_taps_by_channels(const Conv2dParams& p, const ConvBackwardPlan<T>& plan, const T* dout, const T* x,
                             T* dw);
template <class T>
void add_transposed_partials(const Conv2dParams& p, const ConvBackwardPlan<T>& plan, T* partials, T* dw);

// The pixel-dots forward (conv_pixel_dots.cpp), the same pair of entries.
template <class T>
bool plan_pixel_dots(const Conv2dParams& p, ConvForwardPlan<T>& plan);
template <class T>
void pixel_dots_forward(const Conv2dParams& p, const ConvForwardPlan<T>& plan, const T* x, const T* w,
                        const T* bias, T* out);

// out (N, OC, OH, OW) = W (OC, C*KH*KW) x im2col(x) per image, + bias (nullable).
template <class T>
void conv2d_forward(const Conv2dParams& p, const T* x, const T* w, const T* bias, T* out);

// dx (N, C, H, W), dw (OC, C, KH, KW), db (OC) from dout (N, OC, OH, OW). A null dx skips the
// data gradient (x unread when dw is null too; w is read only for dx); a null dw skips the
// weight gradient, and db may be null with or without it.
template <class T>
void conv2d_backward(const Conv2dParams& p, const T* dout, const T* x, const T* w, T* dx, T* dw, T* db);

}  // namespace fastconv
