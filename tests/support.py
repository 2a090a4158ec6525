"""Shared helpers of the test suite: the seeded random streams, backend list, tolerances.

Every random input comes from :func:`rng_for`, a NumPy generator derived from the session
seed (env ``FASTCONV_TEST_SEED``) and string keys (usually the test's node id), so a failing
test can be replayed exactly: the seed is printed in the report header and in every failure.
"""
from __future__ import annotations

import contextlib
import os
import zlib

import numpy as np

import fastconv

SEED = int(os.environ.get("FASTCONV_TEST_SEED", "20240229"))

try:  # PyTorch is optional: tests that need it skip cleanly without it
    import torch  # noqa: F401

    HAVE_TORCH = True
except ImportError:
    HAVE_TORCH = False

# Backends under test: the compiled one, the NumPy reference and, when importable, PyTorch.
BACKENDS = [b for b in ("native", "numpy", "torch") if b in fastconv.available_backends()]

DTYPES = (np.float32, np.float64)

# The native backend once per GEMM kernel family: "native" (the auto choice) and
# "native:<isa>" for every other family this CPU runs.
NATIVE_FAMILIES = ([f"native:{isa}" for isa in fastconv._core.gemm_kernels()[1:]]
                   if "native" in BACKENDS else [])


@contextlib.contextmanager
def gemm_family(isa: str):
    """Force a GEMM kernel family for the block, then restore the previous selection."""
    before = fastconv._core.build_info()["gemm_selection"]
    fastconv._core.set_gemm_kernel(isa)
    try:
        yield
    finally:
        fastconv._core.set_gemm_kernel(before)


FORWARD_ALGORITHMS = ("implicit_gemm", "shifted_rows", "pixel_dots")
WEIGHT_GRAD_ALGORITHMS = ("gemm", "dots", "taps")
DATA_GRAD_ALGORITHMS = ("gemm_col2im", "pixel_rows", "transposed_forward")


@contextlib.contextmanager
def _setting(get, set_, name: str):
    before = get()
    set_(name)
    try:
        yield
    finally:
        set_(before)


def forward_algorithm(name: str):
    """Force the native convolution forward algorithm for the block ("auto": the cost rule)."""
    return _setting(fastconv._core.get_forward_algorithm, fastconv._core.set_forward_algorithm, name)


def shifted_rows_tiles(name: str):
    """Force the shifted-rows GEMM's tile orientation for the block ("auto": the lane rule)."""
    return _setting(fastconv._core.get_shifted_rows_tiles, fastconv._core.set_shifted_rows_tiles, name)


def data_grad_algorithm(name: str):
    """Force the native data-gradient algorithm for the block ("auto": the cost rule)."""
    return _setting(fastconv._core.get_data_grad_algorithm, fastconv._core.set_data_grad_algorithm, name)


def weight_grad_algorithm(name: str):
    """Force the native weight-gradient algorithm for the block ("auto": the cost rule)."""
    return _setting(fastconv._core.get_weight_grad_algorithm, fastconv._core.set_weight_grad_algorithm, name)


@contextlib.contextmanager
def backend_context(name: str):
    """use_backend(name), where "native:<isa>" also forces that GEMM kernel family."""
    backend, _, isa = name.partition(":")
    with contextlib.ExitStack() as stack:
        if isa:
            stack.enter_context(gemm_family(isa))
        stack.enter_context(fastconv.use_backend(backend))
        yield


def select_backend(request, name: str) -> str:
    """For fixtures: make `name` the process default backend for the test ("native:<isa>"
    also forces the family until the test ends); returns the backend's plain name."""
    backend, _, isa = name.partition(":")
    fastconv.set_backend(backend)
    if isa:
        fastconv._core.set_gemm_kernel(isa)
        request.addfinalizer(lambda: fastconv._core.set_gemm_kernel("auto"))
    return backend

def rng_for(*keys) -> np.random.Generator:
    """A generator determined by the session seed and the given keys (strings or ints)."""
    material = [SEED] + [zlib.crc32(str(k).encode()) for k in keys]
    return np.random.default_rng(material)


def seed_note() -> str:
    return f"[FASTCONV_TEST_SEED={SEED}]"


def dtype_id(dt) -> str:
    return np.dtype(dt).name


# --- random data -----------------------------------------------------------------

def randn(rng: np.random.Generator, shape, dtype=np.float64) -> np.ndarray:
    """Standard normal data (never constant; ties have probability ~0)."""
    return rng.standard_normal(shape).astype(dtype)


