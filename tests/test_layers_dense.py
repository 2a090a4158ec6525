"""The rest of the book's common/layers.py in fastconv.layers: Affine, Sigmoid, SoftmaxWithLoss,
Dropout and BatchNormalization against the book's classes (tests/book_reference.py): outputs,
gradients, attributes, dtypes, errors, and what they leave of the caller's arrays."""
from __future__ import annotations

import numpy as np
import pytest

import book_reference as book
import fastconv.layers as L
from support import randn, seed_note


def _close(actual, expected, what, rtol=1e-12):
    expected = np.asarray(expected)
    assert np.asarray(actual).dtype == expected.dtype, f"{what}: dtype {np.asarray(actual).dtype} != {expected.dtype}"
    scale = float(np.abs(expected).max(initial=0.0))
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * max(scale, 1e-300),
                               err_msg=f"{what} {seed_note()}")


# Affine: (x shape, H) -- 2-D and 4-D input, the book's SimpleConvNet and DeepConvNet widths.
AFFINE_SHAPES = [((7, 13), 5), ((4, 3, 5, 5), 9), ((100, 30, 12, 12), 100), ((100, 100), 10), ((1, 1), 1)]
DTYPES = [(np.float64, np.float64), (np.float32, np.float32), (np.float32, np.float64)]  # (x, W)


@pytest.mark.parametrize("xdt, wdt", DTYPES, ids=["x64W64", "x32W32", "x32W64"])
@pytest.mark.parametrize("x_shape, H", AFFINE_SHAPES, ids=lambda v: str(v))
def test_affine_matches_book(x_shape, H, xdt, wdt, backend, rng):
    D = int(np.prod(x_shape[1:]))
    W, b = randn(rng, (D, H), wdt), randn(rng, (H,), wdt)
    x = randn(rng, x_shape, xdt)
    x_before = x.copy()
    layer, ref = L.Affine(W, b), book.Affine(W, b)
    assert layer.W is W and layer.b is b and layer.x is None and layer.dW is None
    rtol = 1e-5 if np.float32 in (xdt, wdt) and xdt == wdt else 1e-12
    out = layer.forward(x)
    _close(out, ref.forward(x), "Affine.forward", rtol)
    assert layer.original_x_shape == x_shape and layer.x.shape == (x_shape[0], D)
    assert np.shares_memory(layer.x, x), "Affine.x is the book's reshaped view of the input"
    dout = randn(rng, out.shape, out.dtype)
    dx = layer.backward(dout)
    _close(dx, ref.backward(dout), "Affine.backward dx", rtol)
    assert dx.shape == x_shape
    _close(layer.dW, ref.dW, "Affine.dW", rtol)
    _close(layer.db, ref.db, "Affine.db", rtol)
    np.testing.assert_array_equal(x, x_before)


def test_affine_reads_parameters_at_every_call(backend, rng):
    W, b = randn(rng, (6, 4)), randn(rng, (4,))
    layer = L.Affine(W, b)
    x = randn(rng, (3, 6))
    W -= 1.0  # in place, as the book's optimisers
    _close(layer.forward(x), x @ W + b, "after an in-place update")
    layer.W, layer.b = np.asfortranarray(randn(rng, (6, 4))), [1.0, 2.0, 3.0, 4.0]
    _close(layer.forward(x), x @ layer.W + np.array(layer.b), "after reassignment (Fortran W, list b)")


def test_affine_empty_batch(backend, rng):
    """A batch of 0 (the tail of a split) flows through: (0, H) out, (0, ...) dx, zero dW."""
    layer = L.Affine(randn(rng, (12, 3)), randn(rng, (3,)))
    out = layer.forward(np.zeros((0, 3, 2, 2)))
    assert out.shape == (0, 3) and layer.x.shape == (0, 12)
    dx = layer.backward(np.zeros((0, 3)))
    assert dx.shape == (0, 3, 2, 2)
    np.testing.assert_array_equal(layer.dW, np.zeros((12, 3)))
    np.testing.assert_array_equal(layer.db, np.zeros(3))


