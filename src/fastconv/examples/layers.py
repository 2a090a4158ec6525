"""The book's fully connected layers and loss for the examples: fastconv's drop-ins
(:mod:`fastconv.layers`), plus the book's ``softmax`` / ``cross_entropy_error`` of
``common/functions.py``."""
from __future__ import annotations

import numpy as np

from ..layers import Affine, Dropout, SoftmaxWithLoss

__all__ = ["Affine", "Dropout", "SoftmaxWithLoss", "softmax", "cross_entropy_error"]


def softmax(x: np.ndarray) -> np.ndarray:
    """Row-wise softmax of a (N, K) array (or a single vector), shifted by the max for stability."""
    shifted = x - np.max(x, axis=-1, keepdims=True)
    e = np.exp(shifted)
    return e / np.sum(e, axis=-1, keepdims=True)


def cross_entropy_error(y: np.ndarray, t: np.ndarray) -> float:
    """Mean cross-entropy of probabilities ``y`` (N, K) against labels ``t``.

    ``t`` may be class indices (N,) or one-hot (N, K), as in the book; the small 1e-7 keeps
    ``log(0)`` finite, also as in the book.
    """
    if y.ndim == 1:
        y = y.reshape(1, -1)
        t = np.asarray(t).reshape(1, -1) if np.size(t) == y.size else np.asarray(t).reshape(1)
    t = np.asarray(t)
    if t.size == y.size:  # one-hot labels
        t = t.argmax(axis=1)
    n = y.shape[0]
    return float(-np.sum(np.log(y[np.arange(n), t] + 1e-7)) / n)
