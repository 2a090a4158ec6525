// Max and average pooling over NCHW planes, one pass over the input, no im2col.
#pragma once

#include <cstdint>

#include "params.hpp"

namespace fastconv {

// Padding never wins a max: windows are clipped to the input -- unless `pad_value` is given
// (DeZero's and the book's im2col pad with 0): then padded pixels hold that value, and a window
// whose max is padding gets argmax -1. NaN wins (and propagates); ties go to the first maximum
// in row-major window order. `argmax` gets h*W + w.
template <class T>
void max_pool2d_forward(const Conv2dParams& p, const T* x, T* out, std::int64_t* argmax,
                        const T* pad_value = nullptr);

// Zeroes dx, then adds each dout to its argmax pixel; argmax -1 (padding won) adds nothing.
// Returns false (and stops) if an index lies outside its plane.
template <class T>
bool max_pool2d_backward(const Conv2dParams& p, const T* dout, const std::int64_t* argmax, T* dx);

// Zero padding counts in the divisor (KH*KW), as PyTorch's count_include_pad=True.
template <class T>
void avg_pool2d_forward(const Conv2dParams& p, const T* x, T* out);
template <class T>
void avg_pool2d_backward(const Conv2dParams& p, const T* dout, T* dx);

// The book's Relu: y = x where x > 0, else 0 (NaN passes); dx = dout where x > 0 (or NaN).
// `mask` (may be null) receives the book's Relu.mask, x <= 0; backward from it reads one
// byte per element instead of x. dx may be dout.
template <class T>
void relu_forward(index_t n, const T* x, T* y, bool* mask);
template <class T>
void relu_backward(index_t n, const T* dout, const T* x, T* dx);
template <class T>
void relu_backward_mask(index_t n, const T* dout, const bool* mask, T* dx);

}  // namespace fastconv