def small_ints(rng: np.random.Generator, shape, dtype=np.float64, high: int = 3) -> np.ndarray:
    """Random non-zero integers in [-high, high] as floats.

    Products and sums of these are exact in float32 and float64 as long as the magnitudes stay
    below 2**24, so any summation order gives the same bits: results can be compared exactly.
    """
    v = rng.integers(1, high + 1, size=shape) * rng.choice([-1, 1], size=shape)
    return v.astype(dtype)


def distinct(rng: np.random.Generator, shape, dtype=np.float64, gap: float = 0.1) -> np.ndarray:
    """Values that are pairwise at least ``gap`` apart (a random permutation of a grid,
    jittered), so no window has a tie and small perturbations never change an argmax."""
    n = int(np.prod(shape))
    v = (rng.permutation(n) - n / 2.0) * gap + rng.uniform(0, gap / 10, size=n)
    return v.reshape(shape).astype(dtype)


def coord_encoded(shape, dtype=np.float64) -> np.ndarray:
    """value = flat (n, c, h, w) index + 1: every element distinct and non-zero, so zero
    padding is distinguishable and every element's origin can be read back. Exact in float32
    while the array has fewer than 2**24 elements."""
    n = int(np.prod(shape))
    assert n < 2**24
    return (np.arange(n, dtype=np.float64) + 1).reshape(shape).astype(dtype)


# --- comparisons -------------------------------------------------------------------

def assert_close(actual, expected, absref, nterms, dtype, what: str = "") -> None:
    """|actual - expected| <= c * eps(dtype) * (sqrt(nterms) + 2) * absref, elementwise.

    ``expected`` is computed in float64 from the same (already rounded) inputs; ``absref`` is
    the same computation on absolute values (a bound on the sum of |terms| of each element),
    and ``nterms`` the number of terms summed per element. This is the usual forward-error
    bound of a dot product with a margin; float32 results get float32's epsilon.
    """
    actual = np.asarray(actual)
    expected = np.asarray(expected, dtype=np.float64)
    absref = np.asarray(absref, dtype=np.float64)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape} {seed_note()}"
    eps = np.finfo(dtype).eps
    tol = 32 * eps * (np.sqrt(max(nterms, 1)) + 2) * absref + np.finfo(dtype).tiny
    err = np.abs(actual.astype(np.float64) - expected)
    bad = ~(err <= tol)  # also catches NaN
    if bad.any():
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        raise AssertionError(
            f"{what}: {int(bad.sum())} of {bad.size} elements outside tolerance; first at {first}: "
            f"actual {actual[first]!r}, expected {expected[first]!r}, tol {tol[first]:.3g} "
            f"(dtype {np.dtype(dtype).name}, {nterms} terms) {seed_note()}"
        )


def assert_exact(actual, expected, what: str = "") -> None:
    """Bitwise-equal values (NaN equal to NaN), same shape."""
    actual = np.asarray(actual)
    expected = np.asarray(expected)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape} {seed_note()}"
    if not np.array_equal(actual, expected, equal_nan=actual.dtype.kind == "f"):
        diff = actual != expected
        if actual.dtype.kind == "f":
            diff &= ~(np.isnan(actual) & np.isnan(np.asarray(expected, dtype=np.float64)))
        first = tuple(int(i) for i in np.argwhere(diff)[0])
        raise AssertionError(
            f"{what}: {int(diff.sum())} of {diff.size} elements differ; first at {first}: "
            f"actual {actual[first]!r}, expected {expected[first]!r} {seed_note()}"
        )


def assert_result_array(res, shape, dtype, what: str = "") -> None:
    """A fresh-looking result: ndarray of the given shape and dtype, C-contiguous."""
    assert isinstance(res, np.ndarray), f"{what}: got {type(res).__name__}"
    assert res.shape == tuple(shape), f"{what}: shape {res.shape}, expected {tuple(shape)}"
    assert res.dtype == np.dtype(dtype), f"{what}: dtype {res.dtype}, expected {np.dtype(dtype)}"
    assert res.flags.c_contiguous, f"{what}: result is not C-contiguous (strides {res.strides})"


def under_asan() -> bool:
    """True inside tools/sanitize.sh's AddressSanitizer run (libasan is preloaded)."""
    try:
        with open("/proc/self/maps") as f:
            return "libasan" in f.read()
    except OSError:  # pragma: no cover
        return False
