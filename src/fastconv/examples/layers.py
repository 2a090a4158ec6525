"""The book's fully connected layers and loss, in plain NumPy.

Counterparts of ``Affine``, ``SoftmaxWithLoss`` and ``Dropout`` in the book's ``common/layers.py``
(and ``softmax`` / ``cross_entropy_error`` of ``common/functions.py``), with the same attributes
(``W``, ``b``, ``dW``, ``db``, ``loss``, ``y``, ``t``, ``mask``). They are written here so that the
example depends on nothing but NumPy and fastconv; the convolution, pooling and ReLU layers come
from :mod:`fastconv.layers`.
"""
from __future__ import annotations

import numpy as np


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


class Affine:
    """Fully connected layer ``x @ W + b``; flattens (N, C, H, W) input and restores it in backward."""

    def __init__(self, W, b):
        self.W = W
        self.b = b
        self.x = None
        self.original_x_shape = None
        self.dW = None
        self.db = None

    def forward(self, x):
        self.original_x_shape = x.shape
        self.x = x.reshape(x.shape[0], -1)
        return self.x @ self.W + self.b

    def backward(self, dout):
        dx = dout @ self.W.T
        self.dW = self.x.T @ dout
        self.db = np.sum(dout, axis=0)
        return dx.reshape(self.original_x_shape)


class SoftmaxWithLoss:
    """Softmax followed by the cross-entropy loss; ``backward`` returns ``(y - t) / N``."""

    def __init__(self):
        self.loss = None
        self.y = None
        self.t = None

    def forward(self, x, t):
        self.t = t
        self.y = softmax(x)
        self.loss = cross_entropy_error(self.y, t)
        return self.loss

    def backward(self, dout=1):
        n = self.t.shape[0]
        if self.t.size == self.y.size:  # one-hot labels
            dx = self.y - self.t
        else:
            dx = self.y.copy()
            dx[np.arange(n), self.t] -= 1
        return dout * dx / n


class Dropout:
    """Dropout as in the book (not the "inverted" variant): zero a random ``dropout_ratio`` of
    the units while training, scale everything by ``1 - dropout_ratio`` at test time.

    ``rng`` is anything with ``rand`` (``np.random`` by default, like the book); the example gives
    each network its own ``np.random.RandomState`` so that runs with different backends draw the
    same masks.
    """

    def __init__(self, dropout_ratio=0.5, rng=None):
        self.dropout_ratio = dropout_ratio
        self.rng = np.random if rng is None else rng
        self.mask = None

    def forward(self, x, train_flg=True):
        if train_flg:
            self.mask = self.rng.rand(*x.shape) > self.dropout_ratio
            return x * self.mask
        return x * (1.0 - self.dropout_ratio)

    def backward(self, dout):
        return dout * self.mask
