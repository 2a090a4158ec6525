"""Type stubs for ``fastconv._core``, the pybind11 extension (csrc/register_*.cpp).

Low-level entry points: arguments are already validated and normalised by
``fastconv.functional`` (C-contiguous float32/float64 arrays of one dtype, plain ints for
the window). Call the public API in ``fastconv`` instead unless you know you need these.
Keep in sync with the bindings: tests/test_stubs.py compares the public names and each
function's parameter names with the compiled module.
"""
from typing import Any, Dict, List, Optional, Sequence, SupportsFloat, SupportsIndex, Tuple

import numpy as np

__version__: str

# --- register_conv.cpp ---------------------------------------------------------------

def im2col(
    x: np.ndarray, kh: SupportsIndex, kw: SupportsIndex, sh: SupportsIndex, sw: SupportsIndex,
    ph: SupportsIndex, pw: SupportsIndex,
) -> np.ndarray:
    """Book-layout im2col: (N*OH*OW, C*KH*KW), rows (n, oh, ow), columns (c, kh, kw)."""

def col2im(
    col: np.ndarray, input_shape: Sequence[SupportsIndex], kh: SupportsIndex, kw: SupportsIndex,
    sh: SupportsIndex, sw: SupportsIndex, ph: SupportsIndex, pw: SupportsIndex,
) -> np.ndarray:
    """Adjoint of im2col: sums overlapping columns into an (N, C, H, W) image."""

def conv2d_forward(
    x: np.ndarray, w: np.ndarray, b: Optional[np.ndarray], sh: SupportsIndex, sw: SupportsIndex,
    ph: SupportsIndex, pw: SupportsIndex,
) -> np.ndarray:
    """Convolution forward (N, OC, OH, OW); b may be None."""

def conv2d_backward(
    dout: np.ndarray, x: np.ndarray, w: np.ndarray, sh: SupportsIndex, sw: SupportsIndex,
    ph: SupportsIndex, pw: SupportsIndex,
) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Convolution backward: (dx, dW, db)."""

def conv2d_backward_data(
    dout: np.ndarray, w: np.ndarray, input_shape: Sequence[SupportsIndex], sh: SupportsIndex, sw: SupportsIndex,
    ph: SupportsIndex, pw: SupportsIndex,
) -> np.ndarray:
    """Convolution backward, dx alone (a transposed convolution)."""

def conv2d_backward_weight(
    dout: np.ndarray, x: np.ndarray, kh: SupportsIndex, kw: SupportsIndex, sh: SupportsIndex, sw: SupportsIndex,
    ph: SupportsIndex, pw: SupportsIndex,
) -> np.ndarray:
    """Convolution backward, dW alone."""

# --- register_pool.cpp ---------------------------------------------------------------

def max_pool2d_forward(
    x: np.ndarray, kh: SupportsIndex, kw: SupportsIndex, sh: SupportsIndex, sw: SupportsIndex,
    ph: SupportsIndex, pw: SupportsIndex, pad_value: Optional[float] = None,
) -> Tuple[np.ndarray, np.ndarray]:
    """Max pooling: (out, argmax as flat h*W + w per plane, int64; -1 where padding won).
    Padding is -inf unless pad_value is given."""

def max_pool2d_backward(
    dout: np.ndarray, indices: np.ndarray, input_shape: Sequence[SupportsIndex], kh: SupportsIndex,
    kw: SupportsIndex, sh: SupportsIndex, sw: SupportsIndex, ph: SupportsIndex, pw: SupportsIndex,
) -> np.ndarray:
    """Max pooling backward from the argmax indices (C-contiguous int64)."""

def avg_pool2d_forward(
    x: np.ndarray, kh: SupportsIndex, kw: SupportsIndex, sh: SupportsIndex, sw: SupportsIndex,
    ph: SupportsIndex, pw: SupportsIndex,
) -> np.ndarray:
    """Average pooling (zero padding counts in the divisor)."""

def avg_pool2d_backward(
    dout: np.ndarray, input_shape: Sequence[SupportsIndex], kh: SupportsIndex, kw: SupportsIndex,
    sh: SupportsIndex, sw: SupportsIndex, ph: SupportsIndex, pw: SupportsIndex,
) -> np.ndarray:
    """Average pooling backward."""

def relu_forward(x: np.ndarray, mask: Optional[np.ndarray] = None) -> np.ndarray:
    """The book's ReLU: x where x > 0, else 0; `mask` (bool, x's shape) receives x <= 0."""

def relu_backward(dout: np.ndarray, x: np.ndarray, out: Optional[np.ndarray] = None) -> np.ndarray:
    """ReLU backward: dout where not x <= 0, into `out` when given (may be dout)."""

def relu_backward_mask(dout: np.ndarray, mask: np.ndarray, out: Optional[np.ndarray] = None) -> np.ndarray:
    """ReLU backward from the book's mask: dout where not mask, into `out` when given (may be dout)."""

