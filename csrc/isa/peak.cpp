#include <algorithm>
#include <chrono>
#include <vector>

#include "isa/isa.hpp"
#include "parallel.hpp"

namespace fastconv::isa {

template <class T>
double measure_fma_peak(double seconds, int threads) {
    const auto burn = active().kernels<T>().fma_burn;
    threads = std::max(1, threads);
    std::vector<T> sinks(static_cast<std::size_t>(threads) * 16);
    // Calibrate the step count on one thread, then time all threads together.
    index_t iters = 1 << 16;
    for (;;) {
        const auto t0 = std::chrono::steady_clock::now();
        burn(iters, sinks.data());
        const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        if (dt > 0.02 || iters > (index_t(1) << 40)) {
            iters = std::max<index_t>(1, index_t(double(iters) * seconds / dt));
            break;
        }
        iters *= 4;
    }
    double flop = 0;
    const auto t0 = std::chrono::steady_clock::now();
#if defined(_OPENMP)
#pragma omp parallel num_threads(threads) reduction(+ : flop)
    flop += burn(iters, sinks.data() + 16 * omp_get_thread_num());
#else
    flop = burn(iters, sinks.data());
#endif
    const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    return flop / dt * 1e-9;
}

template double measure_fma_peak<float>(double, int);
template double measure_fma_peak<double>(double, int);

}  // namespace fastconv::isa
