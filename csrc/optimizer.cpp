#include "optimizer.hpp"

#include <cmath>

#include "parallel.hpp"

namespace fastconv {

namespace {

constexpr index_t kUpdateBlock = 1 << 14;  // elements per work item: ~100 us of work in double
constexpr double kBookEps = 1e-7;          // the book's `+ 1e-7` under its square roots

// One rule over [lo, hi). Each line is one NumPy operation of the book's update, in its order.
template <class T>
void update_block(const OptimizerStep& s, index_t lo, index_t hi, T* p, const T* g, T* a, T* b) {
    const T lr = T(s.lr), mom = T(s.momentum), eps = T(kBookEps);
    switch (s.rule) {
        case OptimizerRule::sgd:
            for (index_t i = lo; i < hi; ++i) p[i] -= lr * g[i];
            break;
        case OptimizerRule::momentum:
            for (index_t i = lo; i < hi; ++i) {
                a[i] = mom * a[i] - lr * g[i];
                p[i] += a[i];
            }
            break;
        case OptimizerRule::nesterov: {
            const T mom2 = T(s.momentum * s.momentum), step = T((1 + s.momentum) * s.lr);
            for (index_t i = lo; i < hi; ++i) {
                p[i] += mom2 * a[i];
                p[i] -= step * g[i];
                a[i] *= mom;
                a[i] -= lr * g[i];
            }
            break;
        }
        case OptimizerRule::adagrad:
            for (index_t i = lo; i < hi; ++i) {
                a[i] += g[i] * g[i];
                p[i] -= lr * g[i] / (std::sqrt(a[i]) + eps);
            }
            break;
        case OptimizerRule::rmsprop: {
            const T decay = T(s.decay_rate), keep = T(1 - s.decay_rate);
            for (index_t i = lo; i < hi; ++i) {
                a[i] *= decay;
                a[i] += keep * g[i] * g[i];
                p[i] -= lr * g[i] / (std::sqrt(a[i]) + eps);
            }
            break;
        }
        case OptimizerRule::adam: {
            const T k1 = T(1 - s.beta1), k2 = T(1 - s.beta2);
            for (index_t i = lo; i < hi; ++i) {
                a[i] += k1 * (g[i] - a[i]);
                b[i] += k2 * (g[i] * g[i] - b[i]);
                p[i] = T(double(p[i]) - s.lr * double(a[i]) / double(std::sqrt(b[i]) + eps));
            }
            break;
        }
    }
}

}  // namespace

template <class T>
void optimizer_update(const OptimizerStep& step, index_t n, T* param, const T* grad, T* s1, T* s2) {
    const index_t blocks = (n + kUpdateBlock - 1) / kUpdateBlock;
    parallel_for(blocks, [&](index_t blk) {
        const index_t lo = blk * kUpdateBlock, hi = std::min(n, lo + kUpdateBlock);
        update_block(step, lo, hi, param, grad, s1, s2);
    });
}

template void optimizer_update<float>(const OptimizerStep&, index_t, float*, const float*, float*, float*);
template void optimizer_update<double>(const OptimizerStep&, index_t, double*, const double*, double*, double*);

}  // namespace fastconv
