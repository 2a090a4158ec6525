"""fastconv: fast CPU convolution and pooling for NumPy CNNs.

A drop-in for the im2col-based layers of "Deep Learning from Scratch": the same
numbers through OpenMP C++ kernels, with a pure-NumPy reference backend and an
optional PyTorch backend selectable at run time.
"""
from __future__ import annotations

import os
import sys

# GNU OpenMP's threads spin ~300,000 iterations after each parallel region before sleeping.
# Between fastconv calls a NumPy CNN runs NumPy's BLAS (the Affine layers), whose threads then
# fight the spinning ones for the cores: measured 88 ms -> 32 ms per SimpleConvNet step on a
# busy 2-core machine (benchmarks/NOTES.md). Short spins unless the user chose a policy;
# must be set before the OpenMP runtime loads with _core.
if "OMP_WAIT_POLICY" not in os.environ:
    os.environ.setdefault("GOMP_SPINCOUNT", "10000")  # GNU libgomp (Linux wheels)
    os.environ.setdefault("KMP_BLOCKTIME", "1")  # LLVM/Intel libomp (macOS): milliseconds

# The other half of the same fight: NumPy's OpenBLAS threads busy-wait 2**28 cycles (~0.1 s)
# after each call, so every fastconv call that follows an Affine layer shares a core with a
# spinner. Where OpenBLAS has the threads callback, _blas.install() below moves its work onto
# fastconv's threads, whatever the import order. For an OpenBLAS without it: 2**16 cycles
# (~25 us), SimpleConvNet step 31.4 -> 17.3 ms (benchmarks/NOTES.md, section 14). OpenBLAS reads
# this once, when NumPy loads it, so it only takes effect when fastconv is imported first;
# _BLAS_SPIN records which case this process is in.
if "OPENBLAS_THREAD_TIMEOUT" in os.environ:
    _BLAS_SPIN = f"OPENBLAS_THREAD_TIMEOUT={os.environ['OPENBLAS_THREAD_TIMEOUT']} (set by the user)"
elif "numpy" in sys.modules:
    _BLAS_SPIN = ("OpenBLAS default (~0.1 s): numpy was imported before fastconv; "
                 "export OPENBLAS_THREAD_TIMEOUT=16 or import fastconv first")
else:
    os.environ["OPENBLAS_THREAD_TIMEOUT"] = "16"
    _BLAS_SPIN = "OPENBLAS_THREAD_TIMEOUT=16 (set by fastconv)"

try:
    from . import _core
except ImportError as exc:  # pragma: no cover - exercised only on a broken install
    raise ImportError(
        "fastconv's compiled extension fastconv._core could not be imported; was the package "
        "built? Install it with `pip install .` from the source tree (importing from the source "
        f"folder itself does not work). Original error: {exc}"
    ) from exc

import numpy as _numpy  # noqa: E402,F401  (after the environment above: loads NumPy's OpenBLAS for _blas)

from . import _blas

if os.environ.get("FASTCONV_BLAS_THREADS", "1") != "0":  # "0": leave OpenBLAS's threads alone
    _blas.install()  # NumPy's OpenBLAS runs its parallel regions on fastconv's OpenMP threads

from . import layers, optimizer
from .backends import available_backends, get_backend, set_backend, use_backend
from .functional import (
    affine, affine_backward, avg_pool2d, avg_pool2d_backward, col2im, conv2d, conv2d_backward, conv2d_backward_input,
    conv2d_backward_weight, conv_transpose2d, explain_plan, im2col, max_pool2d, max_pool2d_backward, relu,
    relu_backward,
)
from ._config import get_num_threads, set_num_threads, show_config

__version__ = _core.__version__

__all__ = [
    "im2col", "col2im", "conv2d", "conv2d_backward", "conv2d_backward_input", "conv2d_backward_weight",
    "conv_transpose2d", "max_pool2d", "max_pool2d_backward", "avg_pool2d", "avg_pool2d_backward",
    "relu", "relu_backward", "affine", "affine_backward", "explain_plan", "layers", "optimizer",
    "available_backends", "get_backend", "set_backend", "use_backend",
    "get_num_threads", "set_num_threads", "show_config", "__version__",
]
