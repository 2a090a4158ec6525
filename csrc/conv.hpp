// GEMM-based 2-D convolution (NCHW), forward and backward, without a full im2col matrix:
// the GEMM packs its B panels straight from the image (implicit im2col).
#pragma once

#include "params.hpp"

namespace fastconv {

// out (N, OC, OH, OW) = W (OC, C*KH*KW) x im2col(x) per image, + bias (nullable).
template <class T>
void conv2d_forward(const Conv2dParams& p, const T* x, const T* w, const T* bias, T* out);

// dx (N, C, H, W), dw (OC, C, KH, KW), db (OC) from dout (N, OC, OH, OW).
template <class T>
void conv2d_backward(const Conv2dParams& p, const T* dout, const T* x, const T* w, T* dx, T* dw, T* db);

}  // namespace fastconv
