// The portable family, compiled with the build's baseline flags (SSE2 on x86-64); scalar
// tiles where the compiler has no vector extensions. Always in the table, last.
#include "isa/fma_burn.hpp"
#include "isa/make_plane_kernels.hpp"

namespace fastconv::isa {

namespace {
// 4 rows x two 16-byte vectors: 8 float or 4 double columns.
template <class T>
constexpr int kGenericNr = 32 / int(sizeof(T));

#if defined(FASTCONV_HAVE_VECTOR_EXT)
template <class T>
constexpr int kGenericLanes = 16 / int(sizeof(T));
template <class T>
using GenericTile = gemm::VectorTile<T, 4, 2, 16>;
template <class T>
double generic_fma_burn(index_t iters, T* sink) { return fma_burn<T, 16, 12>(iters, sink); }
constexpr const char* kNames[] = {"f32_gemm_4x8__generic", "f64_gemm_4x4__generic"};
#else
template <class T>
constexpr int kGenericLanes = kGenericNr<T>;  // the scalar tile computes every column
template <class T>
using GenericTile = gemm::ScalarTile<T, 4, kGenericNr<T>>;
template <class T>
double generic_fma_burn(index_t, T*) { return 0.0; }
constexpr const char* kNames[] = {"f32_gemm_4x8__scalar", "f64_gemm_4x4__scalar"};
#endif

template <class T>
constexpr gemm::MicroKernel<T> generic_gemm(index_t nc) {
    using Tile = GenericTile<T>;
    const char* name = kNames[sizeof(T) == 4 ? 0 : 1];
    return {name, 4, kGenericNr<T>, kGenericLanes<T>, 256, 128, nc, &Tile::run, &Tile::run_b_rows, &Tile::run_b_gather};
}
constexpr gemm::MicroKernel<float> kF32Gemm[] = {generic_gemm<float>(2048)};
constexpr gemm::MicroKernel<double> kF64Gemm[] = {generic_gemm<double>(1024)};
bool cpu_has_baseline() { return true; }
constexpr Family kGeneric = {"generic", &cpu_has_baseline,
                             {{kF32Gemm, 1}, &generic_fma_burn<float>, make_plane_kernels<float>()},
                             {{kF64Gemm, 1}, &generic_fma_burn<double>, make_plane_kernels<double>()}};
}  // namespace

const Family* generic_family() { return &kGeneric; }

}  // namespace fastconv::isa
