"""Drop-in layers for the book "Deep Learning from Scratch": every class of its ``common/layers.py``.

``from fastconv.layers import *`` in place of ``from common.layers import *`` turns the book's
networks (ch05-ch08, ``common/multi_layer_net*.py``) native with no other change. Same class
names, constructor arguments, attributes and ``forward``/``backward`` methods. The layers read
``W`` and ``b`` (``gamma``, ``beta``) at every call, so the book's optimisers (which update
parameters in place) and ``load_params`` (which reassigns ``layer.W``) work unchanged. A call
that raises leaves the layer's previous state untouched.

Convolution, Pooling, Relu and Affine run on fastconv's C++ kernels and threads (Affine on
fastconv's own GEMM: no NumPy BLAS call in a step, so no BLAS threads to fight). Sigmoid,
SoftmaxWithLoss, Dropout and BatchNormalization are the book's element-wise NumPy formulas
(no BLAS either), kept exactly so that they give the book's numbers and, for Dropout, draw
the book's masks from ``np.random``.
"""
from __future__ import annotations

import numpy as np

from . import _params as P
from . import functional as F

__all__ = [
    "Convolution", "Pooling", "AvgPooling", "Relu", "Sigmoid", "Affine", "SoftmaxWithLoss", "Dropout",
    "BatchNormalization",
]


def _before_forward(layer, forward: str = "forward") -> RuntimeError:
    return RuntimeError(f"{type(layer).__name__}.backward called before {forward}")


class Convolution:
    """``Convolution(W, b, stride=1, pad=0)``: W of shape (FN, C, FH, FW), b of shape (FN,)."""

    def __init__(self, W, b, stride=1, pad=0):
        self.W = W
        self.b = b
        self.stride = stride
        self.pad = pad
        self.x = None  # forward input, kept for backward
        self.dW = None
        self.db = None

    def forward(self, x):
        out = F.conv2d(x, self.W, self.b, self.stride, self.pad)
        self.x = x
        return out

    def backward(self, dout):
        if self.x is None:
            raise _before_forward(self)
        dx, dW, db = F.conv2d_backward(dout, self.x, self.W, self.stride, self.pad)
        self.dW, self.db = dW, db
        return dx


class _Pool2d:
    """Shared constructor and state of the pooling layers."""

    def __init__(self, pool_h, pool_w, stride=2, pad=0):
        self.pool_h = pool_h
        self.pool_w = pool_w
        self.stride = stride
        self.pad = pad
        self.x = None

    def _geometry(self):
        return self.pool_h, self.pool_w, self.stride, self.pad

    def _forward_input_shape(self):
        if self.x is None:
            raise _before_forward(self)
        return np.shape(self.x)


class Pooling(_Pool2d):
    """Max pooling, ``Pooling(pool_h, pool_w, stride=2, pad=0)`` as in the book.

    Unlike the book's version, ``pad`` counts in the output size and pads with -inf,
    so padding never wins a max (PyTorch's semantics). ``arg_max`` holds the argmax of
    each window as a flat index into its input plane.
    """

    def __init__(self, pool_h, pool_w, stride=2, pad=0):
        super().__init__(pool_h, pool_w, stride, pad)
        self.arg_max = None

    def forward(self, x):
        out, arg_max = F.max_pool2d(x, *self._geometry(), return_indices=True)
        self.x, self.arg_max = x, arg_max
        return out

    def backward(self, dout):
        shape = self._forward_input_shape()
        return F.max_pool2d_backward(dout, shape, *self._geometry(), indices=self.arg_max)


class AvgPooling(_Pool2d):
    """Average pooling with the same interface as :class:`Pooling` (zero padding counts)."""

    def forward(self, x):
        out = F.avg_pool2d(x, *self._geometry())
        self.x = x
        return out

    def backward(self, dout):
        return F.avg_pool2d_backward(dout, self._forward_input_shape(), *self._geometry())


class Relu:
    """The book's ``Relu``: ``mask`` is the bool array ``x <= 0`` of the last forward input."""

    def __init__(self):
        self.mask = None

    def forward(self, x):
        out, self.mask = F.relu(x, return_mask=True)
        return out

    def backward(self, dout):
        """Like the book (``dout[self.mask] = 0; return dout``): zeroes ``dout`` in place and
        returns it, when it is a writeable C-contiguous float32/float64 array; otherwise
        (read-only, strided, integer, a list) returns a new array."""
        if self.mask is None:
            raise _before_forward(self)
        if (isinstance(dout, np.ndarray) and dout.shape == self.mask.shape
                and dout.dtype in (np.float32, np.float64) and dout.flags.writeable
                and dout.flags.c_contiguous and dout.flags.aligned and not np.may_share_memory(dout, self.mask)):
            return F.relu_backward(dout, mask=self.mask, out=dout)
        return F.relu_backward(dout, mask=self.mask)


