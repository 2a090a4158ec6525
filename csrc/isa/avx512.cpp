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
Kernels<T> avx512_kernels(const char* gemm_name, index_t kc, index_t nc) {
    using Tile = gemm::VectorTile<T, 8, 3, 64>;
    return {{{gemm_name, 8, Tile::NR, Tile::L, kc, 128, nc, &Tile::run, &Tile::run_b_rows, &Tile::run_b_gather}},
            &fma_burn<T, 64, 24>,
            make_plane_kernels<T>()};
}
bool cpu_has_avx512() { return __builtin_cpu_supports("avx512f"); }
}  // namespace

void append_avx512(std::vector<Family>& table) {
    table.push_back({"avx512f", &cpu_has_avx512, avx512_kernels<float>("f32_gemm_8x48__avx512f", FASTCONV_KC32, 3072),
                     avx512_kernels<double>("f64_gemm_8x24__avx512f", FASTCONV_KC64, 1536)});
}
#else
void append_avx512(std::vector<Family>&) {}
#endif

}  // namespace fastconv::isa
