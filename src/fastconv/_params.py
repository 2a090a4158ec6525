"""Argument normalisation and validation shared by every backend.

Every public function funnels its arguments through here once, so each backend
receives C-contiguous arrays of one floating dtype and plain (h, w) int pairs,
and every bad input is refused with the same message whichever backend runs.
"""
from __future__ import annotations

import functools
import math
import operator
import os
from typing import NamedTuple, Sequence, Tuple, Union

import numpy as np

IntPair = Union[int, Sequence[int]]

# Sizes, offsets and byte counts are int64 in the native kernels (and intp in NumPy).
INT64_MAX = 2**63 - 1
# Max pooling tracks the winning tap of a window in 32 bits.
MAX_POOL_TAPS = 2**31 - 1


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
    if type(value) is int:  # the common case; bool is a subclass of int, not int itself
        return value
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be an integer, got bool {value!r}")
    try:
        return operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an integer, got {type(value).__name__} {value!r}") from None


def pair(value: IntPair, name: str) -> Tuple[int, int]:
    """An int or an (h, w) pair as a tuple of two ints."""
    if type(value) is int:
        return value, value
    if isinstance(value, (tuple, list, np.ndarray)):
        if len(value) != 2:
            raise ValueError(f"{name} must be an int or an (h, w) pair, got {value!r}")
        return _as_int(value[0], name), _as_int(value[1], name)
    v = _as_int(value, name)
    return v, v


def window(kh, kw, stride: IntPair, pad: IntPair, *, kind: str = "filter") -> Window:
    kh = _as_int(kh, kind + "_h")
    kw = _as_int(kw, kind + "_w")
    sh, sw = pair(stride, "stride")
    ph, pw = pair(pad, "pad")
    # One comparison chain on the valid path; the messages are formatted only for a refusal.
    # With every field non-negative, sh + ph and sw + pw bound the strides and pads.
    if min(kh, kw, sh, sw) > 0 and min(ph, pw) >= 0 and max(kh, kw, sh + ph, sw + pw) <= INT64_MAX:
        return Window(kh, kw, sh, sw, ph, pw)
    _refuse_window(kind, kh, kw, sh, sw, ph, pw)
    raise AssertionError("unreachable")  # pragma: no cover


def _refuse_window(kind: str, kh: int, kw: int, sh: int, sw: int, ph: int, pw: int) -> None:
    if kh <= 0 or kw <= 0:
        raise ValueError(f"{kind} size must be positive, got {kh}x{kw}")
    if sh <= 0 or sw <= 0:
        raise ValueError(f"stride must be positive, got stride=({sh}, {sw})")
    if ph < 0 or pw < 0:
        raise ValueError(f"pad must be non-negative, got pad=({ph}, {pw})")
    for what, value in ((f"{kind} size {kh}x{kw}", max(kh, kw)), (f"stride ({sh}, {sw})", max(sh, sw)),
                        (f"pad ({ph}, {pw})", max(ph, pw))):
        if value > INT64_MAX:
            raise ValueError(f"{what} does not fit in a 64-bit index (at most {INT64_MAX})")
    if sh + ph > INT64_MAX or sw + pw > INT64_MAX:  # the kernels form pad + stride
        raise ValueError(f"stride ({sh}, {sw}) plus pad ({ph}, {pw}) overflows 64-bit indexing")


def check_fits(win: Window, H: int, W: int) -> Tuple[int, int]:
    """Output size of `win` over an H x W input; refuses a kernel larger than the padded input."""
    Hp, Wp = H + 2 * win.ph, W + 2 * win.pw
    if win.kh > Hp or win.kw > Wp:
        raise ValueError(
            f"padded input {Hp}x{Wp} (input {H}x{W}, pad ({win.ph}, {win.pw})) "
            f"is smaller than kernel {win.kh}x{win.kw}"
        )
    # The kernels index a padded plane with 64-bit offsets (h*W + w, origin rows above it).
    if Hp * Wp > INT64_MAX:
        raise ValueError(
            f"padded input {Hp}x{Wp} (input {H}x{W}, pad ({win.ph}, {win.pw})) has {Hp * Wp} "
            f"elements per plane, more than 64-bit indexing allows ({INT64_MAX})"
        )
    if H == 0 or W == 0:
        raise ValueError(
            f"input plane {H}x{W} is empty: with pad ({win.ph}, {win.pw}) every {win.kh}x{win.kw} "
            f"window would lie entirely in the padding"
        )
    return win.out_size(H, W)