class Sigmoid:
    """The book's ``Sigmoid``: ``out`` is the last forward output, ``1 / (1 + exp(-x))``."""

    def __init__(self):
        self.out = None

    def forward(self, x):
        arr = P.array(x, "x")
        self.out = 1 / (1 + np.exp(-arr))
        return self.out

    def backward(self, dout):
        if self.out is None:
            raise _before_forward(self)
        d = _same_shape(dout, self.out.shape, "Sigmoid")
        return d * (1.0 - self.out) * self.out


def _same_shape(dout, shape, layer: str) -> np.ndarray:
    d = P.array(dout, "dout")
    if d.shape != tuple(shape):
        raise ValueError(f"dout has shape {d.shape} but the {layer} forward output has shape {tuple(shape)}")
    return d


class Affine:
    """The book's ``Affine(W, b)``: ``x.reshape(N, -1) @ W + b`` on fastconv's GEMM.

    ``x`` is the flattened forward input and ``original_x_shape`` its shape, restored on
    ``dx``; ``dW`` and ``db`` are set by ``backward``.
    """

    def __init__(self, W, b):
        self.W = W
        self.b = b
        self.x = None
        self.original_x_shape = None
        self.dW = None
        self.db = None

    def forward(self, x):
        out = F.affine(x, self.W, self.b)
        shape = np.shape(x)
        self.original_x_shape = shape
        self.x = np.reshape(x, (shape[0], int(np.prod(shape[1:]))))  # not (N, -1): N may be 0
        return out

    def backward(self, dout):
        if self.x is None:
            raise _before_forward(self)
        dx, dW, db = F.affine_backward(dout, self.x, self.W)
        self.dW, self.db = dW, db
        return dx.reshape(self.original_x_shape)


def _softmax(x: np.ndarray) -> np.ndarray:
    x = x - np.max(x, axis=-1, keepdims=True)  # the book's common/functions.softmax
    return np.exp(x) / np.sum(np.exp(x), axis=-1, keepdims=True)


def _labels(t, y: np.ndarray) -> np.ndarray:
    """Class indices from labels (N,) or one-hot (N, K) targets, refusing what the book would
    silently misread (a length other than N, a label outside [0, K))."""
    t = np.asarray(t)
    n, k = y.shape
    if t.shape == y.shape:
        return t.argmax(axis=1)
    if t.shape != (n,):
        raise ValueError(f"t must be labels of shape ({n},) or one-hot of shape {y.shape}, got shape {t.shape}")
    if t.dtype.kind not in "iub":
        raise TypeError(f"labels t must be integers, got dtype {t.dtype}")
    if n and (t.min() < 0 or t.max() >= k):
        raise ValueError(f"labels t must lie in [0, {k}), got values from {t.min()} to {t.max()}")
    return t


class SoftmaxWithLoss:
    """The book's ``SoftmaxWithLoss``: ``forward(x, t)`` returns the mean cross-entropy
    (``loss``) of ``y = softmax(x)`` against labels (N,) or one-hot ``t`` (N, K), with the
    book's ``+ 1e-7`` inside the log; ``backward()`` returns ``(y - t) / N`` (like the book,
    it ignores ``dout``)."""

    def __init__(self):
        self.loss = None
        self.y = None
        self.t = None

    def forward(self, x, t):
        arr = P.array(x, "x")
        if arr.ndim != 2:
            raise ValueError(f"x must be scores of shape (N, classes), got shape {arr.shape}")
        y = _softmax(arr)
        labels = _labels(t, y)
        n = y.shape[0]
        loss = -np.sum(np.log(y[np.arange(n), labels] + 1e-7)) / n
        self.t, self.y, self.loss = t, y, loss
        return loss

    def backward(self, dout=1):
        if self.y is None:
            raise _before_forward(self)
        t = np.asarray(self.t)
        n = t.shape[0]
        if t.size == self.y.size:  # one-hot
            return (self.y - t) / n
        dx = self.y.copy()
        dx[np.arange(n), t] -= 1
        return dx / n


