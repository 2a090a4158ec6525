"""Functional API: validate and normalise arguments once, then hand off to the selected backend.

Shapes follow NCHW. ``stride`` and ``pad`` take an int or an ``(h, w)`` pair everywhere.
Result dtype: float32 when every operand is float32 (or float16), float64 otherwise
(integers compute in float64, as the book's float64 im2col buffer would); complex and
object arrays raise ``TypeError``. Inputs are never modified; results are fresh C-contiguous arrays
(the one exception: ``relu_backward(..., out=...)`` writes into the array you pass).
"""
from __future__ import annotations

import numbers
from typing import Optional, Tuple

import numpy as np

from . import _core
from . import _params as P
from .backends import current_backend

__all__ = [
    "im2col", "col2im", "conv2d", "conv2d_backward", "conv2d_backward_input", "conv2d_backward_weight",
    "conv_transpose2d", "max_pool2d", "max_pool2d_backward", "avg_pool2d", "avg_pool2d_backward",
    "relu", "relu_backward", "affine", "affine_backward",
]


def _image(x, name: str = "x"):
    arr = P.array(x, name)
    P.check_ndim(arr, 4, name, "(N, C, H, W)")
    return arr


def _check_dout(dout: np.ndarray, expected: tuple, what: str) -> None:
    if dout.shape != expected:
        raise ValueError(f"dout has shape {dout.shape} but the {what} forward output has shape {expected}")


# --- im2col / col2im ----------------------------------------------------------

def im2col(input_data, filter_h: int, filter_w: int, stride=1, pad=0) -> np.ndarray:
    """Unfold sliding windows into rows, exactly as the book's ``common.util.im2col``.

    Parameters
    ----------
    input_data : array_like, shape (N, C, H, W)
    filter_h, filter_w : int
    stride, pad : int or (int, int)

    Returns
    -------
    col : ndarray, shape (N*OH*OW, C*filter_h*filter_w)
        Rows ordered (n, oh, ow), columns ordered (c, fh, fw). Zero padding.
        float32 input stays float32 (the book always returns float64).
    """
    x = _image(input_data, "input_data")
    win, OH, OW = P.fitted_window(filter_h, filter_w, stride, pad, x.shape[2], x.shape[3])
    dt = P.compute_dtype(x)
    P.check_alloc("im2col result", (x.shape[0] * OH * OW, x.shape[1] * win.kh * win.kw), dt)
    return current_backend().im2col(P.as_float(x, dt), win)


def col2im(col, input_shape, filter_h: int, filter_w: int, stride=1, pad=0) -> np.ndarray:
    """Fold rows back into an image, summing overlapping windows: the adjoint of :func:`im2col`.

    Parameters
    ----------
    col : array_like, shape (N*OH*OW, C*filter_h*filter_w)
    input_shape : (N, C, H, W)

    Returns
    -------
    ndarray, shape (N, C, H, W), dtype of ``col`` (float32 or float64).
    """
    arr = P.array(col, "col")
    N, C, H, W = P.shape4(input_shape)
    win, OH, OW = P.fitted_window(filter_h, filter_w, stride, pad, H, W)
    expected = (N * OH * OW, C * win.kh * win.kw)
    if arr.shape != expected:
        raise ValueError(
            f"col has shape {arr.shape} but input_shape {(N, C, H, W)} with a {win.kh}x{win.kw} "
            f"window, stride ({win.sh}, {win.sw}), pad ({win.ph}, {win.pw}) needs {expected} "
            f"(output {OH}x{OW})"
        )
    dt = P.compute_dtype(arr)
    P.check_alloc("col2im result", (N, C, H, W), dt)
    return current_backend().col2im(P.as_float(arr, dt), (N, C, H, W), win)


# --- convolution -------------------------------------------------------------

