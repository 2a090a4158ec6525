"""Fuzz: bad input never crashes.

Random shapes, strides, paddings, dtypes, memory layouts and values -- including sizes whose
products overflow 32 and 64 bits, zero-sized dimensions and kernels larger than the input --
go to every public function and layer, on every backend. Each call must either return what
the numpy (reference) backend returns, or raise ValueError / TypeError / MemoryError with a
message. Arguments are never modified (every input's whole underlying buffer, gaps of strided
views included, is compared byte for byte after each call), and nothing segfaults or hangs:
a watchdog ends the run with a traceback if one call takes more than ``WATCHDOG_SECONDS``.

Huge shapes are never allocated: arrays too big for memory are zero-stride views
(``np.broadcast_to``), and col2im / avg_pool2d_backward / max_pool2d_backward take the input
as a shape tuple.

Examples per test: ``FUZZ_EXAMPLES`` x env ``FASTCONV_FUZZ_SCALE`` (default 1). Each example
is run on the reference and on every other available backend; the counts are printed at the
end of the session (``-s`` or the "fuzz examples" line of the summary).
"""
from __future__ import annotations

import contextlib
import faulthandler
import math
import os
import sys
from collections import Counter

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, event, given, note, settings
from hypothesis import strategies as st

import fastconv
from fastconv import layers
from support import NATIVE_FAMILIES, backend_context, seed_note

BACKENDS = fastconv.available_backends()
OTHERS = [b for b in BACKENDS if b != "numpy"] + NATIVE_FAMILIES
ALLOWED = (ValueError, TypeError, MemoryError)
WATCHDOG_SECONDS = 120
SCALE = float(os.environ.get("FASTCONV_FUZZ_SCALE", "1"))
FUZZ_EXAMPLES = 400

STATS: Counter = Counter()
WHY = bool(os.environ.get("FASTCONV_FUZZ_WHY"))  # also count the reference's refusal messages

# Semantic differences of the torch (comparison) backend from the reference, tolerated always.
KNOWN_DIFFERENCES = {
    "torch-nan-argmax": "PyTorch's max pooling reports the LAST NaN of a window as its argmax (fastconv: the "
                        "first), so torch-backend indices and max-pool gradients differ when a window holds "
                        "several NaN.",
    "torch-padding-nonfinite": "with an inf/NaN weight (or dout) and zero padding, fastconv (native and numpy, "
                               "like the book's im2col) multiplies the padding's zeros: inf * 0 = NaN; PyTorch "
                               "skips padding taps and returns +-inf.",
}


fuzz_settings = settings(
    max_examples=max(1, int(FUZZ_EXAMPLES * SCALE)),
    deadline=None,
    derandomize=os.environ.get("FASTCONV_FUZZ_RANDOM", "") == "",  # reproducible in CI by default
    suppress_health_check=list(HealthCheck),
    print_blob=True,
    phases=[Phase.explicit, Phase.reuse, Phase.generate] + ([] if os.environ.get("FASTCONV_FUZZ_NO_SHRINK") else [
        Phase.target, Phase.shrink, Phase.explain]),
)

# Sizes that overflow 32-bit and 64-bit products (and a few that do not fit in int64 at all).
HUGE = [2**31 - 1, 2**31, 2**32 + 1, 2**40 + 3, 2**62, 2**63 - 1, 2**63, 2**64 + 1]
SMALL_ELEMS = 4096  # arrays up to this many elements are real; bigger ones are zero-stride views


def _under_asan() -> bool:
    try:
        with open("/proc/self/maps") as f:
            return "libasan" in f.read()
    except OSError:  # pragma: no cover - not Linux
        return False


