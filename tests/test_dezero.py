"""fastconv.dezero against DeZero itself (the PyPI release in the test extra; DeZero's GitHub
head works too: PYTHONPATH=<its checkout> python -m pytest tests/test_dezero.py).

Every function gives DeZero's own results on the case table, forward and backward; second
derivatives match DeZero where DeZero can take them and PyTorch where it cannot (DeZero's
Conv2DGradW.backward raises); DeZero's gradient_check passes through the native path; and a
DeZero CNN trains to the same losses with and without install().
"""
from __future__ import annotations

import sys
import types

import numpy as np
import pytest

import naive
from cases import CASES, POOL_CASES, SMALL_CASES, params
from support import assert_close, randn, rng_for

# DeZero 0.0.13 evaluates np.int (removed in NumPy 1.24) at import: restore the alias for its
# import only. The GitHub head no longer needs it.
_had_int = hasattr(np, "int")
if not _had_int:
    np.int = int  # type: ignore[attr-defined]
try:
    dezero = pytest.importorskip("dezero", reason="DeZero comes with the test extra: pip install '.[test]'")
finally:
    if not _had_int:
        del np.int  # type: ignore[attr-defined]

import dezero.functions as DF  # noqa: E402
import dezero.functions_conv as DFC  # noqa: E402
from dezero import Variable  # noqa: E402

import fastconv  # noqa: E402
import fastconv.dezero as FD  # noqa: E402

DTYPES = [np.float32, np.float64]
# DeZero's own im2col cannot reshape an empty batch: it is compared on the others.
DZ_CASES = [c for c in CASES if c.N > 0]
DZ_POOL_CASES = [c for c in POOL_CASES if c.N > 0]


@pytest.fixture(autouse=True)
def dezero_own_functions():
    """Each test starts and ends with DeZero's own functions in place."""
    FD.uninstall()
    yield
    FD.uninstall()


def _run(fn, inputs, gy_seed):
    """fn(*Variables) forward, then backward from a random output gradient: (y, grads)."""
    vs = [Variable(a.copy()) for a in inputs]
    y = fn(*vs)
    gy = randn(rng_for("dezero-gy", gy_seed, y.shape), y.shape).astype(y.dtype)
    y.grad = Variable(gy)
    y.backward()
    return y.data, [None if v.grad is None else v.grad.data for v in vs], gy


def _check_against_dezero(ours, theirs, inputs, abs_inputs, nterms, dtype, what, grad_dtype=None):
    """Our Function against DeZero's on the same inputs; DeZero on ``abs_inputs`` with |gy|
    bounds the sum of |terms| of each element (|inputs| for linear maps; for max pooling the
    inputs themselves, so that the same maxima are picked)."""
    y, grads, gy = _run(ours, inputs, what)
    ref_y, ref_grads, _ = _run(theirs, inputs, what)
    assert y.dtype == ref_y.dtype, f"{what}: dtype {y.dtype} != DeZero's {ref_y.dtype}"
    abs_vs = [Variable(a.copy()) for a in abs_inputs]
    abs_y = theirs(*abs_vs)
    abs_y.grad = Variable(np.abs(gy))
    abs_y.backward()
    assert_close(y, ref_y, np.abs(abs_y.data), nterms, dtype, f"{what} forward")
    for i, (g, r, v) in enumerate(zip(grads, ref_grads, abs_vs)):
        assert (g is None) == (r is None), f"{what}: gradient {i} present in one only"
        if g is not None:
            want = r.dtype if grad_dtype is None else grad_dtype
            assert g.dtype == want, f"{what}: gradient {i} dtype {g.dtype}, expected {want} (DeZero's: {r.dtype})"
            assert_close(g, r, v.grad.data, nterms, dtype, f"{what} gradient {i}")


def _conv_inputs(case, dtype, with_bias):
    rng = rng_for("dezero-conv", case.id)
    x, w, b = randn(rng, case.x_shape), randn(rng, case.w_shape), randn(rng, (case.FN,))
    arrays = [x, w] + ([b] if with_bias else [])
    return [a.astype(dtype) for a in arrays], [np.abs(a).astype(dtype) for a in arrays]