def check_pool_pad(win: Window) -> None:
    if 2 * win.ph > win.kh or 2 * win.pw > win.kw:
        raise ValueError(
            f"pool pad ({win.ph}, {win.pw}) must be at most half the window {win.kh}x{win.kw}"
        )
    if win.kh * win.kw > MAX_POOL_TAPS:
        raise ValueError(
            f"pool window {win.kh}x{win.kw} has {win.kh * win.kw} elements, more than {MAX_POOL_TAPS}"
        )


# Geometry of the calls seen so far: a network calls each layer with the same arguments every
# step, and window() + check_fits() in Python cost several times a small layer's kernel.
# Only exact ints are remembered: True == 1 and 2.0 == 2 hash alike but must still be refused.
_FITTED: dict = {}
_FITTED_MAX = 1024


def _plain(value) -> bool:
    return type(value) is int or (type(value) is tuple and len(value) == 2
                                  and type(value[0]) is int and type(value[1]) is int)


def fitted_window(kh, kw, stride: IntPair, pad: IntPair, H: int, W: int, *,
                  kind: str = "filter") -> Tuple[Window, int, int]:
    """``window()`` and ``check_fits()`` (and ``check_pool_pad()`` for ``kind="pool"``) in one call:
    the validated window over an H x W input and its output size (OH, OW)."""
    key = (kind, kh, kw, stride, pad, H, W)
    plain = type(kh) is int and type(kw) is int and _plain(stride) and _plain(pad)
    if plain:
        hit = _FITTED.get(key)
        if hit is not None:
            return hit
    win = window(kh, kw, stride, pad, kind=kind)
    if kind == "pool":
        check_pool_pad(win)
    OH, OW = check_fits(win, H, W)
    if plain:
        if len(_FITTED) >= _FITTED_MAX:
            _FITTED.clear()
        _FITTED[key] = (win, OH, OW)
    return win, OH, OW


# --- sizes ------------------------------------------------------------------

def _format_bytes(n: int) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"):
        if n < 1024 or unit == "EiB":
            return f"{n} bytes" if unit == "bytes" else f"{n:.3g} {unit}"
        n /= 1024
    raise AssertionError("unreachable")  # pragma: no cover


@functools.lru_cache(maxsize=None)
def physical_memory() -> int:
    """Bytes of RAM on this machine (0 when the OS does not say); read once."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):  # pragma: no cover - non-POSIX
        return 0


def memory_limit() -> int:
    """The most bytes one result or workspace may take: physical memory, lowered by the
    process's address-space and data limits (``ulimit -v``/``-d``) when they are set."""
    limit = physical_memory() or INT64_MAX
    try:
        import resource
    except ImportError:  # pragma: no cover - Windows
        return limit
    for name in ("RLIMIT_AS", "RLIMIT_DATA"):
        which = getattr(resource, name, None)
        if which is None:
            continue
        try:
            soft, _ = resource.getrlimit(which)
        except (ValueError, OSError):  # pragma: no cover
            continue
        if soft != resource.RLIM_INFINITY and soft > 0:
            limit = min(limit, soft)
    return limit


# Arrays up to this size skip the memory-limit lookup (two getrlimit calls): a process limited
# below it could not hold the interpreter and NumPy it is running, and an allocation refused
# by such a limit still raises MemoryError, NumPy's own.
SMALL_ALLOC_BYTES = 16 << 20
_ITEMSIZE = {t: np.dtype(t).itemsize for t in (np.float32, np.float64, np.int64)}
_ITEMSIZE.update({np.dtype(t): size for t, size in list(_ITEMSIZE.items())})


