"""The book's ch07 SimpleConvNet training step, the ``train`` case of the table (and the step
:mod:`fastconv.bench.blas` times in fresh processes)."""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from fastconv import layers as L

if TYPE_CHECKING:
    from .cases import Case


class SimpleConvNetStep:
    """One training step (forward + backward, no update) of the book's ch07 SimpleConvNet:
    Convolution -> Relu -> Pooling(2, 2, stride 2) -> Affine -> Relu -> Affine -> SoftmaxWithLoss.

    The images are float32, as the book's ``load_mnist(normalize=True)`` returns them; the
    weights have the step's dtype (the book's ``np.random.randn`` gives float64), which is the
    dtype everything after the first convolution computes in.

    Every layer is fastconv's drop-in (``fastconv.layers``, on the current backend). With
    ``numpy_affine=True`` the Affine layers and the loss are the book's NumPy code instead: the
    step then calls NumPy's BLAS between fastconv calls, which is what the import-order
    comparison (``fastconv.bench.blas``) times. Calling the object returns ``(loss, grads)``,
    grads keyed W1, b1, ..., b3.
    """

    HIDDEN = 100
    CLASSES = 10
    POOL = 2

    def __init__(self, case: Case, dtype, rng: np.random.Generator, weight_init_std: float = 0.01,
                 numpy_affine: bool = False):
        dt = np.dtype(dtype)
        N = case.x_shape[0]
        OH, OW = case.out_hw
        pooled = case.FN * (OH // self.POOL) * (OW // self.POOL)

        def randn(*shape):
            return rng.standard_normal(shape).astype(dt)

        self.x = rng.standard_normal(case.x_shape).astype(np.float32)
        self.t = rng.integers(0, self.CLASSES, size=N)
        self.params = {
            "W1": weight_init_std * randn(*case.w_shape), "b1": 0.1 * randn(case.FN),
            "W2": weight_init_std * randn(pooled, self.HIDDEN), "b2": 0.1 * randn(self.HIDDEN),
            "W3": weight_init_std * randn(self.HIDDEN, self.CLASSES), "b3": 0.1 * randn(self.CLASSES),
        }
        p = self.params
        self.numpy_affine = numpy_affine
        self.conv = L.Convolution(p["W1"], p["b1"], case.stride, case.pad)
        self.relu1 = L.Relu()
        self.pool = L.Pooling(self.POOL, self.POOL, stride=self.POOL)
        self.affine1 = L.Affine(p["W2"], p["b2"])
        self.relu2 = L.Relu()
        self.affine2 = L.Affine(p["W3"], p["b3"])
        self.loss_layer = L.SoftmaxWithLoss()

    @classmethod
    def flop(cls, case: Case) -> int:
        """Convolution forward + backward and the two Affine layers (each 3 GEMMs)."""
        N = case.x_shape[0]
        OH, OW = case.out_hw
        pooled = case.FN * (OH // cls.POOL) * (OW // cls.POOL)
        affine = 2 * N * (pooled * cls.HIDDEN + cls.HIDDEN * cls.CLASSES)
        return 3 * case.conv_flop() + 3 * affine

    def __call__(self):
        if self.numpy_affine:
            return self._step_with_numpy_affine()
        h = self.pool.forward(self.relu1.forward(self.conv.forward(self.x)))
        score = self.affine2.forward(self.relu2.forward(self.affine1.forward(h)))
        loss = self.loss_layer.forward(score, self.t)
        dr = self.relu2.backward(self.affine2.backward(self.loss_layer.backward()))
        self.conv.backward(self.relu1.backward(self.pool.backward(self.affine1.backward(dr))))
        grads = {"W1": self.conv.dW, "b1": self.conv.db, "W2": self.affine1.dW, "b2": self.affine1.db,
                 "W3": self.affine2.dW, "b3": self.affine2.db}
        return float(loss), grads

    def _step_with_numpy_affine(self):
        p, N = self.params, self.x.shape[0]
        h = self.pool.forward(self.relu1.forward(self.conv.forward(self.x)))
        flat = h.reshape(N, -1)
        r = self.relu2.forward(flat @ p["W2"] + p["b2"])
        score = r @ p["W3"] + p["b3"]
        e = np.exp(score - score.max(axis=1, keepdims=True))
        y = e / e.sum(axis=1, keepdims=True)
        loss = -np.sum(np.log(y[np.arange(N), self.t] + 1e-7)) / N
        dscore = y.copy()
        dscore[np.arange(N), self.t] -= 1
        dscore /= N
        grads = {"W3": r.T @ dscore, "b3": dscore.sum(axis=0)}
        dr = self.relu2.backward(dscore @ p["W3"].T)
        grads["W2"], grads["b2"] = flat.T @ dr, dr.sum(axis=0)
        dh = (dr @ p["W2"].T).reshape(h.shape)
        self.conv.backward(self.relu1.backward(self.pool.backward(dh)))
        grads["W1"], grads["b1"] = self.conv.dW, self.conv.db
        return float(loss), grads