def _conv_operands(x, W, stride, pad, x_name="x"):
    x = _image(x, x_name)
    w = P.array(W, "W")
    P.check_ndim(w, 4, "W", "(FN, C, FH, FW)")
    if x.shape[1] != w.shape[1]:
        raise ValueError(
            f"channel mismatch: x has C={x.shape[1]} channels (shape {x.shape}) "
            f"but W expects C={w.shape[1]} (shape {w.shape})"
        )
    if w.shape[1] == 0:
        raise ValueError(f"W has zero input channels (shape {w.shape})")
    win, OH, OW = P.fitted_window(w.shape[2], w.shape[3], stride, pad, x.shape[2], x.shape[3])
    return x, w, win, (x.shape[0], w.shape[0], OH, OW)


def conv2d(x, W, b=None, stride=1, pad=0) -> np.ndarray:
    """2-D convolution (cross-correlation, as in the book and PyTorch) with optional bias.

    Parameters
    ----------
    x : array_like, shape (N, C, H, W)
    W : array_like, shape (FN, C, FH, FW)
    b : array_like, shape (FN,), optional
    stride, pad : int or (int, int); zero padding.

    Returns
    -------
    ndarray, shape (N, FN, OH, OW) with OH = (H + 2*pad_h - FH) // stride_h + 1.
    """
    x, w, win, out_shape = _conv_operands(x, W, stride, pad)
    operands = [x, w]
    if b is not None:
        b = P.array(b, "b")
        if b.shape != (w.shape[0],):
            raise ValueError(f"b must have shape ({w.shape[0]},) to match W {w.shape}, got {b.shape}")
        operands.append(b)
    dt = P.compute_dtype(*operands)
    P.check_alloc("conv2d result", out_shape, dt)
    bias = None if b is None else P.as_float(b, dt)
    return current_backend().conv2d(P.as_float(x, dt), P.as_float(w, dt), bias, win)


def conv2d_backward(dout, x, W, stride=1, pad=0) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gradients of :func:`conv2d`.

    Parameters
    ----------
    dout : array_like, shape (N, FN, OH, OW), the gradient of the forward output.
    x, W, stride, pad : as passed to the forward call.

    Returns
    -------
    dx : ndarray (N, C, H, W);  dW : ndarray (FN, C, FH, FW);  db : ndarray (FN,)
    """
    x, w, win, out_shape = _conv_operands(x, W, stride, pad)
    d = _image(dout, "dout")
    _check_dout(d, out_shape, "conv2d")
    dt = P.compute_dtype(d, x, w)
    return current_backend().conv2d_backward(P.as_float(d, dt), P.as_float(x, dt), P.as_float(w, dt), win)


def conv2d_backward_input(dout, W, input_shape, stride=1, pad=0) -> np.ndarray:
    """The input gradient of :func:`conv2d` alone: dx (N, C, H, W) for an input of
    ``input_shape`` (N, C, H, W), without the weight gradient's work. x itself is not needed."""
    shape = P.shape4(input_shape)
    w = P.array(W, "W")
    P.check_ndim(w, 4, "W", "(FN, C, FH, FW)")
    if shape[1] != w.shape[1]:
        raise ValueError(f"channel mismatch: input_shape has C={shape[1]} but W expects C={w.shape[1]} "
                         f"(shape {w.shape})")
    win, OH, OW = P.fitted_window(w.shape[2], w.shape[3], stride, pad, shape[2], shape[3])
    d = _image(dout, "dout")
    _check_dout(d, (shape[0], w.shape[0], OH, OW), "conv2d")
    dt = P.compute_dtype(d, w)
    P.check_alloc("conv2d_backward_input result", shape, dt)
    return current_backend().conv2d_backward_data(P.as_float(d, dt), P.as_float(w, dt), shape, win)


