"""Argument normalisation and validation shared by every backend.

Every public function funnels its arguments through here once, so each backend
receives C-contiguous arrays of one floating dtype and plain (h, w) int pairs,
and every bad input is refused with the same message whichever backend runs.
"""
from __future__ import annotations

import operator
from typing import NamedTuple, Sequence, Tuple, Union

import numpy as np

IntPair = Union[int, Sequence[int]]


class Window(NamedTuple):
    """Kernel/pool window geometry, every field an int, (h, w) order."""

    kh: int
    kw: int
    sh: int
    sw: int
    ph: int
    pw: int

    def out_size(self, H: int, W: int) -> Tuple[int, int]:
        return (H + 2 * self.ph - self.kh) // self.sh + 1, (W + 2 * self.pw - self.kw) // self.sw + 1


def _as_int(value, name: str) -> int:
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be an integer, got bool {value!r}")
    try:
        return operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an integer, got {type(value).__name__} {value!r}") from None


def pair(value: IntPair, name: str) -> Tuple[int, int]:
    """An int or an (h, w) pair as a tuple of two ints."""
    if isinstance(value, (tuple, list, np.ndarray)):
        if len(value) != 2:
            raise ValueError(f"{name} must be an int or an (h, w) pair, got {value!r}")
        return _as_int(value[0], name), _as_int(value[1], name)
    v = _as_int(value, name)
    return v, v


def window(kh, kw, stride: IntPair, pad: IntPair, *, kind: str = "filter") -> Window:
    kh = _as_int(kh, f"{kind}_h")
    kw = _as_int(kw, f"{kind}_w")
    sh, sw = pair(stride, "stride")
    ph, pw = pair(pad, "pad")
    if kh <= 0 or kw <= 0:
        raise ValueError(f"{kind} size must be positive, got {kh}x{kw}")
    if sh <= 0 or sw <= 0:
        raise ValueError(f"stride must be positive, got stride=({sh}, {sw})")
    if ph < 0 or pw < 0:
        raise ValueError(f"pad must be non-negative, got pad=({ph}, {pw})")
    return Window(kh, kw, sh, sw, ph, pw)


def check_fits(win: Window, H: int, W: int) -> Tuple[int, int]:
    """Output size of `win` over an H x W input; refuses a kernel larger than the padded input."""
    Hp, Wp = H + 2 * win.ph, W + 2 * win.pw
    if win.kh > Hp or win.kw > Wp:
        raise ValueError(
            f"padded input {Hp}x{Wp} (input {H}x{W}, pad ({win.ph}, {win.pw})) "
            f"is smaller than kernel {win.kh}x{win.kw}"
        )
    return win.out_size(H, W)


def check_pool_pad(win: Window) -> None:
    if 2 * win.ph > win.kh or 2 * win.pw > win.kw:
        raise ValueError(
            f"pool pad ({win.ph}, {win.pw}) must be at most half the window {win.kh}x{win.kw}"
        )


# --- dtypes -----------------------------------------------------------------

def _array(a, name: str) -> np.ndarray:
    arr = np.asarray(a)
    kind = arr.dtype.kind
    if kind == "c":
        raise TypeError(f"{name} is complex ({arr.dtype}); fastconv computes real float32/float64 only")
    if kind not in "biuf":
        raise TypeError(f"{name} has unsupported dtype {arr.dtype}; expected a real numeric array")
    if kind == "f" and arr.dtype.itemsize > 8:
        raise TypeError(f"{name} has dtype {arr.dtype}; fastconv computes in float32 or float64")
    return arr


def compute_dtype(*arrays: np.ndarray) -> np.dtype:
    """The dtype NumPy's own `np.dot` in the book's code would produce, narrowed to float32/float64.

    float32 stays float32 (the book's im2col would widen it; fastconv does not); any float64
    operand makes the result float64; integers and bools compute in float64 as the book's
    float64 im2col buffer would; float16 computes in float32.
    """
    dt = np.result_type(*arrays)
    if dt == np.float32 or dt == np.float16:
        return np.dtype(np.float32)
    return np.dtype(np.float64)


def as_float(arr: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """C-contiguous `dtype` view or copy; never the caller's buffer when a copy is needed."""
    return np.ascontiguousarray(arr, dtype=dtype)


def arrays(names: Sequence[str], values: Sequence) -> Tuple[np.ndarray, ...]:
    return tuple(_array(v, n) for n, v in zip(names, values))


def check_ndim(arr: np.ndarray, ndim: int, name: str, layout: str) -> None:
    if arr.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D {layout}, got {arr.ndim}-D array of shape {arr.shape}")


def shape4(shape, name: str = "input_shape") -> Tuple[int, int, int, int]:
    try:
        dims = tuple(_as_int(s, name) for s in shape)
    except TypeError:
        raise TypeError(f"{name} must be a sequence of 4 ints (N, C, H, W), got {shape!r}") from None
    if len(dims) != 4:
        raise ValueError(f"{name} must have 4 entries (N, C, H, W), got {shape!r}")
    if any(d < 0 for d in dims):
        raise ValueError(f"{name} must be non-negative, got {shape!r}")
    return dims  # type: ignore[return-value]


def check_index_range(indices: np.ndarray, shape) -> None:
    """Refuses max-pool indices outside their input plane (the same message as the native kernel)."""
    plane = shape[2] * shape[3]
    if indices.size and (indices.min() < 0 or indices.max() >= plane):
        raise ValueError(
            f"indices must lie in [0, {plane}) for input planes {shape[2]}x{shape[3]}, "
            f"got range [{indices.min()}, {indices.max()}]"
        )