def test_affine_errors_leave_state(rng):
    layer = L.Affine(randn(rng, (12, 3)), randn(rng, (3,)))
    x = randn(rng, (2, 3, 2, 2))
    with pytest.raises(RuntimeError, match="Affine.backward called before forward"):
        layer.backward(randn(rng, (2, 3)))
    layer.forward(x)
    with pytest.raises(ValueError, match=r"flattens to 10 features per row, but W of shape \(12, 3\) expects 12"):
        layer.forward(randn(rng, (2, 10)))
    assert layer.original_x_shape == (2, 3, 2, 2)
    with pytest.raises(ValueError, match=r"dout has shape \(3, 3\) but the affine forward output has shape \(2, 3\)"):
        layer.backward(randn(rng, (3, 3)))
    layer.b = randn(rng, (4,))
    with pytest.raises(ValueError, match=r"b must have shape \(3,\)"):
        layer.forward(x)


def test_sigmoid_matches_book(rng):
    x = 4 * randn(rng, (5, 7))
    layer, ref = L.Sigmoid(), book.Sigmoid()
    _close(layer.forward(x), ref.forward(x), "Sigmoid.forward")
    dout = randn(rng, x.shape)
    _close(layer.backward(dout), ref.backward(dout), "Sigmoid.backward")
    _close(layer.out, ref.out, "Sigmoid.out")
    with pytest.raises(ValueError, match="dout has shape"):
        layer.backward(randn(rng, (5, 6)))


@pytest.mark.parametrize("onehot", [False, True], ids=["labels", "onehot"])
@pytest.mark.parametrize("dt", [np.float64, np.float32], ids=["f64", "f32"])
def test_softmax_with_loss_matches_book(onehot, dt, rng):
    x = 3 * randn(rng, (11, 10), dt)
    labels = rng.integers(0, 10, size=11)
    t = np.eye(10)[labels] if onehot else labels
    layer, ref = L.SoftmaxWithLoss(), book.SoftmaxWithLoss()
    loss = layer.forward(x, t)
    ref_loss = ref.forward(x, t)
    assert loss == ref_loss and np.asarray(loss).dtype == np.asarray(ref_loss).dtype
    _close(layer.y, ref.y, "SoftmaxWithLoss.y", 0)
    assert layer.t is t and layer.loss == loss
    _close(layer.backward(), ref.backward(), "SoftmaxWithLoss.backward", 0)


@pytest.mark.parametrize("t, error, match", [
    (np.zeros(5, dtype=int), ValueError, r"labels of shape \(4,\) or one-hot of shape \(4, 3\), got shape \(5,\)"),
    (np.zeros((4, 2)), ValueError, "one-hot of shape"),
    (np.array([0, 1, 2, 3]), ValueError, r"labels t must lie in \[0, 3\)"),
    (np.array([0, 1, -1, 0]), ValueError, "must lie in"),
    (np.array([0.0, 1.0, 2.0, 0.0]), TypeError, "labels t must be integers"),
])
def test_softmax_with_loss_refuses_bad_targets(t, error, match, rng):
    layer = L.SoftmaxWithLoss()
    with pytest.raises(RuntimeError, match="before forward"):
        layer.backward()
    with pytest.raises(error, match=match):
        layer.forward(randn(rng, (4, 3)), t)
    assert layer.y is None and layer.loss is None


def test_dropout_draws_the_books_masks(rng):
    x = randn(rng, (6, 4, 3, 3))
    layer, ref = L.Dropout(0.3), book.Dropout(0.3)
    np.random.seed(7)
    out = layer.forward(x)
    np.random.seed(7)
    ref_out = ref.forward(x)
    np.testing.assert_array_equal(layer.mask, ref.mask)
    assert 0.5 < layer.mask.mean() < 0.9, "a mask that keeps ~70 % of the units"
    _close(out, ref_out, "Dropout.forward (train)", 0)
    dout = randn(rng, x.shape)
    _close(layer.backward(dout), ref.backward(dout), "Dropout.backward", 0)
    _close(layer.forward(x, train_flg=False), ref.forward(x, train_flg=False), "Dropout.forward (test)", 0)
    with pytest.raises(RuntimeError, match="before a training forward"):
        L.Dropout().backward(dout)


