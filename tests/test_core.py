"""The compiled module fastconv._core: what the Python layer calls, the GEMM micro-kernels
(each one forced in turn), build information and the configuration report."""
from __future__ import annotations

import ast
import importlib.metadata
import pathlib
import subprocess
import sys

import numpy as np
import pytest

import fastconv
import naive
from fastconv import _core
from support import assert_close, assert_exact, randn, rng_for, small_ints

PKG = pathlib.Path(fastconv.__file__).parent


def _core_attributes_used(path: pathlib.Path):
    """Names X in every `_core.X` of a module's source."""
    tree = ast.parse(path.read_text())
    return sorted({n.attr for n in ast.walk(tree)
                   if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name) and n.value.id == "_core"})


@pytest.mark.parametrize("module", ["backends/native_backend.py", "_config.py", "__init__.py"])
def test_core_has_what_the_python_layer_calls(module):
    used = _core_attributes_used(PKG / module)
    assert used, f"expected {module} to call into _core"
    missing = [name for name in used if not hasattr(_core, name)]
    assert not missing, f"fastconv._core lacks {missing}, called by {module}"


def test_native_backend_functions_all_call_core():
    """Every backend function name exists in the native backend and reaches _core."""
    from fastconv.backends import native_backend, numpy_backend

    names = [n for n in dir(numpy_backend) if not n.startswith("_") and callable(getattr(numpy_backend, n))
             and getattr(getattr(numpy_backend, n), "__module__", "") == numpy_backend.__name__]
    assert {"im2col", "col2im", "conv2d", "conv2d_backward", "max_pool2d"} <= set(names)
    for n in names:
        assert callable(getattr(native_backend, n, None)), f"native backend lacks {n}"


def test_version_matches_installed_metadata():
    assert isinstance(fastconv.__version__, str) and fastconv.__version__
    assert fastconv.__version__ == importlib.metadata.version("fastconv")


def test_build_info():
    info = _core.build_info()
    assert isinstance(info, dict) and info
    assert all(isinstance(k, str) for k in info)
    # What build_info says of OpenMP must match what importing fastconv alone maps into a fresh
    # process (PyTorch, imported by this suite, brings its own libgomp): a parallel build loads
    # an OpenMP runtime, a serial one none.
    if not pathlib.Path("/proc/self/maps").exists():  # pragma: no cover - not Linux
        pytest.skip("needs /proc/self/maps")
    probe = ("import fastconv; maps = open('/proc/self/maps').read(); "
             "print(any(lib in maps for lib in ('libgomp', 'libomp', 'libiomp')))")
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout.strip()
    says_openmp = info["openmp"].startswith("OpenMP ")
    assert str(says_openmp) == loaded, f"build_info says {info['openmp']!r}; OpenMP runtime loaded: {loaded}"


def test_show_config(capsys):
    fastconv.show_config()
    text = capsys.readouterr().out
    assert fastconv.__version__ in text
    assert "threads" in text and "backends" in text and "numpy" in text


def test_cache_sizes_are_reported():
    """The sizes blocking reads: positive, nested (L1d <= L2 <= L3), and in show_config()."""
    c = _core.cache_sizes()
    assert 0 < c["l1d"] <= c["l2"] <= c["l3"], c
    assert isinstance(c["detected"], bool)
    assert f"L1d {c['l1d'] // 1024} KiB" in fastconv._config.config()["caches"]


def _sysfs_data_caches() -> dict:
    """{level: bytes} of cpu0's data/unified caches as Linux's sysfs lists them."""
    sizes = {}
    for index in sorted(pathlib.Path("/sys/devices/system/cpu/cpu0/cache").glob("index*")):
        try:
            level, kind, size = ((index / f).read_text().strip() for f in ("level", "type", "size"))
        except OSError:
            continue
        if kind != "Instruction":
            unit = {"K": 1024, "M": 1024 * 1024}.get(size[-1], 1)
            sizes.setdefault(int(level), int(size.rstrip("KM")) * unit)
    return sizes


def test_cache_sizes_follow_sysfs_where_linux_lists_them():
    """sysfs, not glibc's CPUID-derived sysconf, is the source: some guests' CPUID reports the
    host's whole L3 (a 32 MiB EPYC guest read 256 MiB)."""
    listed = _sysfs_data_caches()
    if not listed:
        pytest.skip("this system has no /sys/devices/system/cpu/cpu0/cache")
    c = _core.cache_sizes()
    for level, key in ((1, "l1d"), (2, "l2"), (3, "l3")):
        if level in listed:
            assert c[key] == listed[level], (key, c, listed)


