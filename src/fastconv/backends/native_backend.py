"""The C++ backend: thin calls into ``fastconv._core`` (OpenMP kernels, GIL released)."""
from __future__ import annotations

from typing import Optional

import numpy as np

from .. import _core
from .._params import Window

name = "native"


def im2col(x: np.ndarray, win: Window) -> np.ndarray:
    return _core.im2col(x, *win)


def col2im(col: np.ndarray, shape, win: Window) -> np.ndarray:
    return _core.col2im(col, tuple(shape), *win)


def conv2d(x: np.ndarray, w: np.ndarray, b, win: Window) -> np.ndarray:
    return _core.conv2d_forward(x, w, b, *win[2:])


def conv2d_backward(dout: np.ndarray, x: np.ndarray, w: np.ndarray, win: Window):
    return _core.conv2d_backward(dout, x, w, *win[2:])


def conv2d_backward_data(dout: np.ndarray, w: np.ndarray, shape, win: Window) -> np.ndarray:
    return _core.conv2d_backward_data(dout, w, tuple(shape), *win[2:])


def conv2d_backward_weight(dout: np.ndarray, x: np.ndarray, w_shape, win: Window) -> np.ndarray:
    return _core.conv2d_backward_weight(dout, x, *win)


def max_pool2d(x: np.ndarray, win: Window, pad_value: Optional[float] = None):
    return _core.max_pool2d_forward(x, *win, pad_value)


def max_pool2d_backward(dout: np.ndarray, indices: np.ndarray, shape, win: Window) -> np.ndarray:
    return _core.max_pool2d_backward(dout, indices, tuple(shape), *win)


def avg_pool2d(x: np.ndarray, win: Window) -> np.ndarray:
    return _core.avg_pool2d_forward(x, *win)


def avg_pool2d_backward(dout: np.ndarray, shape, win: Window) -> np.ndarray:
    return _core.avg_pool2d_backward(dout, tuple(shape), *win)


def relu(x: np.ndarray, return_mask: bool = False):
    # Elementwise: the kernel sees a flat view, so any shape (0-d included) keeps its shape.
    mask = np.empty(x.shape, dtype=bool) if return_mask else None
    y = _core.relu_forward(x.reshape(-1), None if mask is None else mask.reshape(-1)).reshape(x.shape)
    return (y, mask) if return_mask else y


def relu_backward(dout: np.ndarray, x: np.ndarray, out: Optional[np.ndarray] = None) -> np.ndarray:
    flat_out = None if out is None else out.reshape(-1)
    dx = _core.relu_backward(dout.reshape(-1), x.reshape(-1), flat_out)
    return dx.reshape(x.shape) if out is None else out


def relu_backward_mask(dout: np.ndarray, mask: np.ndarray, out: Optional[np.ndarray] = None) -> np.ndarray:
    flat_out = None if out is None else out.reshape(-1)
    dx = _core.relu_backward_mask(dout.reshape(-1), mask.reshape(-1), flat_out)
    return dx.reshape(dout.shape) if out is None else out


def affine(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    return _core.affine_forward(x, w, b)


def affine_backward(dout: np.ndarray, x: np.ndarray, w: np.ndarray):
    return _core.affine_backward(dout, x, w)
