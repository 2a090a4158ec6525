"""Naive reference implementations: explicit loops over output positions, no im2col trick.

Everything computes in float64 (exact for float32 inputs, which widen losslessly) and takes
the geometry as ``stride`` / ``pad`` ints or (h, w) pairs. These are deliberately written from
the definitions (a window slides over the zero-padded input; each output is a sum over the
window), not from the package's code.
"""
from __future__ import annotations

import math

import numpy as np


def pair(v):
    if isinstance(v, (tuple, list)):
        return int(v[0]), int(v[1])
    return int(v), int(v)


def geometry(H, W, kh, kw, stride, pad):
    sh, sw = pair(stride)
    ph, pw = pair(pad)
    OH = (H + 2 * ph - kh) // sh + 1
    OW = (W + 2 * pw - kw) // sw + 1
    return sh, sw, ph, pw, OH, OW


def zero_padded(x, ph, pw):
    N, C, H, W = x.shape
    out = np.zeros((N, C, H + 2 * ph, W + 2 * pw), dtype=np.float64)
    out[:, :, ph:ph + H, pw:pw + W] = x
    return out


# --- im2col / col2im ------------------------------------------------------------------

def im2col(x, kh, kw, stride=1, pad=0):
    """Row r = (n, oh, ow) holds the window's padded values in (c, i, j) order."""
    N, C, H, W = x.shape
    sh, sw, ph, pw, OH, OW = geometry(H, W, kh, kw, stride, pad)
    xp = zero_padded(x, ph, pw)
    col = np.empty((N * OH * OW, C * kh * kw), dtype=np.float64)
    r = 0
    for n in range(N):
        for oh in range(OH):
            for ow in range(OW):
                window = xp[n, :, oh * sh:oh * sh + kh, ow * sw:ow * sw + kw]
                k = 0
                for c in range(C):
                    for i in range(kh):
                        for j in range(kw):
                            col[r, k] = window[c, i, j]
                            k += 1
                r += 1
    return col


def im2col_fast_loops(x, kh, kw, stride=1, pad=0):
    """Same as :func:`im2col` with the inner (c, i, j) loops done by a C-order ravel;
    used for the large book-sized case where the scalar loops would be slow."""
    N, C, H, W = x.shape
    sh, sw, ph, pw, OH, OW = geometry(H, W, kh, kw, stride, pad)
    xp = zero_padded(x, ph, pw)
    col = np.empty((N, OH, OW, C * kh * kw), dtype=np.float64)
    for oh in range(OH):
        for ow in range(OW):
            col[:, oh, ow] = xp[:, :, oh * sh:oh * sh + kh, ow * sw:ow * sw + kw].reshape(N, -1)
    return col.reshape(N * OH * OW, C * kh * kw)


def col2im(col, shape, kh, kw, stride=1, pad=0):
    """Adds each row's window back at its place in the padded image, then crops the padding."""
    N, C, H, W = shape
    sh, sw, ph, pw, OH, OW = geometry(H, W, kh, kw, stride, pad)
    col = np.asarray(col, dtype=np.float64).reshape(N, OH, OW, C, kh, kw)
    xp = np.zeros((N, C, H + 2 * ph, W + 2 * pw), dtype=np.float64)
    for oh in range(OH):
        for ow in range(OW):
            xp[:, :, oh * sh:oh * sh + kh, ow * sw:ow * sw + kw] += col[:, oh, ow]
    return xp[:, :, ph:ph + H, pw:pw + W].copy()


def window_counts(shape, kh, kw, stride=1, pad=0):
    """How many windows cover each input element."""
    N, C, H, W = shape
    sh, sw, ph, pw, OH, OW = geometry(H, W, kh, kw, stride, pad)
    cnt = np.zeros((H + 2 * ph, W + 2 * pw))
    for oh in range(OH):
        for ow in range(OW):
            cnt[oh * sh:oh * sh + kh, ow * sw:ow * sw + kw] += 1
    return np.broadcast_to(cnt[ph:ph + H, pw:pw + W], shape).copy()


# --- convolution -------------------------------------------------------------------------

def conv2d(x, w, b=None, stride=1, pad=0):
    """out[n, f, oh, ow] = sum_{c,i,j} xpad[n, c, oh*sh+i, ow*sw+j] * w[f, c, i, j] + b[f]."""
    x = np.asarray(x, dtype=np.float64)
    w = np.asarray(w, dtype=np.float64)
    N, C, H, W = x.shape
    FN, _, kh, kw = w.shape
    sh, sw, ph, pw, OH, OW = geometry(H, W, kh, kw, stride, pad)
    xp = zero_padded(x, ph, pw)
    out = np.zeros((N, FN, OH, OW))
    for oh in range(OH):
        for ow in range(OW):
            window = xp[:, :, oh * sh:oh * sh + kh, ow * sw:ow * sw + kw]
            out[:, :, oh, ow] = np.einsum("ncij,fcij->nf", window, w)
    if b is not None:
        out += np.asarray(b, dtype=np.float64)[None, :, None, None]
    return out