# --- register_runtime.cpp ------------------------------------------------------------

def set_forward_algorithm(name: str) -> None:
    """Force the convolution forward algorithm: 'auto' (the cost rule), 'implicit_gemm',
    'shifted_rows' (stride 1 only; other shapes fall back) or 'pixel_dots'. Tests only."""

def get_forward_algorithm() -> str:
    """The forward algorithm setting: 'auto', 'implicit_gemm', 'shifted_rows' or 'pixel_dots'."""

def set_shifted_rows_tiles(name: str) -> None:
    """Force the shifted-rows GEMM's tiles: 'auto' (the lane rule), 'filters_by_pixels' or
    'pixels_by_filters' (the block computed transposed). Tests only."""

def get_shifted_rows_tiles() -> str:
    """The shifted-rows tiles setting: 'auto', 'filters_by_pixels' or 'pixels_by_filters'."""

def set_weight_grad_algorithm(name: str) -> None:
    """Force the convolution weight-gradient algorithm: 'auto' (the cost rule), 'gemm' (in groups
    or in column blocks), 'dots' (stride 1 only; other shapes take the GEMM) or 'taps'. Tests only."""

def get_weight_grad_algorithm() -> str:
    """The weight-gradient algorithm setting: 'auto', 'gemm', 'dots' or 'taps'."""

def set_data_grad_algorithm(name: str) -> None:
    """Force the convolution data-gradient algorithm: 'auto' (the cost rule), 'gemm_col2im',
    'pixel_rows' or 'transposed_forward' (stride 1 and padding below the window only; other
    shapes take gemm_col2im). Tests only."""

def get_data_grad_algorithm() -> str:
    """The data-gradient algorithm setting: 'auto', 'gemm_col2im', 'pixel_rows' or 'transposed_forward'."""

def weight_grad_limits() -> Dict[str, int]:
    """Blocking constants of the weight-gradient paths: ``taps_block_pixels`` (output pixels per
    depth block at most), ``taps_image_budget_bytes`` (a unit's padded input copy),
    ``taps_block_taps`` (taps per channel block at least) and ``dots_max_patch``."""

