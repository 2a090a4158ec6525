"""The book's optimisers by name for the examples: fastconv's one-pass drop-ins
(:mod:`fastconv.optimizer`, ``common/optimizer.py`` of "Deep Learning from Scratch").

``update(params, grads)`` changes every array of ``params`` *in place*, so the layers, which
hold references to the same arrays, see the new weights without being told.
"""
from __future__ import annotations

from ..optimizer import SGD, AdaGrad, Adam, Momentum, Nesterov, RMSprop

__all__ = ["SGD", "Momentum", "Nesterov", "AdaGrad", "RMSprop", "Adam", "get_optimizer", "DEFAULT_LR"]


_OPTIMIZERS = {"sgd": SGD, "momentum": Momentum, "nesterov": Nesterov, "adagrad": AdaGrad, "rmsprop": RMSprop,
               "adam": Adam}
DEFAULT_LR = {"sgd": 0.1, "momentum": 0.01, "nesterov": 0.01, "adagrad": 0.01, "rmsprop": 0.001, "adam": 0.001}


def get_optimizer(name: str, lr=None):
    """Optimiser by name (``sgd``, ``momentum``, ``nesterov``, ``adagrad``, ``rmsprop``, ``adam``);
    ``lr=None`` takes a sensible default."""
    key = name.lower()
    if key not in _OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; choose one of {sorted(_OPTIMIZERS)}")
    return _OPTIMIZERS[key](lr=DEFAULT_LR[key] if lr is None else lr)
