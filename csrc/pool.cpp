#include "pool.hpp"

#include <algorithm>
#include <atomic>
#include <limits>

#include "parallel.hpp"
#include "isa/isa.hpp"

namespace fastconv {

namespace {
// Planes at or below which a call runs on the calling thread: up to 64 Ki elements (256 KiB of
// float32) a second thread saves microseconds and its fork/join can cost a scheduler tick
// (AlexNet's pool5 backward at batch 1, 43 K elements: 1.09 ms on 2 threads on a loaded
// machine, NumPy 0.18 ms; benchmarks/NOTES.md section 36).
index_t serial_items_for(index_t plane_elems, index_t serial_elems = 64 * 1024) {
    return std::max<index_t>(1, serial_elems / std::max<index_t>(plane_elems, 1));
}
// Max-pooling forward costs ~3x its backward per element (every tap compared, against one
// scatter per output: 512 13x13 planes, 3x3 stride 2, 33 us against 12 on one thread), so
// about the same serial work, ~5 us, is a quarter of the elements.
constexpr index_t kMaxForwardSerialElems = 16 * 1024;

// Planes per max-pooling kernel call, about 4 Ki elements: the kernel picks its path and builds
// its per-geometry tables once a call (AlexNet's pool5 plane has 169 elements and 36 outputs).
index_t planes_per_call(index_t plane_elems) {
    return std::max<index_t>(1, 4096 / std::max<index_t>(plane_elems, 1));
}
}  // namespace

namespace {
// One window scanned in row-major order with padded pixels at `value`.
template <class T>
void scan_window_padded(const Conv2dParams& p, const T* x, T value, index_t oh, index_t ow, T* out,
                        std::int64_t* argmax) {
    const index_t h0 = oh * p.win.sh - p.win.ph, w0 = ow * p.win.sw - p.win.pw;
    T best = value;
    std::int64_t at = -1;
    bool first = true;
    for (index_t ih = h0; ih < h0 + p.win.kh; ++ih) {
        for (index_t iw = w0; iw < w0 + p.win.kw; ++iw) {
            const bool inside = ih >= 0 && ih < p.h && iw >= 0 && iw < p.w;
            const T v = inside ? x[ih * p.w + iw] : value;
            if (first || v > best || (v != v && best == best)) {  // the first NaN stays
                best = v;
                at = inside ? ih * p.w + iw : -1;
                first = false;
            }
        }
    }
    out[oh * p.ow + ow] = best;
    argmax[oh * p.ow + ow] = at;
}

// The main kernels clip windows to the input, so only windows that reach into the padding
// change when padding has a value: rescan those of one plane.
template <class T>
void rescan_padded_windows(const Conv2dParams& p, const T* x, T value, T* out, std::int64_t* argmax) {
    const Window& w = p.win;
    // Interior columns: ow in [ow_lo, ow_hi), windows inside the plane horizontally.
    const index_t ow_lo = std::min<index_t>((w.pw + w.sw - 1) / w.sw, p.ow);
    const index_t ow_hi = std::max<index_t>(ow_lo, std::min<index_t>(p.ow, (p.w + w.pw - w.kw) / w.sw + 1));
    for (index_t oh = 0; oh < p.oh; ++oh) {
        const index_t h0 = oh * w.sh - w.ph;
        const bool edge_row = h0 < 0 || h0 + w.kh > p.h;
        for (index_t ow = 0; ow < p.ow; ++ow) {
            if (!edge_row && ow == ow_lo) ow = ow_hi;  // skip the interior
            if (ow < p.ow) scan_window_padded(p, x, value, oh, ow, out, argmax);
        }
    }
}
}  // namespace

template <class T>
void max_pool2d_forward(const Conv2dParams& p, const T* x, T* out, std::int64_t* argmax, const T* pad_value) {
    const auto kernel = isa::plane_kernels<T>().max_forward;
    const bool padded = pad_value && (p.win.ph > 0 || p.win.pw > 0);
    const index_t planes = p.n * p.c, block = planes_per_call(p.in_plane());
    parallel_for((planes + block - 1) / block, [&](index_t b) {
        const index_t first = b * block, count = std::min(block, planes - first);
        kernel(p, x + first * p.in_plane(), out + first * p.out_plane(), argmax + first * p.out_plane(), count);
        for (index_t plane = first; padded && plane < first + count; ++plane)
            rescan_padded_windows(p, x + plane * p.in_plane(), *pad_value, out + plane * p.out_plane(),
                                  argmax + plane * p.out_plane());
    }, (serial_items_for(p.in_plane(), kMaxForwardSerialElems) + block - 1) / block);
}

template <class T>
bool max_pool2d_backward(const Conv2dParams& p, const T* dout, const std::int64_t* argmax, T* dx) {
    std::atomic<bool> ok{true};
    const index_t plane = p.in_plane();
    parallel_for(p.n * p.c, [&](index_t plane_id) {
        T* d = dx + plane_id * plane;
        std::fill(d, d + plane, T(0));
        const T* g = dout + plane_id * p.out_plane();
        const std::int64_t* a = argmax + plane_id * p.out_plane();
        for (index_t q = 0; q < p.out_plane(); ++q) {
            const std::int64_t at = a[q];
            if (at == -1) continue;  // padding won this window's max
            if (static_cast<std::uint64_t>(at) >= static_cast<std::uint64_t>(plane)) {
                ok.store(false, std::memory_order_relaxed);
                return;
            }
            d[at] += g[q];
        }
    }, serial_items_for(plane));
    return ok.load();
}

template <class T>
void avg_pool2d_forward(const Conv2dParams& p, const T* x, T* out) {
    const auto kernel = isa::plane_kernels<T>().avg_forward;
    parallel_for(p.n * p.c, [&](index_t plane) {
        kernel(p, x + plane * p.in_plane(), out + plane * p.out_plane());
    }, serial_items_for(p.in_plane()));
}

template <class T>
void avg_pool2d_backward(const Conv2dParams& p, const T* dout, T* dx) {
    const Window& w = p.win;
    const T scale = T(1) / T(w.kh * w.kw);
    parallel_for(p.n * p.c, [&](index_t plane_id) {
        T* d = dx + plane_id * p.in_plane();
        std::fill(d, d + p.in_plane(), T(0));
        const T* g = dout + plane_id * p.out_plane();
        for (index_t oh = 0; oh < p.oh; ++oh) {
            const index_t h0 = std::max<index_t>(oh * w.sh - w.ph, 0);
            const index_t h1 = std::min<index_t>(oh * w.sh - w.ph + w.kh, p.h);
            for (index_t ow = 0; ow < p.ow; ++ow) {
                const index_t w0 = std::max<index_t>(ow * w.sw - w.pw, 0);
                const index_t w1 = std::min<index_t>(ow * w.sw - w.pw + w.kw, p.w);
                const T share = g[oh * p.ow + ow] * scale;
                for (index_t ih = h0; ih < h1; ++ih)
                    for (index_t iw = w0; iw < w1; ++iw) d[ih * p.w + iw] += share;
            }
        }
    }, serial_items_for(p.in_plane()));
}

namespace {
constexpr index_t kEltwiseBlock = 1 << 15;
}

template <class T>
void relu_forward(index_t n, const T* __restrict x, T* __restrict y, bool* __restrict mask) {
    parallel_for((n + kEltwiseBlock - 1) / kEltwiseBlock, [&](index_t blk) {
        const index_t lo = blk * kEltwiseBlock, hi = std::min(n, lo + kEltwiseBlock);
        if (mask) {
            isa::plane_kernels<T>().relu_mask_forward(hi - lo, x + lo, y + lo, mask + lo);
        } else {
            for (index_t e = lo; e < hi; ++e) y[e] = x[e] <= T(0) ? T(0) : x[e];
        }
    }, 2);
}

template <class T>
void relu_backward_mask(index_t n, const T* dout, const bool* __restrict mask, T* dx) {  // dx may be dout
    parallel_for((n + kEltwiseBlock - 1) / kEltwiseBlock, [&](index_t blk) {
        const index_t lo = blk * kEltwiseBlock, hi = std::min(n, lo + kEltwiseBlock);
        isa::plane_kernels<T>().relu_mask_backward(hi - lo, dout + lo, mask + lo, dx + lo);
    }, 2);
}

template <class T>
void relu_backward(index_t n, const T* dout, const T* __restrict x, T* dx) {  // dx may be dout
    parallel_for((n + kEltwiseBlock - 1) / kEltwiseBlock, [&](index_t blk) {
        const index_t lo = blk * kEltwiseBlock, hi = std::min(n, lo + kEltwiseBlock);
        for (index_t e = lo; e < hi; ++e) {
            const T g = dout[e];  // loaded unconditionally: a select, not a branch, so it vectorises
            dx[e] = x[e] <= T(0) ? T(0) : g;
        }
    }, 2);
}

#define FASTCONV_INSTANTIATE(T)                                                                    \
    template void max_pool2d_forward<T>(const Conv2dParams&, const T*, T*, std::int64_t*, const T*); \
    template bool max_pool2d_backward<T>(const Conv2dParams&, const T*, const std::int64_t*, T*); \
    template void avg_pool2d_forward<T>(const Conv2dParams&, const T*, T*);                        \
    template void avg_pool2d_backward<T>(const Conv2dParams&, const T*, T*);                       \
    template void relu_forward<T>(index_t, const T*, T*, bool*);                                   \
    template void relu_backward<T>(index_t, const T*, const T*, T*);                               \
    template void relu_backward_mask<T>(index_t, const T*, const bool*, T*);
FASTCONV_INSTANTIATE(float)
FASTCONV_INSTANTIATE(double)
#undef FASTCONV_INSTANTIATE

}  // namespace fastconv
