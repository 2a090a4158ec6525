#include "im2col.hpp"

#include <algorithm>

#include "parallel.hpp"

namespace fastconv {

template <class T>
void im2col(const Conv2dParams& p, const T* __restrict x, T* __restrict col) {
    const Window& w = p.win;
    const index_t row_len = p.patch();
    // One work item per output row (n, oh): writes a contiguous OW x row_len block.
    parallel_for(p.n * p.oh, [&](index_t item) {
        const index_t n = item / p.oh, oh = item % p.oh;
        T* out = col + item * p.ow * row_len;
        for (index_t c = 0; c < p.c; ++c) {
            const T* plane = x + (n * p.c + c) * p.in_plane();
            for (index_t i = 0; i < w.kh; ++i) {
                const index_t ih = oh * w.sh - w.ph + i;
                const bool row_valid = ih >= 0 && ih < p.h;
                for (index_t j = 0; j < w.kw; ++j) {
                    T* dst = out + (c * w.kh + i) * w.kw + j;
                    const Range r = row_valid ? valid_outputs(p.ow, w.sw, w.pw, j, p.w) : Range{0, 0};
                    const index_t src = ih * p.w - w.pw + j;  // plane index of ow = 0 (may lie outside)
                    for (index_t ow = 0; ow < r.lo; ++ow) dst[ow * row_len] = T(0);
                    for (index_t ow = r.lo; ow < r.hi; ++ow) dst[ow * row_len] = plane[src + ow * w.sw];
                    for (index_t ow = r.hi; ow < p.ow; ++ow) dst[ow * row_len] = T(0);
                }
            }
        }
    });
}

template <class T>
void col2im(const Conv2dParams& p, const T* __restrict col, T* __restrict x) {
    const Window& w = p.win;
    const index_t row_len = p.patch();
    // One work item per input plane (n, c): no two threads write the same pixel.
    parallel_for(p.n * p.c, [&](index_t item) {
        const index_t n = item / p.c, c = item % p.c;
        T* plane = x + item * p.in_plane();
        std::fill(plane, plane + p.in_plane(), T(0));
        for (index_t i = 0; i < w.kh; ++i) {
            const Range rows = valid_outputs(p.oh, w.sh, w.ph, i, p.h);
            for (index_t j = 0; j < w.kw; ++j) {
                const Range cols = valid_outputs(p.ow, w.sw, w.pw, j, p.w);
                const T* src = col + (c * w.kh + i) * w.kw + j;
                for (index_t oh = rows.lo; oh < rows.hi; ++oh) {
                    const index_t dst = (oh * w.sh - w.ph + i) * p.w - w.pw + j;  // pixel of ow = 0
                    const T* s = src + (n * p.oh + oh) * p.ow * row_len;
                    for (index_t ow = cols.lo; ow < cols.hi; ++ow) plane[dst + ow * w.sw] += s[ow * row_len];
                }
            }
        }
    });
}

template void im2col<float>(const Conv2dParams&, const float*, float*);
template void im2col<double>(const Conv2dParams&, const double*, double*);
template void col2im<float>(const Conv2dParams&, const float*, float*);
template void col2im<double>(const Conv2dParams&, const double*, double*);

}  // namespace fastconv
