#include "params.hpp"

#include <initializer_list>
#include <limits>

namespace fastconv {
namespace {
constexpr index_t kIndexMax = std::numeric_limits<index_t>::max();

std::string pair(index_t a, index_t b) { return "(" + std::to_string(a) + ", " + std::to_string(b) + ")"; }

std::string join(std::initializer_list<index_t> dims, const char* sep) {
    std::string s;
    for (index_t d : dims) s += (s.empty() ? "" : sep) + std::to_string(d);
    return s;
}

// Both operands non-negative (checked by the caller).
bool mul_overflows(index_t a, index_t b) { return a != 0 && b > kIndexMax / a; }
bool add_overflows(index_t a, index_t b) { return b > kIndexMax - a; }

// Refuses a tensor whose size in bytes (largest element type: 8 bytes) does not fit in 64 bits.
// Like NumPy, the product of the non-zero dimensions must fit, so that every partial product a
// kernel forms (h*w, oh*ow, c*kh*kw, ...) fits too, even when another dimension is zero.
void check_size(const char* what, std::initializer_list<index_t> dims) {
    index_t bytes = 8;
    for (index_t d : dims) {
        if (d == 0) continue;
        if (mul_overflows(bytes, d))
            throw std::invalid_argument(std::string("tensor size overflows 64-bit indexing: ") + what + " " +
                                        join(dims, " x ") + " (8-byte elements) is more than " +
                                        std::to_string(kIndexMax) + " bytes");
        bytes *= d;
    }
}
}  // namespace

Conv2dParams make_params(index_t n, index_t c, index_t h, index_t w, index_t oc, const Window& win) {
    if (n < 0 || c < 0 || h < 0 || w < 0 || oc < 0)
        throw std::invalid_argument("negative dimension in input " + pair(n, c) + " x " + pair(h, w));
    if (win.kh <= 0 || win.kw <= 0)
        throw std::invalid_argument("kernel size must be positive, got " + pair(win.kh, win.kw));
    if (win.sh <= 0 || win.sw <= 0)
        throw std::invalid_argument("stride must be positive, got stride=" + pair(win.sh, win.sw));
    if (win.ph < 0 || win.pw < 0)
        throw std::invalid_argument("pad must be non-negative, got pad=" + pair(win.ph, win.pw));
    // Window arithmetic forms pad + stride (valid_outputs rounds up by stride - 1).
    if (add_overflows(win.ph, win.sh) || add_overflows(win.pw, win.sw))
        throw std::invalid_argument("stride " + pair(win.sh, win.sw) + " plus pad " + pair(win.ph, win.pw) +
                                    " overflows 64-bit indexing");
    // h + 2*pad, in steps that cannot overflow.
    if (add_overflows(win.ph, win.ph) || add_overflows(h, 2 * win.ph) || add_overflows(win.pw, win.pw) ||
        add_overflows(w, 2 * win.pw))
        throw std::invalid_argument("padded input overflows 64-bit indexing: input " + std::to_string(h) + "x" +
                                    std::to_string(w) + " with pad " + pair(win.ph, win.pw));
    const index_t hp = h + 2 * win.ph, wp = w + 2 * win.pw;
    if (win.kh > hp || win.kw > wp)
        throw std::invalid_argument("padded input " + std::to_string(hp) + "x" + std::to_string(wp) +
                                    " is smaller than kernel " + std::to_string(win.kh) + "x" +
                                    std::to_string(win.kw));
    // Offsets into a padded plane (row * W + column, window origins above or left of the
    // image) must fit as well.
    if (mul_overflows(hp, wp))
        throw std::invalid_argument("padded input " + std::to_string(hp) + "x" + std::to_string(wp) +
                                    " overflows 64-bit indexing");
    if (h == 0 || w == 0)
        throw std::invalid_argument("input plane " + std::to_string(h) + "x" + std::to_string(w) +
                                    " is empty: with pad " + pair(win.ph, win.pw) + " every " +
                                    std::to_string(win.kh) + "x" + std::to_string(win.kw) +
                                    " window would lie entirely in the padding");
    Conv2dParams p{n, c, h, w, oc, win, (hp - win.kh) / win.sh + 1, (wp - win.kw) / win.sw + 1};
    // Every array the kernels allocate or index, and every product they form, must fit in 64 bits.
    check_size("input", {n, c, h, w});
    check_size("output", {n, oc, p.oh, p.ow});
    check_size("weights", {oc, c, win.kh, win.kw});
    check_size("im2col matrix", {n, p.oh, p.ow, c, win.kh, win.kw});
    return p;
}

void check_pool_padding(const Window& win) {
    if (win.kh <= 0 || win.kw <= 0)
        throw std::invalid_argument("pool size must be positive, got " + pair(win.kh, win.kw));
    if (win.ph < 0 || win.pw < 0)
        throw std::invalid_argument("pad must be non-negative, got pad=" + pair(win.ph, win.pw));
    if (win.ph > win.kh / 2 || win.pw > win.kw / 2)
        throw std::invalid_argument("pool pad " + pair(win.ph, win.pw) + " must be at most half the window " +
                                    std::to_string(win.kh) + "x" + std::to_string(win.kw));
    // Max pooling tracks the winning tap of a window in 32 bits.
    if (mul_overflows(win.kh, win.kw) || win.kh * win.kw > kMaxPoolTaps)
        throw std::invalid_argument("pool window " + std::to_string(win.kh) + "x" + std::to_string(win.kw) +
                                    " has more than " + std::to_string(kMaxPoolTaps) + " elements");
}

}  // namespace fastconv
