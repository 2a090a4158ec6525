"""Memory layouts (strided, negative-stride, Fortran, read-only views), input immutability,
fresh results, and determinism / safety across thread counts and Python threads."""
from __future__ import annotations

import concurrent.futures
import os
import subprocess
import sys

import numpy as np
import pytest

import fastconv
from support import BACKENDS, assert_exact, distinct, randn, rng_for, seed_note

# --- a problem that exercises every function ------------------------------------------------

GEO = dict(stride=(2, 1), pad=(1, 2))
POOL = (3, 2, (2, 1), (1, 1))  # pool_h, pool_w, stride, pad


def _problem(dtype, N=2, C=3, H=9, W=8, FN=4):
    rng = rng_for("views", np.dtype(dtype).name, N, C, H, W, FN)
    x = distinct(rng, (N, C, H, W), dtype)
    w = randn(rng, (FN, C, 3, 2), dtype)
    b = randn(rng, (FN,), dtype)
    OH, OW = (H + 2 - 3) // 2 + 1, (W + 4 - 2) // 1 + 1
    dout = randn(rng, (N, FN, OH, OW), dtype)
    col = randn(rng, (N * OH * OW, C * 3 * 2), dtype)
    PH, PW = (H + 2 - 3) // 2 + 1, (W + 2 - 2) // 1 + 1
    pdout = randn(rng, (N, C, PH, PW), dtype)
    _, idx = fastconv.max_pool2d(x, *POOL, return_indices=True)
    return dict(x=x, w=w, b=b, dout=dout, col=col, pdout=pdout, idx=idx, rdout=randn(rng, x.shape, dtype))


def _run_all(p):
    """Every public function; returns {name: array}."""
    shape = p["x"].shape
    out = {
        "im2col": fastconv.im2col(p["x"], 3, 2, **GEO),
        "col2im": fastconv.col2im(p["col"], shape, 3, 2, **GEO),
        "conv2d": fastconv.conv2d(p["x"], p["w"], p["b"], **GEO),
    }
    out["dx"], out["dW"], out["db"] = fastconv.conv2d_backward(p["dout"], p["x"], p["w"], **GEO)
    out["max"], out["argmax"] = fastconv.max_pool2d(p["x"], *POOL, return_indices=True)
    out["max_bwd_x"] = fastconv.max_pool2d_backward(p["pdout"], p["x"], *POOL)
    out["max_bwd_idx"] = fastconv.max_pool2d_backward(p["pdout"], shape, *POOL, indices=p["idx"])
    out["avg"] = fastconv.avg_pool2d(p["x"], *POOL)
    out["avg_bwd"] = fastconv.avg_pool2d_backward(p["pdout"], p["x"], *POOL)
    out["relu"] = fastconv.relu(p["x"])
    out["relu_bwd"] = fastconv.relu_backward(p["rdout"], p["x"])
    return out


def _strided(a):
    """Same values, every axis strided by 2 inside a bigger buffer filled with other data."""
    big = np.empty(tuple(2 * s + 1 for s in a.shape), dtype=a.dtype)
    big[...] = np.arange(big.size).reshape(big.shape) % 7 - 3  # distinct from a's values
    view = big[tuple(slice(1, None, 2) for _ in a.shape)]
    view[...] = a
    assert not view.flags.c_contiguous or a.size <= 1
    return view


def _negative(a):
    """Same values seen through negative strides on every axis."""
    rev = np.ascontiguousarray(a[tuple(slice(None, None, -1) for _ in a.shape)])
    view = rev[tuple(slice(None, None, -1) for _ in a.shape)]
    assert all(s < 0 for s, n in zip(view.strides, view.shape) if n > 1)
    return view


def _fortran(a):
    f = np.asfortranarray(a)
    assert f.flags.f_contiguous
    return f


def _transposed(a):
    """Same values as a transposed view of a contiguous array with reversed axes."""
    t = np.ascontiguousarray(a.transpose(tuple(reversed(range(a.ndim))))).transpose(tuple(reversed(range(a.ndim))))
    return t


