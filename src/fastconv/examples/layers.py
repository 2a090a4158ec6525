"""The book's fully connected layers and loss for the examples: fastconv's drop-ins
(:mod:`fastconv.layers`), plus the book's ``softmax`` / ``cross_entropy_error`` of
``common/functions.py``, and the two PyTorch-semantics layers the seed's CNN needs
(:class:`InvertedDropout`, :class:`SoftmaxCrossEntropyLoss`)."""
from __future__ import annotations

import numpy as np

from ..layers import Affine, Dropout, SoftmaxWithLoss

__all__ = ["Affine", "Dropout", "SoftmaxWithLoss", "InvertedDropout", "SoftmaxCrossEntropyLoss",
           "softmax", "cross_entropy_error"]


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


class InvertedDropout(Dropout):
    """``torch.nn.Dropout(p)``: while training, ``x * (mask / (1 - p))`` with ``mask = rand > p``
    (kept with probability ``1 - p``); at test time the identity.

    The book's :class:`Dropout` scales at test time instead (``x * (1 - p)``); the two give the
    same expected activations but different weights after training, so a network that is to
    match a PyTorch model -- or load its weights -- needs this one. The mask is drawn like the
    book's, from ``np.random`` or the ``rng`` given (a ``np.random.RandomState``), so two
    networks seeded alike draw the same masks; ``mask`` keeps the last one (bool).
    """

    def forward(self, x, train_flg=True):
        arr = np.asarray(x)
        if not train_flg:
            return arr
        if not 0.0 <= self.dropout_ratio < 1.0:
            raise ValueError(f"dropout ratio must be in [0, 1), got {self.dropout_ratio}")
        rand = (np.random if self.rng is None else self.rng).rand
        self.mask = rand(*arr.shape) > self.dropout_ratio
        return arr * self._scaled_mask(arr.dtype)

    def backward(self, dout):
        if self.mask is None:
            return super().backward(dout)  # the book's "call forward first" error
        d = np.asarray(dout)
        if d.shape != self.mask.shape:
            raise ValueError(f"dout has shape {d.shape} but the InvertedDropout forward output has "
                             f"shape {self.mask.shape}")
        return d * self._scaled_mask(d.dtype)

    def _scaled_mask(self, dtype) -> np.ndarray:
        # PyTorch's order: the noise is mask / (1 - p), then x * noise (same rounding)
        dtype = dtype if np.issubdtype(dtype, np.floating) else np.float64
        return self.mask.astype(dtype) / dtype.type(1.0 - self.dropout_ratio)


class SoftmaxCrossEntropyLoss(SoftmaxWithLoss):
    """``torch.nn.CrossEntropyLoss()`` (mean over the batch) on class scores ``x`` (N, K):
    ``-mean(log_softmax(x)[n, t_n])`` computed as ``x - max - log(sum(exp(x - max)))``, without
    the book's ``+ 1e-7`` inside the log, so the loss is exact and matches PyTorch's to rounding.
    ``backward()`` is the book's ``(softmax(x) - t) / N`` (the gradient of both losses), with
    ``y = exp(log_softmax(x))`` as PyTorch forms it. Labels as for :class:`SoftmaxWithLoss`.
    """

    def forward(self, x, t):
        arr = np.asarray(x)
        if arr.ndim != 2:
            raise ValueError(f"x must be scores of shape (N, classes), got shape {arr.shape}")
        shifted = arr - np.max(arr, axis=1, keepdims=True)
        log_y = shifted - np.log(np.sum(np.exp(shifted), axis=1, keepdims=True))
        t_arr = np.asarray(t)
        labels = t_arr.argmax(axis=1) if t_arr.shape == arr.shape else t_arr
        if labels.shape != (arr.shape[0],) or labels.dtype.kind not in "iu":
            raise ValueError(f"t must be integer labels of shape ({arr.shape[0]},) or one-hot of shape "
                             f"{arr.shape}, got {t_arr.dtype} of shape {t_arr.shape}")
        n = arr.shape[0]
        self.t, self.y = t, np.exp(log_y)
        self.loss = -np.sum(log_y[np.arange(n), labels]) / n if n else log_y.dtype.type(0)
        return self.loss