def conv2d_backward_weight(dout, x, filter_h: int, filter_w: int, stride=1, pad=0) -> np.ndarray:
    """The weight gradient of :func:`conv2d` alone: dW (FN, C, filter_h, filter_w), with FN
    the channels of ``dout``; W itself is not needed."""
    x = _image(x)
    d = _image(dout, "dout")
    win, OH, OW = P.fitted_window(filter_h, filter_w, stride, pad, x.shape[2], x.shape[3])
    _check_dout(d, (x.shape[0], d.shape[1], OH, OW), "conv2d")
    dt = P.compute_dtype(d, x)
    w_shape = (d.shape[1], x.shape[1], win.kh, win.kw)
    P.check_alloc("conv2d_backward_weight result", w_shape, dt)
    return current_backend().conv2d_backward_weight(P.as_float(d, dt), P.as_float(x, dt), w_shape, win)


def conv_transpose2d(x, W, b=None, stride=1, pad=0, output_size=None) -> np.ndarray:
    """Transposed convolution (DeZero's ``deconv2d``, PyTorch's ``conv_transpose2d``): the
    input gradient of a :func:`conv2d` whose output is ``x``.

    Parameters
    ----------
    x : (N, C, H, W);  W : (C, OC, FH, FW), as in PyTorch and DeZero;  b : (OC,) or None.
    output_size : (OH, OW) or None. None gives ``stride*(H-1) + FH - 2*pad``; a stride above 1
        leaves ``stride - 1`` more sizes that a convolution maps back onto H.

    Returns
    -------
    ndarray (N, OC, OH, OW).
    """
    x = _image(x)
    w = P.array(W, "W")
    P.check_ndim(w, 4, "W", "(C, OC, FH, FW)")
    if x.shape[1] != w.shape[0]:
        raise ValueError(f"channel mismatch: x has C={x.shape[1]} channels (shape {x.shape}) "
                         f"but W (C, OC, FH, FW) expects C={w.shape[0]} (shape {w.shape})")
    bias = None
    if b is not None:
        bias = P.array(b, "b")
        if bias.shape != (w.shape[1],):
            raise ValueError(f"b has shape {bias.shape}, expected ({w.shape[1]},) (OC of W {w.shape})")
    win = P.window(w.shape[2], w.shape[3], stride, pad)
    wanted = None if output_size is None else P.pair(output_size, "output_size")
    out_hw = []
    for axis, (size, k, s, p) in enumerate(((x.shape[2], win.kh, win.sh, win.ph),
                                            (x.shape[3], win.kw, win.sw, win.pw))):
        if size == 0:
            raise ValueError(f"conv_transpose2d: x has an empty {x.shape[2]}x{x.shape[3]} plane")
        smallest = s * (size - 1) + k - 2 * p
        if smallest < 1:
            raise ValueError(f"conv_transpose2d: input size {size} with a {k}-tap filter, stride {s} and pad {p} "
                             f"gives an output of {smallest} pixels")
        size_out = smallest if wanted is None else wanted[axis]
        if not smallest <= size_out <= smallest + s - 1:
            raise ValueError(f"output_size {output_size!r} is not an output of this convolution: along "
                             f"{'HW'[axis]} it must lie in [{smallest}, {smallest + s - 1}]")
        out_hw.append(size_out)
    out_shape = (x.shape[0], w.shape[1], out_hw[0], out_hw[1])
    dt = P.compute_dtype(x, w) if bias is None else P.compute_dtype(x, w, bias)
    P.check_alloc("conv_transpose2d result", out_shape, dt)
    y = current_backend().conv2d_backward_data(P.as_float(x, dt), P.as_float(w, dt), out_shape, win)
    if bias is not None:
        y += P.as_float(bias, dt).reshape(1, -1, 1, 1)
    return y


# --- pooling -----------------------------------------------------------------

def _pool_window(shape, pool_h, pool_w, stride, pad):
    win, OH, OW = P.fitted_window(pool_h, pool_w, (pool_h, pool_w) if stride is None else stride, pad,
                                  shape[2], shape[3], kind="pool")
    return win, (shape[0], shape[1], OH, OW)


def _input_shape(x, name: str = "x"):
    """Forward input given as an array or as its (N, C, H, W) shape."""
    if isinstance(x, tuple):
        return P.shape4(x, name)
    return _image(x, name).shape