@pytest.fixture(scope="module", autouse=True)
def _memory_cap():
    """A fuzzed size may be valid yet too big for this machine (a 2**31-element result is 16 GB):
    cap the process's data segment a little above its current size, so that such a call fails with
    MemoryError (fastconv's own check reads this limit) instead of swapping or being OOM-killed.
    Under AddressSanitizer (whose shadow memory counts as data) tools/sanitize.sh caps
    allocations with ASAN_OPTIONS=max_allocation_size_mb instead."""
    try:
        import resource
    except ImportError:  # pragma: no cover
        yield
        return
    if _under_asan() or not hasattr(resource, "RLIMIT_DATA"):
        yield
        return
    with open("/proc/self/status") as f:
        vm_data_kb = next(int(line.split()[1]) for line in f if line.startswith("VmData:"))
    soft, hard = resource.getrlimit(resource.RLIMIT_DATA)
    cap = vm_data_kb * 1024 + (2 << 30)
    if hard != resource.RLIM_INFINITY:
        cap = min(cap, hard)
    resource.setrlimit(resource.RLIMIT_DATA, (cap, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_DATA, (soft, hard))


@pytest.fixture(scope="module", autouse=True)
def _report_counts(request):
    """Prints how many examples ran (per function: reference returned / raised), how many
    backend calls were compared, and how often each known difference of PyTorch was met."""
    yield
    if not STATS:
        return
    examples = sum(v for k, v in STATS.items() if k.endswith((":ok", ":raised")))
    lines = ["", f"fuzz examples: {examples} ({STATS['calls']} backend calls checked against the reference); "
             + ", ".join(f"{k}={v}" for k, v in sorted(STATS.items()) if not k.startswith("why") and k != "calls")]
    lines += [f"  {v:5d} {k}" for k, v in STATS.most_common() if k.startswith("why")]
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    with capture.global_and_fixture_disabled() if capture is not None else contextlib.nullcontext():
        sys.stderr.write("\n".join(lines) + "\n")


# --- strategies ------------------------------------------------------------------------------

def chance(draw, p):
    """True with probability ~p. (Hypothesis favours the ends of numeric ranges, so a drawn float
    compared with p would come out True far more often than p.)"""
    n = max(2, round(1 / p))
    return draw(st.sampled_from(range(n))) == n - 1


def pick(draw, weighted):
    """One value of {value: weight}, in proportion to the weights."""
    items = [(v, w) for v, w in weighted.items()]
    total = sum(w for _, w in items)
    r = draw(st.sampled_from(range(total)))
    for v, w in items:
        if r < w:
            return v
        r -= w
    raise AssertionError("unreachable")


@st.composite
def dim(draw, lo=0, hi=4, huge=0.03, zero=0.0):
    """A dimension: mostly small, sometimes huge (or zero)."""
    if chance(draw, huge):
        return draw(st.sampled_from(HUGE))
    if zero and chance(draw, zero):
        return 0
    return draw(st.integers(lo, hi))


@st.composite
def int_arg(draw, lo, hi, bad_lo, huge=0.03):
    """A window / stride / pad value: valid mostly, sometimes zero, negative or huge."""
    if chance(draw, huge):
        return draw(st.sampled_from(HUGE))
    if chance(draw, 0.03):
        return draw(st.integers(bad_lo, lo - 1)) if bad_lo < lo else lo
    return draw(st.integers(lo, hi))


@st.composite
def as_pair(draw, h, w):
    """(h, w) in one of the accepted spellings, or occasionally a wrong one."""
    form = pick(draw, {"int": 12 if h == w else 0, "np": 4 if h == w and abs(h) < 2**63 else 0, "tuple": 12,
                       "list": 4, "odd": 1})
    if form == "int":
        return h
    if form == "np":
        return np.int64(h)
    if form == "tuple":
        return (h, w)
    if form == "list":
        return [h, w]
    return draw(st.sampled_from([(h, w, 1), float(h), True, "2", None, (h,)]))


FLOATS = ["float64", "float32"]
OTHER_DTYPES = ["float16", "int32", "int64", "uint8", "bool", ">f8", ">f4", "complex128", "object", "<U1",
                "datetime64[s]", "longdouble"]
LAYOUTS = ["C", "C", "F", "negative", "strided", "readonly", "unaligned", "bcast0"]
VALUES = ["ints", "ints", "specials", "subnormal", "ties"]


@st.composite
def array_spec(draw):
    dtype = draw(st.sampled_from(OTHER_DTYPES)) if chance(draw, 0.12) else draw(st.sampled_from(FLOATS))
    return dict(dtype=dtype, layout=draw(st.sampled_from(LAYOUTS)), values=draw(st.sampled_from(VALUES)),
                seed=draw(st.integers(0, 2**32 - 1)))


def _values(rng, n, kind, dtype):
    v = rng.integers(-3, 4, size=n).astype(np.float64)
    if kind == "specials":
        pick = rng.random(n)
        v[pick < 0.08] = np.nan
        v[(pick >= 0.08) & (pick < 0.16)] = np.inf
        v[(pick >= 0.16) & (pick < 0.24)] = -np.inf
        v[(pick >= 0.24) & (pick < 0.30)] = -0.0
    elif kind == "subnormal":
        tiny = np.finfo(np.float32 if np.dtype(dtype) in (np.float32, np.float16) else np.float64).smallest_subnormal
        v = v * float(tiny) * 2.0 ** rng.integers(0, 10, size=n)
    elif kind == "ties":
        v = np.where(rng.random(n) < 0.5, 1.0, v)
    return v


def _describable(shape, itemsize):
    """Whether NumPy can make an array of this shape (even with a zero dimension it refuses
    shapes whose non-zero dimensions' product in bytes reaches 2**63)."""
    return math.prod(max(int(s), 1) for s in shape) * max(itemsize, 1) < 2**63


def _as_ints(v, dtype):
    v = np.nan_to_num(v, nan=0.0, posinf=3.0, neginf=-3.0)
    if dtype.kind in "ub":
        v = np.abs(v)
    return np.round(v).astype(np.int64).astype(dtype)


# One example mixes infinities or subnormals, not both: the native kernels run with denormals
# flushed to zero (DAZ), so inf * subnormal is NaN there but +-inf in NumPy (see the report).
FAMILY = {"value": "specials"}
families = st.sampled_from(["specials", "subnormal"])


def make_array(shape, spec):
    """An array of `shape` as `spec` says; too big for memory -> a read-only zero-stride view."""
    shape = tuple(int(s) for s in shape)
    dtype = np.dtype(spec["dtype"])
    rng = np.random.default_rng(spec["seed"])
    if spec["values"] in ("specials", "subnormal") and spec["values"] != FAMILY["value"]:
        spec = dict(spec, values="ints")
    if not _describable(shape, dtype.itemsize):  # a small array instead
        shape = tuple(min(s, 2) for s in shape)
    n = math.prod(shape)
    if n > SMALL_ELEMS:
        value = _values(rng, 1, spec["values"], dtype)[:1]
        value = _as_ints(value, np.dtype(np.int64)).astype(dtype) if dtype.kind in "UM" else _as_ints(
            value, dtype) if dtype.kind in "iub" else value.astype(dtype)
        return np.broadcast_to(value.reshape(()), shape)
    base = _values(rng, n, spec["values"], dtype)
    if dtype.kind == "U":
        data = _as_ints(base, np.dtype(np.int64)).astype(dtype)
    elif dtype.kind == "M":
        data = _as_ints(base, np.dtype(np.int64)).astype(dtype)
    elif dtype.kind in "iub":
        data = _as_ints(base, dtype)
    else:
        data = base.astype(dtype)
    data = data.reshape(shape)
    layout = spec["layout"]
    if layout == "F":
        return np.asfortranarray(data)
    if layout == "negative":
        flipped = np.ascontiguousarray(data[tuple(slice(None, None, -1) for _ in shape)])
        return flipped[tuple(slice(None, None, -1) for _ in shape)]
    if layout == "strided" and shape and math.prod(2 * s + 1 for s in shape) <= 64 * SMALL_ELEMS:
        # every axis strided by 2 inside a bigger buffer of other values
        big = np.full(tuple(2 * s + 1 for s in shape), 7, dtype=dtype) if dtype.kind != "O" else None
        if big is None:
            return data
        view = big[tuple(slice(1, None, 2) for _ in shape)]
        view[...] = data
        return view
    if layout == "readonly":
        data.flags.writeable = False
        return data
    if layout == "unaligned" and dtype.kind in "fiucM" and dtype.itemsize > 1 and dtype.isnative:
        raw = np.zeros(data.nbytes + dtype.itemsize + 1, dtype=np.uint8)[1:1 + data.nbytes]
        view = raw.view(dtype).reshape(shape)
        view[...] = data
        return view
    if layout == "bcast0" and len(shape) and shape[0] > 1:
        return np.broadcast_to(data[:1], shape)
    return data


# --- checking ---------------------------------------------------------------------------------

def _root(a):
    while isinstance(a, np.ndarray) and isinstance(a.base, np.ndarray):
        a = a.base
    return a


def snapshot(args):
    """Bytes of every array argument's whole buffer (base included), to detect any write."""
    snaps = []
    for a in _flat(args):
        if isinstance(a, np.ndarray):
            root = _root(a)
            if isinstance(root, np.ndarray) and root.dtype.kind != "O" and root.nbytes <= 1 << 22:
                snaps.append((a, root, root.tobytes(), a.shape, a.strides, a.flags.writeable))
            elif a.dtype.kind == "O" and a.size <= SMALL_ELEMS:
                snaps.append((a, a, [repr(v) for v in a.ravel()], a.shape, a.strides, a.flags.writeable))
    return snaps


def check_unmodified(snaps, what):
    for a, root, data, shape, strides, writeable in snaps:
        now = root.tobytes() if root.dtype.kind != "O" else [repr(v) for v in root.ravel()]
        assert now == data, f"{what}: an argument's buffer was modified (shape {shape})"
        assert (a.shape, a.strides, a.flags.writeable) == (shape, strides, writeable), f"{what}: argument changed"


def _flat(args):
    for a in args:
        if isinstance(a, (list, tuple)):
            yield from _flat(a)
        elif isinstance(a, dict):
            yield from _flat(list(a.values()))
        else:
            yield a


LOG = open(os.environ["FASTCONV_FUZZ_LOG"], "a") if os.environ.get("FASTCONV_FUZZ_LOG") else None


def _describe(v):
    if isinstance(v, np.ndarray):
        return (f"ndarray(shape={v.shape}, dtype={v.dtype}, strides={v.strides}, "
                f"c={v.flags.c_contiguous}, aligned={v.flags.aligned}, writeable={v.flags.writeable})")
    if isinstance(v, (list, tuple)) and any(isinstance(a, np.ndarray) for a in v):
        return "(" + ", ".join(_describe(a) for a in v) + ")"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k}={_describe(a)}" for k, a in v.items()) + "}"
    return repr(v)


