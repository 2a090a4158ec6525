#include "parallel.hpp"

#include <algorithm>

namespace fastconv {
namespace {
int initial_threads() {
#if defined(_OPENMP)
    return std::max(1, omp_get_max_threads());  // honours OMP_NUM_THREADS
#else
    return 1;
#endif
}
std::atomic<int> g_threads{initial_threads()};
}  // namespace

int num_threads() { return g_threads.load(std::memory_order_relaxed); }
void set_num_threads(int n) { g_threads.store(std::max(1, n), std::memory_order_relaxed); }
bool openmp_enabled() {
#if defined(_OPENMP)
    return true;
#else
    return false;
#endif
}

}  // namespace fastconv
