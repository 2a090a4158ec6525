// Dense (fully connected) layers on fastconv's own GEMM: the book's Affine without NumPy's BLAS.
#pragma once

#include "scratch.hpp"

namespace fastconv {

// A matrix operand of a product: element (i, p) at data[i*ld + p], or at data[p*ld + i] when
// transposed (the packers read a transposed view of a C-contiguous array directly: no copy).
template <class T>
struct MatrixRef {
    const T* data;
    index_t ld;
    bool transposed = false;
};

// C (M x N, row stride N) = (accumulate ? C : 0) + A (M x K) . B (K x N), split into blocks of
// rows and columns across threads. scratch_elems < 0: each thread's scratch as planned
// (tests pass a smaller count to see the checks refuse it).
template <class T>
void gemm_parallel(index_t M, index_t N, index_t K, MatrixRef<T> a, MatrixRef<T> b, Span<T> c, bool accumulate,
                   index_t scratch_elems = -1);

// out (N x H) = x (N x D) . W (D x H) + b.
template <class T>
void affine_forward(index_t N, index_t D, index_t H, const T* x, const T* w, const T* b, T* out);

// dx (N x D) = dout . W^T, dW (D x H) = x^T . dout, db (H) = column sums of dout.
template <class T>
void affine_backward(index_t N, index_t D, index_t H, const T* dout, const T* x, const T* w, T* dx, T* dw, T* db);

}  // namespace fastconv