@pytest.mark.parametrize("with_bias", [True, False], ids=["bias", "b_none"])
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("case", params(DZ_CASES))
def test_conv2d_matches_dezero(case, dtype, with_bias):
    inputs, abs_inputs = _conv_inputs(case, dtype, with_bias)
    s, p = case.stride, case.pad

    def call(conv2d):
        return (lambda x, w, b: conv2d(x, w, b, s, p)) if with_bias else (lambda x, w: conv2d(x, w, None, s, p))
    nterms = max(naive.conv_terms(case.x_shape, case.w_shape, s, p))
    _check_against_dezero(call(FD.conv2d), call(DFC.conv2d), inputs, abs_inputs, nterms, dtype, f"conv2d {case.id}")


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("case", params(DZ_CASES))
def test_deconv2d_matches_dezero(case, dtype):
    """The case's conv read backwards: input of the output's shape, W (C_in, C_out, kh, kw) =
    (FN, C, kh, kw), outsize the case's input plane."""
    rng = rng_for("dezero-deconv", case.id)
    arrays = [randn(rng, case.out_shape), randn(rng, case.w_shape), randn(rng, (case.C,))]
    inputs, abs_inputs = [a.astype(dtype) for a in arrays], [np.abs(a).astype(dtype) for a in arrays]
    s, p, size = case.stride, case.pad, (case.H, case.W)
    nterms = max(naive.conv_terms(case.x_shape, case.w_shape, s, p))
    _check_against_dezero(lambda x, w, b: FD.deconv2d(x, w, b, s, p, size),
                          lambda x, w, b: DFC.deconv2d(x, w, b, s, p, size),
                          inputs, abs_inputs, nterms, dtype, f"deconv2d {case.id}")


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("case", params(DZ_POOL_CASES))
def test_pooling_matches_dezero(case, dtype):
    """Max pooling with DeZero's zero padding (a window of negatives at the border gives 0, and
    its gradient goes nowhere) and average pooling; the data are shifted down so that padding
    wins some windows."""
    rng = rng_for("dezero-pool", case.id)
    x = (randn(rng, case.x_shape) - 0.7).astype(dtype)
    k, s, p = (case.kh, case.kw), case.stride, case.pad
    taps = case.kh * case.kw
    _check_against_dezero(lambda v: FD.pooling(v, k, s, p), lambda v: DFC.pooling(v, k, s, p), [x], [x],
                          taps, dtype, f"pooling {case.id}")
    # Under NumPy 2 DeZero's own average-pooling gradient of float32 data is float64 (its
    # `gy /= KW*KH` divides by a 0-d int64 array, which NumPy 2 no longer treats as a weak
    # scalar); fastconv keeps the data's dtype, as DeZero does everywhere else.
    if case.kh == case.kw:
        _check_against_dezero(lambda v: FD.average_pooling(v, k, s, p), lambda v: DFC.average_pooling(v, k, s, p),
                              [x], [np.abs(x)], taps, dtype, f"average_pooling {case.id}", grad_dtype=dtype)
        return
    # A non-square window: DeZero's own backward swaps KH and KW and raises IndexError, so the
    # gradient is checked against the naive loops and only the forward against DeZero.
    xv = Variable(x.copy())
    y = FD.average_pooling(xv, k, s, p)
    ref = DFC.average_pooling(Variable(x.copy()), k, s, p).data
    assert_close(y.data, ref, DFC.average_pooling(Variable(np.abs(x)), k, s, p).data, taps, dtype, "avg forward")
    gy = randn(rng, y.shape).astype(dtype)
    y.grad = Variable(gy)
    y.backward()
    assert xv.grad.dtype == dtype
    assert_close(xv.grad.data, naive.avg_pool2d_backward(gy, case.x_shape, case.kh, case.kw, s, p),
                 naive.avg_pool2d_backward(np.abs(gy), case.x_shape, case.kh, case.kw, s, p), taps, dtype,
                 "avg backward, non-square window")


