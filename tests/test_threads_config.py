"""Thread control: fastconv's own setting, OMP_NUM_THREADS, threadpoolctl, and show_config."""
import os
import subprocess
import sys

import numpy as np
import pytest

import fastconv


def test_set_num_threads_round_trip():
    before = fastconv.get_num_threads()
    try:
        fastconv.set_num_threads(1)
        assert fastconv.get_num_threads() == 1
        fastconv.set_num_threads(3)
        assert fastconv.get_num_threads() == 3
    finally:
        fastconv.set_num_threads(before)


@pytest.mark.parametrize("bad", [0, -2])
def test_set_num_threads_rejects_non_positive(bad):
    with pytest.raises(ValueError, match="threads must be >= 1"):
        fastconv.set_num_threads(bad)


def test_set_num_threads_rejects_non_int():
    with pytest.raises(TypeError, match="expects an int"):
        fastconv.set_num_threads(2.0)


def test_threadpoolctl_limits_fastconv():
    threadpoolctl = pytest.importorskip("threadpoolctl")
    before = fastconv.get_num_threads()
    fastconv.set_num_threads(2)
    try:
        libs = {info["internal_api"] for info in threadpoolctl.threadpool_info()}
        assert "openmp" in libs, f"fastconv's OpenMP runtime not seen by threadpoolctl: {libs}"
        with threadpoolctl.threadpool_limits(1):
            assert fastconv.get_num_threads() == 1
            rng = np.random.default_rng(3)
            x = rng.standard_normal((4, 3, 9, 9))
            w = rng.standard_normal((5, 3, 3, 3))
            limited = fastconv.conv2d(x, w, None, 1, 1)
        assert fastconv.get_num_threads() == 2
        np.testing.assert_array_equal(limited, fastconv.conv2d(x, w, None, 1, 1))
    finally:
        fastconv.set_num_threads(before)


def test_omp_num_threads_sets_the_start_value():
    env = dict(os.environ, OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-c", "import fastconv; print(fastconv.get_num_threads())"],
                         env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "1"


def test_show_config_names_kernels_threads_and_backends(capsys):
    fastconv.show_config()
    text = capsys.readouterr().out
    for key in ("fastconv", "gemm_f32", "gemm_f64", "openmp", "threads", "backends", "numpy"):
        assert key in text, f"{key!r} missing from show_config():\n{text}"
    assert fastconv.__version__ in text


def test_python_dash_m_prints_the_config():
    out = subprocess.run([sys.executable, "-m", "fastconv"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "gemm_f32" in out.stdout and "backends" in out.stdout


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_work_under_a_million_flop_stays_on_one_thread(dtype, threads_restored):
    """A fork/join costs more than it saves on tiny layers (LeNet-5's c5 at batch 1: 0.1 MFLOP
    forward); layers above the threshold get every thread. Results are the same either way."""
    fastconv.set_num_threads(2)
    tiny = fastconv.explain_plan((1, 16, 5, 5), (120, 16, 5, 5), dtype=dtype)
    assert tiny["forward"]["threads"] == 1 and tiny["backward"]["threads"] == 1
    big = fastconv.explain_plan((8, 64, 28, 28), (64, 64, 3, 3), pad=1, dtype=dtype)
    assert big["forward"]["threads"] == 2 and big["backward"]["threads"] == 2