@contextlib.contextmanager
def watchdog():
    faulthandler.dump_traceback_later(WATCHDOG_SECONDS, exit=True)
    try:
        yield
    finally:
        faulthandler.cancel_dump_traceback_later()


def run(backend, fn, args, kwargs, mutable=False):
    """(result, None) or (None, exception); anything but ValueError/TypeError/MemoryError with
    a message fails the test. Arguments must come back unmodified either way, unless the
    call is documented to write into them (``mutable``)."""
    snaps = [] if mutable else snapshot((args, kwargs))
    if LOG is not None:  # the last line names the call that crashed the process, if one does
        LOG.write(f"{backend} {getattr(fn, '__qualname__', fn)} {_describe(args)} {_describe(kwargs)}\n")
        LOG.flush()
    try:
        # NumPy's warnings about inf - inf or 0 * inf in the reference are expected (the suite
        # turns warnings into errors).
        with watchdog(), backend_context(backend), np.errstate(all="ignore"):
            out = fn(*args, **kwargs)
        res = (out, None)
    except ALLOWED as exc:
        assert str(exc).strip(), f"{type(exc).__name__} without a message [{backend}]"
        res = (None, exc)
    check_unmodified(snaps, backend)
    return res


def _is_tiny(dt):
    return np.finfo(dt).tiny * 2.0**20


