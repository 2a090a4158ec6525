"""fastconv.layers as a drop-in for the book's layers, alone and inside the book's networks."""
from __future__ import annotations

import copy

import numpy as np
import pytest

import book_reference as book
import naive
from fastconv.layers import AvgPooling, Convolution, Pooling, Relu
from support import randn, seed_note


def _close(actual, expected, what, rtol=1e-9):
    expected = np.asarray(expected)
    scale = float(np.abs(expected).max(initial=0.0))
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * max(scale, 1e-300),
                               err_msg=f"{what} {seed_note()}")


# --- single layers ------------------------------------------------------------------------------

def test_convolution_attributes_and_results(backend, rng):
    W = randn(rng, (4, 3, 3, 3))
    b = randn(rng, (4,))
    layer = Convolution(W, b, stride=2, pad=1)
    ref = book.Convolution(W, b, stride=2, pad=1)
    assert layer.W is W and layer.b is b and layer.stride == 2 and layer.pad == 1
    assert layer.x is None and layer.dW is None and layer.db is None
    x = randn(rng, (2, 3, 7, 8))
    out = layer.forward(x)
    assert layer.x is x
    _close(out, ref.forward(x), "Convolution.forward vs book")
    dout = randn(rng, out.shape)
    dx = layer.backward(dout)
    _close(dx, ref.backward(dout.copy()), "Convolution.backward dx vs book")
    _close(layer.dW, ref.dW, "Convolution.dW vs book")
    _close(layer.db, ref.db, "Convolution.db vs book")
    assert layer.dW.shape == W.shape and layer.db.shape == b.shape


def test_convolution_reads_parameters_at_every_call(backend, rng):
    W = randn(rng, (3, 2, 3, 3))
    b = randn(rng, (3,))
    layer = Convolution(W, b, 1, 1)
    x = randn(rng, (2, 2, 5, 5))
    first = layer.forward(x)
    _close(first, naive.conv2d(x, W, b, 1, 1), "initial W")
    # In-place update, as the book's optimisers do (params[key] -= lr * grads[key]).
    W -= 0.5 * randn(rng, W.shape)
    b += 1.0
    second = layer.forward(x)
    assert not np.allclose(first, second)
    _close(second, naive.conv2d(x, W, b, 1, 1), "after an in-place update of W and b")
    dout = randn(rng, second.shape)
    dx = layer.backward(dout)
    rdx, rdw, rdb = naive.conv2d_backward(dout, x, W, 1, 1)
    _close(dx, rdx, "dx after in-place update")
    _close(layer.dW, rdw, "dW after in-place update")
    # Reassignment, as load_params does; also a Fortran-ordered array and a list bias.
    W2 = np.asfortranarray(randn(rng, (3, 2, 3, 3)))
    layer.W = W2
    layer.b = [0.5, -0.5, 2.0]
    _close(layer.forward(x), naive.conv2d(x, W2, [0.5, -0.5, 2.0], 1, 1), "after reassigning W and b")
    dx2 = layer.backward(dout)
    _close(dx2, naive.conv2d_backward(dout, x, W2, 1, 1)[0], "dx after reassigning W")
    # Geometry attributes are read at every call too.
    layer.stride, layer.pad = 2, 0
    _close(layer.forward(x), naive.conv2d(x, W2, [0.5, -0.5, 2.0], 2, 0), "after changing stride/pad")


@pytest.mark.parametrize("pool, stride", [(2, 2), (2, 1), (3, 2), (3, 3)], ids=["2x2s2", "2x2s1", "3x3s2", "3x3s3"])
def test_pooling_matches_book(pool, stride, backend, rng):
    x = randn(rng, (3, 4, 9, 9))
    layer = Pooling(pool, pool, stride=stride)
    ref = book.Pooling(pool, pool, stride=stride)
    assert (layer.pool_h, layer.pool_w, layer.stride, layer.pad, layer.x) == (pool, pool, stride, 0, None)
    out = layer.forward(x)
    assert layer.x is x
    _close(out, ref.forward(x), "Pooling.forward vs book", rtol=0)
    dout = randn(rng, out.shape)
    _close(layer.backward(dout), ref.backward(dout), "Pooling.backward vs book")


def test_pooling_defaults(backend, rng):
    """fastconv's Pooling(pool_h, pool_w) defaults to stride 2 and pad 0."""
    layer = Pooling(2, 2)
    assert layer.stride == 2 and layer.pad == 0
    x = randn(rng, (1, 2, 6, 6))
    assert layer.forward(x).shape == (1, 2, 3, 3)


def test_pooling_with_padding(backend, rng):
    """fastconv's pad pads with -inf and counts in the output size (the book's does not)."""
    x = -np.abs(randn(rng, (2, 2, 5, 5))) - 1
    layer = Pooling(3, 3, stride=2, pad=1)
    out = layer.forward(x)
    ref, ref_idx = naive.max_pool2d(x, 3, 3, 2, 1)
    _close(out, ref, "padded Pooling forward", rtol=0)
    np.testing.assert_array_equal(layer.arg_max, ref_idx)
    dout = randn(rng, out.shape)
    _close(layer.backward(dout), naive.max_pool2d_backward(dout, ref_idx, x.shape), "padded Pooling backward")


