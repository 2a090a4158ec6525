"""Thread control and the configuration report users paste into bug reports."""
from __future__ import annotations

import platform
import sys

import numpy as np

from . import _blas, _core


def set_num_threads(n: int) -> None:
    """Use ``n`` OpenMP threads in the native kernels (``OMP_NUM_THREADS`` sets the start value)."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
        raise TypeError(f"set_num_threads expects an int, got {type(n).__name__} {n!r}")
    if n < 1:
        raise ValueError(f"number of threads must be >= 1, got {n}")
    _core.set_num_threads(int(n))


def get_num_threads() -> int:
    """Threads the native kernels use."""
    return _core.get_num_threads()


def _blas_spin() -> str:
    from . import _BLAS_SPIN

    if _blas.hooked():
        return "moot: OpenBLAS runs on fastconv's threads (blas_threads below)"
    return _BLAS_SPIN


def _caches() -> str:
    c = _core.cache_sizes()
    sizes = f"L1d {c['l1d'] // 1024} KiB, L2 {c['l2'] // 1024} KiB, L3 {c['l3'] // 1024} KiB"
    # So far only the shifted-rows forward's depth block derives from them (from L1d).
    return sizes + (" (detected)" if c["detected"] else " (not detected: defaults)")


def config() -> dict:
    from .backends import available_backends

    info = {"fastconv": _core.__version__}  # the version first: what a bug report needs most
    info.update(_core.build_info())
    info.update(
        python=sys.version.split()[0],
        platform=platform.platform(),
        numpy=np.__version__,
        threads=get_num_threads(),
        caches=_caches(),
        backends=available_backends(),
        blas_spin=_blas_spin(),
        blas_threads=_blas.status(),
    )
    return info


def show_config() -> None:
    """Print version, selected SIMD kernels, OpenMP runtime, threads and backends."""
    for key, value in config().items():
        print(f"{key:>14}: {value}")