def assert_same(got, ref, what):
    if isinstance(ref, tuple):
        assert isinstance(got, tuple) and len(got) == len(ref), f"{what}: {type(got)} vs {type(ref)}"
        for i, (g, r) in enumerate(zip(got, ref)):
            assert_same(g, r, f"{what}[{i}]")
        return
    assert isinstance(got, np.ndarray), f"{what}: got {type(got).__name__}"
    assert got.shape == ref.shape, f"{what}: shape {got.shape} vs reference {ref.shape}"
    assert got.dtype == ref.dtype, f"{what}: dtype {got.dtype} vs reference {ref.dtype}"
    if ref.dtype.kind in "iu":
        np.testing.assert_array_equal(got, ref, err_msg=what)
        return
    g, r = got.astype(np.float64), ref.astype(np.float64)
    assert np.array_equal(np.isnan(g), np.isnan(r)), f"{what}: NaN positions differ"
    inf = np.isinf(r)
    assert np.array_equal(np.isinf(g), inf) and np.array_equal(g[inf], r[inf]), f"{what}: infinities differ"
    fin = np.isfinite(r)
    rtol = 1e-5 if ref.dtype == np.float32 else 1e-12
    # Sums that cancel leave rounding residue of the size of their terms, not of the result.
    scale = float(np.abs(r[fin]).max()) if fin.any() else 0.0
    atol = _is_tiny(ref.dtype) + 16 * rtol * scale
    np.testing.assert_allclose(g[fin], r[fin], rtol=rtol, atol=atol, err_msg=what)


def _check_refusal(backend, exc, what):
    """A backend raised where the reference returned: only running out of memory is allowed,
    and for PyTorch its own refusals (sizes past its int limits); anything else fails."""
    if isinstance(exc, MemoryError):
        STATS[f"{backend} out of memory where the reference ran"] += 1
    elif backend == "torch" and "PyTorch refused the call" in str(exc):
        STATS["known difference torch-refused"] += 1
    else:
        raise AssertionError(f"{what}: {backend} raised {type(exc).__name__}: {exc} where the reference "
                             f"returned a result {seed_note()}")