def test_relu_layer_matches_book(backend, rng):
    x = randn(rng, (2, 3, 4, 5))
    x[0, 0, 0, :3] = [0.0, -0.0, np.nan]
    layer, ref = Relu(), book.Relu()
    out = layer.forward(x)
    np.testing.assert_array_equal(out, ref.forward(x))
    np.testing.assert_array_equal(layer.mask, ref.mask)
    dout = randn(rng, x.shape)
    np.testing.assert_array_equal(layer.backward(dout.copy()), ref.backward(dout.copy()))


def test_relu_backward_zeroes_dout_in_place_like_the_book(backend, rng):
    x = randn(rng, (2, 3, 4, 5))
    layer, ref = Relu(), book.Relu()
    layer.forward(x)
    ref.forward(x)
    np.testing.assert_array_equal(layer.mask, ref.mask)
    assert layer.mask.dtype == np.bool_
    for dtype in (np.float64, np.float32):  # float32 dout stays float32, as dout[mask] = 0 keeps it
        mine = randn(rng, x.shape).astype(dtype)
        theirs = mine.copy()
        got, want = layer.backward(mine), ref.backward(theirs)
        assert got is mine and want is theirs, "Relu.backward returns dout itself, zeroed where x <= 0"
        np.testing.assert_array_equal(mine, theirs)
        assert (mine[x <= 0] == 0).all() and (mine[x > 0] != 0).all()
    # A dout it may not or cannot write: a new array, dout untouched.
    read_only = randn(rng, x.shape)
    read_only.flags.writeable = False
    strided = randn(rng, x.shape + (2,))[..., 0]
    integers = rng.integers(-5, 5, size=x.shape)  # computes in float64, like the book's im2col
    for dout in (read_only, strided, integers):
        keep = dout.copy()
        got = layer.backward(dout)
        assert got is not dout and not np.shares_memory(got, dout)
        assert got.dtype == np.float64
        np.testing.assert_array_equal(dout, keep)
        np.testing.assert_array_equal(got, ref.backward(keep.astype(np.float64)))


def test_avg_pooling_layer(backend, rng):
    x = randn(rng, (2, 3, 7, 6))
    layer = AvgPooling(3, 2, stride=(2, 1), pad=(1, 1))
    out = layer.forward(x)
    _close(out, naive.avg_pool2d(x, 3, 2, (2, 1), (1, 1)), "AvgPooling.forward")
    dout = randn(rng, out.shape)
    _close(layer.backward(dout), naive.avg_pool2d_backward(dout, x.shape, 3, 2, (2, 1), (1, 1)), "AvgPooling.backward")


@pytest.mark.parametrize("make", [lambda r: Convolution(randn(r, (2, 1, 3, 3)), randn(r, (2,))),
                                  lambda r: Pooling(2, 2), lambda r: AvgPooling(2, 2), lambda r: Relu()],
                         ids=["Convolution", "Pooling", "AvgPooling", "Relu"])
def test_backward_before_forward(make, rng):
    with pytest.raises(RuntimeError, match="before forward"):
        make(rng).backward(randn(rng, (1, 2, 2, 2)))


def test_failed_call_keeps_previous_state(backend, rng):
    """Documented: a call that raises leaves the layer's previous state untouched."""
    W = randn(rng, (2, 3, 3, 3))
    layer = Convolution(W, randn(rng, (2,)))
    x = randn(rng, (1, 3, 5, 5))
    out = layer.forward(x)
    with pytest.raises(ValueError, match="channel mismatch"):
        layer.forward(randn(rng, (1, 2, 5, 5)))
    assert layer.x is x
    dout = randn(rng, out.shape)
    layer.backward(dout)
    dW = layer.dW
    with pytest.raises(ValueError, match="dout has shape"):
        layer.backward(randn(rng, (1, 2, 2, 2)))
    assert layer.dW is dW
    pool = Pooling(2, 2)
    px = randn(rng, (1, 2, 4, 4))
    pool.forward(px)
    with pytest.raises(ValueError, match="4-D"):
        pool.forward(randn(rng, (2, 4, 4)))
    assert pool.x is px
    pd = randn(rng, (1, 2, 2, 2))
    _close(pool.backward(pd), naive.max_pool2d_backward(pd, naive.max_pool2d(px, 2, 2)[1], px.shape), "pool state")


# --- whole networks --------------------------------------------------------------------------------

SWAPS = [pytest.param(("Convolution", "Pooling", "Relu"), id="convpoolrelu"), pytest.param("all", id="all")]


def _pair_of_nets(net_cls, params, swap="all"):
    """The book's network and the same network with fastconv's layers (those in ``swap``), on
    separate copies of the same parameters."""
    ref = net_cls(copy.deepcopy(params), book.BOOK_LAYERS)
    fast = net_cls(copy.deepcopy(params), book.fastconv_layers(swap))
    assert any(isinstance(layer, Convolution) for layer in fast.layers)
    assert not any(isinstance(layer, Convolution) for layer in ref.layers)
    if swap == "all":
        assert all(type(layer).__module__ == "fastconv.layers" for layer in fast.layers + [fast.last_layer])
    return ref, fast