@pytest.mark.parametrize("to_matrix", [True, False], ids=["matrix", "tensor"])
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("case", params(DZ_CASES))
def test_im2col_col2im_match_dezero(case, dtype, to_matrix):
    rng = rng_for("dezero-im2col", case.id)
    x = randn(rng, case.x_shape).astype(dtype)
    k, s, p = (case.kh, case.kw), case.stride, case.pad
    col = DFC.im2col(Variable(x), k, s, p, to_matrix).data
    ours = FD.im2col(Variable(x), k, s, p, to_matrix).data
    assert ours.shape == col.shape and ours.dtype == col.dtype and ours.flags.c_contiguous
    np.testing.assert_array_equal(ours, col)  # a copy of pixels: exact
    taps = max(naive.conv_terms(case.x_shape, case.w_shape, s, p)[1], 1)
    _check_against_dezero(lambda v: FD.im2col(v, k, s, p, to_matrix), lambda v: DFC.im2col(v, k, s, p, to_matrix),
                          [x], [np.abs(x)], taps, dtype, f"im2col {case.id}")
    c = randn(rng, col.shape).astype(dtype)
    _check_against_dezero(lambda v: FD.col2im(v, case.x_shape, k, s, p, to_matrix),
                          lambda v: DFC.col2im(v, case.x_shape, k, s, p, to_matrix),
                          [c], [np.abs(c)], taps, dtype, f"col2im {case.id}")


# --- second derivatives ------------------------------------------------------------------------

def _double(conv2d, x, w, b, s, p, through):
    """d/d(x, W) of sum(gx**2) (through="gx") or sum(gW**2) (through="gW"), gx, gW the first
    derivatives of sum(conv2d(x, W, b)**2 / 2)."""
    xv, wv, bv = Variable(x.copy()), Variable(w.copy()), Variable(b.copy())
    y = conv2d(xv, wv, bv, s, p)
    DF.sum(y * y / 2).backward(create_graph=True)
    g = xv.grad if through == "gx" else wv.grad
    xv.cleargrad(), wv.cleargrad(), bv.cleargrad()
    DF.sum(g * g).backward()
    return xv.grad.data, wv.grad.data


@pytest.mark.parametrize("case", params([c for c in SMALL_CASES if c.N > 0]))
def test_second_derivatives(case):
    rng = rng_for("dezero-double", case.id)
    x, w, b = randn(rng, case.x_shape), randn(rng, case.w_shape), randn(rng, (case.FN,))
    s, p = case.stride, case.pad
    ours = _double(FD.conv2d, x, w, b, s, p, "gx")
    theirs = _double(DFC.conv2d, x, w, b, s, p, "gx")
    for a, r, name in zip(ours, theirs, ("x", "W")):
        np.testing.assert_allclose(a, r, rtol=1e-9, atol=1e-9 * np.abs(r).max(), err_msg=f"d sum(gx^2)/d{name}")
    with pytest.raises(TypeError):  # DeZero's own: Conv2DGradW.backward unpacks a weak reference
        _double(DFC.conv2d, x, w, b, s, p, "gW")
    torch = pytest.importorskip("torch", reason="the weight-gradient path is checked against PyTorch")
    tx, tw, tb = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    ty = torch.nn.functional.conv2d(tx, tw, tb, stride=naive.pair(s), padding=naive.pair(p))
    gx, gw = torch.autograd.grad((ty * ty / 2).sum(), (tx, tw), create_graph=True)
    ref = torch.autograd.grad((gw * gw).sum(), (tx, tw), allow_unused=True)
    ours = _double(FD.conv2d, x, w, b, s, p, "gW")
    for a, r, name in zip(ours, ref, ("x", "W")):
        r = np.zeros_like(a) if r is None else r.detach().numpy()
        np.testing.assert_allclose(a, r, rtol=1e-9, atol=1e-9 * max(np.abs(r).max(), 1.0),
                                   err_msg=f"d sum(gW^2)/d{name}")


