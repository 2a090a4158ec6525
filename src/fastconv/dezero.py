"""DeZero's convolution functions on fastconv's kernels.

DeZero (the framework of "Deep Learning from Scratch 3", ``pip install dezero``) computes
``conv2d``, ``deconv2d``, ``pooling``, ``average_pooling``, ``im2col`` and ``col2im`` with NumPy
im2col code (``dezero/functions_conv.py``). This module offers the same Functions, with DeZero's
semantics (zero padding in max pooling too, its output sizes, dtypes kept, ``b=None``), whose
forward passes run on fastconv and whose backward passes are again DeZero Functions, so higher
derivatives work::

    import dezero
    import fastconv.dezero
    fastconv.dezero.install()     # dezero.functions.conv2d & co. now run on fastconv
    ...
    fastconv.dezero.uninstall()   # DeZero's own again

Or call them directly: ``fastconv.dezero.conv2d(x, W, b, stride, pad)``.

Arrays fastconv does not take (CuPy arrays, integer or float16 data) and pooling pads beyond
half the window go to DeZero's own code, unchanged. Differences, each a DeZero defect:
``Conv2DGradW.backward`` (a second derivative through a weight gradient) raises TypeError in
DeZero (it unpacks a weak reference, and would then apply the weight gradient itself where the
incoming gradient belongs); here it is the true derivative, checked against PyTorch. Average
pooling's gradient keeps float32 (DeZero's becomes float64 under NumPy 2) and works for
non-square windows (DeZero's swaps KH and KW).
"""
from __future__ import annotations

import sys
from typing import Dict, List, Tuple

import numpy as np

try:
    import dezero
    import dezero.functions
    import dezero.functions_conv as _dz
    from dezero.core import Function
    from dezero.utils import pair
except AttributeError as exc:  # pragma: no cover - depends on the installed DeZero
    if "np.int" not in str(exc) and "'int'" not in str(exc):
        raise
    raise ImportError(
        "DeZero 0.0.13 (PyPI) uses np.int, which NumPy 1.24 removed: install DeZero's GitHub head, or "
        "run `np.int = int` before importing dezero"
    ) from exc

from . import functional as F

__all__ = ["conv2d", "deconv2d", "pooling", "average_pooling", "im2col", "col2im", "install", "uninstall",
           "installed"]

# DeZero's own Functions, captured before any install() replaces them.
_ORIGINAL = {name: getattr(_dz, name) for name in (
    "Conv2d", "Deconv2d", "Conv2DGradW", "Pooling", "Pooling2DGrad", "Pooling2DWithIndexes", "AveragePooling",
    "Im2col", "Col2im", "conv2d", "deconv2d", "pooling", "average_pooling", "im2col", "col2im")}


def _native(*arrays) -> bool:
    """Whether fastconv takes these forward inputs (None stands for an absent bias)."""
    return all(a is None or (isinstance(a, np.ndarray) and a.dtype in (np.float32, np.float64)) for a in arrays)


def _pool_native(x, kernel_size, pad) -> bool:
    (kh, kw), (ph, pw) = pair(kernel_size), pair(pad)
    return _native(x) and 2 * ph <= kh and 2 * pw <= kw


def _add_bias(y: np.ndarray, b) -> np.ndarray:
    """DeZero adds b in place, in y's dtype."""
    if b is not None:
        y += b.reshape(1, -1, 1, 1)
    return y


# --- conv2d / deconv2d ----------------------------------------------------------------------

class Conv2d(_ORIGINAL["Conv2d"]):
    def forward(self, x, W, b):
        if not _native(x, W, b):
            return super().forward(x, W, b)
        fused = b is not None and b.dtype == np.result_type(x, W)
        y = F.conv2d(x, W, b if fused else None, self.stride, self.pad)
        return y if fused else _add_bias(y, b)

    def backward(self, gy):
        x, W, b = self.inputs
        gx = deconv2d(gy, W, b=None, stride=self.stride, pad=self.pad, outsize=x.shape[2:])
        gW = Conv2DGradW(self)(x, gy)
        gb = None if b.data is None else gy.sum(axis=(0, 2, 3))
        return gx, gW, gb


class Deconv2d(_ORIGINAL["Deconv2d"]):
    def forward(self, x, W, b):
        if not _native(x, W, b):
            return super().forward(x, W, b)
        size = None if self.outsize is None else pair(self.outsize)
        return _add_bias(F.conv_transpose2d(x, W, None, self.stride, self.pad, output_size=size), b)

    def backward(self, gy):
        x, W, b = self.inputs
        gx = conv2d(gy, W, b=None, stride=self.stride, pad=self.pad)
        gW = Conv2DGradW(self)(gy, x)
        gb = None if b.data is None else gy.sum(axis=(0, 2, 3))
        return gx, gW, gb


