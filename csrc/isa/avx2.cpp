// The AVX2 family, compiled with -mavx2 -mfma: 256-bit vectors, 16 registers.
#include "isa/fma_burn.hpp"
#include "isa/make_plane_kernels.hpp"

namespace fastconv::isa {

#if defined(FASTCONV_HAVE_VECTOR_EXT) && defined(__AVX2__)
namespace {
// 6 rows x 2 vectors: 12 accumulators + 2 B vectors + 1 broadcast of the 16 ymm registers.
template <class T>
using Tile = gemm::VectorTile<T, 6, 2, 32>;
template <class T>
constexpr gemm::MicroKernel<T> avx2_gemm(const char* name, index_t nc) {
    return {name, 6, Tile<T>::NR, Tile<T>::L, 256, 120, nc, &Tile<T>::run, &Tile<T>::run_b_rows, &Tile<T>::run_b_gather};
}
constexpr gemm::MicroKernel<float> kF32Gemm[] = {avx2_gemm<float>("f32_gemm_6x16__avx2", 3072)};
constexpr gemm::MicroKernel<double> kF64Gemm[] = {avx2_gemm<double>("f64_gemm_6x8__avx2", 1536)};
bool cpu_has_avx2() { return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"); }
constexpr Family kAvx2 = {"avx2", &cpu_has_avx2,
                          {{kF32Gemm, 1}, &fma_burn<float, 32, 12>, make_plane_kernels<float>()},
                          {{kF64Gemm, 1}, &fma_burn<double, 32, 12>, make_plane_kernels<double>()}};
}  // namespace

const Family* avx2_family() { return &kAvx2; }
#else
const Family* avx2_family() { return nullptr; }
#endif

}  // namespace fastconv::isa
