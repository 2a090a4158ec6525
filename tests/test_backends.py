"""The backend API (available/get/set/use_backend) and agreement between backends."""
from __future__ import annotations

import importlib
import subprocess
import sys
import threading

import numpy as np
import pytest

import fastconv
import naive
from support import BACKENDS, HAVE_TORCH, assert_close, assert_exact, distinct, randn, rng_for, seed_note


def test_available_backends():
    names = fastconv.available_backends()
    assert isinstance(names, list) and all(isinstance(n, str) for n in names)
    assert "native" in names and "numpy" in names
    assert ("torch" in names) == HAVE_TORCH
    assert len(set(names)) == len(names)
    assert set(names) <= {"native", "numpy", "torch"}


def test_default_backend_is_native_in_a_fresh_process():
    out = subprocess.run([sys.executable, "-c", "import fastconv; print(fastconv.get_backend())"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "native"


def test_set_backend_is_process_wide():
    assert fastconv.get_backend() == "native"
    fastconv.set_backend("numpy")
    assert fastconv.get_backend() == "numpy"
    seen = []
    t = threading.Thread(target=lambda: seen.append(fastconv.get_backend()))
    t.start()
    t.join()
    assert seen == ["numpy"], "set_backend must change the default for every thread"
    fastconv.set_backend("native")
    assert fastconv.get_backend() == "native"


def test_use_backend_restores_and_nests():
    assert fastconv.get_backend() == "native"
    with fastconv.use_backend("numpy"):
        assert fastconv.get_backend() == "numpy"
        with fastconv.use_backend("native"):
            assert fastconv.get_backend() == "native"
        assert fastconv.get_backend() == "numpy"
    assert fastconv.get_backend() == "native"


def test_use_backend_restores_on_exception():
    class Boom(Exception):
        pass

    with pytest.raises(Boom):
        with fastconv.use_backend("numpy"):
            assert fastconv.get_backend() == "numpy"
            raise Boom
    assert fastconv.get_backend() == "native"
    # An error raised by fastconv itself inside the block also restores the backend.
    with pytest.raises(ValueError, match="channel mismatch"):
        with fastconv.use_backend("numpy"):
            fastconv.conv2d(np.ones((1, 2, 3, 3)), np.ones((1, 3, 2, 2)))
    assert fastconv.get_backend() == "native"


def test_use_backend_is_local_to_the_thread():
    """Documented: use_backend overrides the default for the current thread/context only."""
    inside = threading.Event()
    release = threading.Event()
    seen = {}

    def worker():
        with fastconv.use_backend("numpy"):
            seen["worker_inside"] = fastconv.get_backend()
            inside.set()
            release.wait(30)

    t = threading.Thread(target=worker)
    t.start()
    assert inside.wait(30)
    seen["main_while_worker_inside"] = fastconv.get_backend()
    release.set()
    t.join()
    assert seen == {"worker_inside": "numpy", "main_while_worker_inside": "native"}


def test_unknown_backend_names():
    for bad in ("", "Native", "cuda", "numpy_backend", "torch2"):
        with pytest.raises(ValueError, match="unknown backend"):
            fastconv.set_backend(bad)
        with pytest.raises(ValueError, match="unknown backend"):
            with fastconv.use_backend(bad):
                pass  # pragma: no cover - not reached
        assert fastconv.get_backend() == "native"


def test_torch_backend_refused_when_torch_cannot_be_imported():
    """Without PyTorch, "torch" is not listed and selecting it is a ValueError."""
    code = (
        "import sys; sys.modules['torch'] = None\n"  # makes `import torch` raise ImportError
        "import fastconv\n"
        "assert fastconv.available_backends() == ['native', 'numpy'], fastconv.available_backends()\n"
        "try:\n"
        "    fastconv.set_backend('torch')\n"
        "except ValueError as e:\n"
        "    assert 'not available' in str(e), e\n"
        "else:\n"
        "    raise SystemExit('set_backend(torch) did not raise')\n"
        "assert fastconv.get_backend() == 'native'\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stdout + out.stderr


@pytest.mark.parametrize("name", BACKENDS)
def test_calls_go_to_the_selected_backend(name, monkeypatch, rng):
    """Each public function dispatches to the chosen backend module's function."""
    module = importlib.import_module(f"fastconv.backends.{name}_backend")
    calls = []
    funcs = ["im2col", "col2im", "conv2d", "conv2d_backward", "max_pool2d", "max_pool2d_backward",
             "avg_pool2d", "avg_pool2d_backward", "relu", "relu_backward"]
    for f in funcs:
        original = getattr(module, f)

        def spy(*args, _f=f, _orig=original, **kwargs):
            calls.append(_f)
            return _orig(*args, **kwargs)

        monkeypatch.setattr(module, f, spy)
    x = randn(rng, (2, 2, 6, 6))
    w = randn(rng, (3, 2, 3, 3))
    with fastconv.use_backend(name):
        col = fastconv.im2col(x, 3, 3)
        fastconv.col2im(col, x.shape, 3, 3)
        out = fastconv.conv2d(x, w)
        fastconv.conv2d_backward(out, x, w)
        p = fastconv.max_pool2d(x, 2, 2)
        fastconv.max_pool2d_backward(p, x, 2, 2)
        fastconv.avg_pool2d(x, 2, 2)
        fastconv.avg_pool2d_backward(p, x, 2, 2)
        fastconv.relu(x)
        fastconv.relu_backward(x, x)
    assert set(calls) == set(funcs), f"not dispatched to {name}: {set(funcs) - set(calls)}"
    calls.clear()
    other = "numpy" if name != "numpy" else "native"
    with fastconv.use_backend(other):
        fastconv.conv2d(x, w)
    assert calls == [], f"{other} selected but {name} was called"


def _all_results(x, w, b, dout, pdout, geo, pool):
    """Every public function on one problem, as a dict of arrays."""
    kh, kw = w.shape[2:]
    res = {"im2col": fastconv.im2col(x, kh, kw, **geo)}
    res["col2im"] = fastconv.col2im(res["im2col"] * 0.5 + 1.0, x.shape, kh, kw, **geo)
    res["conv2d"] = fastconv.conv2d(x, w, b, **geo)
    res["dx"], res["dW"], res["db"] = fastconv.conv2d_backward(dout, x, w, **geo)
    res["max"], res["argmax"] = fastconv.max_pool2d(x, *pool, return_indices=True)
    res["max_bwd"] = fastconv.max_pool2d_backward(pdout, x, *pool)
    res["avg"] = fastconv.avg_pool2d(x, *pool)
    res["avg_bwd"] = fastconv.avg_pool2d_backward(pdout, x, *pool)
    res["relu"] = fastconv.relu(x)
    res["relu_bwd"] = fastconv.relu_backward(x[::-1], x)
    return res


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("other", [b for b in BACKENDS if b != "numpy"])
def test_backends_agree(other, dtype):
    rng = rng_for("agree", other, np.dtype(dtype).name)
    x = distinct(rng, (3, 4, 11, 10), dtype)
    w = randn(rng, (5, 4, 3, 2), dtype)
    b = randn(rng, (5,), dtype)
    geo = dict(stride=(2, 1), pad=(1, 1))
    dout = randn(rng, (3, 5, 6, 11), dtype)
    pool = (3, 2, (2, 2), (1, 1))
    pdout = randn(rng, (3, 4, 6, 6), dtype)
    with fastconv.use_backend("numpy"):
        ref = _all_results(x, w, b, dout, pdout, geo, pool)
    with fastconv.use_backend(other):
        got = _all_results(x, w, b, dout, pdout, geo, pool)
    exact = {"im2col", "max", "argmax", "relu", "relu_bwd"}
    for key, value in ref.items():
        assert got[key].dtype == value.dtype and got[key].shape == value.shape, key
        if key in exact:
            assert_exact(got[key], value, f"{other} vs numpy: {key}")
        else:
            tol = 2e-5 if dtype == np.float32 else 1e-12
            scale = float(np.abs(value).max(initial=1.0))
            np.testing.assert_allclose(got[key], value, rtol=tol, atol=tol * scale,
                                       err_msg=f"{other} vs numpy: {key} {seed_note()}")


@pytest.mark.parametrize("name", BACKENDS)
def test_backend_results_do_not_depend_on_previous_backend(name, rng):
    """Switching back and forth gives the same numbers (no state leaks between backends)."""
    x = randn(rng, (2, 3, 8, 8))
    w = randn(rng, (4, 3, 3, 3))
    with fastconv.use_backend(name):
        first = fastconv.conv2d(x, w, None, 1, 1)
    for other in BACKENDS:
        with fastconv.use_backend(other):
            fastconv.conv2d(x, w, None, 2, 0)
    with fastconv.use_backend(name):
        assert_exact(fastconv.conv2d(x, w, None, 1, 1), first, f"{name} after switching")
    assert_close(first, naive.conv2d(x, w, None, 1, 1), naive.conv2d(np.abs(x), np.abs(w), None, 1, 1), 27,
                 np.float64, name)


def test_missing_torch_says_how_to_install(monkeypatch):
    """set_backend("torch") on a machine without PyTorch names the install command."""
    import importlib

    from fastconv import backends

    real = importlib.import_module

    def no_torch(name, *args, **kwargs):
        if name.endswith("torch_backend"):
            raise ImportError("No module named 'torch'")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(backends, "_loaded", {k: v for k, v in backends._loaded.items() if k != "torch"})
    monkeypatch.setattr(backends.importlib, "import_module", no_torch)
    with pytest.raises(ValueError, match=r"No module named 'torch' \(install PyTorch's CPU build with: "
                                         r"pip install 'fastconv\[torch\]'"):
        fastconv.set_backend("torch")
    assert fastconv.get_backend() != "torch"


def test_show_config_lists_the_version_first(capsys):
    fastconv.show_config()
    first = capsys.readouterr().out.splitlines()[0]
    assert first.split(":")[0].strip() == "fastconv" and fastconv.__version__ in first
