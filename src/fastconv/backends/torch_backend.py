"""PyTorch backend (CPU), for comparison: ``torch.nn.functional`` on zero-copy tensors.

Only importable when PyTorch is installed. Results come back as NumPy arrays.
"""
from __future__ import annotations

import functools
import warnings
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

from .._params import Window, check_index_range

name = "torch"


def _translate_errors(fn):
    """PyTorch reports refusals and failed allocations as RuntimeError; fastconv's contract is
    ValueError / MemoryError (with PyTorch's message)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except RuntimeError as exc:
            msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            if "can't allocate memory" in msg or "out of memory" in msg:
                raise MemoryError(f"PyTorch could not allocate: {msg}") from exc
            raise ValueError(f"PyTorch refused the call: {msg}") from exc
    return wrapper


def _t(a: np.ndarray) -> torch.Tensor:
    if not a.flags.writeable:
        # Zero-copy view of a read-only input; this backend never writes into its inputs.
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
            return torch.from_numpy(a)
    return torch.from_numpy(a)


def _np(t: torch.Tensor) -> np.ndarray:
    return np.asarray(t.numpy(), order="C")


def _geometry(win: Window):
    return dict(stride=(win.sh, win.sw), padding=(win.ph, win.pw))


def im2col(x: np.ndarray, win: Window) -> np.ndarray:
    with torch.no_grad():
        cols = F.unfold(_t(x), (win.kh, win.kw), **_geometry(win))  # (N, C*kh*kw, L)
        return _np(cols.transpose(1, 2).reshape(-1, cols.shape[1]))


def col2im(col: np.ndarray, shape, win: Window) -> np.ndarray:
    N, C, H, W = shape
    with torch.no_grad():
        cols = _t(col).reshape(N, -1, col.shape[1]).transpose(1, 2)
        return _np(F.fold(cols, (H, W), (win.kh, win.kw), **_geometry(win)))


def conv2d(x: np.ndarray, w: np.ndarray, b, win: Window) -> np.ndarray:
    with torch.no_grad():
        return _np(F.conv2d(_t(x), _t(w), None if b is None else _t(b), **_geometry(win)))


def conv2d_backward(dout: np.ndarray, x: np.ndarray, w: np.ndarray, win: Window):
    with torch.no_grad():
        g = _geometry(win)
        # convolution_backward computes dx, dW and db in one pass, as autograd would.
        dx, dw, db = torch.ops.aten.convolution_backward(
            _t(dout), _t(x), _t(w), [w.shape[0]], list(g["stride"]), list(g["padding"]),
            [1, 1], False, [0, 0], 1, [True, True, True],
        )
        return _np(dx), _np(dw), _np(db)


def conv2d_backward_data(dout: np.ndarray, w: np.ndarray, shape, win: Window) -> np.ndarray:
    with torch.no_grad():
        g = _geometry(win)
        x = torch.empty(tuple(shape), dtype=_t(dout).dtype)  # lends only its shape
        dx, _, _ = torch.ops.aten.convolution_backward(
            _t(dout), x, _t(w), None, list(g["stride"]), list(g["padding"]),
            [1, 1], False, [0, 0], 1, [True, False, False],
        )
        return _np(dx)


def conv2d_backward_weight(dout: np.ndarray, x: np.ndarray, w_shape, win: Window) -> np.ndarray:
    with torch.no_grad():
        g = _geometry(win)
        w = torch.empty(tuple(w_shape), dtype=_t(dout).dtype)  # lends only its shape
        _, dw, _ = torch.ops.aten.convolution_backward(
            _t(dout), _t(x), w, None, list(g["stride"]), list(g["padding"]),
            [1, 1], False, [0, 0], 1, [False, True, False],
        )
        return _np(dw)


def max_pool2d(x: np.ndarray, win: Window, pad_value: Optional[float] = None):
    with torch.no_grad():
        if pad_value is None:
            out, idx = F.max_pool2d(_t(x), (win.kh, win.kw), return_indices=True, **_geometry(win))
            return _np(out), _np(idx)
        # A valued padding: pad explicitly, pool unpadded, map indices back (-1: padding won).
        padded = F.pad(_t(x), (win.pw, win.pw, win.ph, win.ph), value=pad_value)
        out, idx = F.max_pool2d(padded, (win.kh, win.kw), stride=(win.sh, win.sw), return_indices=True)
        H, W = x.shape[2:]
        row, col = idx // padded.shape[3] - win.ph, idx % padded.shape[3] - win.pw
        inside = (row >= 0) & (row < H) & (col >= 0) & (col < W)
        return _np(out), _np(torch.where(inside, row * W + col, -1))


def max_pool2d_backward(dout: np.ndarray, indices: np.ndarray, shape, win: Window) -> np.ndarray:
    check_index_range(indices, shape)
    with torch.no_grad():
        if (indices < 0).any():  # padding won those windows: they pass nothing back
            dout = np.where(indices < 0, 0, dout).astype(dout.dtype, copy=False)
            indices = np.maximum(indices, 0)
        d = _t(dout)
        g = _geometry(win)
        # The input only lends its shape to the backward kernel.
        x = torch.empty(shape, dtype=d.dtype)
        return _np(torch.ops.aten.max_pool2d_with_indices_backward(
            d, x, [win.kh, win.kw], list(g["stride"]), list(g["padding"]), [1, 1], False, _t(indices)))


def avg_pool2d(x: np.ndarray, win: Window) -> np.ndarray:
    with torch.no_grad():
        return _np(F.avg_pool2d(_t(x), (win.kh, win.kw), count_include_pad=True, **_geometry(win)))


def avg_pool2d_backward(dout: np.ndarray, shape, win: Window) -> np.ndarray:
    with torch.no_grad():
        d = _t(dout)
        g = _geometry(win)
        x = torch.empty(shape, dtype=d.dtype)
        return _np(torch.ops.aten.avg_pool2d_backward(
            d, x, [win.kh, win.kw], list(g["stride"]), list(g["padding"]), False, True, None))


def relu(x: np.ndarray, return_mask: bool = False):
    with torch.no_grad():
        t = _t(x)
        off = t <= 0
        y = _np(torch.where(off, torch.zeros((), dtype=t.dtype), t))
    return (y, off.numpy().copy()) if return_mask else y


def relu_backward(dout: np.ndarray, x: np.ndarray, out: Optional[np.ndarray] = None) -> np.ndarray:
    with torch.no_grad():
        return relu_backward_mask(dout, (_t(x) <= 0).numpy(), out)


def relu_backward_mask(dout: np.ndarray, mask: np.ndarray, out: Optional[np.ndarray] = None) -> np.ndarray:
    with torch.no_grad():
        d = _t(dout)
        dx = _np(torch.where(_t(mask), torch.zeros((), dtype=d.dtype), d))
    if out is None:
        return dx
    out[...] = dx
    return out


def affine(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return _np(torch.addmm(_t(b), _t(x), _t(w)))


def affine_backward(dout: np.ndarray, x: np.ndarray, w: np.ndarray):
    with torch.no_grad():
        d = _t(dout)
        return _np(d @ _t(w).T), _np(_t(x).T @ d), _np(d.sum(dim=0))


def _empty_guard(fn, result_shapes):
    """Results with no elements are built here (zeros: an empty sum): PyTorch refuses zero-size
    batches/channels/filters in places, and computes some empty shapes in 32 bits."""

    @functools.wraps(fn)
    def wrapper(*args):
        shapes, dtypes = result_shapes(*args)
        if any(0 in s for s in shapes):
            out = tuple(np.zeros(s, dtype=d) for s, d in zip(shapes, dtypes))
            return out if len(out) > 1 else out[0]
        return fn(*args)
    return wrapper


def _out(shape, win):
    OH, OW = win.out_size(shape[2], shape[3])
    return OH, OW


_SHAPES = {
    "im2col": lambda x, win: ([(x.shape[0] * _out(x.shape, win)[0] * _out(x.shape, win)[1],
                                x.shape[1] * win.kh * win.kw)], [x.dtype]),
    "col2im": lambda col, shape, win: ([tuple(shape)], [col.dtype]),
    "conv2d": lambda x, w, b, win: ([(x.shape[0], w.shape[0]) + _out(x.shape, win)], [x.dtype]),
    "conv2d_backward": lambda d, x, w, win: ([x.shape, w.shape, (w.shape[0],)], [d.dtype] * 3),
    "conv2d_backward_data": lambda d, w, shape, win: ([tuple(shape)], [d.dtype]),
    "conv2d_backward_weight": lambda d, x, w_shape, win: ([tuple(w_shape)], [d.dtype]),
    "max_pool2d": lambda x, win, pad_value=None: ([x.shape[:2] + _out(x.shape, win)] * 2, [x.dtype, np.int64]),
    "max_pool2d_backward": lambda d, idx, shape, win: ([tuple(shape)], [d.dtype]),
    "avg_pool2d": lambda x, win: ([x.shape[:2] + _out(x.shape, win)], [x.dtype]),
    "avg_pool2d_backward": lambda d, shape, win: ([tuple(shape)], [d.dtype]),
}
for _name, _shapes in _SHAPES.items():
    globals()[_name] = _translate_errors(_empty_guard(globals()[_name], _shapes))
affine = _translate_errors(affine)
affine_backward = _translate_errors(affine_backward)
relu = _translate_errors(relu)
relu_backward = _translate_errors(relu_backward)
relu_backward_mask = _translate_errors(relu_backward_mask)