def test_python_dash_m_prints_config():
    res = subprocess.run([sys.executable, "-m", "fastconv"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "threads" in res.stdout and fastconv.__version__ in res.stdout


# --- GEMM micro-kernels -------------------------------------------------------------------------

def _kernel_names():
    """The documented API: gemm_kernels() -> list of kernel names usable on this CPU."""
    getter = getattr(_core, "gemm_kernels", None)
    if getter is None:
        return ["<_core.gemm_kernels missing>"]
    try:
        names = getter()
    except Exception as exc:  # reported by test_gemm_kernel_api
        return [f"<gemm_kernels() raised {type(exc).__name__}>"]
    if not isinstance(names, (list, tuple)) or not names or not all(isinstance(n, str) for n in names):
        return ["<gemm_kernels() is not a list of names>"]
    return list(names)


KERNELS = _kernel_names()


def test_gemm_kernel_api():
    for name in ("gemm", "gemm_kernels", "set_gemm_kernel", "get_gemm_kernel", "build_info"):
        assert callable(getattr(_core, name, None)), f"fastconv._core.{name} is missing"
    names = _core.gemm_kernels()
    assert isinstance(names, list), f"gemm_kernels() should be a list of names, got {type(names).__name__}: {names!r}"
    assert names and all(isinstance(n, str) and n for n in names), names
    assert len(set(names)) == len(names)
    assert _core.get_gemm_kernel() in names
    with pytest.raises(ValueError):
        _core.set_gemm_kernel("no-such-kernel")
    assert _core.get_gemm_kernel() in names


@pytest.fixture(params=KERNELS)
def kernel(request):
    name = request.param
    assert not name.startswith("<"), name  # the API is missing or malformed: see test_gemm_kernel_api
    before = _core.get_gemm_kernel()
    _core.set_gemm_kernel(name)
    assert _core.get_gemm_kernel() == name
    yield name
    _core.set_gemm_kernel(before)


GEMM_SHAPES = [(1, 1, 1), (1, 7, 1), (5, 3, 4), (7, 9, 13), (17, 33, 65), (31, 1, 29), (64, 64, 64),
               (100, 257, 31), (6, 300, 16), (129, 130, 1), (257, 513, 130), (3, 1000, 5)]


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
def test_gemm_every_kernel(kernel, dtype):
    for M, K, N in GEMM_SHAPES:
        rng = rng_for("gemm", kernel, M, K, N, np.dtype(dtype).name)
        a = randn(rng, (M, K), dtype)
        b = randn(rng, (K, N), dtype)
        c = _core.gemm(a, b)
        assert isinstance(c, np.ndarray) and c.dtype == dtype and c.shape == (M, N) and c.flags.c_contiguous
        ref = a.astype(np.float64) @ b.astype(np.float64)
        assert_close(c, ref, np.abs(a).astype(np.float64) @ np.abs(b).astype(np.float64), K, dtype,
                     f"gemm {M}x{K}x{N} with kernel {kernel}")
        ai, bi = small_ints(rng, (M, K), dtype), small_ints(rng, (K, N), dtype)
        assert_exact(_core.gemm(ai, bi), (ai.astype(np.float64) @ bi.astype(np.float64)).astype(dtype),
                     f"gemm on integers {M}x{K}x{N} with kernel {kernel}")


@pytest.mark.parametrize("M, K, N", [(0, 5, 3), (4, 0, 3), (4, 5, 0), (0, 0, 0)])
def test_gemm_empty(kernel, M, K, N):
    """K = 0 gives an all-zero product (every output element must be written)."""
    rng = rng_for("gemm-empty", M, K, N)
    for dt in (np.float32, np.float64):
        c = _core.gemm(randn(rng, (M, K), dt), randn(rng, (K, N), dt))
        assert c.shape == (M, N) and c.dtype == dt
        assert_exact(c, np.zeros((M, N), dt), f"empty gemm {M}x{K}x{N}")


def test_gemm_bad_arguments():
    a = np.ones((3, 4))
    with pytest.raises(ValueError):
        _core.gemm(a, np.ones((5, 2)))  # inner dimensions differ
    with pytest.raises((ValueError, TypeError)):
        _core.gemm(a[0], np.ones((4, 2)))  # 1-D
    with pytest.raises(TypeError):
        _core.gemm(a, np.ones((4, 2), np.float32))  # mixed dtypes
    with pytest.raises(TypeError):
        _core.gemm(a.astype(np.complex128), np.ones((4, 2), np.complex128))


def test_gemm_non_contiguous_is_refused_or_right():
    rng = rng_for("gemm-strided")
    a = randn(rng, (8, 12))[:, ::2]
    b = randn(rng, (6, 5))
    try:
        c = _core.gemm(a, b)
    except (ValueError, TypeError):
        return
    assert_close(c, a @ b, np.abs(a) @ np.abs(b), 6, np.float64, "gemm of a strided view")


def test_gemm_same_bits_with_1_and_2_threads(kernel, threads_restored):
    rng = rng_for("gemm-threads", kernel)
    for dt in (np.float32, np.float64):
        a, b = randn(rng, (300, 200), dt), randn(rng, (200, 170), dt)
        fastconv.set_num_threads(1)
        one = _core.gemm(a, b)
        fastconv.set_num_threads(2)
        assert_exact(_core.gemm(a, b), one, f"gemm 2 threads vs 1 ({kernel}, {np.dtype(dt).name})")


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
def test_ops_with_every_kernel(kernel, dtype):
    """Convolutions (which run on the GEMM) and pooling (whose row sweeps are compiled per ISA)
    are right whichever micro-kernel is forced."""
    fastconv.set_backend("native")
    rng = rng_for("ops-kernel", kernel, np.dtype(dtype).name)
    for shape, wshape, stride, pad in [((2, 3, 11, 10), (7, 3, 3, 2), (2, 1), (1, 1)),
                                       ((4, 16, 12, 12), (33, 16, 3, 3), 1, 1),
                                       ((2, 40, 10, 10), (50, 40, 3, 3), 1, 1),
                                       ((1, 1, 28, 28), (30, 1, 5, 5), 1, 0)]:
        x, w = small_ints(rng, shape, dtype), small_ints(rng, wshape, dtype)
        b = small_ints(rng, (wshape[0],), dtype)
        out = fastconv.conv2d(x, w, b, stride, pad)
        assert_exact(out, naive.conv2d(x, w, b, stride, pad).astype(dtype), f"conv2d with kernel {kernel}")
        d = small_ints(rng, out.shape, dtype)
        for got, ref, name in zip(fastconv.conv2d_backward(d, x, w, stride, pad),
                                  naive.conv2d_backward(d, x, w, stride, pad), ("dx", "dW", "db")):
            assert_exact(got, ref.astype(dtype), f"{name} with kernel {kernel}")
        xr, wr = randn(rng, shape, dtype), randn(rng, wshape, dtype)
        assert_close(fastconv.conv2d(xr, wr, None, stride, pad), naive.conv2d(xr, wr, None, stride, pad),
                     naive.conv2d(np.abs(xr), np.abs(wr), None, stride, pad), int(np.prod(wshape[1:])), dtype,
                     f"conv2d random with kernel {kernel}")
        assert_exact(fastconv.im2col(xr, *wshape[2:], stride, pad),
                     naive.im2col_fast_loops(xr, *wshape[2:], stride, pad).astype(dtype), f"im2col {kernel}")
    # Pooling: ties, NaN, -inf and padding through every ISA's row sweep.
    x = rng.integers(-3, 4, size=(3, 5, 13, 17)).astype(dtype)
    x[0, 0, 2, 3] = np.nan
    x[1, 1, :4, :4] = -np.inf
    x[2, 2, 5, 5] = np.inf
    for k, s, p in [((3, 3), (2, 2), (1, 1)), ((2, 2), (2, 2), (0, 0)), ((3, 2), (1, 3), (1, 1)), ((5, 4), 1, (2, 2))]:
        out, idx = fastconv.max_pool2d(x, *k, s, p, return_indices=True)
        ref, ref_idx = naive.max_pool2d(x, *k, s, p)
        assert_exact(out, ref.astype(dtype), f"max_pool2d {k} with kernel {kernel}")
        assert_exact(idx, ref_idx, f"max_pool2d indices {k} with kernel {kernel}")
        xa = np.nan_to_num(x, nan=1.0, posinf=2.0, neginf=-2.0)
        assert_close(fastconv.avg_pool2d(xa, *k, s, p), naive.avg_pool2d(xa, *k, s, p),
                     naive.avg_pool2d(np.abs(xa), *k, s, p), k[0] * k[1] + 1, dtype, f"avg_pool2d {k} {kernel}")
    # ReLU with the book's byte mask (per-ISA lane <-> byte conversions), vector body and tail.
    xr = randn(rng, (3, 37), dtype)
    xr[0, :5] = [np.nan, -0.0, 0.0, np.inf, -np.inf]
    y, mask = fastconv.relu(xr, return_mask=True)
    assert_exact(y, naive.relu(xr).astype(dtype), f"relu with kernel {kernel}")
    assert np.array_equal(mask, xr <= 0), f"relu mask with kernel {kernel}"
    d = randn(rng, xr.shape, dtype)
    assert_exact(fastconv.relu_backward(d, mask=mask), naive.relu_backward(d, xr).astype(dtype),
                 f"relu_backward(mask=) with kernel {kernel}")


def test_no_state_leaks_between_calls(threads_restored):
    """Poison the native kernels' scratch and packing buffers with NaN (large all-NaN calls on
    every thread), then check odd-sized calls: a kernel that reads a stale or unwritten
    element of a buffer would turn results NaN or wrong."""
    fastconv.set_backend("native")
    fastconv.set_num_threads(2)
    rng = rng_for("poison")
    for dt in (np.float32, np.float64):
        big_x = np.full((8, 16, 24, 24), np.nan, dt)
        big_w = np.full((40, 16, 3, 3), np.nan, dt)
        out = fastconv.conv2d(big_x, big_w, None, 1, 1)
        fastconv.conv2d_backward(out, big_x, big_w, 1, 1)
        _core.gemm(np.full((300, 300), np.nan, dt), np.full((300, 300), np.nan, dt))
        fastconv.max_pool2d(big_x, 3, 3, 2, 1)
        fastconv.col2im(fastconv.im2col(big_x, 3, 3, 1, 1), big_x.shape, 3, 3, 1, 1)
        for shape, wshape, stride, pad in [((3, 5, 7, 9), (7, 5, 3, 2), (2, 1), (1, 0)),
                                           ((1, 2, 5, 5), (3, 2, 5, 5), 1, 0),
                                           ((2, 16, 13, 11), (33, 16, 3, 3), 1, 1)]:
            x, w = small_ints(rng, shape, dt), small_ints(rng, wshape, dt)
            out = fastconv.conv2d(x, w, None, stride, pad)
            assert_exact(out, naive.conv2d(x, w, None, stride, pad).astype(dt), f"conv2d after NaN calls {shape}")
            d = small_ints(rng, out.shape, dt)
            for got, ref, name in zip(fastconv.conv2d_backward(d, x, w, stride, pad),
                                      naive.conv2d_backward(d, x, w, stride, pad), ("dx", "dW", "db")):
                assert_exact(got, ref.astype(dt), f"{name} after NaN calls {shape}")
            a, b = small_ints(rng, (37, 19), dt), small_ints(rng, (19, 53), dt)
            assert_exact(_core.gemm(a, b), (a.astype(np.float64) @ b).astype(dt), "gemm after NaN calls")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_scratch_misfit_raises_before_writing(dtype):
    """The GEMM driver and its packers check their scratch span before they write: a plan that
    books too little gets a RuntimeError naming the kernel and the sizes, never an overrun."""
    rng = np.random.default_rng(3)
    a = rng.standard_normal((300, 700)).astype(dtype)
    b = rng.standard_normal((700, 200)).astype(dtype)
    np.testing.assert_allclose(fastconv._core.gemm(a, b), a.astype(np.float64) @ b, rtol=1e-4 if dtype == np.float32 else 1e-12,
                               atol=1e-3 if dtype == np.float32 else 1e-10)
    for elems in (0, 64, 5000):
        with pytest.raises(RuntimeError, match=r"internal error in gemm_blocked: packed [AB] block needs \d+ elements, has \d+"):
            fastconv._core.gemm(a, b, scratch_elems=elems)