@pytest.mark.parametrize("case", params([c for c in SMALL_CASES if c.N > 0 and c.pool_ok]))
def test_pooling_second_derivative_matches_dezero(case):
    """The gradient of a function of the pooling gradient: DeZero's Pooling2DWithIndexes path."""
    rng = rng_for("dezero-pool-double", case.id)
    x, c = randn(rng, case.x_shape) - 0.5, randn(rng, case.x_shape)
    k, s, p = (case.kh, case.kw), case.stride, case.pad

    def second(pooling):
        xv, cv = Variable(x.copy()), Variable(c.copy())
        y = pooling(xv, k, s, p)
        DF.sum(y * y).backward(create_graph=True)  # dx = pool_grad(2 y): depends on x through y
        g = xv.grad
        xv.cleargrad()
        DF.sum(g * cv).backward()
        return xv.grad.data
    np.testing.assert_allclose(second(FD.pooling), second(DFC.pooling), rtol=1e-12, atol=1e-12)
    if case.kh == case.kw:  # DeZero's own average-pooling backward raises on other windows
        np.testing.assert_allclose(second(FD.average_pooling), second(DFC.average_pooling), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name, fn", [
    ("conv2d", lambda x, w, b: DF.conv2d(x, w, b, 1, 1)),
    ("conv2d_s2", lambda x, w, b: DF.conv2d(x, w, b, 2, 1)),
    ("deconv2d", lambda x, w, b: DF.deconv2d(x, w.transpose(1, 0, 2, 3), None, 2, 1)),
    ("pooling", lambda x, w, b: DF.pooling(x, 2, 2, 1)),
    ("average_pooling", lambda x, w, b: DF.average_pooling(x, 3, 1, 1)),
    ("conv2d_simple", lambda x, w, b: DF.conv2d_simple(x, w, b, 1, 1)),
])
def test_dezero_gradient_check_passes_through_the_native_path(name, fn, rng, monkeypatch):
    """DeZero's own numerical gradient check, run with the functions installed; the native
    kernels must really be called (counted)."""
    x = randn(rng, (2, 3, 5, 6))
    w = Variable(randn(rng, (4, 3, 3, 3)))
    b = Variable(randn(rng, (4,)))
    calls = []
    for fn_name in ("conv2d", "conv_transpose2d", "max_pool2d", "avg_pool2d", "im2col"):
        real = getattr(FD.F, fn_name)
        monkeypatch.setattr(FD.F, fn_name, lambda *a, _real=real, _n=fn_name, **k: calls.append(_n) or _real(*a, **k))
    FD.install()
    if name == "deconv2d":
        w = Variable(randn(rng, (3, 4, 3, 3)).transpose(1, 0, 2, 3).copy())
    assert dezero.utils.gradient_check(lambda v: fn(v, w, b), x)
    assert calls, "the native functions were not called"


# --- install / uninstall -----------------------------------------------------------------------

def test_install_and_uninstall():
    bound = types.ModuleType("user_model_module")
    bound.conv2d = DF.conv2d  # as `from dezero.functions import conv2d` would
    bound.Pooling = DFC.Pooling
    sys.modules[bound.__name__] = bound
    try:
        own = DF.conv2d
        assert not FD.installed()
        assert FD.install() >= 15 + 6 + 2  # functions_conv's 15 names, functions' 6, the module's 2
        assert FD.installed()
        assert DF.conv2d is FD.conv2d and DFC.conv2d is FD.conv2d and DFC.Conv2d is FD.Conv2d
        assert DF.pooling is FD.pooling and DF.im2col is FD.im2col and DF.average_pooling is FD.average_pooling
        assert bound.conv2d is FD.conv2d and bound.Pooling is FD.Pooling
        assert FD.install() == 0  # idempotent
        assert FD.uninstall() >= 23
        assert DF.conv2d is own and bound.conv2d is own and bound.Pooling is FD._ORIGINAL["Pooling"]
        assert not FD.installed()
        assert FD.uninstall() == 0
    finally:
        del sys.modules[bound.__name__]


