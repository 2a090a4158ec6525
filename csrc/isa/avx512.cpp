// The AVX-512 family, compiled with -mavx512f -mavx512vl -mfma: 512-bit vectors, 32 registers.
#include "isa/fma_burn.hpp"
#include "isa/make_plane_kernels.hpp"

#ifndef FASTCONV_KC32
#define FASTCONV_KC32 256
#endif
#ifndef FASTCONV_KC64
#define FASTCONV_KC64 256
#endif

namespace fastconv::isa {

#if defined(FASTCONV_HAVE_VECTOR_EXT) && defined(__AVX512F__)
namespace {
// 8 rows x 3 vectors: 24 accumulators + 3 B vectors + 1 broadcast of the 32 zmm registers.
template <class T>
using Tile = gemm::VectorTile<T, 8, 3, 64>;
template <class T>
constexpr gemm::MicroKernel<T> avx512_gemm(const char* name, index_t kc, index_t nc) {
    return {name, 8, Tile<T>::NR, Tile<T>::L, kc, 128, nc, &Tile<T>::run, &Tile<T>::run_b_rows, &Tile<T>::run_b_gather};
}
constexpr gemm::MicroKernel<float> kF32Gemm[] = {avx512_gemm<float>("f32_gemm_8x48__avx512f", FASTCONV_KC32, 3072)};
constexpr gemm::MicroKernel<double> kF64Gemm[] = {avx512_gemm<double>("f64_gemm_8x24__avx512f", FASTCONV_KC64, 1536)};
bool cpu_has_avx512() { return __builtin_cpu_supports("avx512f"); }
constexpr Family kAvx512 = {"avx512f", &cpu_has_avx512,
                            {{kF32Gemm, 1}, &fma_burn<float, 64, 24>, make_plane_kernels<float>()},
                            {{kF64Gemm, 1}, &fma_burn<double, 64, 24>, make_plane_kernels<double>()}};
}  // namespace

const Family* avx512_family() { return &kAvx512; }
#else
const Family* avx512_family() { return nullptr; }
#endif

}  // namespace fastconv::isa