def _pad_value(pad_value) -> Optional[float]:
    if pad_value is None:
        return None
    if isinstance(pad_value, (bool, np.bool_)) or not isinstance(pad_value, numbers.Real):
        raise TypeError(f"pad_value must be a number or None, got {type(pad_value).__name__} {pad_value!r}")
    value = float(pad_value)
    if np.isnan(value):
        raise ValueError("pad_value must not be NaN")
    return None if value == -np.inf else value


def max_pool2d(x, pool_h: int, pool_w: int, stride=None, pad=0, return_indices: bool = False, pad_value=None):
    """Max pooling; ``stride=None`` means the window size.

    Padding is -inf by default (it never wins a max: PyTorch's semantics). ``pad_value=0``
    pads with zeros instead, as the book's and DeZero's im2col do: a window of negative values
    touching the padding then gives 0. ``pad`` may be at most half the window. NaN in a window
    gives NaN.

    Returns
    -------
    out : ndarray (N, C, OH, OW)
    indices : ndarray of int64 (N, C, OH, OW), only with ``return_indices=True``:
        the argmax as a flat index ``h*W + w`` into each input plane (PyTorch's convention);
        ties go to the first maximum in row-major window order, padding included; -1 where
        the padding won (that window passes no gradient back).
    """
    x = _image(x)
    value = _pad_value(pad_value)
    win, out_shape = _pool_window(x.shape, pool_h, pool_w, stride, pad)
    P.check_alloc("max_pool2d result", out_shape, np.float64)
    out, indices = current_backend().max_pool2d(P.as_float(x, P.compute_dtype(x)), win, value)
    return (out, indices) if return_indices else out


def _checked_indices(indices, out_shape) -> np.ndarray:
    """Shape and dtype only: each backend checks the range [0, H*W) as it scatters (the native
    one inside its loop, so the common path does not read the indices twice)."""
    idx = np.asarray(indices)
    if idx.dtype.kind not in "iu":
        raise TypeError(f"indices must be integers, got {idx.dtype}")
    if idx.shape != out_shape:
        raise ValueError(f"indices has shape {idx.shape}, expected the pooled shape {out_shape}")
    return np.ascontiguousarray(idx, dtype=np.int64)


def max_pool2d_backward(dout, x, pool_h: int, pool_w: int, stride=None, pad=0, indices=None,
                        pad_value=None) -> np.ndarray:
    """Gradient of :func:`max_pool2d`: each output gradient goes to its window's argmax.

    ``x`` is the forward input; with ``indices`` (from ``return_indices=True``) it may be
    just its (N, C, H, W) shape, otherwise the argmax is recomputed from ``x`` (with the
    forward call's ``pad_value``). An index of -1 (padding won) passes nothing back.
    Returns dx, shape (N, C, H, W), in the dtype of ``dout``.
    """
    shape = _input_shape(x)
    d = _image(dout, "dout")
    value = _pad_value(pad_value)
    win, out_shape = _pool_window(shape, pool_h, pool_w, stride, pad)
    _check_dout(d, out_shape, "max_pool2d")
    P.check_alloc("max_pool2d_backward result", shape, P.compute_dtype(d))
    backend = current_backend()
    if indices is not None:
        idx = _checked_indices(indices, out_shape)
    elif isinstance(x, tuple):
        raise TypeError("max_pool2d_backward needs the input array x, or indices, to locate the maxima")
    else:
        arr = _image(x)
        _, idx = backend.max_pool2d(P.as_float(arr, P.compute_dtype(arr)), win, value)
    return backend.max_pool2d_backward(P.as_float(d, P.compute_dtype(d)), idx, tuple(shape), win)


def avg_pool2d(x, pool_h: int, pool_w: int, stride=None, pad=0) -> np.ndarray:
    """Average pooling; zero padding counts in the divisor (PyTorch's ``count_include_pad=True``).

    Returns ndarray (N, C, OH, OW).
    """
    x = _image(x)
    win, _ = _pool_window(x.shape, pool_h, pool_w, stride, pad)
    return current_backend().avg_pool2d(P.as_float(x, P.compute_dtype(x)), win)


