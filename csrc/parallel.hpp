// The one place that touches OpenMP, so the library still builds (serially) without it.
#pragma once

#include <atomic>
#include <cstdint>
#include <exception>
#include <mutex>
#include <utility>

#if defined(_OPENMP)
#include <omp.h>
#endif
#if defined(__SSE2__) || defined(_M_X64)
#include <xmmintrin.h>
#define FASTCONV_HAVE_MXCSR 1
#endif

namespace fastconv {

// Thread count for every parallel region: fastconv's setting (shared by all calling Python
// threads), capped by the calling thread's OpenMP limit (OMP_NUM_THREADS, threadpoolctl).
int num_threads();
void set_num_threads(int n);
bool openmp_enabled();

// The address of a callback with OpenBLAS's openblas_threads_callback signature that runs
// OpenBLAS's parallel regions on fastconv's OpenMP team, and how many regions it has run.
std::uintptr_t blas_threads_callback_address();
std::int64_t blas_regions_run();

#if defined(_OPENMP)
inline int thread_index() { return omp_get_thread_num(); }
#else
inline int thread_index() { return 0; }
#endif

// Chunks of about 1/8 of a thread's share (see parallel_for).
inline std::int64_t dynamic_chunk(std::int64_t n_items, int threads) {
    const std::int64_t chunk = n_items / (8 * std::int64_t(threads));
    return chunk < 1 ? 1 : chunk;
}

// Flush-to-zero and denormals-are-zero for the lifetime of the guard, on the calling thread
// only, restored afterwards: subnormal operands would otherwise slow the FMA kernels many
// times over. Used by arithmetic kernels (GEMM, sums), never by pure copies or compares,
// whose results must stay exact.
class FlushDenormals {
   public:
#if defined(FASTCONV_HAVE_MXCSR)
    FlushDenormals() : saved_(_mm_getcsr()) { _mm_setcsr(saved_ | 0x8040u); }  // FTZ | DAZ
    ~FlushDenormals() { _mm_setcsr(saved_); }

   private:
    unsigned saved_;
#else
    FlushDenormals() = default;  // no MXCSR (e.g. arm64): nothing to flush
#endif
   public:
    FlushDenormals(const FlushDenormals&) = delete;
    FlushDenormals& operator=(const FlushDenormals&) = delete;
};

// An exception thrown by a body inside a parallel region would call std::terminate: the first
// one is kept, the remaining items are skipped, and it is rethrown on the calling thread.
class FirstError {
   public:
    template <class Body>
    void run(Body& body, std::int64_t item) {
        if (failed_.load(std::memory_order_relaxed)) return;
        try {
            body(item);
        } catch (...) {
            std::lock_guard<std::mutex> lock(mutex_);
            if (!error_) error_ = std::current_exception();
            failed_.store(true, std::memory_order_relaxed);
        }
    }
    void rethrow() {
        if (error_) std::rethrow_exception(error_);
    }

   private:
    std::atomic<bool> failed_{false};
    std::mutex mutex_;
    std::exception_ptr error_;
};

// Runs body(item) for item in [0, n_items). Items go to threads dynamically, in chunks of
// about 1/8 of a thread's share: on a shared machine a thread whose core is busy takes fewer
// items instead of holding everyone up at the join. Results never depend on which thread ran
// an item (bodies write disjoint outputs or per-item/per-group partials, reduced in a fixed
// order), so they are the same for any thread count and schedule.
// `serial_below` items or fewer run on the calling thread: a fork/join costs microseconds.
// `threads` (0: num_threads()) must be the count per-thread scratch was sized for: another
// Python thread may call set_num_threads in between, and thread_index() must stay below it.
// ThreadGuard is constructed once on every participating thread, around its share of items.
struct NoThreadGuard {};

template <class ThreadGuard = NoThreadGuard, class Body>
void parallel_for(std::int64_t n_items, Body&& body, std::int64_t serial_below = 1, int threads = 0) {
#if defined(_OPENMP)
    if (threads <= 0) threads = num_threads();
    if (threads > 1 && n_items > serial_below) {
        const std::int64_t chunk = dynamic_chunk(n_items, threads);
        FirstError error;
#pragma omp parallel num_threads(threads)
        {
            [[maybe_unused]] ThreadGuard guard;
#pragma omp for schedule(dynamic, chunk)
            for (std::int64_t item = 0; item < n_items; ++item) error.run(body, item);
        }
        error.rethrow();
        return;
    }
#endif
    (void)threads;
    [[maybe_unused]] ThreadGuard guard;
    for (std::int64_t item = 0; item < n_items; ++item) body(item);
}

// parallel_for with subnormals flushed to zero on every participating thread.
template <class Body>
void parallel_for_flush(std::int64_t n_items, Body&& body, std::int64_t serial_below = 1, int threads = 0) {
    parallel_for<FlushDenormals>(n_items, std::forward<Body>(body), serial_below, threads);
}

// Below this much work a fork/join costs more than a second thread saves: ~10 us on an idle
// machine, but a scheduler tick (milliseconds) when other processes hold the cores -- LeNet-5's
// c5 backward at batch 1 (0.2 MFLOP) took 2.1 ms on 2 threads under load, NumPy 0.4 ms
// (benchmarks/NOTES.md section 36).
constexpr double kSerialFlop = 1e6;
inline int threads_for_flop(double flop, int threads) { return flop < kSerialFlop ? 1 : threads; }

// Threads that parallel_for would use for n_items; sizes per-thread scratch.
inline int threads_for(std::int64_t n_items) {
    const int t = num_threads();
    return n_items < t ? static_cast<int>(n_items < 1 ? 1 : n_items) : t;
}

}  // namespace fastconv
