"""NumPy's OpenBLAS runs its parallel regions on fastconv's OpenMP threads (fastconv/_blas.py),
whatever the import order: the mechanism, checked in fresh processes (not the time it saves,
which fastconv-bench reports)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

_PROBE = r"""
import ctypes, json, os
{first}
import fastconv
from fastconv import _blas, _core
from fastconv._config import config
import numpy as np

def has_hook(path):
    lib = ctypes.CDLL(path)
    return any(hasattr(lib, name) for name in _blas._SETTERS)

libs = _blas._loaded_openblas_paths()
rng = np.random.default_rng(0)
a, b = rng.standard_normal((600, 700)), rng.standard_normal((700, 500))
before = _core.blas_regions_run()
c = a @ b  # large enough for OpenBLAS to split it into jobs
after = _core.blas_regions_run()
exact = np.abs(c - np.einsum("ij,jk->ik", a, b)).max()
child = None
if {fork}:
    pid = os.fork()
    if pid == 0:  # a forked child must not enter an OpenMP region: its jobs go to plain threads
        ok = np.allclose(a @ b, c)
        os._exit(0 if ok and _core.blas_regions_run() > after else 3)
    child = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
print(json.dumps(dict(libs=libs, hookable=[has_hook(p) for p in libs], hooked=_blas.hooked(),
                      regions=after - before, error=float(exact), child=child,
                      status=_blas.status(), spin=config()["blas_spin"])))
"""


def _probe(first: str, env_extra=None, fork=False) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="2", OPENBLAS_NUM_THREADS="2")
    env.pop("FASTCONV_BLAS_THREADS", None)
    env.update(env_extra or {})
    out = subprocess.run([sys.executable, "-c", _PROBE.format(first=first, fork=fork)], capture_output=True,
                         text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def _hookable(r: dict) -> bool:
    if not r["libs"]:
        pytest.skip("NumPy's BLAS is not an OpenBLAS loaded as a shared library here")
    return any(r["hookable"])


@pytest.mark.parametrize("first", ["import numpy", "import fastconv"])
def test_numpy_blas_runs_on_fastconv_threads_in_either_import_order(first):
    r = _probe(first)
    assert r["error"] < 1e-9
    if not _hookable(r):  # an OpenBLAS older than 0.3.27: nothing may change, and config says why
        assert not r["hooked"] and r["regions"] == 0 and "no threads callback" in r["status"]
        return
    assert r["hooked"], r
    assert r["regions"] >= 1, "a 600x700x500 product ran no OpenBLAS region through fastconv's callback"
    assert "runs on fastconv's OpenMP threads" in r["status"] and r["spin"].startswith("moot")


def test_opting_out_leaves_openblas_alone():
    r = _probe("import numpy", {"FASTCONV_BLAS_THREADS": "0"})
    assert not r["hooked"] and r["regions"] == 0 and r["error"] < 1e-9
    assert "imported before fastconv" in r["spin"]
    assert r["status"] == "left alone (FASTCONV_BLAS_THREADS=0)", r["status"]  # not "no OpenBLAS loaded"


@pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork is POSIX-only")
def test_forked_child_runs_blas_without_openmp():
    r = _probe("import numpy", fork=True)
    if not _hookable(r):
        pytest.skip("no hookable OpenBLAS: the fork path is not reached")
    assert r["child"] == 0, "the forked child's BLAS call failed, or did not go through the callback"


_CONCURRENT = r"""
import json, threading
import numpy as np
import fastconv
from fastconv import _blas, _core
rng = np.random.default_rng(7)
a, b = rng.standard_normal((300, 400)), rng.standard_normal((400, 350))
m, v = rng.standard_normal((3000, 2000)), rng.standard_normal(2000)
want_ab, want_mv = np.einsum("ij,jk->ik", a, b), np.einsum("ij,j->i", m, v)
errors = []
def work():
    for _ in range(15):
        if np.abs(a @ b - want_ab).max() > 1e-9 or np.abs(m @ v - want_mv).max() > 1e-9:
            errors.append(1)
before = _core.blas_regions_run()
threads = [threading.Thread(target=work) for _ in range(4)]
for t in threads: t.start()
for t in threads: t.join()
print(json.dumps(dict(errors=len(errors), regions=_core.blas_regions_run() - before, hooked=_blas.hooked())))
"""


def test_concurrent_numpy_blas_calls_stay_correct():
    """Four Python threads calling NumPy's BLAS at once (matrix products and matrix-vector
    products, both split into jobs by OpenBLAS) through the callback: every result right.
    OpenBLAS's pthreads build shares one work buffer per job index, so the callback runs one
    region at a time."""
    env = dict(os.environ, OMP_NUM_THREADS="2", OPENBLAS_NUM_THREADS="2")
    env.pop("FASTCONV_BLAS_THREADS", None)
    out = subprocess.run([sys.executable, "-c", _CONCURRENT], capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout.strip().splitlines()[-1])
    if not r["hooked"]:
        pytest.skip("no hookable OpenBLAS here: the callback is not in the path")
    assert r["regions"] >= 60, f"only {r['regions']} regions went through the callback"
    assert r["errors"] == 0, f"{r['errors']} wrong results from concurrent BLAS calls"
