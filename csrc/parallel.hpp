// The one place that touches OpenMP, so the library still builds (serially) without it.
#pragma once

#include <atomic>
#include <cstdint>

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

#if defined(_OPENMP)
inline int thread_index() { return omp_get_thread_num(); }
#else
inline int thread_index() { return 0; }
#endif

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
#endif
   public:
    FlushDenormals(const FlushDenormals&) = delete;
    FlushDenormals& operator=(const FlushDenormals&) = delete;
};

// Runs body(item) for item in [0, n_items), items split statically across the threads
// (static split: the item -> thread map, and so every result, depends only on n_items).
// `serial_below` items or fewer run on the calling thread: a fork/join costs microseconds.
template <class Body>
void parallel_for(std::int64_t n_items, Body&& body, std::int64_t serial_below = 1) {
#if defined(_OPENMP)
    const int threads = num_threads();
    if (threads > 1 && n_items > serial_below) {
#pragma omp parallel for schedule(static) num_threads(threads)
        for (std::int64_t item = 0; item < n_items; ++item) body(item);
        return;
    }
#endif
    for (std::int64_t item = 0; item < n_items; ++item) body(item);
}

// parallel_for with subnormals flushed to zero on every participating thread.
template <class Body>
void parallel_for_flush(std::int64_t n_items, Body&& body, std::int64_t serial_below = 1) {
#if defined(_OPENMP)
    const int threads = num_threads();
    if (threads > 1 && n_items > serial_below) {
#pragma omp parallel num_threads(threads)
        {
            FlushDenormals guard;
#pragma omp for schedule(static)
            for (std::int64_t item = 0; item < n_items; ++item) body(item);
        }
        return;
    }
#endif
    FlushDenormals guard;
    for (std::int64_t item = 0; item < n_items; ++item) body(item);
}

// Threads that parallel_for would use for n_items; sizes per-thread scratch.
inline int threads_for(std::int64_t n_items) {
    const int t = num_threads();
    return n_items < t ? static_cast<int>(n_items < 1 ? 1 : n_items) : t;
}

}  // namespace fastconv
