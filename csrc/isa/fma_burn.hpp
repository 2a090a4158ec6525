// The FMA ceiling probe each family's translation unit instantiates at its vector width.
#pragma once

#include "gemm/ukr_vector.hpp"
#include "isa/isa.hpp"

namespace fastconv::isa {
#if defined(FASTCONV_HAVE_VECTOR_EXT)
// The machine's FMA ceiling for this vector width: CHAINS independent accumulators
// (enough to hide FMA latency on two pipes), no memory traffic. Returns FLOP done.
template <class T, int VBYTES, int CHAINS>
double fma_burn(index_t iters, T* sink) {
    typedef T V __attribute__((vector_size(VBYTES)));
    V acc[CHAINS];
    const V mul = V{} + T(0.999999), add = V{} + T(1e-7);
#pragma GCC unroll 32
    for (int c = 0; c < CHAINS; ++c) acc[c] = V{} + T(c);
    for (index_t it = 0; it < iters; ++it) {
#pragma GCC unroll 32
        for (int c = 0; c < CHAINS; ++c) acc[c] = acc[c] * mul + add;
    }
    V total = V{};
    for (int c = 0; c < CHAINS; ++c) total += acc[c];
    *sink = total[0];
    return 2.0 * double(iters) * CHAINS * (VBYTES / sizeof(T));
}
#endif
}  // namespace fastconv::isa
