"""No leaks: resident memory stays flat over 1,000 calls of each public function (and of calls
that fail inside the native layer), measured in a fresh subprocess from /proc/self/statm.

Each function runs 200 warm-up calls (allocator pools, first-touch pages), then 1,000 measured
calls; the growth must stay under ``TOLERANCE_KIB`` -- far less than one leaked result per call
would cost (every result here is >= 4 KiB, so a leak of one per call would show as >= 4 MiB).
The figures are printed (``-s``) and recorded as the test's user properties.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

import fastconv
from support import under_asan

CALLS = 1000
TOLERANCE_KIB = 1024

SCRIPT = r"""
import gc, json, os, sys, numpy as np, fastconv
from fastconv import layers, _core
backend, calls = sys.argv[1], int(sys.argv[2])
fastconv.set_backend(backend)
PAGE = os.sysconf("SC_PAGE_SIZE")
def rss_kib():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE // 1024
rng = np.random.default_rng(0)
x = rng.standard_normal((2, 3, 16, 16)); w = rng.standard_normal((4, 3, 3, 3)); b = rng.standard_normal(4)
out = fastconv.conv2d(x, w, b, 1, 1); dout = np.ones_like(out)
col = fastconv.im2col(x, 3, 3, 1, 1)
mp, idx = fastconv.max_pool2d(x, 2, 2, return_indices=True); pd = np.ones_like(mp)
bad_idx = idx.copy(); bad_idx.flat[-1] = 10**6
x32 = x.astype(np.float32)
conv, pool, avg, relu = layers.Convolution(w, b, 1, 1), layers.Pooling(2, 2, 2), layers.AvgPooling(2, 2, 2), layers.Relu()
def failing(f):
    def call():
        try:
            f()
        except (ValueError, TypeError, MemoryError):
            pass
    return call
cases = {
    "im2col": lambda: fastconv.im2col(x, 3, 3, 1, 1),
    "col2im": lambda: fastconv.col2im(col, x.shape, 3, 3, 1, 1),
    "conv2d": lambda: fastconv.conv2d(x, w, b, 1, 1),
    "conv2d_float32_cast": lambda: fastconv.conv2d(x32, w, None, 2, 0),
    "conv2d_backward": lambda: fastconv.conv2d_backward(dout, x, w, 1, 1),
    "max_pool2d": lambda: fastconv.max_pool2d(x, 2, 2, return_indices=True),
    "max_pool2d_backward": lambda: fastconv.max_pool2d_backward(pd, x, 2, 2),
    "max_pool2d_backward_indices": lambda: fastconv.max_pool2d_backward(pd, x.shape, 2, 2, indices=idx),
    "avg_pool2d": lambda: fastconv.avg_pool2d(x, 2, 2),
    "avg_pool2d_backward": lambda: fastconv.avg_pool2d_backward(pd, x.shape, 2, 2),
    "relu": lambda: fastconv.relu(x),
    "relu_backward": lambda: fastconv.relu_backward(x, x),
    "layers": lambda: (conv.backward(conv.forward(x)), pool.backward(pool.forward(x)),
                       avg.backward(avg.forward(x)), relu.backward(relu.forward(x))),
    # failures raised after the result was allocated, or inside the bindings
    "fail_max_pool2d_backward_range": failing(
        lambda: fastconv.max_pool2d_backward(pd, x.shape, 2, 2, indices=bad_idx)),
    "fail_conv2d_channels": failing(lambda: fastconv.conv2d(x, w[:, :2])),
    "fail_too_big": failing(lambda: fastconv.relu(np.broadcast_to(np.float32(1), (2**40,)))),
}
if backend == "native":
    cases["fail_native_overflow"] = failing(lambda: _core.im2col(x, 1, 1, 1, 1, 2**30, 2**30))
    cases["fail_native_dtype"] = failing(lambda: _core.conv2d_forward(x, w.astype(np.float32), None, 1, 1, 0, 0))
report = {}
for name, call in cases.items():
    for _ in range(200):
        call()
    gc.collect()
    before = rss_kib()
    for _ in range(calls):
        call()
    gc.collect()
    report[name] = rss_kib() - before
print(json.dumps(report))
"""

BACKENDS = fastconv.available_backends()


@pytest.mark.skipif(under_asan(), reason="ASan's quarantine holds freed memory: RSS is not flat by design")
@pytest.mark.parametrize("backend", BACKENDS)
def test_resident_memory_flat_over_1000_calls(backend, record_property):
    res = subprocess.run([sys.executable, "-c", SCRIPT, backend, str(CALLS)], capture_output=True, text=True,
                         timeout=900, env=dict(os.environ, OMP_NUM_THREADS="2"))
    assert res.returncode == 0, res.stderr[-3000:]
    growth = json.loads(res.stdout.strip().splitlines()[-1])
    record_property("rss_growth_kib", growth)
    print(f"\nRSS growth over {CALLS} calls [{backend}] (KiB): " + ", ".join(f"{k}={v}" for k, v in growth.items()))
    leaking = {k: v for k, v in growth.items() if v > TOLERANCE_KIB}
    assert not leaking, f"resident memory grew over {CALLS} calls [{backend}] (KiB): {leaking}"