def compare_backends(name, fn, args, kwargs=None):
    """Runs fn on the reference and every other backend; checks the contract."""
    kwargs = kwargs or {}
    ref, ref_exc = run("numpy", fn, args, kwargs)
    STATS[f"{name}:{'raised' if ref_exc else 'ok'}"] += 1
    if WHY and ref_exc is not None:
        STATS[f"why {name}: {type(ref_exc).__name__}: {str(ref_exc)[:60]}"] += 1
    event(f"reference {'raised ' + type(ref_exc).__name__ if ref_exc else 'returned'}")
    for backend in OTHERS:
        got, exc = run(backend, fn, args, kwargs)
        STATS["calls"] += 1
        if exc is not None:
            note(f"{backend} raised {type(exc).__name__}: {exc}")
            # Where the reference returned, a backend may only run out of memory.
            if ref_exc is None:
                _check_refusal(backend, exc, name)
            continue
        if ref_exc is not None:
            # The reference could not run it (e.g. its own workspace did not fit): nothing to
            # compare, but it must not be a validation error every backend shares.
            assert isinstance(ref_exc, MemoryError) or "too big" in str(ref_exc) or "Maximum allowed" in str(
                ref_exc), f"{name}: reference refused ({ref_exc!r}) but {backend} returned a result"
            continue
        try:
            assert_same(got, ref, f"{name}[{backend}]")
        except AssertionError:
            if backend == "torch" and name.startswith("max_pool2d") and _has_nan(args):
                STATS["known difference torch-nan-argmax"] += 1
                continue
            if backend == "torch" and name.startswith("conv2d") and _has_nonfinite(args):
                STATS["known difference torch-padding-nonfinite"] += 1
                continue
            raise
    return ref, ref_exc


def _has_nonfinite(args):
    for a in _flat(args):
        if isinstance(a, np.ndarray) and a.dtype.kind == "f" and a.size and not np.isfinite(a).all():
            return True
    return False


def _has_nan(args):
    for a in _flat(args):
        if isinstance(a, np.ndarray) and a.dtype.kind == "f" and a.size and np.isnan(a).any():
            return True
    return False


def out_size(n, k, s, p):
    """Python-int output size, or None when the window does not fit (or is invalid)."""
    try:
        if k <= 0 or s <= 0 or p < 0 or k > n + 2 * p:
            return None
        return (n + 2 * p - k) // s + 1
    except TypeError:
        return None


def _int(v):
    return int(v) if isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_)) else None


def _first(v):
    if isinstance(v, (tuple, list)):
        return (_int(v[0]), _int(v[-1])) if len(v) == 2 else (None, None)
    return (_int(v), _int(v))


def _perturb(draw, shape):
    """The derived shape, or with a small chance one that is off by one somewhere."""
    shape = list(shape)
    if shape and chance(draw, 0.04):
        i = draw(st.integers(0, len(shape) - 1))
        shape[i] = max(0, shape[i] + draw(st.sampled_from([-1, 1])))
    return tuple(shape)


