#include "parallel.hpp"

#include "gemm/driver.hpp"

#include <algorithm>
#if defined(__unix__) || defined(__APPLE__)
#include <pthread.h>
#endif

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

// After fork() only the forking thread exists in the child, but GNU libgomp still believes its
// thread pool does: the child's first parallel region would wait for it forever. The child runs
// every kernel on its calling thread instead (never entering an OpenMP region).
std::atomic<bool> g_forked_child{false};
#if defined(__unix__) || defined(__APPLE__)
void mark_forked_child() { g_forked_child.store(true, std::memory_order_relaxed); }
const int g_atfork_registered = pthread_atfork(nullptr, nullptr, &mark_forked_child);
#endif
}  // namespace

// The smaller of fastconv's own setting and the calling thread's OpenMP limit, so that
// threadpoolctl.threadpool_limits (which calls omp_set_num_threads) also limits fastconv.
int num_threads() {
    if (g_forked_child.load(std::memory_order_relaxed)) return 1;
    const int mine = g_threads.load(std::memory_order_relaxed);
#if defined(_OPENMP)
    return std::max(1, std::min(mine, omp_get_max_threads()));
#else
    return mine;
#endif
}
void set_num_threads(int n) {
    n = std::max(1, n);
    g_threads.store(n, std::memory_order_relaxed);
#if defined(_OPENMP)
    omp_set_num_threads(n);  // the calling thread's limit, which num_threads() also reads
#endif
}
bool openmp_enabled() {
#if defined(_OPENMP)
    return true;
#else
    return false;
#endif
}

namespace {
std::atomic<bool> g_debug_poison{false};
}
void set_debug_poison(bool on) { g_debug_poison.store(on); }
bool debug_poison() { return g_debug_poison.load(std::memory_order_relaxed); }

namespace gemm {
namespace {
std::atomic<std::int64_t> g_scratch_now{0}, g_scratch_peak{0};
}
void ScratchStats::add(std::int64_t bytes) {
    const std::int64_t now = g_scratch_now.fetch_add(bytes) + bytes;
    std::int64_t peak = g_scratch_peak.load();
    while (now > peak && !g_scratch_peak.compare_exchange_weak(peak, now)) {
    }
}
std::int64_t ScratchStats::current() { return g_scratch_now.load(); }
std::int64_t ScratchStats::peak() { return g_scratch_peak.load(); }
void ScratchStats::reset_peak() { g_scratch_peak.store(g_scratch_now.load()); }
}  // namespace gemm

}  // namespace fastconv
