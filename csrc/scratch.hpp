// Kernel scratch: checked spans, aligned buffers, per-thread slices and debug poisoning.
//
// Every kernel that writes scratch receives it as a Span (pointer, capacity) and checks, before
// it writes, that what it is about to use fits -- one compare per driver or packer call, in
// release builds too. A misfit is a bug in a plan, reported as InternalError (RuntimeError in
// Python) naming the kernel and the sizes; it never writes past the end.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <new>
#include <stdexcept>
#include <string>

#include "parallel.hpp"

namespace fastconv {

using index_t = std::int64_t;

class InternalError : public std::runtime_error {
   public:
    using std::runtime_error::runtime_error;
};

[[noreturn]] inline void throw_misfit(const char* kernel, const char* what, index_t need, index_t have) {
    throw InternalError(std::string("fastconv internal error in ") + kernel + ": " + what + " needs " +
                        std::to_string(need) + " elements, has " + std::to_string(have) +
                        " (a planning bug: please report the call's shapes)");
}

// Pieces of scratch start on 64-element boundaries: 64-byte aligned for either dtype.
constexpr index_t kScratchAlign = 64;
inline index_t scratch_round(index_t n) { return (n + kScratchAlign - 1) / kScratchAlign * kScratchAlign; }

template <class T>
struct Span {
    T* data = nullptr;
    index_t size = 0;

    void need(index_t n, const char* kernel, const char* what) const {
        if (n > size || n < 0) throw_misfit(kernel, what, n, size);
    }
    // The first n elements; the rest starts at the next 64-element boundary.
    Span take(index_t n, const char* kernel, const char* what) {
        need(n, kernel, what);
        const Span head{data, n};
        const index_t step = std::min(scratch_round(n), size);
        data += step;
        size -= step;
        return head;
    }
    // Elements [offset, end) as a span (offset within the span).
    Span from(index_t offset, const char* kernel) const {
        need(offset, kernel, "offset");
        return {data + offset, size - offset};
    }
};

// Sum of the pieces a plan books for one thread (each rounded up like Span::take).
class ScratchBooking {
   public:
    index_t book(index_t n) {
        total_ += scratch_round(std::max<index_t>(n, 0));
        return n;
    }
    index_t total() const { return total_; }

   private:
    index_t total_ = 0;
};

// Debug mode for tests: outputs and scratch start filled with a NaN pattern, and each thread's
// scratch slice is followed by a guard that must still hold the pattern after the call.
void set_debug_poison(bool on);
bool debug_poison();

template <class T>
T poison_value() {
    if constexpr (sizeof(T) == 4) {
        const std::uint32_t bits = 0x7FC0BEEFu;
        T v;
        std::memcpy(&v, &bits, sizeof(v));
        return v;
    } else {
        const std::uint64_t bits = 0x7FF8DEADBEEF0BADull;
        T v;
        std::memcpy(&v, &bits, sizeof(v));
        return v;
    }
}

template <class T>
void fill_poison(T* p, index_t n) {
    const T v = poison_value<T>();
    for (index_t i = 0; i < n; ++i) std::memcpy(p + i, &v, sizeof(T));
}

template <class T>
bool holds_poison(const T* p, index_t n) {
    const T v = poison_value<T>();
    for (index_t i = 0; i < n; ++i)
        if (std::memcmp(p + i, &v, sizeof(T)) != 0) return false;
    return true;
}

namespace gemm {
// Bytes of kernel scratch alive now, and the most ever alive at once (reset by tests):
// how the "no full im2col matrix" promise is measured.
struct ScratchStats {
    static void add(std::int64_t bytes);
    static std::int64_t current();
    static std::int64_t peak();
    static void reset_peak();
};

// 64-byte aligned storage; one allocation per call, sliced per thread. Uninitialised, or
// poisoned in debug mode.
template <class T>
class AlignedBuffer {
   public:
    explicit AlignedBuffer(index_t n)
        : ptr_(n > 0 ? static_cast<T*>(::operator new(static_cast<std::size_t>(n) * sizeof(T), std::align_val_t(64)))
                     : nullptr),
          size_(std::max<index_t>(n, 0)) {
        ScratchStats::add(size_ * index_t(sizeof(T)));
        if (debug_poison()) fill_poison(ptr_, size_);
    }
    ~AlignedBuffer() {
        if (ptr_) ::operator delete(ptr_, std::align_val_t(64));
        ScratchStats::add(-size_ * index_t(sizeof(T)));
    }
    AlignedBuffer(const AlignedBuffer&) = delete;
    AlignedBuffer& operator=(const AlignedBuffer&) = delete;
    T* get() const { return ptr_; }

   private:
    T* ptr_;
    index_t size_;
};
}  // namespace gemm

// One scratch allocation for a parallel region: a slice of `elems` per thread, each followed,
// in debug mode, by a poisoned guard that verify() checks after the region.
template <class T>
class ThreadScratch {
   public:
    ThreadScratch(index_t elems, int threads, const char* kernel)
        : elems_(std::max<index_t>(elems, 0)),
          guard_(debug_poison() ? kScratchAlign : 0),
          stride_(scratch_round(elems_) + guard_),
          threads_(std::max(threads, 1)),
          kernel_(kernel),
          buf_(stride_ * threads_) {}
    Span<T> mine() const {
        const int t = thread_index();
        if (t < 0 || t >= threads_) throw_misfit(kernel_, "thread slot", t + 1, threads_);
        return {buf_.get() + t * stride_, elems_};
    }
    // Throws if any kernel wrote past its slice (debug mode only; otherwise there is no guard).
    void verify() const {
        for (int t = 0; t < threads_ && guard_ > 0; ++t)
            if (!holds_poison(buf_.get() + t * stride_ + scratch_round(elems_), guard_))
                throw InternalError(std::string("fastconv internal error in ") + kernel_ +
                                    ": a kernel wrote past the end of thread " + std::to_string(t) +
                                    "'s scratch slice of " + std::to_string(elems_) + " elements");
    }

   private:
    index_t elems_, guard_, stride_;
    int threads_;
    const char* kernel_;
    gemm::AlignedBuffer<T> buf_;
};

}  // namespace fastconv
