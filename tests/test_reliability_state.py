"""Inputs and state are never corrupted: a failed call leaves a layer's previous forward input,
gradients and argmax untouched; calling backward twice gives the same result; no public function
writes into its arguments (the fuzz test checks that on random inputs; here on every special
value at once, for every backend)."""
from __future__ import annotations

import numpy as np
import pytest

import fastconv
from fastconv import layers
from support import assert_exact, rng_for


def _snapshot(layer):
    """Identity and bytes of every attribute of the layer."""
    out = {}
    for k, v in vars(layer).items():
        out[k] = (id(v), v.tobytes() if isinstance(v, np.ndarray) else repr(v))
    return out


def _layers(dtype):
    rng = rng_for("state", np.dtype(dtype).name)
    W = rng.standard_normal((4, 3, 3, 2)).astype(dtype)
    b = rng.standard_normal(4).astype(dtype)
    x = rng.standard_normal((2, 3, 8, 7)).astype(dtype)
    return {
        "Convolution": (layers.Convolution(W, b, stride=(2, 1), pad=1), x),
        "Pooling": (layers.Pooling(3, 2, stride=2, pad=1), x),
        "AvgPooling": (layers.AvgPooling(2, 3, stride=1, pad=(1, 1)), x),
        "Relu": (layers.Relu(), x),
    }


BAD_FORWARD = {
    "wrong_ndim": lambda x: x[0],
    "complex": lambda x: x.astype(np.complex128),
    "strings": lambda x: np.full(x.shape, "a"),
    "wrong_channels": lambda x: x[:, :2],
    "too_small": lambda x: x[:, :, :1, :1],
    "huge_view": lambda x: np.broadcast_to(x[:1, :, :1, :1], (2**40, x.shape[1], 1, 1)),
    "object": lambda x: x.astype(object),
}
BAD_BACKWARD = {
    "wrong_shape": lambda d: np.zeros(d.shape[:-1] + (d.shape[-1] + 1,)),
    "wrong_ndim": lambda d: d[0],
    "complex": lambda d: d.astype(np.complex64),
    "none": lambda d: None,
    "huge_view": lambda d: np.broadcast_to(np.float64(1), (2**40,) + d.shape[1:]),
}


@pytest.mark.parametrize("name", ["Convolution", "Pooling", "AvgPooling", "Relu"])
def test_failed_calls_leave_layer_state_intact(name, backend, dtype):
    layer, x = _layers(dtype)[name]
    out = layer.forward(x)
    dx = layer.backward(np.ones_like(out))
    before = _snapshot(layer)
    for label, bad in BAD_FORWARD.items():
        try:
            arg = bad(x)
        except ValueError:  # e.g. cannot build the view
            continue
        try:
            layer.forward(arg)
        except (ValueError, TypeError, MemoryError):
            assert _snapshot(layer) == before, f"{name}.forward({label}) failed but changed the layer [{backend}]"
        else:
            before = _snapshot(layer)  # a call that succeeds may update the state (Relu takes any shape)
            layer.forward(x)
            layer.backward(np.ones_like(out))
            before = _snapshot(layer)
    for label, bad in BAD_BACKWARD.items():
        with pytest.raises((ValueError, TypeError, MemoryError)):
            layer.backward(bad(out))
        assert _snapshot(layer) == before, f"{name}.backward({label}) failed but changed the layer [{backend}]"
    # and the layer still works, with the same numbers as before
    assert_exact(layer.backward(np.ones_like(out)), dx, f"{name}.backward after failed calls [{backend}]")


@pytest.mark.parametrize("name", ["Convolution", "Pooling", "AvgPooling", "Relu"])
def test_backward_twice_gives_the_same_result(name, backend, dtype):
    layer, x = _layers(dtype)[name]
    out = layer.forward(x)
    dout = rng_for("twice", name).standard_normal(out.shape).astype(dtype)
    first = layer.backward(dout)
    grads = {k: getattr(layer, k).copy() for k in ("dW", "db") if hasattr(layer, k)}
    if name == "Relu":  # the book's Relu.backward zeroes dout in place and returns it
        assert first is dout
        first = first.copy()
    second = layer.backward(dout)
    assert_exact(second, first, f"{name}.backward twice [{backend}]")
    assert second is not first and not np.shares_memory(second, first)
    for k, v in grads.items():
        assert_exact(getattr(layer, k), v, f"{name}.{k} after backward twice [{backend}]")


def test_failed_forward_before_any_success_leaves_layer_empty(backend):
    conv = layers.Convolution(np.ones((2, 3, 3, 3)), np.zeros(2))
    with pytest.raises(ValueError):
        conv.forward(np.ones((1, 2, 5, 5)))
    assert conv.x is None and conv.dW is None and conv.db is None
    with pytest.raises(RuntimeError):
        conv.backward(np.ones((1, 2, 3, 3)))


def test_layer_weights_are_not_modified(backend, dtype):
    layer, x = _layers(dtype)["Convolution"]
    W, b = layer.W.copy(), layer.b.copy()
    out = layer.forward(x)
    layer.backward(out)
    assert_exact(layer.W, W, "W after forward/backward")
    assert_exact(layer.b, b, "b after forward/backward")


def test_arguments_with_special_values_are_not_modified(backend, dtype):
    """Every function on inputs holding NaN, +-inf, -0.0 and subnormals: byte-identical afterwards."""
    rng = rng_for("specials-immutable", np.dtype(dtype).name)
    x = rng.standard_normal((2, 3, 7, 6)).astype(dtype)
    x.flat[:6] = [np.nan, np.inf, -np.inf, -0.0, np.finfo(dtype).smallest_subnormal, -np.finfo(dtype).tiny]
    w = rng.standard_normal((4, 3, 3, 3)).astype(dtype)
    w.flat[:2] = [np.inf, np.nan]
    b = rng.standard_normal(4).astype(dtype)
    args = [x, w, b]
    with np.errstate(all="ignore"):
        out = fastconv.conv2d(x, w, b, 1, 1)
        dout = np.ones_like(out)
        col = fastconv.im2col(x, 3, 3, 1, 1)
        mp, idx = fastconv.max_pool2d(x, 2, 2, return_indices=True)
        pd = np.ones_like(mp)
        args += [dout, col, pd, idx]
        saved = [a.tobytes() for a in args]
        fastconv.conv2d(x, w, b, 1, 1)
        fastconv.conv2d_backward(dout, x, w, 1, 1)
        fastconv.im2col(x, 3, 3, 1, 1)
        fastconv.col2im(col, x.shape, 3, 3, 1, 1)
        fastconv.max_pool2d(x, 2, 2, return_indices=True)
        fastconv.max_pool2d_backward(pd, x, 2, 2)
        fastconv.max_pool2d_backward(pd, x.shape, 2, 2, indices=idx)
        fastconv.avg_pool2d(x, 2, 2)
        fastconv.avg_pool2d_backward(pd, x, 2, 2)
        fastconv.relu(x)
        fastconv.relu_backward(x, x)
    for i, (a, s) in enumerate(zip(args, saved)):
        assert a.tobytes() == s, f"argument {i} modified [{backend}]"
