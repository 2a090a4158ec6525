#include "params.hpp"

#include <limits>

namespace fastconv {
namespace {
std::string pair(index_t a, index_t b) { return "(" + std::to_string(a) + ", " + std::to_string(b) + ")"; }

bool mul_overflows(index_t a, index_t b) {
    return a != 0 && b > std::numeric_limits<index_t>::max() / a;
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
    const index_t hp = h + 2 * win.ph, wp = w + 2 * win.pw;
    if (win.kh > hp || win.kw > wp)
        throw std::invalid_argument("padded input " + std::to_string(hp) + "x" + std::to_string(wp) +
                                    " is smaller than kernel " + std::to_string(win.kh) + "x" +
                                    std::to_string(win.kw));
    Conv2dParams p{n, c, h, w, oc, win, (hp - win.kh) / win.sh + 1, (wp - win.kw) / win.sw + 1};
    // Every product the kernels form must fit in 64 bits.
    const index_t sizes[][2] = {{n, c}, {n * c, h * w}, {n, oc}, {n * oc, p.oh * p.ow},
                                {c, win.kh * win.kw}, {p.patch(), p.oh * p.ow}, {oc, p.patch()}};
    for (const auto& s : sizes)
        if (mul_overflows(s[0], s[1]))
            throw std::invalid_argument("tensor size overflows 64-bit indexing: " + pair(s[0], s[1]));
    return p;
}

void check_pool_padding(const Window& win) {
    if (2 * win.ph > win.kh || 2 * win.pw > win.kw)
        throw std::invalid_argument("pool pad " + pair(win.ph, win.pw) + " must be at most half the window " +
                                    std::to_string(win.kh) + "x" + std::to_string(win.kw));
}

}  // namespace fastconv