@pytest.mark.parametrize("shape", [(8, 5), (6, 3, 4, 4)], ids=["2d", "4d"])
def test_batch_normalization_matches_book(shape, rng):
    D = int(np.prod(shape[1:]))
    gamma, beta = 1 + 0.1 * randn(rng, (D,)), 0.1 * randn(rng, (D,))
    layer, ref = L.BatchNormalization(gamma, beta, 0.8), book.BatchNormalization(gamma, beta, 0.8)
    for step in range(3):
        x = 2 + 3 * randn(rng, shape)
        _close(layer.forward(x), ref.forward(x), f"BatchNormalization.forward step {step}")
        for name in ("running_mean", "running_var", "xc", "xn", "std"):
            _close(getattr(layer, name), getattr(ref, name), f"BatchNormalization.{name}")
        assert layer.batch_size == ref.batch_size and layer.input_shape == ref.input_shape
        dout = randn(rng, shape)
        _close(layer.backward(dout), ref.backward(dout), "BatchNormalization.backward")
        _close(layer.dgamma, ref.dgamma, "dgamma")
        _close(layer.dbeta, ref.dbeta, "dbeta")
    x = randn(rng, shape)
    _close(layer.forward(x, train_flg=False), ref.forward(x, train_flg=False), "BatchNormalization test mode")


def test_batch_normalization_errors(rng):
    layer = L.BatchNormalization(np.ones(12), np.zeros(12))
    with pytest.raises(RuntimeError, match="before a training forward"):
        layer.backward(randn(rng, (2, 12)))
    layer.forward(randn(rng, (4, 3, 2, 2)))
    with pytest.raises(ValueError, match=r"x has 8 features per sample .* running statistics have shape \(12,\)"):
        layer.forward(randn(rng, (4, 2, 2, 2)))
    with pytest.raises(ValueError, match=r"\(N, D\) or \(N, C, H, W\)"):
        layer.forward(randn(rng, (4, 12, 1)))
    with pytest.raises(ValueError, match="dout has shape"):
        layer.backward(randn(rng, (4, 12)))


def test_star_import_gives_every_book_class():
    namespace = {}
    exec("from fastconv.layers import *", namespace)
    for name in book.LAYER_NAMES:
        assert namespace[name].__module__ == "fastconv.layers", name


def test_unpickled_arrays_reach_the_native_kernels(rng):
    """An unpickled array (the book's load_params) has an equal but distinct dtype object; the
    kernels once refused it ("must be float32 or float64, got float64")."""
    import pickle

    from fastconv import _core

    def thaw(a):
        out = pickle.loads(pickle.dumps(a))
        assert out.dtype == a.dtype and out.dtype is not a.dtype
        return out

    x, W = thaw(randn(rng, (2, 3, 6, 6))), thaw(randn(rng, (4, 3, 3, 3)))
    np.testing.assert_allclose(_core.conv2d_forward(x, W, None, 1, 1, 0, 0), book.Convolution(W, np.zeros(4)).forward(x),
                               rtol=1e-12)
    out, idx = _core.max_pool2d_forward(x, 2, 2, 2, 2, 0, 0)
    _core.max_pool2d_backward(out, thaw(idx), x.shape, 2, 2, 2, 2, 0, 0)
    xa, Wa, b = thaw(randn(rng, (3, 5))), thaw(randn(rng, (5, 2))), thaw(randn(rng, (2,)))
    np.testing.assert_allclose(_core.affine_forward(xa, Wa, b), xa @ Wa + b, rtol=1e-12)
    p = thaw(randn(rng, (7,)))
    expected = p - 0.1 * np.ones(7)
    _core.optimizer_update("sgd", p, thaw(np.ones(7)), [], 0.1)
    np.testing.assert_array_equal(p, expected)
    with pytest.raises(TypeError, match="got >f8"):
        _core.affine_forward(xa.astype(">f8"), Wa, b)
