"""Pure-NumPy reference backend: the book's im2col algorithm, written for clarity.

Inputs arrive validated and C-contiguous in one float dtype (see ``fastconv._params``);
every function keeps that dtype. The native backend is checked against this one.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from .._params import Window, check_index_range

name = "numpy"


def _padded(x: np.ndarray, win: Window, value: float) -> np.ndarray:
    if win.ph == 0 and win.pw == 0:
        return x
    return np.pad(x, [(0, 0), (0, 0), (win.ph, win.ph), (win.pw, win.pw)], constant_values=value)


def _windows(img: np.ndarray, win: Window, OH: int, OW: int) -> np.ndarray:
    """(N, C, kh, kw, OH, OW): tap (i, j) of every output position, from a padded image."""
    N, C = img.shape[:2]
    col = np.empty((N, C, win.kh, win.kw, OH, OW), dtype=img.dtype)
    if col.size == 0:  # nothing to gather: do not loop over the taps of a huge window
        return col
    for i in range(win.kh):
        i_end = i + win.sh * OH
        for j in range(win.kw):
            j_end = j + win.sw * OW
            col[:, :, i, j] = img[:, :, i:i_end:win.sh, j:j_end:win.sw]
    return col


def _scatter_windows(cols: np.ndarray, shape, win: Window) -> np.ndarray:
    """Adjoint of `_windows`: sums (N, C, kh, kw, OH, OW) taps back into an (N, C, H, W) image."""
    N, C, H, W = shape
    OH, OW = cols.shape[4:]
    # Room for the last strided slice, which may run past the padded border.
    if cols.size == 0:  # nothing to scatter: do not loop over the taps of a huge window
        return np.zeros(shape, dtype=cols.dtype)
    img = np.zeros((N, C, H + 2 * win.ph + win.sh - 1, W + 2 * win.pw + win.sw - 1), dtype=cols.dtype)
    for i in range(win.kh):
        i_end = i + win.sh * OH
        for j in range(win.kw):
            j_end = j + win.sw * OW
            img[:, :, i:i_end:win.sh, j:j_end:win.sw] += cols[:, :, i, j]
    return np.ascontiguousarray(img[:, :, win.ph:H + win.ph, win.pw:W + win.pw])


def im2col(x: np.ndarray, win: Window) -> np.ndarray:
    N, C, H, W = x.shape
    OH, OW = win.out_size(H, W)
    col = _windows(_padded(x, win, 0), win, OH, OW)
    # rows (n, oh, ow), columns (c, kh, kw): the book's layout
    return np.ascontiguousarray(col.transpose(0, 4, 5, 1, 2, 3)).reshape(N * OH * OW, C * win.kh * win.kw)


def col2im(col: np.ndarray, shape, win: Window) -> np.ndarray:
    N, C, H, W = shape
    OH, OW = win.out_size(H, W)
    cols = col.reshape(N, OH, OW, C, win.kh, win.kw).transpose(0, 3, 4, 5, 1, 2)
    return _scatter_windows(cols, shape, win)


def conv2d(x: np.ndarray, w: np.ndarray, b, win: Window) -> np.ndarray:
    N, _, H, W = x.shape
    FN = w.shape[0]
    OH, OW = win.out_size(H, W)
    out = im2col(x, win) @ w.reshape(FN, w.shape[1] * win.kh * win.kw).T
    if b is not None:
        out += b
    return np.ascontiguousarray(out.reshape(N, OH, OW, FN).transpose(0, 3, 1, 2))


def _dout_rows(dout: np.ndarray) -> np.ndarray:
    """(N*OH*OW, FN): rows ordered like im2col's."""
    return dout.transpose(0, 2, 3, 1).reshape(dout.shape[0] * dout.shape[2] * dout.shape[3], dout.shape[1])


def conv2d_backward(dout: np.ndarray, x: np.ndarray, w: np.ndarray, win: Window):
    dout_rows = _dout_rows(dout)
    col = im2col(x, win)
    db = dout_rows.sum(axis=0)
    dw = (dout_rows.T @ col).reshape(w.shape)
    dx = col2im(dout_rows @ w.reshape(w.shape[0], col.shape[1]), x.shape, win)
    return dx, dw, db


def conv2d_backward_data(dout: np.ndarray, w: np.ndarray, shape, win: Window) -> np.ndarray:
    return col2im(_dout_rows(dout) @ w.reshape(w.shape[0], -1), shape, win)


