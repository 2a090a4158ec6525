// The book's optimisers (common/optimizer.py) as one in-place pass over each parameter.
//
// Each update evaluates the book's NumPy expression element by element, in the same order and
// in the same precision as NumPy would (Python-float hyperparameters become T, as NumPy's weak
// scalars do; Adam's lr_t is a float64 NumPy scalar, so its step is computed in double), and the
// file is compiled without FMA contraction: float64 results are the book's bit for bit.
#pragma once

#include "scratch.hpp"

namespace fastconv {

enum class OptimizerRule { sgd, momentum, nesterov, adagrad, rmsprop, adam };

// Hyperparameters as the book names them; `lr` is Adam's lr_t (bias correction folded in).
struct OptimizerStep {
    OptimizerRule rule;
    double lr = 0.01, momentum = 0.9, decay_rate = 0.99, beta1 = 0.9, beta2 = 0.999;
};

// param -= ...; `s1` is v (momentum, nesterov, adam: m) or h (adagrad, rmsprop); `s2` is
// Adam's v. Unused state pointers may be null.
template <class T>
void optimizer_update(const OptimizerStep& step, index_t n, T* param, const T* grad, T* s1, T* s2);

}  // namespace fastconv