@st.composite
def geometry(draw, pool=False):
    g = dict(N=draw(dim(1, 3, zero=0.05)), C=draw(dim(1, 3, zero=0.04 if pool else 0.0)),
             H=draw(dim(1, 7, zero=0.04)), W=draw(dim(1, 7, zero=0.04)), FN=draw(dim(1, 3, zero=0.04)))
    g["kh"] = draw(int_arg(1, 4, -1))
    g["kw"] = draw(int_arg(1, 4, -1))
    sh, sw = draw(int_arg(1, 3, -1)), draw(int_arg(1, 3, -1))
    if pool and not chance(draw, 0.15):
        ph = draw(st.integers(0, max(0, _int(g["kh"]) or 0) // 2)) if _int(g["kh"]) and g["kh"] < 64 else 0
        pw = draw(st.integers(0, max(0, _int(g["kw"]) or 0) // 2)) if _int(g["kw"]) and g["kw"] < 64 else 0
    else:
        ph, pw = draw(int_arg(0, 2, -1)), draw(int_arg(0, 2, -1))
    g["stride"] = draw(as_pair(sh, sw))
    g["pad"] = draw(as_pair(ph, pw))
    if pool and chance(draw, 0.15):
        g["stride"] = None
    s_h, s_w = _first(g["stride"]) if g["stride"] is not None else (_int(g["kh"]), _int(g["kw"]))
    p_h, p_w = _first(g["pad"])
    oh = ow = None
    if None not in (s_h, s_w, p_h, p_w, _int(g["kh"]), _int(g["kw"])):
        oh, ow = out_size(g["H"], g["kh"], s_h, p_h), out_size(g["W"], g["kw"], s_w, p_w)
    g["OH"] = oh if oh is not None else draw(st.integers(0, 3))
    g["OW"] = ow if ow is not None else draw(st.integers(0, 3))
    return g


def _note(**kw):
    for k, v in kw.items():
        if isinstance(v, np.ndarray):
            note(f"{k}: ndarray shape={v.shape} dtype={v.dtype} strides={v.strides} "
                 f"writeable={v.flags.writeable} aligned={v.flags.aligned}")
        else:
            note(f"{k}: {v!r}")


# --- the functions -------------------------------------------------------------------------------

@fuzz_settings
@given(g=geometry(), xs=array_spec(), fam=families)
def test_fuzz_im2col(g, xs, fam):
    FAMILY["value"] = fam
    x = make_array((g["N"], g["C"], g["H"], g["W"]), xs)
    _note(x=x, g=g)
    compare_backends("im2col", fastconv.im2col, (x, g["kh"], g["kw"]), dict(stride=g["stride"], pad=g["pad"]))


@fuzz_settings
@given(g=geometry(), cs=array_spec(), data=st.data(), fam=families)
def test_fuzz_col2im(g, cs, data, fam):
    FAMILY["value"] = fam
    kh, kw = (v if v is not None and 0 < v < 2**40 else 1 for v in (_int(g["kh"]), _int(g["kw"])))
    rows = g["N"] * g["OH"] * g["OW"]
    col = make_array(_perturb(data.draw, (rows, g["C"] * kh * kw)), cs)
    shape = (g["N"], g["C"], g["H"], g["W"])
    form = pick(data.draw, {"tuple": 20, "list": 4, "array": 2, "short": 1, "float": 1, "negative": 1})
    shape = {"tuple": shape, "list": list(shape), "array": np.array(shape, dtype=object), "short": shape[1:],
             "float": (g["N"], g["C"], float(g["H"]), g["W"]), "negative": (-1,) + shape[1:]}[form]
    _note(col=col, shape=shape, g=g)
    compare_backends("col2im", fastconv.col2im, (col, shape, g["kh"], g["kw"]), dict(stride=g["stride"], pad=g["pad"]))


@st.composite
def conv_arrays(draw, g):
    kh, kw = _int(g["kh"]), _int(g["kw"])
    kh = kh if kh is not None and 0 <= kh < 2**62 else 1
    kw = kw if kw is not None and 0 <= kw < 2**62 else 1
    x = make_array((g["N"], g["C"], g["H"], g["W"]), draw(array_spec()))
    w_shape = _perturb(draw, (g["FN"], g["C"], kh, kw))
    if chance(draw, 0.03):
        w_shape = w_shape[:draw(st.integers(0, 3))]
    w = make_array(w_shape, draw(array_spec()))
    b = None
    if draw(st.booleans()):
        b = make_array(_perturb(draw, (g["FN"],)), draw(array_spec()))
    dout = make_array(_perturb(draw, (g["N"], g["FN"], g["OH"], g["OW"])), draw(array_spec()))
    return x, w, b, dout


@fuzz_settings
@given(g=geometry(), data=st.data(), fam=families)
def test_fuzz_conv2d(g, data, fam):
    FAMILY["value"] = fam
    x, w, b, _ = data.draw(conv_arrays(g))
    _note(x=x, w=w, b=b, g=g)
    compare_backends("conv2d", fastconv.conv2d, (x, w, b), dict(stride=g["stride"], pad=g["pad"]))


@fuzz_settings
@given(g=geometry(), data=st.data(), fam=families)
def test_fuzz_conv2d_backward(g, data, fam):
    FAMILY["value"] = fam
    x, w, _, dout = data.draw(conv_arrays(g))
    _note(x=x, w=w, dout=dout, g=g)
    compare_backends("conv2d_backward", fastconv.conv2d_backward, (dout, x, w), dict(stride=g["stride"], pad=g["pad"]))


@fuzz_settings
@given(g=geometry(pool=True), xs=array_spec(), ri=st.booleans(), fam=families)
def test_fuzz_max_pool2d(g, xs, ri, fam):
    FAMILY["value"] = fam
    x = make_array((g["N"], g["C"], g["H"], g["W"]), xs)
    _note(x=x, g=g)
    compare_backends("max_pool2d", fastconv.max_pool2d, (x, g["kh"], g["kw"]),
                     dict(stride=g["stride"], pad=g["pad"], return_indices=ri))


def _indices(data, g, x_shape, x):
    """Indices for max_pool2d_backward: the forward's (when it runs), or random, some invalid."""
    kind = pick(data.draw, {"forward": 12, "random": 3, "out_of_range": 2, "int32": 2, "uint64": 1, "float": 1,
                            "bool": 1, "wrong_shape": 1, "list": 1})
    out_shape = (g["N"], g["C"], g["OH"], g["OW"])
    if not _describable(out_shape, 8):
        out_shape = tuple(min(s, 2) for s in out_shape)
    n = math.prod(out_shape)
    if n > SMALL_ELEMS:
        return np.broadcast_to(np.int64(0), out_shape) if kind != "out_of_range" else \
            np.broadcast_to(np.int64(-1), out_shape)
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    plane = int(x_shape[2]) * int(x_shape[3]) if len(x_shape) == 4 else 1
    idx = rng.integers(0, max(plane, 1), size=out_shape) if plane < 2**62 else np.zeros(out_shape, np.int64)
    if kind == "forward" and isinstance(x, np.ndarray):
        try:
            with fastconv.use_backend("numpy"):
                _, idx = fastconv.max_pool2d(x, g["kh"], g["kw"], g["stride"], g["pad"], return_indices=True)
        except ALLOWED:
            pass
    elif kind == "out_of_range" and n:
        idx = idx.copy()
        idx.flat[rng.integers(0, n)] = rng.choice([-1, plane, 2**62, -(2**63)])
    elif kind == "int32":
        idx = idx.astype(np.int32)
    elif kind == "uint64":
        idx = idx.astype(np.uint64)
        if n:
            idx.flat[0] = np.uint64(2**64 - 1)
    elif kind == "float":
        idx = idx.astype(np.float64)
    elif kind == "bool":
        idx = idx.astype(bool)
    elif kind == "wrong_shape":
        idx = idx.reshape(-1)
    elif kind == "list":
        idx = idx.tolist()
    return idx


@fuzz_settings
@given(g=geometry(pool=True), data=st.data(), fam=families)
def test_fuzz_max_pool2d_backward(g, data, fam):
    FAMILY["value"] = fam
    x_shape = (g["N"], g["C"], g["H"], g["W"])
    x = make_array(x_shape, data.draw(array_spec()))
    dout = make_array(_perturb(data.draw, (g["N"], g["C"], g["OH"], g["OW"])), data.draw(array_spec()))
    mode = pick(data.draw, {"x": 6, "x_and_indices": 4, "shape_and_indices": 6, "shape_only": 1})
    first = x if mode.startswith("x") else x_shape
    idx = _indices(data, g, x_shape, x) if "indices" in mode else None
    _note(x=x, dout=dout, mode=mode, idx=idx, g=g)
    compare_backends("max_pool2d_backward", fastconv.max_pool2d_backward, (dout, first, g["kh"], g["kw"]),
                     dict(stride=g["stride"], pad=g["pad"], indices=idx))


@fuzz_settings
@given(g=geometry(pool=True), xs=array_spec(), fam=families)
def test_fuzz_avg_pool2d(g, xs, fam):
    FAMILY["value"] = fam
    x = make_array((g["N"], g["C"], g["H"], g["W"]), xs)
    _note(x=x, g=g)
    compare_backends("avg_pool2d", fastconv.avg_pool2d, (x, g["kh"], g["kw"]), dict(stride=g["stride"], pad=g["pad"]))


@fuzz_settings
@given(g=geometry(pool=True), data=st.data(), fam=families)
def test_fuzz_avg_pool2d_backward(g, data, fam):
    FAMILY["value"] = fam
    x_shape = (g["N"], g["C"], g["H"], g["W"])
    dout = make_array(_perturb(data.draw, (g["N"], g["C"], g["OH"], g["OW"])), data.draw(array_spec()))
    first = make_array(x_shape, data.draw(array_spec())) if data.draw(st.booleans()) else x_shape
    _note(first=first, dout=dout, g=g)
    compare_backends("avg_pool2d_backward", fastconv.avg_pool2d_backward, (dout, first, g["kh"], g["kw"]),
                     dict(stride=g["stride"], pad=g["pad"]))


@st.composite
def any_shape(draw):
    return tuple(draw(st.lists(dim(0, 5, huge=0.05), min_size=0, max_size=5)))


@fuzz_settings
@given(shape=any_shape(), xs=array_spec(), ds=array_spec(), data=st.data(), fam=families)
def test_fuzz_relu(shape, xs, ds, data, fam):
    FAMILY["value"] = fam
    x = make_array(shape, xs)
    _note(x=x)
    compare_backends("relu", fastconv.relu, (x,))
    dout = make_array(_perturb(data.draw, x.shape), ds)
    _note(dout=dout)
    compare_backends("relu_backward", fastconv.relu_backward, (dout, x))


# --- layers: results as the reference's, and a failed call leaves the layer as it was -----------------

def _state(layer):
    """(attribute, object identity, bytes) of the layer's whole state."""
    out = []
    for k, v in sorted(vars(layer).items()):
        if isinstance(v, np.ndarray) and v.dtype.kind != "O" and v.size <= SMALL_ELEMS:
            out.append((k, id(v), np.ascontiguousarray(v).tobytes()))
        else:
            out.append((k, id(v), None))
    return out


def _layer_step(backend, layer, method, arg):
    before = _state(layer)
    if (method == "backward" and isinstance(layer, layers.Relu) and isinstance(arg, np.ndarray)
            and arg.flags.writeable and arg.flags.c_contiguous and arg.flags.aligned):
        # Like the book's, Relu.backward may zero dout in place: give it its own copy, and when
        # it did write in place, the copy must be the result.
        arg = arg.copy()
        got, exc = run(backend, layer.backward, (arg,), {}, mutable=True)
        assert exc is not None or got is arg or not np.shares_memory(got, arg), "Relu.backward half in place"
    else:
        got, exc = run(backend, getattr(layer, method), (arg,), {})
    if exc is not None:
        assert _state(layer) == before, f"a failed {type(layer).__name__}.{method} changed the layer [{backend}]"
    return got, exc


LAYER_KINDS = ["conv", "pool", "avgpool", "relu"]


@fuzz_settings
@given(kind=st.sampled_from(LAYER_KINDS), data=st.data(), fam=families)
def test_fuzz_layers(kind, data, fam):
    FAMILY["value"] = fam
    g = data.draw(geometry(pool=kind != "conv"))
    x, w, b, dout = data.draw(conv_arrays(g))
    if kind != "conv":
        dout = make_array(_perturb(data.draw, (g["N"], g["C"], g["OH"], g["OW"])), data.draw(array_spec()))
    if kind == "relu":
        dout = make_array(_perturb(data.draw, x.shape), data.draw(array_spec()))
    stride = g["stride"] if g["stride"] is not None else 2

    def make():
        if kind == "conv":
            return layers.Convolution(w, b, stride, g["pad"])
        if kind == "pool":
            return layers.Pooling(g["kh"], g["kw"], stride, g["pad"])
        if kind == "avgpool":
            return layers.AvgPooling(g["kh"], g["kw"], stride, g["pad"])
        return layers.Relu()

    _note(kind=kind, x=x, w=w, b=b, dout=dout, g=g)
    ref_layer = make()
    ref_out, ref_exc = _layer_step("numpy", ref_layer, "forward", x)
    ref_back = ref_exc2 = None
    if ref_exc is None:
        ref_back, ref_exc2 = _layer_step("numpy", ref_layer, "backward", dout)
    STATS[f"layer_{kind}:{'ok' if ref_exc is None and ref_exc2 is None else 'raised'}"] += 1
    for backend in OTHERS:
        layer = make()
        out, exc = _layer_step(backend, layer, "forward", x)
        STATS["calls"] += 1
        if ref_exc is None and exc is not None:
            _check_refusal(backend, exc, f"{kind}.forward")
        if exc is not None or ref_exc is not None:
            continue
        back, exc2 = _layer_step(backend, layer, "backward", dout)
        grads = {k: getattr(layer, k) for k in ("dW", "db") if hasattr(layer, k)}
        if ref_exc2 is None and exc2 is not None:
            _check_refusal(backend, exc2, f"{kind}.backward")
        try:
            assert_same(out, ref_out, f"{kind}.forward[{backend}]")
            if exc2 is None and ref_exc2 is None:
                assert_same(back, ref_back, f"{kind}.backward[{backend}]")
                for k, v in grads.items():
                    assert_same(v, getattr(ref_layer, k), f"{kind}.{k}[{backend}]")
        except AssertionError:
            if backend == "torch" and kind == "pool" and _has_nan([x]):
                STATS["known difference torch-nan-argmax"] += 1
                continue
            if backend == "torch" and kind == "conv" and _has_nonfinite([x, w, b, dout]):
                STATS["known difference torch-padding-nonfinite"] += 1
                continue
            raise
        if exc2 is not None:
            continue
        # backward twice: bit-identical result and gradients
        again, exc3 = _layer_step(backend, layer, "backward", dout)
        assert exc3 is None, f"second backward raised {exc3!r}"
        assert_bitwise(again, back, f"{kind}.backward twice[{backend}]")
        for k, v in grads.items():
            assert_bitwise(getattr(layer, k), v, f"{kind}.{k} after backward twice[{backend}]")
        # failing calls now, with a full state to lose: _layer_step checks nothing changed
        bad_dout = np.zeros(np.shape(dout)[:-1] + (np.shape(dout)[-1] + 1,)) if np.ndim(dout) else np.zeros(3)
        _layer_step(backend, layer, "backward", bad_dout)
        _layer_step(backend, layer, "forward", np.zeros((1, 1)))
        _layer_step(backend, layer, "backward", "not an array")


def assert_bitwise(got, ref, what):
    assert isinstance(got, np.ndarray) and got.shape == ref.shape and got.dtype == ref.dtype, what
    assert got.tobytes() == ref.tobytes(), f"{what}: results differ"