def conv2d_backward(dout, x, w, stride=1, pad=0):
    """Gradients of sum(conv2d(x, w, b) * dout) w.r.t. x, w and b, position by position."""
    dout = np.asarray(dout, dtype=np.float64)
    x = np.asarray(x, dtype=np.float64)
    w = np.asarray(w, dtype=np.float64)
    N, C, H, W = x.shape
    FN, _, kh, kw = w.shape
    sh, sw, ph, pw, OH, OW = geometry(H, W, kh, kw, stride, pad)
    xp = zero_padded(x, ph, pw)
    dxp = np.zeros_like(xp)
    dw = np.zeros_like(w)
    for oh in range(OH):
        for ow in range(OW):
            hs = slice(oh * sh, oh * sh + kh)
            ws = slice(ow * sw, ow * sw + kw)
            g = dout[:, :, oh, ow]  # (N, FN)
            dxp[:, :, hs, ws] += np.einsum("nf,fcij->ncij", g, w)
            dw += np.einsum("nf,ncij->fcij", g, xp[:, :, hs, ws])
    db = dout.sum(axis=(0, 2, 3))
    return dxp[:, :, ph:ph + H, pw:pw + W].copy(), dw, db


def conv_transpose2d(x, w, stride=1, pad=0, output_size=None):
    """The definition: every input pixel (h, w) of channel c scatters x * W[c, oc, i, j] to
    output pixel (h*sh - ph + i, w*sw - pw + j) where that lies inside the output."""
    x = np.asarray(x, dtype=np.float64)
    w = np.asarray(w, dtype=np.float64)
    N, C, H, W = x.shape
    _, OC, kh, kw = w.shape
    sh, sw = pair(stride)
    ph, pw = pair(pad)
    OH, OW = output_size or (sh * (H - 1) + kh - 2 * ph, sw * (W - 1) + kw - 2 * pw)
    out = np.zeros((N, OC, OH, OW))
    for h in range(H):
        for v in range(W):
            for i in range(kh):
                oh = h * sh - ph + i
                for j in range(kw):
                    ow = v * sw - pw + j
                    if 0 <= oh < OH and 0 <= ow < OW:
                        out[:, :, oh, ow] += x[:, :, h, v] @ w[:, :, i, j]
    return out


def conv_terms(x_shape, w_shape, stride, pad):
    """Terms summed per element of (out, dx, dW, db), for tolerances."""
    N, C, H, W = x_shape
    FN, _, kh, kw = w_shape
    sh, sw, ph, pw, OH, OW = geometry(H, W, kh, kw, stride, pad)
    per_dx = FN * math.ceil(kh / sh) * math.ceil(kw / sw)
    return C * kh * kw + 1, per_dx, N * OH * OW, N * OH * OW


# --- pooling ----------------------------------------------------------------------------------

def max_pool2d(x, kh, kw, stride=None, pad=0):
    """Max over the valid (unpadded) elements of each window, scanned in row-major order:
    a strictly larger value or the first NaN takes over; an all -inf window keeps its first
    valid element. Returns (values float64, flat indices h*W + w into each input plane)."""
    x = np.asarray(x, dtype=np.float64)
    N, C, H, W = x.shape
    stride = (kh, kw) if stride is None else stride
    sh, sw, ph, pw, OH, OW = geometry(H, W, kh, kw, stride, pad)
    out = np.empty((N, C, OH, OW))
    idx = np.empty((N, C, OH, OW), dtype=np.int64)
    for oh in range(OH):
        for ow in range(OW):
            best = np.full((N, C), -np.inf)
            best_i = np.full((N, C), -1, dtype=np.int64)
            for i in range(kh):
                h = oh * sh - ph + i
                if not 0 <= h < H:
                    continue
                for j in range(kw):
                    w = ow * sw - pw + j
                    if not 0 <= w < W:
                        continue
                    v = x[:, :, h, w]
                    take = (best_i < 0) | (v > best) | (np.isnan(v) & ~np.isnan(best))
                    best = np.where(take, v, best)
                    best_i = np.where(take, h * W + w, best_i)
            assert (best_i >= 0).all(), "every window must contain a valid element"
            out[:, :, oh, ow] = best
            idx[:, :, oh, ow] = best_i
    return out, idx