def test_dezero_layers_use_the_installed_functions(rng, monkeypatch):
    """dezero.layers.Conv2d calls F.conv2d at run time: after install() it is fastconv's."""
    seen = []
    real = FD.F.conv2d
    monkeypatch.setattr(FD.F, "conv2d", lambda *a, **k: seen.append(1) or real(*a, **k))
    layer = dezero.layers.Conv2d(4, kernel_size=3, pad=1)
    x = randn(rng, (2, 3, 6, 6)).astype(np.float32)
    before = layer(x).data
    assert not seen
    FD.install()
    after = layer(x).data
    assert seen and after.dtype == before.dtype  # float64 under NumPy 2: DeZero scales W by an np.float64
    np.testing.assert_allclose(after, before, rtol=1e-5, atol=1e-5)


def test_what_fastconv_does_not_take_goes_to_dezero(rng):
    """Integer data and pooling pads beyond half the window run DeZero's own code: same
    results, dtype included."""
    xi = rng.integers(-3, 4, size=(2, 2, 5, 5))
    wi = rng.integers(-3, 4, size=(3, 2, 3, 3))
    for ours, theirs in ((FD.conv2d(xi, wi, None, 1, 1), DFC.conv2d(xi, wi, None, 1, 1)),
                         (FD.im2col(xi, 3, 1, 1), DFC.im2col(xi, 3, 1, 1)),
                         (FD.pooling(xi, 2, 2, 0), DFC.pooling(xi, 2, 2, 0))):
        assert ours.dtype == theirs.dtype
        np.testing.assert_array_equal(ours.data, theirs.data)
    x = randn(rng, (2, 2, 5, 5))
    for fn in ("pooling", "average_pooling"):
        xv, rv = Variable(x.copy()), Variable(x.copy())
        y, r = getattr(FD, fn)(xv, 2, 1, 2), getattr(DFC, fn)(rv, 2, 1, 2)  # pad 2 > half of 2
        np.testing.assert_array_equal(y.data, r.data)
        y.backward(), r.backward()
        np.testing.assert_array_equal(xv.grad.data, rv.grad.data)


# --- a DeZero CNN trains the same -------------------------------------------------------------

def _train_cnn(images, labels, steps=12, batch=50):
    """A DeZero CNN (Conv2d + ReLU + max pooling, twice, then Linear) trained with SGD from
    np.random seed 0; returns the losses."""
    import dezero.layers as L
    from dezero import Model, optimizers

    class CNN(Model):
        def __init__(self):
            super().__init__()
            self.c1 = L.Conv2d(8, kernel_size=3, pad=1)
            self.c2 = L.Conv2d(16, kernel_size=3, pad=1)
            self.fc = L.Linear(10)

        def forward(self, x):
            x = DF.pooling(DF.relu(self.c1(x)), 2, 2)
            x = DF.pooling(DF.relu(self.c2(x)), 2, 2)
            return self.fc(DF.reshape(x, (x.shape[0], -1)))

    np.random.seed(0)
    model = CNN()
    opt = optimizers.MomentumSGD(lr=0.05).setup(model)
    losses = []
    for i in range(steps):
        xb, tb = images[i * batch:(i + 1) * batch], labels[i * batch:(i + 1) * batch]
        loss = DF.softmax_cross_entropy(model(xb), tb)
        model.cleargrads()
        loss.backward()
        opt.update()
        losses.append(float(loss.data))
    return losses


def test_dezero_cnn_trains_to_the_same_losses():
    from fastconv.examples import datasets
    data = datasets.load_mnist5k()
    images = data.x_train[:600].astype(np.float32)  # (N, 1, 28, 28) in [0, 1]
    labels = data.t_train[:600]
    own = _train_cnn(images, labels)
    FD.install()
    fast = _train_cnn(images, labels)
    assert own[-1] < own[0] * 0.8, f"the CNN should learn: {own}"
    np.testing.assert_allclose(fast, own, rtol=2e-4, err_msg="losses with and without install()")
    assert fastconv.get_backend() == "native"