def conv2d_backward_weight(dout: np.ndarray, x: np.ndarray, w_shape, win: Window) -> np.ndarray:
    return (_dout_rows(dout).T @ im2col(x, win)).reshape(w_shape)


def max_pool2d(x: np.ndarray, win: Window, pad_value: Optional[float] = None):
    """Max over each window, padding with -inf (or ``pad_value``); also the argmax as a flat
    index h*W + w into the (unpadded) input plane, as
    ``torch.nn.functional.max_pool2d(return_indices=True)``, or -1 where padding won."""
    N, C, H, W = x.shape
    OH, OW = win.out_size(H, W)
    kk = win.kh * win.kw
    taps = _windows(_padded(x, win, -np.inf if pad_value is None else pad_value), win, OH, OW)
    taps = taps.reshape(N, C, kk, OH, OW)
    real = _windows(_padded(np.ones((1, 1, H, W), dtype=bool), win, False), win, OH, OW).reshape(1, 1, kk, OH, OW)
    # The first NaN if any, else the first tap equal to the max. With -inf padding that tap
    # must be a real pixel: an all -inf window points at a pixel, never at padding.
    nan = np.isnan(taps)
    any_nan = nan.any(axis=2, keepdims=True)
    best = taps.max(axis=2, keepdims=True)
    wins = taps == best
    if pad_value is None:
        wins &= real
    k = np.argmax(np.where(any_nan, nan, wins), axis=2)
    out = np.take_along_axis(taps, k[:, :, None], axis=2)[:, :, 0]
    i, j = np.divmod(k, win.kw)
    row = np.arange(OH)[:, None] * win.sh - win.ph + i
    colm = np.arange(OW)[None, :] * win.sw - win.pw + j
    inside = (row >= 0) & (row < H) & (colm >= 0) & (colm < W)
    return np.ascontiguousarray(out), np.where(inside, row * W + colm, -1).astype(np.int64)


def max_pool2d_backward(dout: np.ndarray, indices: np.ndarray, shape, win: Window) -> np.ndarray:
    check_index_range(indices, shape)
    N, C, H, W = shape
    plane = np.arange(N * C, dtype=np.int64).reshape(N, C, 1, 1) * (H * W)
    won = (indices >= 0).ravel()  # -1: padding won, no gradient
    flat = (indices + plane).ravel()[won]
    dx = np.bincount(flat, weights=dout.ravel()[won], minlength=N * C * H * W)
    return dx.astype(dout.dtype, copy=False).reshape(shape)


def avg_pool2d(x: np.ndarray, win: Window) -> np.ndarray:
    """Mean over each window; zero padding counts in the divisor (PyTorch's count_include_pad)."""
    N, C, H, W = x.shape
    OH, OW = win.out_size(H, W)
    taps = _windows(_padded(x, win, 0), win, OH, OW)
    return np.ascontiguousarray(taps.mean(axis=(2, 3), dtype=x.dtype))


def avg_pool2d_backward(dout: np.ndarray, shape, win: Window) -> np.ndarray:
    share = (dout / dout.dtype.type(win.kh * win.kw))[:, :, None, None]
    taps = np.broadcast_to(share, dout.shape[:2] + (win.kh, win.kw) + dout.shape[2:])
    return _scatter_windows(taps, shape, win)


def relu(x: np.ndarray, return_mask: bool = False):
    # The book's Relu: zero where x <= 0, so NaN passes through.
    mask = np.asarray(x <= 0)  # an array even for 0-d x
    y = np.where(mask, x.dtype.type(0), x)
    return (y, mask) if return_mask else y


def relu_backward(dout: np.ndarray, x: np.ndarray, out: Optional[np.ndarray] = None) -> np.ndarray:
    return relu_backward_mask(dout, x <= 0, out)


def relu_backward_mask(dout: np.ndarray, mask: np.ndarray, out: Optional[np.ndarray] = None) -> np.ndarray:
    dx = np.where(mask, dout.dtype.type(0), dout)
    if out is None:
        return dx
    out[...] = dx
    return out


def affine(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    return x @ w + b


def affine_backward(dout: np.ndarray, x: np.ndarray, w: np.ndarray):
    return dout @ w.T, x.T @ dout, dout.sum(axis=0)
