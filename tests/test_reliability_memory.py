"""Shapes that cannot fit are refused before anything is allocated.

An input copy, output or workspace whose size overflows 64 bits raises ValueError, one larger
than this process may use (physical memory, or a lower ``ulimit -v``/``-d``) raises MemoryError;
either message gives the size. Huge shapes are never allocated here: inputs are zero-stride views
(``np.broadcast_to``) and the backward functions take the input as a shape tuple. The public-API
cases run in a subprocess whose data segment is capped at its start size + 512 MiB, so a check
that is missing shows up as an allocation failure (or a small peak RSS growth proves nothing big
was touched), never as a machine out of memory.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import fastconv
from fastconv import _core
from fastconv import _params as P


# A size in a message: a byte count ("8.0 GiB", "137438953472 bytes") or a big dimension.
SIZE = re.compile(r"\d+(\.\d+)?\s*(bytes|[KMGTPE]i?B)\b|\d{6,}")


def has_size(msg: str) -> bool:
    return bool(SIZE.search(msg))


# --- the helpers in _params ------------------------------------------------------------------

def test_check_alloc_refuses_int64_overflow_with_the_size():
    with pytest.raises(ValueError, match=r"\(4294967296, 4294967296\).*18446744073709551616 elements"):
        P.check_alloc("result", (2**32, 2**32), np.float64)
    with pytest.raises(ValueError, match=r"overflows 64-bit"):
        P.check_alloc("result", (2**61,), np.float64)  # fits as elements, not as bytes


def test_check_alloc_refuses_more_than_memory_with_the_size():
    limit = P.memory_limit()
    n = limit // 8 + 1
    with pytest.raises(MemoryError, match=rf"needs .*\({n * 8} bytes of float64\)"):
        P.check_alloc("result", (n,), np.float64)
    P.check_alloc("result", (1000, 1000), np.float32)  # small: fine
    P.check_alloc("result", (0, 2**40), np.float64)     # empty: fine
    with pytest.raises(ValueError, match="overflows"):    # empty, but NumPy could not describe it
        P.check_alloc("result", (0, 2**62), np.float64)


def test_memory_limit_is_physical_memory_or_lower():
    phys = P.physical_memory()
    assert phys > 0
    assert 0 < P.memory_limit() <= phys


def test_memory_limit_follows_ulimit():
    code = textwrap.dedent("""
        import resource
        from fastconv import _params as P
        soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        resource.setrlimit(resource.RLIMIT_AS, (64 << 30, hard))
        print(P.memory_limit())
    """)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    if res.returncode != 0 and "AddressSanitizer" in res.stderr:  # pragma: no cover - ASan needs the address space
        pytest.skip("RLIMIT_AS cannot be lowered under AddressSanitizer")
    assert res.returncode == 0, res.stderr[-2000:]
    assert int(res.stdout.split()[-1]) == min(64 << 30, P.physical_memory())


# --- the native layer refuses overflowing geometry by itself ---------------------------------------

X = np.zeros((1, 1, 4, 4))

NATIVE_OVERFLOW = {
    "stride_plus_pad": lambda: _core.im2col(X, 1, 2, 2, 2**63 - 1, 0, 2),
    "pad_doubled": lambda: _core.im2col(X, 1, 1, 1, 1, 2**62, 0),
    "padded_plane": lambda: _core.avg_pool2d_forward(X, 2**32, 2**32, 2**32, 2**32, 2**31, 2**31),
    "col2im_shape": lambda: _core.col2im(np.zeros((0, 1)), (0, 2**31, 2**31, 2**31), 1, 1, 1, 1, 0, 0),
    "col2im_hw": lambda: _core.col2im(np.zeros((0, 1)), (0, 1, 2**40, 2**40), 1, 1, 1, 1, 0, 0),
    "avg_bwd_shape": lambda: _core.avg_pool2d_backward(np.zeros((1, 1, 1, 1)), (1, 1, 2**62, 4), 1, 1, 2**62, 4,
                                                       0, 0),
    "max_bwd_shape": lambda: _core.max_pool2d_backward(np.zeros((1, 1, 1, 1)), np.zeros((1, 1, 1, 1), np.int64),
                                                       (2**40, 2**40, 1, 1), 1, 1, 1, 1, 0, 0),
    "pool_taps": lambda: _core.max_pool2d_forward(np.zeros((1, 1, 1, 2**16 + 1)), 2**16, 2**16 + 1, 1, 1,
                                                  2**15, 0),
    "pool_pad_doubled": lambda: _core.max_pool2d_forward(X, 1, 1, 1, 1, 2**62 + 1, 0),
    "conv_output_bytes": lambda: _core.conv2d_forward(np.zeros((1, 1, 1, 1)), np.zeros((1, 1, 1, 1)), None,
                                                      1, 1, 2**30, 2**30),
    "im2col_matrix_bytes": lambda: _core.im2col(np.zeros((1, 1, 1, 1)), 1, 1, 1, 1, 2**30, 2**30),
}


@pytest.mark.parametrize("case", list(NATIVE_OVERFLOW))
def test_native_layer_refuses_overflowing_sizes(case):
    """make_params / check_pool_padding refuse every product that would overflow 64 bits, before
    anything is allocated or any index computed (each of these used to overflow silently)."""
    with pytest.raises(ValueError) as info:
        NATIVE_OVERFLOW[case]()
    msg = str(info.value)
    assert ("overflow" in msg or "more than" in msg or "at most half" in msg), msg


# --- every public function, every backend -----------------------------------------------------------

SCRIPT = r"""
import json, resource, sys, numpy as np, fastconv
B = np.broadcast_to
with open("/proc/self/status") as f:
    data_kb = next(int(l.split()[1]) for l in f if l.startswith("VmData:"))