def avg_pool2d_backward(dout, x, pool_h: int, pool_w: int, stride=None, pad=0) -> np.ndarray:
    """Gradient of :func:`avg_pool2d`; ``x`` is the forward input or its (N, C, H, W) shape."""
    shape = _input_shape(x)
    d = _image(dout, "dout")
    win, out_shape = _pool_window(shape, pool_h, pool_w, stride, pad)
    _check_dout(d, out_shape, "avg_pool2d")
    P.check_alloc("avg_pool2d_backward result", shape, P.compute_dtype(d))
    return current_backend().avg_pool2d_backward(P.as_float(d, P.compute_dtype(d)), tuple(shape), win)


# --- activation ----------------------------------------------------------------

def relu(x, return_mask: bool = False):
    """``x`` where ``x > 0``, else 0 (the book's Relu: NaN passes through). Any shape.

    ``return_mask=True`` also returns the book's ``Relu.mask``, the bool array ``x <= 0``,
    computed in the same pass; ``relu_backward(dout, mask=mask)`` then needs no ``x``.
    """
    arr = P.array(x, "x")
    dt = P.compute_dtype(arr)
    if return_mask:
        P.check_alloc("ReLU mask", arr.shape, np.dtype(bool))
    return current_backend().relu(P.as_float(arr, dt), return_mask)


def _check_out(out, shape: tuple, dt: np.dtype, inputs: dict) -> None:
    if not isinstance(out, np.ndarray):
        raise TypeError(f"out must be a numpy.ndarray, got {type(out).__name__}")
    if out.shape != shape or out.dtype != dt:
        raise ValueError(f"out has shape {out.shape} and dtype {out.dtype}; expected {shape} {dt}")
    if not (out.flags.writeable and out.flags.c_contiguous and out.flags.aligned):
        raise ValueError("out must be writeable, C-contiguous and aligned")
    d = inputs.pop("dout")
    same_as_dout = (out.__array_interface__["data"][0] == d.__array_interface__["data"][0]
                    and out.strides == d.strides)
    if not same_as_dout and np.may_share_memory(out, d):
        raise ValueError("out overlaps dout without being exactly dout")
    for name, a in inputs.items():
        if np.may_share_memory(out, a):
            raise ValueError(f"out overlaps {name}")


def relu_backward(dout, x=None, out: Optional[np.ndarray] = None, *, mask=None) -> np.ndarray:
    """``dout`` where ``x > 0`` (NaN in x passes the gradient, as in the book), else 0.

    Give either ``x`` (the forward input) or ``mask`` (the book's ``Relu.mask``, a bool array
    True where ``x <= 0``, e.g. from ``relu(x, return_mask=True)``). With ``mask`` the result
    has dout's dtype rule alone, as the book's ``dout[mask] = 0`` does.
    ``out``: a writeable C-contiguous array of the result's shape and dtype to write into and
    return (it may be ``dout`` itself, which is what the book's ``Relu.backward`` does).
    """
    if (x is None) == (mask is None):
        raise TypeError("relu_backward needs exactly one of x and mask")
    if mask is not None:
        d = P.array(dout, "dout")
        if not isinstance(mask, np.ndarray) or mask.dtype != np.bool_:
            raise TypeError(f"mask must be a bool numpy.ndarray (the book's Relu.mask), got {type(mask).__name__}"
                            + (f" of dtype {mask.dtype}" if isinstance(mask, np.ndarray) else ""))
        if mask.shape != d.shape:
            raise ValueError(f"dout has shape {d.shape} but mask has shape {mask.shape}")
        dt = P.compute_dtype(d)
        if out is not None:
            _check_out(out, d.shape, dt, {"dout": d, "mask": mask})
        return current_backend().relu_backward_mask(P.as_float(d, dt), np.asarray(mask, order="C"), out)
    d, arr = P.arrays(("dout", "x"), (dout, x))
    if d.shape != arr.shape:
        raise ValueError(f"dout has shape {d.shape} but x has shape {arr.shape}")
    dt = P.compute_dtype(d, arr)
    if out is not None:
        _check_out(out, arr.shape, dt, {"dout": d, "x": arr})
    return current_backend().relu_backward(P.as_float(d, dt), P.as_float(arr, dt), out)