def _seeded(fn, *args):
    """Training calls draw Dropout masks from np.random, as the book does: the same seed before
    both networks' calls gives both the same masks."""
    np.random.seed(20240229)
    return fn(*args)


def _compare_nets(ref, fast, x, t, what):
    _close(fast.predict(x), ref.predict(x), f"{what}: scores")
    np.testing.assert_array_equal(np.argmax(fast.predict(x), axis=1), np.argmax(ref.predict(x), axis=1),
                                  err_msg=f"{what}: predictions {seed_note()}")
    assert fast.accuracy(x, t) == ref.accuracy(x, t)
    _close(_seeded(fast.loss, x, t), _seeded(ref.loss, x, t), f"{what}: loss", rtol=1e-11)
    g_ref = _seeded(ref.gradient, x, t)
    g_fast = _seeded(fast.gradient, x, t)
    assert sorted(g_fast) == sorted(g_ref)
    for key in g_ref:
        assert g_fast[key].shape == g_ref[key].shape, key
        _close(g_fast[key], g_ref[key], f"{what}: gradient {key}", rtol=1e-8)
    return g_ref, g_fast


NETS = [
    pytest.param(book.SimpleConvNet, book.simple_convnet_params, 8, id="SimpleConvNet"),
    pytest.param(book.DeepConvNet, book.deep_convnet_params, 4, id="DeepConvNet"),
]


@pytest.mark.parametrize("swap", SWAPS)
@pytest.mark.parametrize("image_dtype", [np.float64, np.float32], ids=["x64", "x32"])
@pytest.mark.parametrize("net_cls, make_params, batch", NETS)
def test_network_matches_book(net_cls, make_params, batch, image_dtype, swap, backend, rng):
    params = make_params(rng)
    ref, fast = _pair_of_nets(net_cls, params, swap)
    x = rng.uniform(0, 1, size=(batch, 1, 28, 28)).astype(image_dtype)  # MNIST-like
    t = rng.integers(0, 10, size=batch)
    _compare_nets(ref, fast, x, t, f"{net_cls.__name__}[{backend}]")


@pytest.mark.parametrize("net_cls, make_params, batch", NETS)
def test_sgd_steps_and_load_params(net_cls, make_params, batch, backend, rng):
    """A few SGD steps that update the parameters in place, then a load_params-style
    reassignment of fresh arrays: the fastconv network follows the book's at every step."""
    ref, fast = _pair_of_nets(net_cls, make_params(rng))
    lr = 0.1
    for step in range(3):
        x = rng.uniform(0, 1, size=(batch, 1, 28, 28))
        t = rng.integers(0, 10, size=batch)
        g_ref, g_fast = _compare_nets(ref, fast, x, t, f"{net_cls.__name__}[{backend}] step {step}")
        for key in ref.params:
            ref.params[key] -= lr * g_ref[key]  # in place: the layers hold these arrays
            fast.params[key] -= lr * g_fast[key]
        for key in ref.params:
            _close(fast.params[key], ref.params[key], f"params {key} after step {step}", rtol=1e-8)
    # The in-place updates reached fastconv's layers (it agrees with a network freshly built
    # from the updated values, not with one built from the initial ones).
    x = rng.uniform(0, 1, size=(batch, 1, 28, 28))
    t = rng.integers(0, 10, size=batch)
    rebuilt = net_cls(copy.deepcopy(ref.params), book.BOOK_LAYERS)
    _close(_seeded(fast.loss, x, t), _seeded(rebuilt.loss, x, t), "loss after in-place updates", rtol=1e-10)
    # load_params: brand-new arrays assigned to the layers (fast gets Fortran-ordered copies).
    new = make_params(rng)
    ref.load_params(copy.deepcopy(new))
    fast.load_params({k: np.asfortranarray(v.copy()) for k, v in new.items()})
    for i, idx in enumerate(fast.param_layers):
        assert fast.layers[idx].W is fast.params[f"W{i + 1}"]
    _compare_nets(ref, fast, x, t, f"{net_cls.__name__}[{backend}] after load_params")
    clean = net_cls(copy.deepcopy(new), book.BOOK_LAYERS)
    _close(_seeded(fast.loss, x, t), _seeded(clean.loss, x, t), "loaded params equal a network built with them",
           rtol=1e-11)


@pytest.mark.parametrize("swap", SWAPS)
def test_simpleconvnet_full_book_batch(swap, rng):
    """The book's batch of 100 MNIST-sized images through SimpleConvNet (native backend)."""
    ref, fast = _pair_of_nets(book.SimpleConvNet, book.simple_convnet_params(rng), swap)
    x = rng.uniform(0, 1, size=(100, 1, 28, 28)).astype(np.float32)
    t = rng.integers(0, 10, size=100)
    _compare_nets(ref, fast, x, t, "SimpleConvNet batch 100")

