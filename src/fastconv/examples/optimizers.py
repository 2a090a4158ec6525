"""Book-style optimisers (``common/optimizer.py`` of "Deep Learning from Scratch").

``update(params, grads)`` changes every array of ``params`` *in place* (``-=``), so the layers,
which hold references to the same arrays, see the new weights without being told.
"""
from __future__ import annotations

import numpy as np


class SGD:
    """Plain stochastic gradient descent: ``W -= lr * dW``."""

    def __init__(self, lr=0.01):
        self.lr = lr

    def update(self, params, grads):
        for key in params:
            params[key] -= self.lr * grads[key]


class Momentum:
    """SGD with momentum: ``v = momentum * v - lr * dW; W += v``."""

    def __init__(self, lr=0.01, momentum=0.9):
        self.lr = lr
        self.momentum = momentum
        self.v = None

    def update(self, params, grads):
        if self.v is None:
            self.v = {key: np.zeros_like(val) for key, val in params.items()}
        for key in params:
            self.v[key] *= self.momentum
            self.v[key] -= self.lr * grads[key]
            params[key] += self.v[key]


class Adam:
    """Adam (Kingma & Ba, arXiv:1412.6980) in the book's formulation: running moments ``m`` and
    ``v`` and the bias correction folded into the step size ``lr_t``."""

    def __init__(self, lr=0.001, beta1=0.9, beta2=0.999, eps=1e-7):
        self.lr = lr
        self.beta1 = beta1
        self.beta2 = beta2
        self.eps = eps
        self.iter = 0
        self.m = None
        self.v = None

    def update(self, params, grads):
        if self.m is None:
            self.m = {key: np.zeros_like(val) for key, val in params.items()}
            self.v = {key: np.zeros_like(val) for key, val in params.items()}
        self.iter += 1
        lr_t = self.lr * np.sqrt(1.0 - self.beta2 ** self.iter) / (1.0 - self.beta1 ** self.iter)
        for key in params:
            g = grads[key]
            self.m[key] += (1.0 - self.beta1) * (g - self.m[key])
            self.v[key] += (1.0 - self.beta2) * (g * g - self.v[key])
            params[key] -= lr_t * self.m[key] / (np.sqrt(self.v[key]) + self.eps)


_OPTIMIZERS = {"sgd": SGD, "momentum": Momentum, "adam": Adam}
DEFAULT_LR = {"sgd": 0.1, "momentum": 0.01, "adam": 0.001}


def get_optimizer(name: str, lr=None):
    """Optimiser by name (``sgd``, ``momentum``, ``adam``); ``lr=None`` takes a sensible default."""
    key = name.lower()
    if key not in _OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; choose one of {sorted(_OPTIMIZERS)}")
    return _OPTIMIZERS[key](lr=DEFAULT_LR[key] if lr is None else lr)