soft, hard = resource.getrlimit(resource.RLIMIT_DATA)
if "libasan" not in open("/proc/self/maps").read():
    resource.setrlimit(resource.RLIMIT_DATA, (data_kb * 1024 + (512 << 20), hard))
one = lambda *s: np.ones(s)
G = 2**16   # a 65536 x 65536 plane: 32 GiB of float64
CASES = {
    # inputs that would have to be copied (zero-stride views of huge shapes)
    "im2col_input": lambda: fastconv.im2col(B(np.float64(1), (2**20, 1, 64, 64)), 3, 3),
    "conv2d_weights": lambda: fastconv.conv2d(one(1, 1, 4, 4), B(np.float32(1), (2**32, 1, 1, 1))),
    "conv2d_backward_dout": lambda: fastconv.conv2d_backward(B(np.float64(1), (2**16, 1, 2**8, 2**8)),
                                                             B(np.float64(1), (2**16, 1, 2**8, 2**8)), one(1, 1, 1, 1)),
    "max_pool2d_input": lambda: fastconv.max_pool2d(B(np.float64(1), (1, 2**20, 2**8, 2**8)), 2, 2),
    "avg_pool2d_input": lambda: fastconv.avg_pool2d(B(np.int8(1), (1, 2**20, 2**8, 2**8)), 2, 2),
    "relu_input": lambda: fastconv.relu(B(np.float32(1), (2**40,))),
    "relu_backward_input": lambda: fastconv.relu_backward(B(np.float32(1), (2**40,)), B(np.float32(1), (2**40,))),
    "layer_forward": lambda: fastconv.layers.Convolution(one(1, 1, 1, 1), one(1)).forward(
        B(np.float64(1), (2**20, 1, 2**10, 2**10))),
    # outputs much larger than the inputs
    "im2col_output": lambda: fastconv.im2col(one(1, 1, 1, 1), G, G, 1, G // 2),
    "col2im_output": lambda: fastconv.col2im(one(1, 1), (1, 1, G, G), 1, 1, G),
    "conv2d_output": lambda: fastconv.conv2d(one(1, 1, 1, 1), one(1, 1, 1, 1), None, 1, G),
    "avg_pool2d_backward_output": lambda: fastconv.avg_pool2d_backward(one(1, 1, 1, 1), (1, 1, G, G), 1, 1, G),
    "max_pool2d_backward_output": lambda: fastconv.max_pool2d_backward(
        one(1, 1, 1, 1), (1, 1, G, G), 1, 1, G, indices=np.zeros((1, 1, 1, 1), np.int64)),
    # results whose size does not even fit in 64 bits
    "col2im_int64": lambda: fastconv.col2im(np.ones((0, 2**31)), (0, 2**31, 2**31, 2**31), 1, 1),
    "avg_pool2d_backward_int64": lambda: fastconv.avg_pool2d_backward(
        np.ones((0, 2**31, 1, 1)), (0, 2**31, 2**31, 2**31), 1, 1, 2**31),
}
backends = fastconv.available_backends()
out = {}
for name, call in CASES.items():
    for b in backends:
        rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        try:
            with fastconv.use_backend(b):
                call()
            res = ["returned", ""]
        except Exception as exc:
            res = [type(exc).__name__, str(exc).splitlines()[0][:300] if str(exc) else ""]
        res.append((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 1024)
        out[f"{name}|{b}"] = res
print(json.dumps(out))
"""

BACKENDS = fastconv.available_backends()
CASES = ["im2col_input", "conv2d_weights", "conv2d_backward_dout", "max_pool2d_input", "avg_pool2d_input",
         "relu_input", "relu_backward_input", "layer_forward", "im2col_output", "col2im_output", "conv2d_output",
         "avg_pool2d_backward_output", "max_pool2d_backward_output", "col2im_int64",
         "avg_pool2d_backward_int64"]


@pytest.fixture(scope="module")
def refusals():
    res = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads(res.stdout.strip().splitlines()[-1])


def _params():
    for case in CASES:
        for backend in BACKENDS:
            yield pytest.param(case, backend, id=f"{case}-{backend}")


@pytest.mark.parametrize("case, backend", list(_params()))
def test_too_big_is_refused_with_the_size(refusals, case, backend):
    kind, msg, rss_growth_mb = refusals[f"{case}|{backend}"]
    assert kind in ("MemoryError", "ValueError"), f"{case} [{backend}]: {kind}: {msg}"
    assert has_size(msg), f"{case} [{backend}]: no size in the message: {msg!r}"
    assert rss_growth_mb < 256, f"{case} [{backend}]: peak RSS grew by {rss_growth_mb:.0f} MiB before the refusal"


# --- a failed allocation inside a parallel region ----------------------------------------------------

PARALLEL_BAD_ALLOC = r"""
import resource, numpy as np, fastconv
if "libasan" not in open("/proc/self/maps").read():
    with open("/proc/self/status") as f:
        kb = next(int(l.split()[1]) for l in f if l.startswith("VmData:"))
    resource.setrlimit(resource.RLIMIT_DATA, (kb * 1024 + (3 << 30), resource.RLIM_INFINITY))
fastconv.set_backend("native")
fastconv.set_num_threads(2)
# 16385 planes: enough to run in parallel. A 1 x (2**31 - 1) window (allowed) made every plane
# allocate a 16 GiB tap table inside the OpenMP region.
x = np.zeros((1, 16385, 1, 1))
try:
    out = fastconv.max_pool2d(x, 1, 2**31 - 1, 1, (0, 2**30 - 1))
    print("returned", out.shape)
except (MemoryError, ValueError) as exc:
    print("raised", type(exc).__name__, exc)
"""


# A std::bad_alloc inside an OpenMP region used to be std::terminate; parallel_for now rethrows
# a body's exception after the join, and the pooling planes allocate nothing there.
def test_failed_allocation_in_a_parallel_region_does_not_abort(tmp_path):
    env = dict(os.environ)
    if "ASAN_OPTIONS" in env:  # the expected ASan report goes to this test's folder, not to the run's
        opts = [o for o in env["ASAN_OPTIONS"].split(":") if not o.startswith("log_path=")]
        env["ASAN_OPTIONS"] = ":".join(opts + [f"log_path={tmp_path / 'asan'}"])
    res = subprocess.run([sys.executable, "-c", PARALLEL_BAD_ALLOC], capture_output=True, text=True,
                         timeout=300, env=env)
    assert res.returncode == 0, f"exit {res.returncode}: {res.stderr[-1500:]}"
    assert res.stdout.startswith(("returned", "raised MemoryError")), res.stdout
