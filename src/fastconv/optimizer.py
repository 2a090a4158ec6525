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


def _zeros_like_all(params) -> dict:
    return {key: np.zeros_like(val) for key, val in params.items()}


def _check_keys(params, grads) -> None:
    missing = [key for key in params if key not in grads]
    if missing:
        raise KeyError(f"grads has no entry for parameter(s) {missing}")


class SGD:
    """``params[key] -= lr * grads[key]``."""

    def __init__(self, lr=0.01):
        self.lr = lr

    def update(self, params, grads):
        _check_keys(params, grads)
        for key in params:
            p, g = params[key], grads[key]
            if _native(p, g, ()):
                _core.optimizer_update("sgd", p, g, [], self.lr)
            else:
                params[key] -= self.lr * g


class Momentum:
    """``v = momentum * v - lr * grad; param += v``."""

    def __init__(self, lr=0.01, momentum=0.9):
        self.lr = lr
        self.momentum = momentum
        self.v = None

    def update(self, params, grads):
        _check_keys(params, grads)
        if self.v is None:
            self.v = _zeros_like_all(params)
        for key in params:
            p, g, v = params[key], grads[key], self.v[key]
            if _native(p, g, (v,)):
                _core.optimizer_update("momentum", p, g, [v], self.lr, momentum=self.momentum)
            else:
                self.v[key] = self.momentum * v - self.lr * g
                params[key] += self.v[key]


class Nesterov:
    """Nesterov's accelerated gradient in the book's form (arXiv:1212.0901)."""

    def __init__(self, lr=0.01, momentum=0.9):
        self.lr = lr
        self.momentum = momentum
        self.v = None

    def update(self, params, grads):
        _check_keys(params, grads)
        if self.v is None:
            self.v = _zeros_like_all(params)
        for key in params:
            p, g, v = params[key], grads[key], self.v[key]
            if _native(p, g, (v,)):
                _core.optimizer_update("nesterov", p, g, [v], self.lr, momentum=self.momentum)
            else:
                params[key] += self.momentum * self.momentum * v
                params[key] -= (1 + self.momentum) * self.lr * g
                v *= self.momentum
                v -= self.lr * g


class AdaGrad:
    """``h += grad * grad; param -= lr * grad / (sqrt(h) + 1e-7)``."""

    def __init__(self, lr=0.01):
        self.lr = lr
        self.h = None

    def update(self, params, grads):
        _check_keys(params, grads)
        if self.h is None:
            self.h = _zeros_like_all(params)
        for key in params:
            p, g, h = params[key], grads[key], self.h[key]
            if _native(p, g, (h,)):
                _core.optimizer_update("adagrad", p, g, [h], self.lr)
            else:
                h += g * g
                params[key] -= self.lr * g / (np.sqrt(h) + 1e-7)


class RMSprop:
    """``h = decay_rate * h + (1 - decay_rate) * grad**2; param -= lr * grad / (sqrt(h) + 1e-7)``."""

    def __init__(self, lr=0.01, decay_rate=0.99):
        self.lr = lr
        self.decay_rate = decay_rate
        self.h = None

    def update(self, params, grads):
        _check_keys(params, grads)
        if self.h is None:
            self.h = _zeros_like_all(params)
        for key in params:
            p, g, h = params[key], grads[key], self.h[key]
            if _native(p, g, (h,)):
                _core.optimizer_update("rmsprop", p, g, [h], self.lr, decay_rate=self.decay_rate)
            else:
                h *= self.decay_rate
                h += (1 - self.decay_rate) * g * g
                params[key] -= self.lr * g / (np.sqrt(h) + 1e-7)


class Adam:
    """Adam (arXiv:1412.6980v8) in the book's form: the bias correction folded into ``lr_t``."""

    def __init__(self, lr=0.001, beta1=0.9, beta2=0.999):
        self.lr = lr
        self.beta1 = beta1
        self.beta2 = beta2
        self.iter = 0
        self.m = None
        self.v = None

    def update(self, params, grads):
        _check_keys(params, grads)
        if self.m is None:
            self.m, self.v = _zeros_like_all(params), _zeros_like_all(params)
        self.iter += 1
        lr_t = self.lr * np.sqrt(1.0 - self.beta2 ** self.iter) / (1.0 - self.beta1 ** self.iter)
        for key in params:
            p, g, m, v = params[key], grads[key], self.m[key], self.v[key]
            if _native(p, g, (m, v)):
                _core.optimizer_update("adam", p, g, [m, v], float(lr_t), beta1=self.beta1, beta2=self.beta2)
            else:
                m += (1 - self.beta1) * (g - m)
                v += (1 - self.beta2) * (g ** 2 - v)
                params[key] -= lr_t * m / (np.sqrt(v) + 1e-7)
