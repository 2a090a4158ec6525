#include "parallel.hpp"

#include "gemm/driver.hpp"

#include <algorithm>
#include <cstddef>
#include <mutex>
#include <thread>
#include <vector>
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

// --- OpenBLAS's parallel regions on fastconv's OpenMP team ---------------------------------
// OpenBLAS (>= 0.3.27) lets its caller run the jobs of each parallel region
// (openblas_set_threads_callback_function); fastconv/_blas.py installs this callback there.
// NumPy's BLAS calls then run on the OpenMP team fastconv's kernels use, and no OpenBLAS
// thread is left spinning on a core the next fastconv call needs, whatever the import order
// (benchmarks/NOTES.md, section 33).
namespace {
using BlasDoJob = void (*)(int thread_num, void* jobdata, int dojob_data);
std::atomic<std::int64_t> g_blas_regions{0};

void run_blas_job(BlasDoJob dojob, int job, std::size_t elsize, void* jobdata, int dojob_data) {
    dojob(job, static_cast<char*>(jobdata) + std::size_t(job) * elsize, dojob_data);
}

// Jobs [first, numjobs) on plain threads, job `mine` on the calling one.
void run_blas_jobs_on_threads(BlasDoJob dojob, int mine, int first, int numjobs, std::size_t elsize, void* jobdata,
                              int dojob_data) {
    std::vector<std::thread> extra;
    for (int job = first; job < numjobs; ++job)
        extra.emplace_back(run_blas_job, dojob, job, elsize, jobdata, dojob_data);
    run_blas_job(dojob, mine, elsize, jobdata, dojob_data);
    for (auto& t : extra) t.join();
}
}  // namespace

// OpenBLAS's level-3 jobs wait on each other's progress flags, so all `numjobs` must run at
// once: a team smaller than asked for (nested region, OMP_THREAD_LIMIT) gets the missing jobs
// on plain threads, and so does a forked child, which must not enter an OpenMP region.
// `sync` is 1 in every release with the hook (exec_blas waits for the region).
// One region at a time: OpenBLAS's pthreads build gives job t of every region the same work
// buffer (blas_thread_buffer[t]), which its own pool never hands to two callers at once.
extern "C" void fastconv_blas_threads_callback(int /*sync*/, BlasDoJob dojob, int numjobs, std::size_t elsize,
                                                void* jobdata, int dojob_data) {
    static std::mutex one_region;
    const std::lock_guard<std::mutex> lock(one_region);
    g_blas_regions.fetch_add(1, std::memory_order_relaxed);
    if (numjobs <= 1 || g_forked_child.load(std::memory_order_relaxed)) {
        if (numjobs >= 1) run_blas_jobs_on_threads(dojob, 0, 1, numjobs, elsize, jobdata, dojob_data);
        return;
    }
#if defined(_OPENMP)
#pragma omp parallel num_threads(numjobs)
    {
        const int team = omp_get_num_threads(), me = omp_get_thread_num();
        run_blas_jobs_on_threads(dojob, me, me == 0 ? team : numjobs, numjobs, elsize, jobdata, dojob_data);
    }
#else
    run_blas_jobs_on_threads(dojob, 0, 1, numjobs, elsize, jobdata, dojob_data);
#endif
}

std::uintptr_t blas_threads_callback_address() {
    return reinterpret_cast<std::uintptr_t>(&fastconv_blas_threads_callback);
}
std::int64_t blas_regions_run() { return g_blas_regions.load(std::memory_order_relaxed); }

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
