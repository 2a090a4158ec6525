"""The book's optimisers by name for the examples: fastconv's one-pass drop-ins
(:mod:`fastconv.optimizer`, ``common/optimizer.py`` of "Deep Learning from Scratch"), plus
:class:`TorchAdam`, the update rule of ``torch.optim.Adam`` that the seed's CNN is trained with.

``update(params, grads)`` changes every array of ``params`` *in place*, so the layers, which
hold references to the same arrays, see the new weights without being told.
"""
from __future__ import annotations

import numpy as np

from ..optimizer import SGD, AdaGrad, Adam, Momentum, Nesterov, RMSprop

__all__ = ["SGD", "Momentum", "Nesterov", "AdaGrad", "RMSprop", "Adam", "TorchAdam", "get_optimizer",
           "DEFAULT_LR", "OPTIMIZERS"]


class TorchAdam:
    """``torch.optim.Adam(params, lr, betas=(beta1, beta2), eps)`` with its defaults (no weight
    decay, no AMSGrad), in NumPy, in place:

        m = lerp(m, g, 1 - beta1);  v = beta2 * v + (1 - beta2) * g * g
        p -= lr / (1 - beta1**t) * m / (sqrt(v) / sqrt(1 - beta2**t) + eps)

    The book's :class:`Adam` differs only in where its epsilon sits: it divides by
    ``sqrt(v) + 1e-7`` with the bias correction folded into the step, which is PyTorch's rule
    with ``eps = 1e-7 / sqrt(1 - beta2**t)`` (3e-10 at the first step, 1e-7 later), against
    PyTorch's fixed 1e-8. fastconv's optimiser kernel has the book's form only, so this one is
    NumPy: six in-place passes per parameter with one scratch array (~25 ms a step for the
    seed CNN's 1.4 M float64 parameters on a 2-core EPYC, the native book Adam ~11 ms).
    """

    def __init__(self, lr=0.001, beta1=0.9, beta2=0.999, eps=1e-8):
        self.lr = lr
        self.beta1 = beta1
        self.beta2 = beta2
        self.eps = eps
        self.iter = 0
        self.m = None
        self.v = None
        self._scratch = None

    def update(self, params, grads):
        missing = [key for key in params if key not in grads]
        if missing:
            raise KeyError(f"grads has no entry for parameter(s) {missing}")
        if self.m is None:
            self.m = {key: np.zeros_like(val) for key, val in params.items()}
            self.v = {key: np.zeros_like(val) for key, val in params.items()}
            self._scratch = {key: np.empty_like(val) for key, val in params.items()}
        self.iter += 1
        step_size = self.lr / (1.0 - self.beta1 ** self.iter)
        bc2_sqrt = (1.0 - self.beta2 ** self.iter) ** 0.5
        for key, p in params.items():
            g, m, v, tmp = np.asarray(grads[key]), self.m[key], self.v[key], self._scratch[key]
            np.subtract(g, m, out=tmp)           # m = m + (1 - beta1) (g - m): torch's lerp_
            tmp *= 1.0 - self.beta1
            m += tmp
            v *= self.beta2                      # v = beta2 v + (1 - beta2) g g: addcmul_
            np.multiply(g, g, out=tmp)
            tmp *= 1.0 - self.beta2
            v += tmp
            np.sqrt(v, out=tmp)                  # denom = sqrt(v) / sqrt(bc2) + eps
            tmp /= bc2_sqrt
            tmp += self.eps
            np.divide(m, tmp, out=tmp)           # p -= step_size * m / denom: addcdiv_
            tmp *= step_size
            p -= tmp


OPTIMIZERS = {"sgd": SGD, "momentum": Momentum, "nesterov": Nesterov, "adagrad": AdaGrad, "rmsprop": RMSprop,
              "adam": Adam, "adam-torch": TorchAdam}
_OPTIMIZERS = OPTIMIZERS  # the old private name
DEFAULT_LR = {"sgd": 0.1, "momentum": 0.01, "nesterov": 0.01, "adagrad": 0.01, "rmsprop": 0.001, "adam": 0.001,
              "adam-torch": 0.001}


def get_optimizer(name: str, lr=None):
    """Optimiser by name (``sgd``, ``momentum``, ``nesterov``, ``adagrad``, ``rmsprop``, ``adam``
    -- the book's -- or ``adam-torch``, PyTorch's Adam); ``lr=None`` takes a sensible default."""
    key = name.lower()
    if key not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; choose one of {sorted(OPTIMIZERS)}")
    return OPTIMIZERS[key](lr=DEFAULT_LR[key] if lr is None else lr)