def affine_forward(x: np.ndarray, W: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The book's Affine.forward on 2-D x: x @ W + b on fastconv's GEMM (one dtype throughout)."""

def affine_backward(dout: np.ndarray, x: np.ndarray, W: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The book's Affine.backward: (dout @ W.T, x.T @ dout, dout.sum(axis=0))."""

def optimizer_update(rule: str, param: np.ndarray, grad: np.ndarray, state: List[np.ndarray], lr: float,
                     momentum: float = 0.9, decay_rate: float = 0.99, beta1: float = 0.9,
                     beta2: float = 0.999) -> None:
    """One in-place pass of a book optimiser's update (sgd, momentum, nesterov, adagrad, rmsprop,
    adam; for adam, lr is the bias-corrected lr_t); `state` holds v, h, or Adam's m and v."""

def blas_threads_callback_address() -> int:
    """Address of the callback (OpenBLAS's openblas_threads_callback signature) that runs
    OpenBLAS's parallel regions on fastconv's OpenMP threads."""

def blas_regions_run() -> int:
    """OpenBLAS parallel regions run through that callback so far."""

def set_num_threads(n: SupportsIndex) -> None:
    """Threads for every native kernel."""

def get_num_threads() -> int:
    """Threads the native kernels use."""

def gemm(a: np.ndarray, b: np.ndarray, scratch_elems: SupportsIndex = -1) -> np.ndarray:
    """a @ b with fastconv's own blocked GEMM (2-D, C-contiguous).

    scratch_elems (tests only): give each thread that many elements of scratch instead of what
    the plan books; too few raise RuntimeError before anything is written.
    """

def conv2d_plan(
    x_shape: Sequence[int], w_shape: Sequence[int], sh: SupportsIndex, sw: SupportsIndex,
    ph: SupportsIndex, pw: SupportsIndex, dtype: str,
) -> Dict[str, Any]:
    """The plans conv2d_forward and conv2d_backward would build for these shapes now.

    ``{"kernel", "mr", "nr", "threads", "forward": {...}, "backward": {...}}``: layout, blocks,
    work items, the GEMM plans (``m_max, n_max, k_max, kc, mc, nc, scratch_elems``) and the
    scratch per thread.
    """

def set_debug_poison(on: bool) -> None:
    """Debug mode for tests: outputs and scratch start as NaN, and writes past a thread's
    scratch slice raise RuntimeError after the call."""

def get_debug_poison() -> bool: ...

def ukernel(
    name: str, k: SupportsIndex, a: np.ndarray, b: np.ndarray, c: np.ndarray, m: SupportsIndex,
    n: SupportsIndex, accumulate: bool, bias: Optional[np.ndarray], ldb: SupportsIndex = 0,
    gather: Optional[np.ndarray] = None, a_ld: SupportsIndex = 0,
) -> None:
    """One micro-kernel call on packed panels (ldb = 0), B rows read in place, or B rows
    ``b[gather[p], 1:]`` through a table of row pointers, with A packed or (a_ld > 0) its rows
    read in place from an MR x a_ld matrix (tests)."""

def plane_kernel_limits() -> Dict[str, int]:
    """Blocking constants of the pooling kernels: ``row_block`` (outputs per row sweep) and
    ``window_table`` (the largest window whose tap tables live on the stack)."""

def gemm_kernels() -> List[str]:
    """GEMM kernel families (ISAs) this CPU can run, best first."""

def cache_sizes() -> Dict[str, Any]:
    """Data cache sizes in bytes that blocking uses: ``{"l1d", "l2", "l3", "detected"}``
    (32 KiB / 512 KiB / 8 MiB where the CPU does not say)."""

def gemm_kernel_table(usable_only: bool = True) -> Tuple[List[Dict[str, Any]], List[Dict[str, Any]]]:
    """(float32 kernels, float64 kernels) with their blocking, best first.

    Each entry: ``{"name", "isa", "mr", "nr", "kc", "mc", "nc"}``.
    """

def set_gemm_kernel(name: str) -> None:
    """Force a kernel family from gemm_kernels(), or 'auto' for the best one (tests, benchmarks)."""

def get_gemm_kernel() -> str:
    """The kernel family in use."""

def fma_peak_gflops(f64: bool, seconds: SupportsFloat = 0.2) -> float:
    """FMA ceiling (GFLOP/s) of this machine for the active kernel's ISA, on get_num_threads() threads."""

def build_info() -> Dict[str, Any]:
    """Compiler, OpenMP version, selected and available GEMM kernels, CPU ISAs."""

def scratch_bytes() -> Tuple[int, int]:
    """(bytes of kernel scratch alive now, high-water mark since the last reset)"""

def reset_scratch_peak() -> None:
    """Restart the scratch high-water mark."""