class Conv2DGradW(_ORIGINAL["Conv2DGradW"]):
    """dW of a convolution of x, from its output gradient gy (x is the conv's input)."""

    def forward(self, x, gy):
        if not _native(x, gy):
            return super().forward(x, gy)
        return F.conv2d_backward_weight(gy, x, *self.kernel_size, self.stride, self.pad)

    def backward(self, g):
        """gW is bilinear in (x, gy): its adjoints, applied to the incoming gradient g."""
        x, gy = self.inputs
        gx = deconv2d(gy, g, stride=self.stride, pad=self.pad, outsize=x.shape[2:])
        ggy = conv2d(x, g, stride=self.stride, pad=self.pad)
        return gx, ggy


def conv2d(x, W, b=None, stride=1, pad=0):
    return Conv2d(stride, pad)(x, W, b)


def deconv2d(x, W, b=None, stride=1, pad=0, outsize=None):
    return Deconv2d(stride, pad, outsize)(x, W, b)


# --- pooling ----------------------------------------------------------------------------------

class Pooling(_ORIGINAL["Pooling"]):
    """Max pooling over zero-padded windows, as DeZero's im2col pads. On fastconv's path the
    argmax is kept as fastconv's flat plane index (``argmax``, -1 where padding won) instead
    of DeZero's window-relative ``indexes``."""

    argmax = None

    def forward(self, x):
        if not _pool_native(x, self.kernel_size, self.pad):
            return super().forward(x)
        y, self.argmax = F.max_pool2d(x, *pair(self.kernel_size), self.stride, self.pad, return_indices=True,
                                      pad_value=0)
        return y

    def backward(self, gy):
        return Pooling2DGrad(self)(gy)


class Pooling2DGrad(_ORIGINAL["Pooling2DGrad"]):
    def __init__(self, mpool2d):
        self.argmax = mpool2d.argmax
        if self.argmax is None:  # DeZero's own forward ran: its state, its backward
            super().__init__(mpool2d)
            return
        self.mpool2d = mpool2d
        self.kernel_size, self.stride, self.pad = mpool2d.kernel_size, mpool2d.stride, mpool2d.pad
        self.input_shape = mpool2d.inputs[0].shape
        self.dtype = mpool2d.inputs[0].dtype

    def forward(self, gy):
        if self.argmax is None:
            return super().forward(gy)
        gx = F.max_pool2d_backward(gy, self.input_shape, *pair(self.kernel_size), self.stride, self.pad,
                                   indices=self.argmax)
        return gx.astype(self.dtype, copy=False)  # DeZero's gradient has the input's dtype

    def backward(self, ggx):
        return Pooling2DWithIndexes(self.mpool2d)(ggx)


class Pooling2DWithIndexes(_ORIGINAL["Pooling2DWithIndexes"]):
    """x gathered at the forward pass's argmax (0 where padding won)."""

    def __init__(self, mpool2d):
        self.argmax = mpool2d.argmax
        if self.argmax is None:
            super().__init__(mpool2d)

    def forward(self, x):
        if self.argmax is None:
            return super().forward(x)
        N, C = x.shape[:2]
        planes = x.reshape(N * C, -1)
        at = self.argmax.reshape(N * C, -1)
        y = np.take_along_axis(planes, np.maximum(at, 0), axis=1)
        return np.where(at >= 0, y, x.dtype.type(0)).reshape(self.argmax.shape)


class AveragePooling(_ORIGINAL["AveragePooling"]):
    native = False

    def forward(self, x):
        self.native = _pool_native(x, self.kernel_size, self.pad)
        if not self.native:
            return super().forward(x)
        self.input_shape = x.shape
        return F.avg_pool2d(x, *pair(self.kernel_size), self.stride, self.pad)

    def backward(self, gy):
        if not self.native:
            return super().backward(gy)
        return AveragePooling2DGrad(self)(gy)


class AveragePooling2DGrad(Function):
    """The adjoint of average pooling: its own derivative is average pooling again."""

    def __init__(self, apool2d):
        self.kernel_size, self.stride, self.pad = apool2d.kernel_size, apool2d.stride, apool2d.pad
        self.input_shape = apool2d.input_shape

    def forward(self, gy):
        return F.avg_pool2d_backward(gy, self.input_shape, *pair(self.kernel_size), self.stride, self.pad)

    def backward(self, ggx):
        return average_pooling(ggx, self.kernel_size, self.stride, self.pad)


def pooling(x, kernel_size, stride=1, pad=0):
    return Pooling(kernel_size, stride, pad)(x)