class Dropout:
    """The book's ``Dropout(dropout_ratio=0.5)`` (not the inverted variant): while training,
    ``mask = np.random.rand(*x.shape) > dropout_ratio`` -- drawn from ``np.random`` exactly as
    the book does, so a seeded book run gives the same masks -- and ``x * mask``; at test time
    ``x * (1 - dropout_ratio)``. ``rng`` (keyword only, not in the book): draw from this
    ``np.random.RandomState`` instead, so that two networks in one process draw alike."""

    def __init__(self, dropout_ratio=0.5, *, rng=None):
        self.dropout_ratio = dropout_ratio
        self.rng = rng  # anything with .rand (a np.random.RandomState); None: np.random, as the book
        self.mask = None

    def forward(self, x, train_flg=True):
        arr = P.array(x, "x")
        if train_flg:
            rand = (np.random if self.rng is None else self.rng).rand
            self.mask = rand(*arr.shape) > self.dropout_ratio
            return arr * self.mask
        return arr * (1.0 - self.dropout_ratio)

    def backward(self, dout):
        if self.mask is None:
            raise _before_forward(self, "a training forward (train_flg=True)")
        return _same_shape(dout, self.mask.shape, "Dropout") * self.mask


class BatchNormalization:
    """The book's ``BatchNormalization(gamma, beta, momentum=0.9, running_mean=None,
    running_var=None)``: per-feature statistics of 2-D input, 4-D input flattened to
    (N, C*H*W) as the book does (not per channel); ``10e-7`` added to the variance; the
    running statistics updated as ``momentum * old + (1 - momentum) * batch``."""

    def __init__(self, gamma, beta, momentum=0.9, running_mean=None, running_var=None):
        self.gamma = gamma
        self.beta = beta
        self.momentum = momentum
        self.input_shape = None
        self.running_mean = running_mean
        self.running_var = running_var
        self.batch_size = None
        self.xc = None
        self.xn = None
        self.std = None
        self.dgamma = None
        self.dbeta = None

    def forward(self, x, train_flg=True):
        arr = P.array(x, "x")
        if arr.ndim not in (2, 4):
            raise ValueError(f"BatchNormalization takes (N, D) or (N, C, H, W) input, got shape {arr.shape}")
        rows = arr.reshape(arr.shape[0], -1)
        D = rows.shape[1]
        if self.running_mean is not None and np.shape(self.running_mean) != (D,):
            raise ValueError(f"x has {D} features per sample (shape {arr.shape}) but the running statistics "
                             f"have shape {np.shape(self.running_mean)}")
        for name in ("gamma", "beta"):
            size = np.size(getattr(self, name))
            if size not in (1, D):
                raise ValueError(f"{name} has {size} elements but x has {D} features per sample")
        out = self._forward(rows, train_flg)
        self.input_shape = arr.shape
        return out.reshape(arr.shape)

    def _forward(self, x, train_flg):
        if self.running_mean is None:
            self.running_mean = np.zeros(x.shape[1])
            self.running_var = np.zeros(x.shape[1])
        if train_flg:
            mu = x.mean(axis=0)
            xc = x - mu
            var = np.mean(xc ** 2, axis=0)
            std = np.sqrt(var + 10e-7)
            xn = xc / std
            self.batch_size, self.xc, self.xn, self.std = x.shape[0], xc, xn, std
            self.running_mean = self.momentum * self.running_mean + (1 - self.momentum) * mu
            self.running_var = self.momentum * self.running_var + (1 - self.momentum) * var
        else:
            xn = (x - self.running_mean) / np.sqrt(self.running_var + 10e-7)
        return self.gamma * xn + self.beta

    def backward(self, dout):
        if self.xc is None:
            raise _before_forward(self, "a training forward (train_flg=True)")
        d = _same_shape(dout, self.input_shape, "BatchNormalization").reshape(self.xc.shape)
        dbeta = d.sum(axis=0)
        dgamma = np.sum(self.xn * d, axis=0)
        dxn = self.gamma * d
        dxc = dxn / self.std
        dstd = -np.sum((dxn * self.xc) / (self.std * self.std), axis=0)
        dvar = 0.5 * dstd / self.std
        dxc += (2.0 / self.batch_size) * self.xc * dvar
        dmu = np.sum(dxc, axis=0)
        dx = dxc - dmu / self.batch_size
        self.dgamma, self.dbeta = dgamma, dbeta
        return dx.reshape(self.input_shape)
