"""OpenBLAS's threads and fastconv's threads take turns instead of fighting for the cores.

NumPy's OpenBLAS keeps its own thread pool whose threads busy-wait ~0.1 s after each call;
a fastconv call that follows a NumPy matrix product then shares its cores with spinners
(SimpleConvNet step 21 -> 12 ms when they are stopped, benchmarks/NOTES.md section 33).
OpenBLAS >= 0.3.27 takes a callback that runs its parallel regions on the caller's threads:
fastconv installs its own (``_core.blas_threads_callback_address``), so NumPy's BLAS runs on
fastconv's OpenMP team and OpenBLAS's pool stays asleep, whatever the import order. Where a
loaded OpenBLAS has no such hook (older NumPy) or the BLAS is another library, nothing
changes and ``status()`` says so.

BLAS calls from several Python threads at once run their parallel regions one after another
(OpenBLAS's pthreads build shares a work buffer per job index between callers; its own pool
serialises them too). Limits: only libraries loaded when ``install()`` runs are hooked (fastconv runs it at import;
call ``fastconv._blas.install()`` again after importing SciPy, say); OpenBLAS's LU
(``np.linalg.solve``) still uses its own pool; the hook is found through ``/proc/self/maps``
(Linux) or threadpoolctl when it is installed.
"""
from __future__ import annotations

import ctypes
import os
from typing import Dict, List

from . import _core

_SETTERS = (  # NumPy >= 2 wheels prefix and suffix OpenBLAS's symbols (scipy-openblas)
    "scipy_openblas_set_threads_callback_function64_",
    "scipy_openblas_set_threads_callback_function",
    "openblas_set_threads_callback_function64_",
    "openblas_set_threads_callback_function",
)
_hooked: Dict[str, str] = {}  # library path -> setter symbol
_unhookable: Dict[str, str] = {}  # library path -> why not
# FASTCONV_BLAS_THREADS=0 in the environment: fastconv's import leaves OpenBLAS alone.


def _loaded_openblas_paths() -> List[str]:
    paths: List[str] = []
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                fields = line.split(None, 5)
                path = fields[5].strip() if len(fields) == 6 else ""
                if "openblas" in os.path.basename(path).lower() and path not in paths:
                    paths.append(path)
        return paths
    except OSError:
        pass
    try:  # macOS, Windows: threadpoolctl knows where the loaded libraries are
        from threadpoolctl import threadpool_info
    except ImportError:
        return paths
    return [i["filepath"] for i in threadpool_info() if i.get("internal_api") == "openblas"]


def install() -> Dict[str, str]:
    """Hook every loaded OpenBLAS that has the callback; returns ``{path: setter}`` of those hooked."""
    callback = ctypes.c_void_p(_core.blas_threads_callback_address())
    for path in _loaded_openblas_paths():
        if path in _hooked or path in _unhookable:
            continue
        try:
            lib = ctypes.CDLL(path)
        except OSError as exc:
            _unhookable[path] = f"cannot be opened: {exc}"
            continue
        for name in _SETTERS:
            setter = getattr(lib, name, None)
            if setter is not None:
                setter.argtypes = [ctypes.c_void_p]
                setter.restype = None
                setter(callback)
                _hooked[path] = name
                break
        else:
            _unhookable[path] = "has no threads callback (OpenBLAS < 0.3.27)"
    return dict(_hooked)


def hooked() -> bool:
    """Whether some loaded OpenBLAS runs its parallel regions on fastconv's threads."""
    return bool(_hooked)


def status() -> str:
    """One line for ``show_config()``: which OpenBLAS runs on fastconv's threads."""
    if _hooked:
        names = ", ".join(os.path.basename(p) for p in _hooked)
        return f"runs on fastconv's OpenMP threads ({names}; {_core.blas_regions_run()} regions so far)"
    if _unhookable:
        return "; ".join(f"{os.path.basename(p)} {why}" for p, why in _unhookable.items())
    if os.environ.get("FASTCONV_BLAS_THREADS", "1") == "0":
        return "left alone (FASTCONV_BLAS_THREADS=0)"
    return "no OpenBLAS loaded"