def average_pooling(x, kernel_size, stride=1, pad=0):
    return AveragePooling(kernel_size, stride, pad)(x)


# --- im2col / col2im --------------------------------------------------------------------------

def _as_tensor(col: np.ndarray, N: int, C: int, kh: int, kw: int, OH: int, OW: int) -> np.ndarray:
    """Book-layout matrix (N*OH*OW, C*kh*kw) -> DeZero's (N, C, kh, kw, OH, OW), contiguous."""
    return np.ascontiguousarray(col.reshape(N, OH, OW, C, kh, kw).transpose(0, 3, 4, 5, 1, 2))


class Im2col(_ORIGINAL["Im2col"]):
    def forward(self, x):
        if not _native(x):
            return super().forward(x)
        self.input_shape = x.shape
        (kh, kw), (sh, sw), (ph, pw) = pair(self.kernel_size), pair(self.stride), pair(self.pad)
        col = F.im2col(x, kh, kw, (sh, sw), (ph, pw))
        if self.to_matrix:
            return col
        N, C, H, W = x.shape
        return _as_tensor(col, N, C, kh, kw, (H + 2 * ph - kh) // sh + 1, (W + 2 * pw - kw) // sw + 1)

    def backward(self, gy):
        return col2im(gy, self.input_shape, self.kernel_size, self.stride, self.pad, self.to_matrix)


class Col2im(_ORIGINAL["Col2im"]):
    def forward(self, x):
        if not _native(x):
            return super().forward(x)
        kh, kw = pair(self.kernel_size)
        col = x
        if not self.to_matrix:  # (N, C, kh, kw, OH, OW) -> the book's matrix
            N, C, _, _, OH, OW = x.shape
            col = x.transpose(0, 4, 5, 1, 2, 3).reshape(N * OH * OW, C * kh * kw)
        return F.col2im(col, self.input_shape, kh, kw, self.stride, self.pad)

    def backward(self, gy):
        return im2col(gy, self.kernel_size, self.stride, self.pad, self.to_matrix)


def im2col(x, kernel_size, stride=1, pad=0, to_matrix=True):
    return Im2col(kernel_size, stride, pad, to_matrix)(x)


def col2im(x, input_shape, kernel_size, stride=1, pad=0, to_matrix=True):
    return Col2im(input_shape, kernel_size, stride, pad, to_matrix)(x)


# --- install / uninstall ----------------------------------------------------------------------

_OURS = {"Conv2d": Conv2d, "Deconv2d": Deconv2d, "Conv2DGradW": Conv2DGradW, "Pooling": Pooling,
         "Pooling2DGrad": Pooling2DGrad, "Pooling2DWithIndexes": Pooling2DWithIndexes,
         "AveragePooling": AveragePooling, "Im2col": Im2col, "Col2im": Col2im, "conv2d": conv2d,
         "deconv2d": deconv2d, "pooling": pooling, "average_pooling": average_pooling, "im2col": im2col,
         "col2im": col2im}
_patched: List[Tuple[object, str]] = []


def install() -> int:
    """Put fastconv's Functions in place of DeZero's: in ``dezero.functions_conv`` (so DeZero's
    own ``conv2d_simple`` and ``pooling_simple`` use them too), in ``dezero.functions`` (what
    ``dezero.layers`` and ``dezero.models`` call), and in every loaded module that bound one of
    them by name (``from dezero.functions import conv2d``). Modules imported afterwards that bind
    names from ``dezero.functions`` get fastconv's. Idempotent; returns the number of names
    replaced now."""
    count = 0
    originals: Dict[int, str] = {id(fn): name for name, fn in _ORIGINAL.items()}
    for module in list(sys.modules.values()):
        namespace = getattr(module, "__dict__", None)
        if not isinstance(namespace, dict) or module is sys.modules[__name__]:
            continue
        for attr, value in list(namespace.items()):
            name = originals.get(id(value))
            if name is not None and value is _ORIGINAL[name]:
                namespace[attr] = _OURS[name]
                _patched.append((module, attr))
                count += 1
    return count


def uninstall() -> int:
    """Restore DeZero's own Functions wherever :func:`install` put fastconv's; returns how many."""
    ours = {id(fn): name for name, fn in _OURS.items()}
    count = 0
    while _patched:
        module, attr = _patched.pop()
        value = module.__dict__.get(attr)
        name = ours.get(id(value))
        if name is not None and value is _OURS[name]:
            module.__dict__[attr] = _ORIGINAL[name]
            count += 1
    return count


def installed() -> bool:
    """Whether ``dezero.functions.conv2d`` is fastconv's now."""
    return dezero.functions.conv2d is conv2d