# --- fully connected -------------------------------------------------------------

def _affine_operands(x, W, x_name="x"):
    x, w = P.arrays((x_name, "W"), (x, W))
    P.check_ndim(w, 2, "W", "(D, H)")
    if x.ndim < 1:
        raise ValueError(f"{x_name} must have a batch axis, got a 0-d array")
    rows = x.reshape(x.shape[0], int(np.prod(x.shape[1:])))  # not (N, -1): N may be 0
    if rows.shape[1] != w.shape[0]:
        raise ValueError(
            f"{x_name} of shape {x.shape} flattens to {rows.shape[1]} features per row, "
            f"but W of shape {w.shape} expects {w.shape[0]}")
    return rows, w


def affine(x, W, b) -> np.ndarray:
    """The book's ``Affine.forward``: ``x.reshape(N, -1) @ W + b``.

    Parameters
    ----------
    x : array_like, shape (N, ...) whose trailing axes flatten to D
    W : array_like, shape (D, H);  b : array_like, shape (H,)

    Returns
    -------
    ndarray, shape (N, H).
    """
    rows, w = _affine_operands(x, W)
    bias = P.array(b, "b")
    if bias.shape != (w.shape[1],):
        raise ValueError(f"b must have shape ({w.shape[1]},) to match W {w.shape}, got {bias.shape}")
    dt = P.compute_dtype(rows, w, bias)
    P.check_alloc("affine result", (rows.shape[0], w.shape[1]), dt)
    return current_backend().affine(P.as_float(rows, dt), P.as_float(w, dt), P.as_float(bias, dt))


def affine_backward(dout, x, W) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gradients of :func:`affine`: ``dx`` (x's shape), ``dW`` (D, H) and ``db`` (H,)."""
    rows, w = _affine_operands(x, W)
    d = P.array(dout, "dout")
    _check_dout(d, (rows.shape[0], w.shape[1]), "affine")
    dt = P.compute_dtype(d, rows, w)
    dx, dw, db = current_backend().affine_backward(P.as_float(d, dt), P.as_float(rows, dt), P.as_float(w, dt))
    return dx.reshape(np.shape(x)), dw, db


def explain_plan(x_shape, w_shape, stride=1, pad=0, dtype="float32") -> dict:
    """The plan the native backend builds for a convolution of these shapes, now (with the
    current thread count and GEMM kernel family): no computation, nothing allocated.

    Returns a dict: ``kernel`` (the GEMM micro-kernel), ``mr``/``nr``, ``threads``,
    ``forward`` (layout, pixels per item, items, its GEMM's blocks and largest call, scratch
    elements per thread, ``shared_elems`` of weights packed once for all threads) and ``backward`` (the weight-gradient algorithm -- ``"gemm"``,
    ``"gemm_columns"``, ``"dots"`` or ``"taps"``, with ``taps_channel_block`` > 0 when the taps
    run by channel blocks --, its units and groups, the dx channel blocks and row chunks, both
    GEMMs).
    """
    x_shape, w_shape = P.shape4(x_shape, "x_shape"), P.shape4(w_shape, "w_shape")
    if x_shape[1] != w_shape[1]:
        raise ValueError(f"channel mismatch: x_shape has C={x_shape[1]} but w_shape expects C={w_shape[1]}")
    win, _, _ = P.fitted_window(w_shape[2], w_shape[3], stride, pad, x_shape[2], x_shape[3])
    name = np.dtype(dtype).name
    if name not in ("float32", "float64"):
        raise TypeError(f"dtype must be float32 or float64, got {name}")
    return _core.conv2d_plan(list(x_shape), list(w_shape), win.sh, win.sw, win.ph, win.pw, name)
