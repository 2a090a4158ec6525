"""What a built wheel must carry and report (run by cibuildwheel and tools/check_wheel.sh
against the installed wheel, and by CI against `pip install .`)."""
from __future__ import annotations

import importlib.metadata
import os
import pathlib
import subprocess
import sys

import pytest

import fastconv
from fastconv import _core

PKG = pathlib.Path(fastconv.__file__).parent


def test_openmp_compiled_in_when_expected():
    """Release wheels must not silently fall back to the serial build (e.g. macOS without libomp).
    cibuildwheel sets FASTCONV_EXPECT_OPENMP=1; a plain source build may be serial."""
    openmp = _core.build_info()["openmp"]
    if os.environ.get("FASTCONV_EXPECT_OPENMP", "") not in ("", "0"):
        assert openmp.startswith("OpenMP "), f"built without OpenMP: build_info()['openmp'] = {openmp!r}"
    else:
        assert openmp.startswith("OpenMP ") or openmp.startswith("none")


def test_installed_files():
    """The package directory holds the extension, its stub and every subpackage."""
    present = {p.relative_to(PKG).as_posix() for p in PKG.rglob("*") if p.is_file()}
    for required in ("__init__.py", "__main__.py", "py.typed", "_core.pyi", "backends/__init__.py",
                     "backends/native_backend.py", "backends/numpy_backend.py", "examples/__init__.py",
                     "bench/__init__.py", "bench/__main__.py"):
        assert required in present, f"{required} missing from the installed package at {PKG}"
    assert any(name.startswith("_core.") and not name.endswith(".pyi") for name in present), (
        f"no compiled _core extension in {PKG}")


def test_metadata_and_entry_points():
    dist = importlib.metadata.distribution("fastconv")
    assert dist.version == fastconv.__version__
    scripts = {ep.name: ep.value for ep in dist.entry_points if ep.group == "console_scripts"}
    for name, target in {"fastconv-bench": "fastconv.bench:main", "fastconv-train": "fastconv.examples.train:main"}.items():
        assert scripts.get(name) == target, f"console script {name}: {scripts.get(name)!r}, expected {target!r}"
    assert any(r.startswith("numpy") for r in dist.requires or [])


def test_gomp_spincount_default_in_fresh_process():
    """__init__ shortens GNU OpenMP's spin unless the user chose a wait policy (docs/MIGRATION.md).
    (Set on every platform; only libgomp, the Linux wheels' runtime, reads it.)"""
    code = "import os, fastconv; print(os.environ.get('GOMP_SPINCOUNT'))"
    env = {k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         check=True, env=env).stdout.strip()
    assert out == "10000"
    env["OMP_WAIT_POLICY"] = "active"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         check=True, env=env).stdout.strip()
    assert out == "None"


_BLAS_TIMEOUT_PROBE = """
import ctypes, glob, os, sys
{first}
import numpy
from fastconv._config import config
libs = glob.glob(os.path.join(os.path.dirname(numpy.__file__) + ".libs", "*openblas*.so*"))
read = ctypes.CDLL(libs[0]).openblas_thread_timeout() if libs else -1
print(os.environ.get("OPENBLAS_THREAD_TIMEOUT"), read, config()["blas_spin"], sep="|")
"""


@pytest.mark.parametrize("fastconv_first", [True, False])
def test_openblas_spin_shortened_only_when_imported_before_numpy(fastconv_first):
    """The fallback for an OpenBLAS without the threads callback (tests/test_blas_threads.py has
    the callback): __init__ sets OPENBLAS_THREAD_TIMEOUT when NumPy is not loaded yet (NOTES
    section 14); the value must reach OpenBLAS itself (its openblas_thread_timeout() reports what
    it read), and show_config must say which case the process is in."""
    code = _BLAS_TIMEOUT_PROBE.format(first="import fastconv" if fastconv_first else "import numpy, fastconv")
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_THREAD_TIMEOUT"}
    env["FASTCONV_BLAS_THREADS"] = "0"  # as where the hook is absent
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         check=True, env=env).stdout.strip()
    variable, read, report = out.split("|")
    if fastconv_first:
        assert variable == "16" and "set by fastconv" in report
        assert read in ("16", "-1")  # -1: NumPy's BLAS is not a bundled OpenBLAS here
    else:
        assert variable == "None" and "imported before fastconv" in report
        assert read in ("0", "-1")
