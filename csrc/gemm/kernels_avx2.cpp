// Compiled with -mavx2 -mfma: 256-bit vectors, 16 registers.
#include "../plane_kernels.hpp"
#include "ukr_vector.hpp"

namespace fastconv::gemm {

#if defined(FASTCONV_HAVE_VECTOR_EXT) && defined(__AVX2__)
// 6 rows x 2 vectors: 12 accumulators + 2 B vectors + 1 broadcast of the 16 ymm registers.
template <>
void append_avx2_kernels<float>(std::vector<MicroKernel<float>>& out) {
    using Tile = VectorTile<float, 6, 2, 32>;
    out.push_back({"f32_gemm_6x16__avx2", "avx2", 6, Tile::NR, 256, 120, 3072,
                   &Tile::run, &Tile::run_b_rows, &Tile::run_b_gather});
}
template <>
void append_avx2_kernels<double>(std::vector<MicroKernel<double>>& out) {
    using Tile = VectorTile<double, 6, 2, 32>;
    out.push_back({"f64_gemm_6x8__avx2", "avx2", 6, Tile::NR, 256, 120, 1536,
                   &Tile::run, &Tile::run_b_rows, &Tile::run_b_gather});
}
#else
template <>
void append_avx2_kernels<float>(std::vector<MicroKernel<float>>&) {}
template <>
void append_avx2_kernels<double>(std::vector<MicroKernel<double>>&) {}
#endif

#if defined(FASTCONV_HAVE_VECTOR_EXT) && defined(__AVX2__)
template <>
double fma_burn_avx2<float>(index_t iters, float* sink) { return fma_burn<float, 32, 12>(iters, sink); }
template <>
double fma_burn_avx2<double>(index_t iters, double* sink) { return fma_burn<double, 32, 12>(iters, sink); }
#else
template <>
double fma_burn_avx2<float>(index_t, float*) { return 0.0; }
template <>
double fma_burn_avx2<double>(index_t, double*) { return 0.0; }
#endif

}  // namespace fastconv::gemm

namespace fastconv {
#if defined(__AVX2__)
template <>
PlaneKernels<float> plane_kernels_avx2<float>() { return make_plane_kernels<float>("avx2"); }
template <>
PlaneKernels<double> plane_kernels_avx2<double>() { return make_plane_kernels<double>("avx2"); }
#else
template <>
PlaneKernels<float> plane_kernels_avx2<float>() { return {}; }
template <>
PlaneKernels<double> plane_kernels_avx2<double>() { return {}; }
#endif
}  // namespace fastconv
