// Compiled with -mavx512f -mfma: 512-bit vectors, 32 registers.
#include "../plane_kernels.hpp"
#include "ukr_vector.hpp"

#ifndef FASTCONV_KC32
#define FASTCONV_KC32 256
#endif
#ifndef FASTCONV_KC64
#define FASTCONV_KC64 256
#endif

namespace fastconv::gemm {

#if defined(FASTCONV_HAVE_VECTOR_EXT) && defined(__AVX512F__)
// 8 rows x 3 vectors: 24 accumulators + 3 B vectors + 1 broadcast of the 32 zmm registers.
template <>
void append_avx512_kernels<float>(std::vector<MicroKernel<float>>& out) {
    using Tile = VectorTile<float, 8, 3, 64>;
    out.push_back({"f32_gemm_8x48__avx512f", "avx512f", 8, Tile::NR, FASTCONV_KC32, 128, 3072,
                   &Tile::run, &Tile::run_b_rows, &Tile::run_b_gather});
}
template <>
void append_avx512_kernels<double>(std::vector<MicroKernel<double>>& out) {
    using Tile = VectorTile<double, 8, 3, 64>;
    out.push_back({"f64_gemm_8x24__avx512f", "avx512f", 8, Tile::NR, FASTCONV_KC64, 128, 1536,
                   &Tile::run, &Tile::run_b_rows, &Tile::run_b_gather});
}
#else
template <>
void append_avx512_kernels<float>(std::vector<MicroKernel<float>>&) {}
template <>
void append_avx512_kernels<double>(std::vector<MicroKernel<double>>&) {}
#endif

#if defined(FASTCONV_HAVE_VECTOR_EXT) && defined(__AVX512F__)
template <>
double fma_burn_avx512<float>(index_t iters, float* sink) { return fma_burn<float, 64, 24>(iters, sink); }
template <>
double fma_burn_avx512<double>(index_t iters, double* sink) { return fma_burn<double, 64, 24>(iters, sink); }
#else
template <>
double fma_burn_avx512<float>(index_t, float*) { return 0.0; }
template <>
double fma_burn_avx512<double>(index_t, double*) { return 0.0; }
#endif

}  // namespace fastconv::gemm

namespace fastconv {
#if defined(__AVX512F__)
template <>
PlaneKernels<float> plane_kernels_avx512<float>() { return make_plane_kernels<float>("avx512f"); }
template <>
PlaneKernels<double> plane_kernels_avx512<double>() { return make_plane_kernels<double>("avx512f"); }
#else
template <>
PlaneKernels<float> plane_kernels_avx512<float>() { return {}; }
template <>
PlaneKernels<double> plane_kernels_avx512<double>() { return {}; }
#endif
}  // namespace fastconv