def _readonly(a):
    r = a.copy()
    r.flags.writeable = False
    return r


LAYOUTS = {"strided": _strided, "negative": _negative, "fortran": _fortran, "transposed": _transposed}


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_views_give_the_same_results(layout, backend, dtype):
    p = _problem(dtype)
    expected = _run_all(p)
    viewed = {k: LAYOUTS[layout](v) for k, v in p.items()}
    for k in p:
        np.testing.assert_array_equal(viewed[k], p[k])
    got = _run_all(viewed)
    for key in expected:
        assert got[key].flags.c_contiguous, f"{key} from {layout} inputs is not C-contiguous"
        assert_exact(got[key], expected[key], f"{key}[{backend}] with {layout} inputs")


@pytest.mark.parametrize("name", [b for b in BACKENDS if b != "torch"])
def test_read_only_inputs(name, dtype):
    fastconv.set_backend(name)
    p = _problem(dtype)
    expected = _run_all(p)
    got = _run_all({k: _readonly(v) for k, v in p.items()})
    for key in expected:
        assert_exact(got[key], expected[key], f"{key}[{name}] with read-only inputs")
        assert got[key].flags.writeable, f"{key} result is read-only"


@pytest.mark.skipif("torch" not in BACKENDS, reason="PyTorch is not installed")
def test_read_only_inputs_torch_backend_without_warnings():
    """PyTorch warns (once per process) when wrapping a read-only array; fastconv's torch
    backend must not leak that warning. Run in a fresh process so the warning is not already
    spent, with warnings turned into errors."""
    code = (
        "import numpy as np, fastconv\n"
        "fastconv.set_backend('torch')\n"
        "x = np.random.default_rng(0).standard_normal((2, 3, 6, 6)); x.flags.writeable = False\n"
        "w = np.random.default_rng(1).standard_normal((2, 3, 3, 3)); w.flags.writeable = False\n"
        "out = fastconv.conv2d(x, w)\n"
        "fastconv.max_pool2d(x, 2, 2); fastconv.relu(x); fastconv.im2col(x, 2, 2)\n"
        "print('ok')\n"
    )
    res = subprocess.run([sys.executable, "-W", "error", "-c", code], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0 and res.stdout.strip() == "ok", res.stderr[-2000:]


def test_inputs_not_modified_and_results_fresh(backend, dtype):
    p = _problem(dtype)
    p["x"][0, 0, 0, :3] = [np.nan, -np.inf, -0.0]  # specials must survive untouched too
    before = {k: v.copy() for k, v in p.items()}
    out = _run_all(p)
    for k in p:
        assert p[k].dtype == before[k].dtype
        assert np.array_equal(p[k], before[k], equal_nan=True), f"{k} was modified by a call [{backend}]"
        if p[k].dtype.kind == "f":
            assert np.array_equal(np.signbit(p[k]), np.signbit(before[k])), f"sign of {k} changed [{backend}]"
    for key, res in out.items():
        assert res.flags.writeable, key
        for k, v in p.items():
            assert not np.shares_memory(res, v), f"result {key} shares memory with input {k} [{backend}]"
    # Writing into a result must not change a later call's result (no cached buffers handed out).
    again = _run_all(p)
    for key, res in out.items():
        res[...] = 7
    third = _run_all(p)
    for key in out:
        assert_exact(third[key], again[key], f"{key} after writing into an earlier result [{backend}]")


@pytest.mark.parametrize("fn", ["relu", "im2col_1x1", "conv_1x1"])
def test_identity_like_calls_return_copies(fn, backend, dtype):
    """Cases where a result could alias the input (1x1 kernels, relu of a positive array)."""
    rng = rng_for("alias", fn, backend, dtype.name)
    x = (np.abs(randn(rng, (1, 1, 4, 5), dtype)) + 1).astype(dtype)
    if fn == "relu":
        res = fastconv.relu(x)
    elif fn == "im2col_1x1":
        res = fastconv.im2col(x, 1, 1)
    else:
        res = fastconv.conv2d(x, randn(rng, (1, 1, 1, 1), dtype))
    assert not np.shares_memory(res, x), f"{fn} result aliases its input [{backend}]"
    snapshot = x.copy()
    res[...] = -1
    assert_exact(x, snapshot, f"writing into the {fn} result changed the input")


# --- threads ---------------------------------------------------------------------------------------

def test_set_get_num_threads(threads_restored):
    for n in (1, 2, 3, 1):
        fastconv.set_num_threads(n)
        assert fastconv.get_num_threads() == n
    fastconv.set_num_threads(np.int64(2))
    assert fastconv.get_num_threads() == 2


@pytest.mark.parametrize("size", ["medium", "book"])
def test_results_identical_with_1_and_2_threads(size, dtype, threads_restored):
    """Native results must not depend on the thread count, bit for bit."""
    fastconv.set_backend("native")
    if size == "medium":
        p = _problem(dtype, N=4, C=8, H=21, W=19, FN=16)
    else:
        p = _problem(dtype, N=100, C=1, H=28, W=28, FN=30)
    fastconv.set_num_threads(1)
    one = _run_all(p)
    fastconv.set_num_threads(2)
    two = _run_all(p)
    two_again = _run_all(p)
    fastconv.set_num_threads(3)  # more threads than cores
    three = _run_all(p)
    for key in one:
        assert_exact(two[key], one[key], f"{key}: 2 threads vs 1 thread")
        assert_exact(two_again[key], two[key], f"{key}: repeated call with 2 threads")
        assert_exact(three[key], one[key], f"{key}: 3 threads vs 1 thread")


def test_concurrent_python_threads(backend):
    """Calls from several Python threads at once (the GIL is released in the native kernels)
    give the same results as sequential calls."""
    problems = [_problem(np.float64, N=2 + i % 3, C=3, H=9 + i, W=8 + i % 2, FN=4) for i in range(6)]
    sequential = [_run_all(p) for p in problems]
    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
        parallel = list(pool.map(_run_all, problems * 2))
    for i, res in enumerate(parallel):
        for key, value in sequential[i % len(problems)].items():
            assert_exact(res[key], value, f"{key}, problem {i % len(problems)} run concurrently [{backend}]")


@pytest.mark.parametrize("n", ["1", "2"])
def test_omp_num_threads_sets_start_value(n):
    env = dict(os.environ, OMP_NUM_THREADS=n)
    res = subprocess.run([sys.executable, "-c", "import fastconv; print(fastconv.get_num_threads())"],
                         capture_output=True, text=True, timeout=120, env=env)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == n, f"OMP_NUM_THREADS={n} gave {res.stdout.strip()} {seed_note()}"


def _fresh_process(code, **env_changes):
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    env.update(env_changes)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
    assert res.returncode == 0, res.stderr[-2000:]
    return res.stdout.strip()


def test_default_threads_is_the_cpu_count():
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert _fresh_process("import fastconv; print(fastconv.get_num_threads())") == str(cpus)


def test_importing_and_using_torch_keeps_fastconv_threads():
    pytest.importorskip("torch")
    code = (
        "import fastconv, numpy as np\n"
        "n = fastconv.get_num_threads()\n"
        "import torch\n"
        "torch.ones(1000).sum(); torch.nn.functional.conv2d(torch.ones(1, 1, 8, 8), torch.ones(1, 1, 3, 3))\n"
        "fastconv.set_backend('torch'); fastconv.conv2d(np.ones((1, 1, 8, 8)), np.ones((1, 1, 3, 3)))\n"
        "print(n, fastconv.get_num_threads())\n"
    )
    before, after = _fresh_process(code).split()
    assert before == after, f"fastconv threads went from {before} to {after} after using PyTorch"
