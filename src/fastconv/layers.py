"""Drop-in layers for the book "Deep Learning from Scratch" (``common/layers.py``).

Same constructor arguments, attributes and ``forward``/``backward`` methods. The layers
read ``W`` and ``b`` at every call, so the book's optimisers (which update parameters in
place) and ``load_params`` (which reassigns ``layer.W``) work unchanged. A call that raises
leaves the layer's previous state untouched.
"""
from __future__ import annotations

import numpy as np

from . import functional as F

__all__ = ["Convolution", "Pooling", "AvgPooling", "Relu"]


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
            raise RuntimeError("Convolution.backward called before forward")
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
            raise RuntimeError(f"{type(self).__name__}.backward called before forward")
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
            raise RuntimeError("Relu.backward called before forward")
        if (isinstance(dout, np.ndarray) and dout.shape == self.mask.shape
                and dout.dtype in (np.float32, np.float64) and dout.flags.writeable
                and dout.flags.c_contiguous and dout.flags.aligned and not np.may_share_memory(dout, self.mask)):
            return F.relu_backward(dout, mask=self.mask, out=dout)
        return F.relu_backward(dout, mask=self.mask)