def check_alloc(what: str, shape, dtype) -> None:
    """Refuses, before anything is allocated, an array of `shape` and `dtype` that cannot exist
    here: ValueError when its size overflows 64 bits, MemoryError when it exceeds
    :func:`memory_limit`. Both messages give the shape and the size in bytes."""
    itemsize = _ITEMSIZE.get(dtype) or np.dtype(dtype).itemsize
    dims = tuple(map(int, shape))  # Python ints: NumPy integers would wrap in the products
    elems = math.prod(dims)
    if dims and min(dims) > 0 and elems * itemsize <= SMALL_ALLOC_BYTES:
        return
    nbytes = elems * itemsize
    # Like NumPy, the non-zero dimensions must multiply to a 64-bit size even when one is zero.
    spanned = math.prod(max(d, 1) for d in dims) * itemsize
    if spanned > INT64_MAX:
        raise ValueError(
            f"{what} of shape {dims} has {elems} elements; its dimensions multiply to {spanned} bytes of "
            f"{np.dtype(dtype).name}, which overflows 64-bit sizes"
        )
    limit = memory_limit()
    if nbytes > limit:
        raise MemoryError(
            f"{what} of shape {dims} needs {_format_bytes(nbytes)} ({nbytes} bytes of "
            f"{np.dtype(dtype).name}), more than the {_format_bytes(limit)} this process may use"
        )


# --- dtypes -----------------------------------------------------------------

_F32, _F64 = np.dtype(np.float32), np.dtype(np.float64)
_FLOAT_DTYPES = (_F32, _F64)


def _array(a, name: str) -> np.ndarray:
    if type(a) is np.ndarray and a.dtype in _FLOAT_DTYPES:  # the common case, checked cheaply
        return a
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
    operand makes the result float64; any integer or bool operand makes it float64, as the
    book's float64 im2col buffer would; float16 computes in float32.
    """
    if all(a.dtype == _F32 for a in arrays):  # the common cases first, without result_type
        return _F32
    if all(a.dtype in _FLOAT_DTYPES for a in arrays):
        return _F64
    if any(a.dtype.kind in "biu" for a in arrays):
        return np.dtype(np.float64)  # the book's im2col turns any image into float64
    dt = np.result_type(*arrays)
    if dt == np.float32 or dt == np.float16:
        return np.dtype(np.float32)
    return np.dtype(np.float64)


def as_float(arr: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """C-contiguous `dtype` view or copy; never the caller's buffer when a copy is needed."""
    # Validation: a copy that cannot fit (e.g. of a zero-stride broadcast view) is refused
    # before it is attempted, and the kernels never see a misaligned buffer.
    flags = arr.flags
    if type(arr) is np.ndarray and arr.dtype == dtype and flags.c_contiguous and flags.aligned:
        return arr
    check_alloc("contiguous copy of an input", arr.shape, dtype)
    # np.asarray(order="C"), not ascontiguousarray: the latter turns 0-d arrays into 1-d.
    out = np.asarray(arr, dtype=dtype, order="C")
    return out if out.flags.aligned else out.copy()


def array(value, name: str) -> np.ndarray:
    """`value` as an ndarray of a real numeric dtype (TypeError otherwise)."""
    return _array(value, name)


def arrays(names: Sequence[str], values: Sequence) -> Tuple[np.ndarray, ...]:
    return tuple(_array(v, n) for n, v in zip(names, values))


def check_ndim(arr: np.ndarray, ndim: int, name: str, layout: str) -> None:
    if arr.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D {layout}, got {arr.ndim}-D array of shape {arr.shape}")


def shape4(shape, name: str = "input_shape") -> Tuple[int, int, int, int]:
    if type(shape) is tuple and len(shape) == 4 and set(map(type, shape)) == {int} and min(shape) >= 0:
        return shape  # already four non-negative Python ints, e.g. an array's .shape
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
    """Refuses max-pool indices outside their input plane (the same message as the native kernel);
    -1 marks a window whose max was padding."""
    plane = shape[2] * shape[3]
    if indices.size and (indices.min() < -1 or indices.max() >= plane):
        raise ValueError(
            f"indices must be -1 (padding) or lie in [0, {plane}) for input planes {shape[2]}x{shape[3]}, "
            f"got range [{indices.min()}, {indices.max()}]"
        )
