"""Fixtures shared by the whole suite.

* ``rng``: a NumPy generator seeded from ``FASTCONV_TEST_SEED`` (default in support.py) and
  the test's node id; the seed is printed in the header and attached to every failure.
* ``backend`` / ``dtype``: parametrize over the available backends and float32/float64.
* every test starts and ends with the same default backend and thread count.
"""
from __future__ import annotations

import os
import warnings

# The references (NumPy's matmul in the book's layers and the numpy backend) are small; on a
# busy 2-core machine a multi-threaded OpenBLAS spins and slows them ~100x. One OpenBLAS thread
# keeps the suite fast; fastconv's own threads are set with fastconv.set_num_threads.
# (Effective only when NumPy is not imported yet, which is the normal case for a pytest run.)
# Not MKL_NUM_THREADS: PyTorch applies it to the process's OpenMP limit on import, which would
# quietly cap fastconv's native kernels at one thread for the whole suite.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402

import fastconv  # noqa: E402
from support import BACKENDS, DTYPES, NATIVE_FAMILIES, SEED, dtype_id, rng_for, select_backend

# On a failure hypothesis writes a patch file with libcst, whose import emits a
# DeprecationWarning (mypy_extensions.TypedDict) that `filterwarnings = error` would turn into
# an INTERNALERROR ending the whole run. Import it once here, quietly, where installed.
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    try:
        import hypothesis.extra._patching  # noqa: F401
    except Exception:  # pragma: no cover - depends on the optional libcst
        pass

settings.register_profile(
    "fastconv",
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.register_profile(
    "thorough",
    max_examples=500,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.load_profile(os.environ.get("FASTCONV_HYPOTHESIS_PROFILE", "fastconv"))


def pytest_report_header(config):
    return [
        f"fastconv test seed: FASTCONV_TEST_SEED={SEED} (set the variable to change or replay it)",
        f"fastconv backends under test: {', '.join(BACKENDS + NATIVE_FAMILIES)}; threads: {fastconv.get_num_threads()}",
    ]


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if report.failed:
        report.sections.append((
            "fastconv random seed",
            f"FASTCONV_TEST_SEED={SEED}; the test's generator is keyed by its node id {item.nodeid!r}. "
            f"Rerun with FASTCONV_TEST_SEED={SEED} python -m pytest '{item.nodeid}' to replay.",
        ))
    return report


@pytest.fixture
def rng(request) -> np.random.Generator:
    return rng_for(request.node.nodeid)


@pytest.fixture(params=BACKENDS + NATIVE_FAMILIES)
def backend(request):
    """Run the test with this backend as the process default (restored afterwards); the
    native variants force their kernel family. The test sees the backend's name."""
    return select_backend(request, request.param)


@pytest.fixture(params=DTYPES, ids=dtype_id)
def dtype(request):
    return np.dtype(request.param)


_START_BACKEND = fastconv.get_backend()
_START_THREADS = fastconv.get_num_threads()


@pytest.fixture(autouse=True)
def _restore_global_state():
    """Leave the process default backend and thread count as the suite found them."""
    yield
    if fastconv.get_backend() != _START_BACKEND:
        fastconv.set_backend(_START_BACKEND)
    if fastconv.get_num_threads() != _START_THREADS:
        fastconv.set_num_threads(_START_THREADS)


@pytest.fixture
def threads_restored():
    """For tests that change the thread count on purpose."""
    before = fastconv.get_num_threads()
    yield before
    fastconv.set_num_threads(before)