def max_pool2d_valued_pad(x, kh, kw, stride, pad, value):
    """Max over each window with padded elements equal to ``value``, scanned in row-major
    order (a strictly larger value or the first NaN takes over). Index -1: padding won."""
    x = np.asarray(x, dtype=np.float64)
    N, C, H, W = x.shape
    sh, sw, ph, pw, OH, OW = geometry(H, W, kh, kw, stride, pad)
    out = np.empty((N, C, OH, OW))
    idx = np.empty((N, C, OH, OW), dtype=np.int64)
    for oh in range(OH):
        for ow in range(OW):
            best = best_i = None
            for i in range(kh):
                h = oh * sh - ph + i
                for j in range(kw):
                    w = ow * sw - pw + j
                    inside = 0 <= h < H and 0 <= w < W
                    v = x[:, :, h, w] if inside else np.full((N, C), float(value))
                    at = np.full((N, C), h * W + w if inside else -1, dtype=np.int64)
                    if best is None:
                        best, best_i = v, at
                        continue
                    take = (v > best) | (np.isnan(v) & ~np.isnan(best))
                    best = np.where(take, v, best)
                    best_i = np.where(take, at, best_i)
            out[:, :, oh, ow] = best
            idx[:, :, oh, ow] = best_i
    return out, idx


def max_pool2d_backward(dout, indices, shape):
    """Each output gradient added to the input element its index names (none for -1)."""
    dout = np.asarray(dout, dtype=np.float64)
    N, C, H, W = shape
    dx = np.zeros((N, C, H * W))
    n = np.arange(N)[:, None]
    c = np.arange(C)[None, :]
    for oh in range(dout.shape[2]):
        for ow in range(dout.shape[3]):
            at = indices[:, :, oh, ow]
            dx[n, c, np.maximum(at, 0)] += np.where(at >= 0, dout[:, :, oh, ow], 0.0)
    return dx.reshape(shape)


def avg_pool2d(x, kh, kw, stride=None, pad=0):
    """Sum of the valid elements of each window divided by kh*kw (zero padding counts)."""
    x = np.asarray(x, dtype=np.float64)
    N, C, H, W = x.shape
    stride = (kh, kw) if stride is None else stride
    sh, sw, ph, pw, OH, OW = geometry(H, W, kh, kw, stride, pad)
    out = np.zeros((N, C, OH, OW))
    for oh in range(OH):
        for ow in range(OW):
            total = np.zeros((N, C))
            for i in range(kh):
                for j in range(kw):
                    h, w = oh * sh - ph + i, ow * sw - pw + j
                    if 0 <= h < H and 0 <= w < W:
                        total += x[:, :, h, w]
            out[:, :, oh, ow] = total / (kh * kw)
    return out


def avg_pool2d_backward(dout, shape, kh, kw, stride=None, pad=0):
    dout = np.asarray(dout, dtype=np.float64)
    N, C, H, W = shape
    stride = (kh, kw) if stride is None else stride
    sh, sw, ph, pw, OH, OW = geometry(H, W, kh, kw, stride, pad)
    dxp = np.zeros((N, C, H + 2 * ph, W + 2 * pw))
    for oh in range(OH):
        for ow in range(OW):
            dxp[:, :, oh * sh:oh * sh + kh, ow * sw:ow * sw + kw] += dout[:, :, oh, ow][:, :, None, None] / (kh * kw)
    return dxp[:, :, ph:ph + H, pw:pw + W].copy()


# --- relu -----------------------------------------------------------------------------------------

def relu(x):
    """The book's rule: zero where x <= 0, everything else (NaN included) unchanged."""
    out = np.array(x, dtype=np.float64, copy=True)
    out[np.asarray(x) <= 0] = 0
    return out


def relu_backward(dout, x):
    out = np.array(dout, dtype=np.float64, copy=True)
    out[np.asarray(x) <= 0] = 0
    return out


# --- finite differences ---------------------------------------------------------------------

def numerical_grad(f, arr, h=1e-6):
    """Central differences of scalar f() w.r.t. every element of ``arr`` (modified in place
    and restored)."""
    grad = np.zeros_like(arr, dtype=np.float64)
    it = np.nditer(arr, flags=["multi_index"], op_flags=["readwrite"])
    while not it.finished:
        i = it.multi_index
        old = arr[i]
        arr[i] = old + h
        fp = f()
        arr[i] = old - h
        fm = f()
        arr[i] = old
        grad[i] = (fp - fm) / (2 * h)
        it.iternext()
    return grad
