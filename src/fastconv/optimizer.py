"""The book's optimisers (``common/optimizer.py``) as drop-ins: same names, constructors,
attributes (``v``, ``h``, ``m``, ``iter``) and ``update(params, grads)``.

Each update is one in-place pass per parameter in C++ (the book's NumPy expressions make 3-7
passes and temporaries), evaluating the book's formula operation by operation: for float64
parameters the results are the book's bit for bit, for float32 they follow NumPy's float32
arithmetic the same way. A parameter the kernel cannot take in place (another dtype than
float32/float64, a non-contiguous or read-only array, a gradient of another dtype or shape
than its parameter) is updated by the book's NumPy expression instead, with the same result.
Hyperparameters are Python numbers, as in the book.
"""
from __future__ import annotations

import numpy as np

from . import _core

__all__ = ["SGD", "Momentum", "Nesterov", "AdaGrad", "RMSprop", "Adam"]


def _native(param, grad, state) -> bool:
    arrays = (param, grad, *state)
    return (all(isinstance(a, np.ndarray) for a in arrays)
            and param.dtype in (np.float32, np.float64)
            and all(a.dtype == param.dtype and a.shape == param.shape and a.flags.c_contiguous
                    and a.flags.aligned for a in arrays)
            and all(a.flags.writeable for a in (param, *state))
            and not any(np.may_share_memory(param, a) for a in (grad, *state)))


class _BookOptimizer:
    """update(params, grads): make the state arrays on the first call (zeros like each
    parameter, as the book does), then update each parameter by the kernel or by the book's
    NumPy expression (``_numpy_step``)."""

    RULE = ""
    STATE = ()  # names of the per-parameter state dicts, in the kernel's order

    def _scalars(self) -> dict:
        return {}

    def _begin_step(self) -> float:
        return self.lr

    def update(self, params, grads):
        missing = [key for key in params if key not in grads]
        if missing:
            raise KeyError(f"grads has no entry for parameter(s) {missing}")
        for name in self.STATE:
            if getattr(self, name) is None:
                setattr(self, name, {key: np.zeros_like(val) for key, val in params.items()})
        lr = self._begin_step()
        for key in params:
            p, g = params[key], grads[key]
            state = [getattr(self, name)[key] for name in self.STATE]
            if _native(p, g, state):
                _core.optimizer_update(self.RULE, p, g, state, float(lr), **self._scalars())
            else:
                self._numpy_step(params, key, g, lr)


class SGD(_BookOptimizer):
    """``params[key] -= lr * grads[key]``."""

    RULE = "sgd"

    def __init__(self, lr=0.01):
        self.lr = lr

    def _numpy_step(self, params, key, g, lr):
        params[key] -= lr * g


class Momentum(_BookOptimizer):
    """``v = momentum * v - lr * grad; param += v``."""

    RULE, STATE = "momentum", ("v",)

    def __init__(self, lr=0.01, momentum=0.9):
        self.lr = lr
        self.momentum = momentum
        self.v = None

    def _scalars(self):
        return {"momentum": self.momentum}

    def _numpy_step(self, params, key, g, lr):
        self.v[key] = self.momentum * self.v[key] - lr * g
        params[key] += self.v[key]


class Nesterov(_BookOptimizer):
    """Nesterov's accelerated gradient in the book's form (arXiv:1212.0901)."""

    RULE, STATE = "nesterov", ("v",)

    def __init__(self, lr=0.01, momentum=0.9):
        self.lr = lr
        self.momentum = momentum
        self.v = None

    def _scalars(self):
        return {"momentum": self.momentum}

    def _numpy_step(self, params, key, g, lr):
        v = self.v[key]
        params[key] += self.momentum * self.momentum * v
        params[key] -= (1 + self.momentum) * lr * g
        v *= self.momentum
        v -= lr * g


class AdaGrad(_BookOptimizer):
    """``h += grad * grad; param -= lr * grad / (sqrt(h) + 1e-7)``."""

    RULE, STATE = "adagrad", ("h",)

    def __init__(self, lr=0.01):
        self.lr = lr
        self.h = None

    def _numpy_step(self, params, key, g, lr):
        h = self.h[key]
        h += g * g
        params[key] -= lr * g / (np.sqrt(h) + 1e-7)


class RMSprop(_BookOptimizer):
    """``h = decay_rate * h + (1 - decay_rate) * grad**2; param -= lr * grad / (sqrt(h) + 1e-7)``."""

    RULE, STATE = "rmsprop", ("h",)

    def __init__(self, lr=0.01, decay_rate=0.99):
        self.lr = lr
        self.decay_rate = decay_rate
        self.h = None

    def _scalars(self):
        return {"decay_rate": self.decay_rate}

    def _numpy_step(self, params, key, g, lr):
        h = self.h[key]
        h *= self.decay_rate
        h += (1 - self.decay_rate) * g * g
        params[key] -= lr * g / (np.sqrt(h) + 1e-7)


class Adam(_BookOptimizer):
    """Adam (arXiv:1412.6980v8) in the book's form: the bias correction folded into ``lr_t``."""

    RULE, STATE = "adam", ("m", "v")

    def __init__(self, lr=0.001, beta1=0.9, beta2=0.999):
        self.lr = lr
        self.beta1 = beta1
        self.beta2 = beta2
        self.iter = 0
        self.m = None
        self.v = None

    def _scalars(self):
        return {"beta1": self.beta1, "beta2": self.beta2}

    def _begin_step(self):
        self.iter += 1
        # A float64 NumPy scalar, as in the book: its step is computed in float64.
        return self.lr * np.sqrt(1.0 - self.beta2 ** self.iter) / (1.0 - self.beta1 ** self.iter)

    def _numpy_step(self, params, key, g, lr_t):
        m, v = self.m[key], self.v[key]
        m += (1 - self.beta1) * (g - m)
        v += (1 - self.beta2) * (g ** 2 - v)
        params[key] -= lr_t * m / (np.sqrt(v) + 1e-7)
