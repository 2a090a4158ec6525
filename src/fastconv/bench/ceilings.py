"""The machine's ceilings, measured in the benchmark's own process: the FMA peaks
(``_core.fma_peak_gflops``), the bandwidth of a large copy (the header's) and, for each pooling
row, the copy bandwidth of a working set of the row's own byte count."""
from __future__ import annotations

import contextlib
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Dict, List

import numpy as np

import fastconv
from fastconv import _core


def measure_copy_bandwidth(threads: int, seconds: float = 0.2, nbytes: int = 256 << 20) -> float:
    """GB/s (bytes read + written) of large ``np.copyto`` calls split over ``threads`` Python
    threads (NumPy releases the GIL while copying): the header's DRAM bandwidth. Pooling rows are
    measured against a copy of their own size (:func:`measure_copy_ceiling`)."""
    n = nbytes // 8
    src = np.random.default_rng(0).standard_normal(n)
    dst = np.empty_like(src)
    edges = np.linspace(0, n, threads + 1).astype(int)
    parts = [(src[a:b], dst[a:b]) for a, b in zip(edges[:-1], edges[1:])]

    def copy(part):
        np.copyto(part[1], part[0])

    best = 0.0
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(copy, parts))
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            t = time.perf_counter()
            list(pool.map(copy, parts))
            best = max(best, 2 * src.nbytes / (time.perf_counter() - t) / 1e9)
    return best


# Below this working set a copy split over Python threads costs more in hand-offs than it gains.
_COPY_SPLIT_MIN_BYTES = 1 << 20


def measure_copy_ceiling(nbytes: int, threads: int, seconds: float = 0.05, min_samples: int = 5) -> float:
    """GB/s (bytes read + written) of ``np.copyto`` over a working set of ``nbytes``: a source and
    a destination of ``nbytes / 2`` each, so one copy moves ``nbytes``, the same bytes as the
    pooling op it is the ceiling of, over a working set of the same size (in the same cache
    level, when it fits in one).

    Median of single timed copies (after one untimed copy that touches every page), for about
    ``seconds`` and at least ``min_samples``; on 1 thread and, from 1 MiB, split over ``threads``
    Python threads (NumPy releases the GIL while copying). The faster of the two is the ceiling.
    """
    half = max(nbytes // 2, 64)
    src = np.full(half, 1, dtype=np.uint8)  # written: never the shared zero page
    dst = np.empty_like(src)
    configs = [1] + ([threads] if threads > 1 and nbytes >= _COPY_SPLIT_MIN_BYTES else [])
    best = 0.0
    for n in configs:
        edges = np.linspace(0, half, n + 1).astype(int)
        parts = [(dst[a:b], src[a:b]) for a, b in zip(edges[:-1], edges[1:])]
        with contextlib.ExitStack() as stack:
            if n == 1:
                def copy():
                    np.copyto(dst, src)
            else:
                pool = stack.enter_context(ThreadPoolExecutor(n))

                def copy():
                    list(pool.map(lambda part: np.copyto(*part), parts))
            copy()
            samples: List[float] = []
            end = time.perf_counter() + seconds / len(configs)
            while len(samples) < min_samples or time.perf_counter() < end:
                t = time.perf_counter()
                copy()
                samples.append(time.perf_counter() - t)
        best = max(best, 2 * half / float(np.median(samples)) / 1e9)
    return best


def measure_peaks(seconds: float = 0.2) -> Dict[str, float]:
    """The machine's ceilings on fastconv's current thread count, measured now, in this process:
    FMA GFLOP/s for float32 and float64 (``_core.fma_peak_gflops``) and copy GB/s."""
    return {
        "float32": _core.fma_peak_gflops(False, seconds),
        "float64": _core.fma_peak_gflops(True, seconds),
        "copy_GBps": measure_copy_bandwidth(fastconv.get_num_threads(), seconds),
    }


def _megabytes(nbytes: int) -> str:
    """A working set's size in MB, as the progress line and the copy-ceiling lines print it."""
    mb = nbytes / 1e6
    return f"{mb:.0f}" if mb >= 100 else f"{mb:.3g}"
