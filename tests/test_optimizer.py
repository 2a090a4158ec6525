"""fastconv.optimizer against the book's common/optimizer.py (tests/book_reference.py): the same
updates bit for bit in float64 and float32, the same state attributes, the NumPy fallback for
what the one-pass kernel cannot take, and in-place updates that the layers see."""
from __future__ import annotations

import numpy as np
import pytest

import book_reference as book
import fastconv.optimizer as O
from support import randn

SETTINGS = {  # non-default hyperparameters too, so every scalar path is exercised
    "SGD": [{}, {"lr": 0.3}],
    "Momentum": [{}, {"lr": 0.05, "momentum": 0.5}],
    "Nesterov": [{}, {"lr": 0.05, "momentum": 0.7}],
    "AdaGrad": [{}, {"lr": 0.2}],
    "RMSprop": [{}, {"lr": 0.02, "decay_rate": 0.9}],
    "Adam": [{}, {"lr": 0.01, "beta1": 0.8, "beta2": 0.99}],
}
CASES = [(name, kw) for name, kws in SETTINGS.items() for kw in kws]


def _params(rng, dt):
    # Sizes below, at and above the kernel's 16,384-element work block, and a scalar-like one.
    return {"W1": randn(rng, (30, 1, 5, 5), dt), "b1": randn(rng, (1,), dt),
            "W2": randn(rng, (16384,), dt), "W3": randn(rng, (129, 127), dt), "W4": randn(rng, (3, 16385), dt)}


@pytest.mark.parametrize("dt", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("name, kw", CASES, ids=[f"{n}-{i}" for n, kws in SETTINGS.items() for i in range(len(kws))])
def test_updates_are_the_books_bit_for_bit(name, kw, dt, rng):
    ref_params = _params(rng, dt)
    params = {k: v.copy() for k, v in ref_params.items()}
    held = dict(params)  # what the layers hold: the update must be in place
    ref, opt = getattr(book, name)(**kw), getattr(O, name)(**kw)
    for step in range(4):
        grads = {k: randn(rng, v.shape, dt) * (10.0 ** (step - 2)) for k, v in params.items()}
        ref.update(ref_params, grads)
        opt.update(params, grads)
        for key in params:
            assert params[key] is held[key], f"{name} replaced params[{key!r}] instead of updating it"
            assert params[key].dtype == ref_params[key].dtype
            np.testing.assert_array_equal(params[key], ref_params[key], err_msg=f"{name} {kw} step {step} {key}")
    for attr in ("v", "h", "m", "iter"):
        if hasattr(ref, attr):
            ours, theirs = getattr(opt, attr), getattr(ref, attr)
            if isinstance(theirs, dict):
                for key in theirs:
                    np.testing.assert_array_equal(ours[key], theirs[key], err_msg=f"{name}.{attr}[{key}]")
            else:
                assert ours == theirs


@pytest.mark.parametrize("name", list(SETTINGS))
def test_fallback_for_what_the_kernel_cannot_take(name, rng):
    """Strided, read-only-gradient, mixed-dtype and integer-gradient parameters: the book's
    NumPy expression runs instead, with the book's result."""
    base = randn(rng, (8, 10))
    ref_params = {"strided": base[:, ::2].copy(), "mixed": randn(rng, (5,)), "f32": randn(rng, (4,), np.float32)}
    params = {"strided": base[:, ::2], "mixed": ref_params["mixed"].copy(), "f32": ref_params["f32"].copy()}
    params["strided"][...] = ref_params["strided"]
    ref, opt = getattr(book, name)(), getattr(O, name)()
    for _ in range(3):
        grads = {"strided": randn(rng, (8, 5)), "mixed": randn(rng, (5,), np.float32),
                 "f32": randn(rng, (4,))}  # float64 gradient of a float32 parameter
        grads["strided"].flags.writeable = False
        ref.update(ref_params, grads)
        opt.update(params, grads)
    for key in params:
        np.testing.assert_array_equal(params[key], ref_params[key], err_msg=f"{name} fallback {key}")
    np.testing.assert_array_equal(base[:, ::2], ref_params["strided"], err_msg="the strided view was updated")


def test_missing_gradient_is_named():
    with pytest.raises(KeyError, match="W2"):
        O.Adam().update({"W1": np.ones(3), "W2": np.ones(3)}, {"W1": np.ones(3)})


def test_optimizer_kernel_refuses_bad_state():
    from fastconv import _core

    p, g = np.ones(4), np.ones(4)
    with pytest.raises(ValueError, match="takes 2 state arrays"):
        _core.optimizer_update("adam", p, g, [np.zeros(4)], 0.1)
    with pytest.raises(ValueError, match="state has shape"):
        _core.optimizer_update("momentum", p, g, [np.zeros(3)], 0.1)
    with pytest.raises(ValueError, match="unknown rule"):
        _core.optimizer_update("lion", p, g, [], 0.1)
