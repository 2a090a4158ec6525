// Geometry of one convolution or pooling call, filled once and passed by const&.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>

namespace fastconv {

using index_t = std::int64_t;

struct Window {
    index_t kh, kw;  // kernel / pool window
    index_t sh, sw;  // stride
    index_t ph, pw;  // padding (zero for conv, -inf for max pooling)
};

// Sizes of an NCHW input pushed through a window; `oc` is the number of filters
// (conv) or equals `c` (pooling).
struct Conv2dParams {
    index_t n, c, h, w;
    index_t oc;
    Window win;
    index_t oh, ow;

    index_t in_plane() const { return h * w; }
    index_t out_plane() const { return oh * ow; }
    index_t patch() const { return c * win.kh * win.kw; }  // im2col row length
};

// Validates the window against an h x w input and fills the output size. Refuses (before
// anything is allocated) sizes whose products do not fit in 64 bits: the input, output,
// weights and im2col matrix in bytes, and the padded plane (every intermediate product
// is checked, so none overflows on the way). Every message names the offending values.
Conv2dParams make_params(index_t n, index_t c, index_t h, index_t w, index_t oc, const Window& win);

// Largest pool window: max pooling tracks the winning tap in 32 bits.
constexpr index_t kMaxPoolTaps = 2147483647;

// Throws if `pad` exceeds half the pool window (PyTorch's rule: padding must never
// make a whole window out of padding), or the window has more than kMaxPoolTaps elements.
void check_pool_padding(const Window& win);

}  // namespace fastconv

namespace fastconv {

// Internal linkage on purpose: this header is also compiled into the per-ISA kernel files.
namespace {

// Output positions o in [0, n_out) whose input coordinate o*stride - pad + tap lies in
// [0, size), as a half-open range [lo, hi). Hoists the bounds check out of inner loops.
struct Range {
    index_t lo, hi;
};
inline Range valid_outputs(index_t n_out, index_t stride, index_t pad, index_t tap, index_t size) {
    // o*stride >= pad - tap  and  o*stride <= size - 1 + pad - tap
    const index_t first = pad - tap;
    index_t lo = first <= 0 ? 0 : (first + stride - 1) / stride;
    const index_t last = size - 1 + pad - tap;
    index_t hi = last < 0 ? 0 : last / stride + 1;
    if (hi > n_out) hi = n_out;
    if (lo > hi) lo = hi;
    return {lo, hi};
}

}  // namespace
}  // namespace fastconv
