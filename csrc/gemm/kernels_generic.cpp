// Portable kernels, compiled with the baseline flags of the build (SSE2 on x86-64).
#include "../plane_kernels.hpp"
#include "ukr_vector.hpp"

namespace fastconv::gemm {

#if defined(FASTCONV_HAVE_VECTOR_EXT)
template <>
void append_generic_kernels<float>(std::vector<MicroKernel<float>>& out) {
    using Tile = VectorTile<float, 4, 2, 16>;
    out.push_back({"f32_gemm_4x8__generic", "generic", 4, Tile::NR, 256, 128, 2048,
                   &Tile::run, &Tile::run_b_rows, &Tile::run_b_gather});
}
template <>
void append_generic_kernels<double>(std::vector<MicroKernel<double>>& out) {
    using Tile = VectorTile<double, 4, 2, 16>;
    out.push_back({"f64_gemm_4x4__generic", "generic", 4, Tile::NR, 256, 128, 1024,
                   &Tile::run, &Tile::run_b_rows, &Tile::run_b_gather});
}
#else
template <>
void append_generic_kernels<float>(std::vector<MicroKernel<float>>& out) {
    out.push_back({"f32_gemm_4x8__scalar", "generic", 4, 8, 256, 128, 2048,
                   &ScalarTile<float, 4, 8>::run, &ScalarTile<float, 4, 8>::run_b_rows,
                   &ScalarTile<float, 4, 8>::run_b_gather});
}
template <>
void append_generic_kernels<double>(std::vector<MicroKernel<double>>& out) {
    out.push_back({"f64_gemm_4x4__scalar", "generic", 4, 4, 256, 128, 1024,
                   &ScalarTile<double, 4, 4>::run, &ScalarTile<double, 4, 4>::run_b_rows,
                   &ScalarTile<double, 4, 4>::run_b_gather});
}
#endif

#if defined(FASTCONV_HAVE_VECTOR_EXT)
template <>
double fma_burn_generic<float>(index_t iters, float* sink) { return fma_burn<float, 16, 12>(iters, sink); }
template <>
double fma_burn_generic<double>(index_t iters, double* sink) { return fma_burn<double, 16, 12>(iters, sink); }
#else
template <>
double fma_burn_generic<float>(index_t, float*) { return 0.0; }
template <>
double fma_burn_generic<double>(index_t, double*) { return 0.0; }
#endif

}  // namespace fastconv::gemm

namespace fastconv {
template <>
PlaneKernels<float> plane_kernels_generic<float>() { return make_plane_kernels<float>("generic"); }
template <>
PlaneKernels<double> plane_kernels_generic<double>() { return make_plane_kernels<double>("generic"); }
}  // namespace fastconv
