// The plane kernels of one ISA family, as the ISA table (csrc/isa/isa.hpp) holds them, and
// the blocking constants their callers and tests aim at. Their bodies are in
// csrc/isa/make_plane_kernels.hpp, compiled once per family with that family's flags.
#pragma once

#include <cstdint>

#include "params.hpp"

namespace fastconv {

template <class T>
struct PlaneKernels {
    // Max pooling of `planes` consecutive (n, c) planes, with each window's argmax.
    void (*max_forward)(const Conv2dParams& p, const T* in, T* out, std::int64_t* argmax, std::int64_t planes);
    void (*avg_forward)(const Conv2dParams& p, const T* in, T* out);
    // weight_grad_dots.hpp; null where the compiler has no vector extensions.
    void (*weight_grad_dots)(std::int64_t nf, std::int64_t nk, const T* d, std::int64_t ldd, const T* x,
                             const std::int64_t* offset, std::int64_t len, T* dw, std::int64_t ldw);
    // weight_grad_taps.hpp, with its tile of taps_mr taps x taps_nr filters; null as above.
    void (*weight_grad_taps)(std::int64_t nk, const std::int64_t* offset, const T* x, std::int64_t runs,
                             std::int64_t run, std::int64_t run_ld, std::int64_t step, std::int64_t panels,
                             const T* b, T* dwt, std::int64_t ldc);
    int taps_mr, taps_nr;
    // ReLU with the book's byte mask (x <= 0): per ISA because the byte <-> lane conversions
    // only vectorise with AVX-512's mask registers (the baseline loops run ~10x slower).
    void (*relu_mask_forward)(std::int64_t n, const T* x, T* y, bool* mask);
    void (*relu_mask_backward)(std::int64_t n, const T* dout, const bool* mask, T* dx);  // dx may be dout
    // out[r] = a's row r (stride lda) . b for r < rows, each sum in a fixed order, the same
    // under every family (kDotLanes running lanes, then a tree): one-pixel convolution layers.
    void (*dots)(std::int64_t rows, std::int64_t n, const T* a, std::int64_t lda, const T* b, T* out);
};

// Running lanes of PlaneKernels::dots, four 512-bit vectors of T (64 floats, 32 doubles): the
// FMA latency does not bound dots that stream W from DRAM (a 512x7x7 -> 1x1 layer's 51 MB),
// and four rows' sums still fit AVX-512's 32 registers.
template <class T>
constexpr int kDotLanes = 256 / int(sizeof(T));

// Readable zero-filled elements weight_grad_dots needs past `len` (its widest vector).
constexpr std::int64_t kDotsPad = 16;
// Pooling blocks: outputs per max-pooling row sweep (its tap numbers live on the stack), and
// the largest window (taps per side, taps in all) whose lookup tables live on the stack.
constexpr std::int64_t kPoolRowBlock = 256;
constexpr std::int64_t kWindowTableMax = 64;
// Max pooling rows of fewer outputs than kPoolNarrowRow take max_forward_narrow, kPoolGroup
// outputs at a time, float rows longer than that kPoolGroupWide (measured on Zen 3: groups of
// 4 won up to 27 outputs, the sweep at 56; on Zen 5 groups of 8 floats, NOTES section 44).
constexpr std::int64_t kPoolNarrowRow = 32;
constexpr int kPoolGroup = 4;
constexpr int kPoolGroupWide = 8;
// Largest side-padded plane (elements) max_forward_narrow copies to its stack.
constexpr std::int64_t kNarrowPlaneMax = 8192;
// AVX-512's max_forward_row_vector: rows of at most one vector of outputs (64 bytes: 16 floats,
// 8 doubles) whose windows span at most two vectors of input columns.
constexpr std::int64_t kRowVectorBytes = 64;

}  // namespace fastconv
