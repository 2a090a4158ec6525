// GEMM-based 2-D convolution (NCHW), forward and backward, without a full im2col matrix:
// the GEMM packs its B panels straight from the image (implicit im2col).
//
// Plan, then execute (oneDNN's init_conf / execute split): each entry first builds one plan
// from the shape -- layout, block sizes, work items, the GEMM plans and the scratch each thread
// books -- and execution only reads it. Tests read the plans (conv2d_plan in Python) to check
// that their shapes cross every block.
#pragma once

#include "gemm/driver.hpp"
#include "params.hpp"

namespace fastconv {

enum class ForwardLayout {
    image_tiles,   // items (image, pixel chunk): the GEMM writes straight into NCHW
    batch_chunks,  // items = chunks of the whole batch's pixels, copied into their images
};

template <class T>
struct ConvForwardPlan {
    const gemm::MicroKernel<T>* kern = nullptr;
    int threads = 1;
    ForwardLayout layout = ForwardLayout::image_tiles;
    index_t chunk = 1;      // output pixels per item (the GEMM's N)
    index_t per_image = 1;  // items per image (image_tiles)
    index_t items = 0;
    index_t c_block_elems = 0;  // batch_chunks: the item's output block
    gemm::GemmPlan gemm;        // M = filters, N = chunk, K = patch
    index_t thread_elems = 0;   // scratch per thread
};

template <class T>
struct ConvBackwardPlan {
    const gemm::MicroKernel<T>* kern = nullptr;
    int threads = 1;
    // Weight gradient: units (image, output rows) dealt to `groups` partial sums.
    bool use_dots = false;  // dot products (weight_grad_dots.hpp) instead of the GEMM
    // Small batches: items are blocks of dW's columns (patch taps), each summed over every
    // image in order -- no partial dW copies, no reduction (a 7x7x512 layer had 7 of 9.4 MB).
    bool by_columns = false;
    index_t col_block = 0, col_items = 0;
    index_t rows_per_unit = 1, px_per_unit = 0, units_per_image = 1, units = 0, groups = 1;
    gemm::GemmPlan wgrad_gemm;  // M = filters, N = patch, K = unit pixels
    index_t dots_elems = 0;
    // dx: items (image, channel block), each in output-row chunks through a dcol scratch.
    index_t c_block = 1, c_blocks = 0, oh_chunk = 1, px_chunk = 0, dcol_elems = 0;
    gemm::GemmPlan dx_gemm;  // M = block rows (channels x taps), N = chunk pixels, K = filters
    index_t dx_item_elems = 0;
    bool fused = false;              // each image's dx right after its dW, on the same thread
    index_t wgrad_thread_elems = 0;  // scratch per thread of the dW phase (with dx when fused)
    index_t dx_thread_elems = 0;     // scratch per thread of the unfused dx phase
};

template <class T>
ConvForwardPlan<T> plan_conv_forward(const Conv2dParams& p, int threads);
template <class T>
ConvBackwardPlan<T> plan_conv_backward(const Conv2dParams& p, int threads);

// out (N, OC, OH, OW) = W (OC, C*KH*KW) x im2col(x) per image, + bias (nullable).
template <class T>
void conv2d_forward(const Conv2dParams& p, const T* x, const T* w, const T* bias, T* out);

// dx (N, C, H, W), dw (OC, C, KH, KW), db (OC) from dout (N, OC, OH, OW).
template <class T>
void conv2d_backward(const Conv2dParams& p, const T* dout, const T* x, const T* w, T* dx, T* dw, T* db);

}  // namespace fastconv
