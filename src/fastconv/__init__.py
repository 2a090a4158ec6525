"""fastconv: fast CPU convolution and pooling for NumPy CNNs.

A drop-in for the im2col-based layers of "Deep Learning from Scratch": the same
numbers through OpenMP C++ kernels, with a pure-NumPy reference backend and an
optional PyTorch backend selectable at run time.
"""
from __future__ import annotations

import os

# GNU OpenMP's threads spin ~300,000 iterations after each parallel region before sleeping.
# Between fastconv calls a NumPy CNN runs NumPy's BLAS (the Affine layers), whose threads then
# fight the spinning ones for the cores: measured 88 ms -> 32 ms per SimpleConvNet step on a
# busy 2-core machine (benchmarks/NOTES.md). Short spins unless the user chose a policy;
# must be set before the OpenMP runtime loads with _core.
if "OMP_WAIT_POLICY" not in os.environ:
    os.environ.setdefault("GOMP_SPINCOUNT", "10000")  # GNU libgomp (Linux wheels)
    os.environ.setdefault("KMP_BLOCKTIME", "1")  # LLVM/Intel libomp (macOS): milliseconds

try:
    from . import _core
except ImportError as exc:  # pragma: no cover - exercised only on a broken install
    raise ImportError(
        "fastconv's compiled extension fastconv._core could not be imported; was the package "
        "built? Install it with `pip install .` from the source tree (importing from the source "
        f"folder itself does not work). Original error: {exc}"
    ) from exc

from . import layers
from .backends import available_backends, get_backend, set_backend, use_backend
from .functional import (
    avg_pool2d, avg_pool2d_backward, col2im, conv2d, conv2d_backward, im2col,
    max_pool2d, max_pool2d_backward, relu, relu_backward,
)
from ._config import get_num_threads, set_num_threads, show_config

__version__ = _core.__version__

__all__ = [
    "im2col", "col2im", "conv2d", "conv2d_backward",
    "max_pool2d", "max_pool2d_backward", "avg_pool2d", "avg_pool2d_backward",
    "relu", "relu_backward", "layers",
    "available_backends", "get_backend", "set_backend", "use_backend",
    "get_num_threads", "set_num_threads", "show_config", "__version__",
]
