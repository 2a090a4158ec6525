// im2col / col2im in the layout of the book "Deep Learning from Scratch":
// col has shape (N*OH*OW, C*KH*KW), rows ordered (n, oh, ow), columns (c, kh, kw).
#pragma once

#include "params.hpp"

namespace fastconv {

template <class T>
void im2col(const Conv2dParams& p, const T* __restrict x, T* __restrict col);

// Zeroes `x`, then sums every column entry back into its pixel.
template <class T>
void col2im(const Conv2dParams& p, const T* __restrict col, T* __restrict x);

}  // namespace fastconv
