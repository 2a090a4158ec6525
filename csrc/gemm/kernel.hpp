// GEMM micro-kernels: their descriptors and the cache sizes that block them (the table of
// kernels and the selection are the ISA table's, csrc/isa/isa.hpp).
//
// A micro-kernel computes one MR x NR tile of C from packed panels (BLIS terms):
//   acc[i][j] = sum_{p < k} a[p*MR + i] * b[p*NR + j]
//   C[i][j]   = (accumulate ? C[i][j] : 0) + acc[i][j] + (bias ? bias[i] : 0)   for i < m, j < n
// `a` and `b` are 64-byte aligned and zero-padded to full MR / NR; C is row-major
// with row stride ldc and may be any alignment; m <= MR and n <= NR mark edge tiles.
#pragma once

#include <cstdint>

namespace fastconv::gemm {

using index_t = std::int64_t;

// Widest NR and tallest MR any kernel may have: packers keep per-column tables of NR entries
// on the stack, and a C tile split across images is computed in an MR x NR stack tile.
constexpr int kMaxNr = 64;
constexpr int kMaxMr = 16;

template <class T>
using MicroKernelFn = void (*)(index_t k, const T* a, const T* b, T* c, index_t ldc, int m, int n,
                               bool accumulate, const T* bias);
// The same tile with B read in place: element (p, j) at b[p*ldb + j], any alignment, all NR
// columns readable (callers pack partial panels instead).
template <class T>
using MicroKernelRowsFn = void (*)(index_t k, const T* a, const T* b, index_t ldb, T* c, index_t ldc, int m,
                                   int n, bool accumulate, const T* bias);
// The same tile with B row p at b_rows[p] + col (any alignment, all NR columns readable): the
// rows of a K that spans several shifted copies of one image, so one call covers every tap.
// lda == 0: `a` is a packed panel; lda > 0: A's rows i < m are read in place at a + i*lda
// (batch-1 layers use each weight once per pixel panel: packing them would cost more).
template <class T>
using MicroKernelGatherFn = void (*)(index_t k, const T* a, index_t lda, const T* const* b_rows, index_t col, T* c,
                                     index_t ldc, int m, int n, bool accumulate, const T* bias);

template <class T>
struct MicroKernel {
    const char* name;  // e.g. "f32_gemm_8x48__avx512f"; its family is the ISA table's entry
    int mr, nr;
    // Columns of one vector: an edge tile of n columns costs ceil(n / lanes) vectors' FMAs.
    int lanes;
    // Cache blocking: a KC x NR panel of B stays in L1 across the MR loop, an MC x KC
    // block of A in L2, a KC x NC block of B in L3.
    index_t kc, mc, nc;
    MicroKernelFn<T> run;
    MicroKernelRowsFn<T> run_b_rows;
    MicroKernelGatherFn<T> run_b_gather;
};

// Data cache sizes of the CPU this process runs on (Linux sysfs, else sysconf), and the
// sizes blocking uses: those, or 32 KiB / 512 KiB / 8 MiB where unknown.
struct CacheSizes {
    index_t l1d = 0, l2 = 0, l3 = 0;
    bool detected = false;
};
const CacheSizes& cache_sizes();

}  // namespace fastconv::gemm
