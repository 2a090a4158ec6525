// The AVX2 family, compiled with -mavx2 -mfma: 256-bit vectors, 16 registers.
#include "isa/fma_burn.hpp"
#include "isa/make_plane_kernels.hpp"

namespace fastconv::isa {

#if defined(FASTCONV_HAVE_VECTOR_EXT) && defined(__AVX2__)
namespace {
// 6 rows x 2 vectors: 12 accumulators + 2 B vectors + 1 broadcast of the 16 ymm registers.
template <class T>
Kernels<T> avx2_kernels(const char* gemm_name, index_t nc) {
    using Tile = gemm::VectorTile<T, 6, 2, 32>;
    return {{{gemm_name, 6, Tile::NR, Tile::L, 256, 120, nc, &Tile::run, &Tile::run_b_rows, &Tile::run_b_gather}},
            &fma_burn<T, 32, 12>,
            make_plane_kernels<T>()};
}
bool cpu_has_avx2() { return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"); }
}  // namespace

void append_avx2(std::vector<Family>& table) {
    table.push_back({"avx2", &cpu_has_avx2, avx2_kernels<float>("f32_gemm_6x16__avx2", 3072),
                     avx2_kernels<double>("f64_gemm_6x8__avx2", 1536)});
}
#else
void append_avx2(std::vector<Family>&) {}
#endif

}  // namespace fastconv::isa
