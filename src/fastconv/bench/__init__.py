"""``fastconv-bench``: time every backend on the book's and common CNN layer shapes.

Each case runs through the public functional API (``fastconv.conv2d``, ``conv2d_backward``,
``max_pool2d``, ``max_pool2d_backward``, the drop-in layers for the training step) under
``fastconv.use_backend(name)``, so the native, NumPy and PyTorch backends are timed by the
same harness. The method follows ``PERF.md``:

* fresh random inputs (standard normal, never zeros), made once per case and dtype;
* every timed function is warmed up for ~0.25 s first (OpenBLAS and PyTorch worker threads
  keep spinning for a while after each call and slow whatever runs next);
* medians over repeats, taken in rounds that alternate the backends (numpy, native, torch,
  numpy, ...), so a load change on a shared machine hits every backend of a row alike;
* ratios (vs NumPy, vs PyTorch, vs the FMA peak and, for pooling, vs the copy bandwidth of a
  working set of the same size, both measured in the same process) rather than absolute times;
* every benchmarked result is checked once against the NumPy backend's result.

``python -m fastconv.bench --help`` lists the options. The case table (:data:`CASES`) and the
:class:`Workload` helper are shared with the pytest-benchmark suite in ``benchmarks/``.

What lives where (at import time each module imports only modules above it in this list, never
the package itself; ``blas``'s child processes import the package, as a user would):

* ``training``: :class:`SimpleConvNetStep`, the book's training step (the ``train`` case);
* ``cases``: :class:`Case`, :data:`CASES`, :func:`select_cases`, :class:`Workload` (inputs, the
  callable of each op, the check against the NumPy reference) and the tolerances;
* ``ceilings``: the in-process FMA peaks, large-copy bandwidth and pooling copy ceilings;
* ``timing``: :class:`Settings`, :func:`time_callable`, :func:`thread_settings`, :class:`Result`
  and :func:`run`, which times and checks the table's rows in alternating rounds;
* ``busy``: other processes' CPU use, sampled before and over the run;
* ``report``: the header, the results table and legend, :func:`derived` figures, the JSON file;
* ``plot``: the ``--plot`` bar chart;
* ``networks``, ``dezero``: the ``--suite networks`` and ``--suite dezero`` layers, runner and
  summaries; ``blas``: the training step in fresh processes per import order;
* ``console``: results on stdout, the progress line on stderr;
* ``cli``: the options, the ``--suite`` table (:data:`SUITES`) and :func:`main`.
"""
from __future__ import annotations

from .cases import (
    BACKEND_ORDER,
    CASES,
    CASES_BY_NAME,
    DTYPES,
    OPS,
    SHORT_DTYPE,
    TOLERANCE,
    TRAIN_TOLERANCE,
    Case,
    Check,
    Workload,
    select_cases,
)
from .ceilings import measure_copy_bandwidth, measure_copy_ceiling, measure_peaks
from .cli import SUITES, Suite, build_parser, list_cases, main
from .plot import write_plot
from .report import LEGEND, copy_ceiling_lines, derived, format_table, header_lines, machine_info, write_json
from .timing import NORMAL, QUICK, Result, Settings, run, split_rounds, thread_settings, time_callable, warm_up
from .training import SimpleConvNetStep

__all__ = [
    "Case", "CASES", "CASES_BY_NAME", "OPS", "DTYPES", "Workload", "SimpleConvNetStep",
    "Settings", "NORMAL", "QUICK", "warm_up", "time_callable", "measure_peaks", "select_cases",
    "measure_copy_ceiling", "thread_settings", "Suite", "SUITES", "main",
    # also used as bench.X by the tests, the suites' child processes and benchmarks/
    "BACKEND_ORDER", "SHORT_DTYPE", "TOLERANCE", "TRAIN_TOLERANCE", "Check", "Result", "run", "split_rounds",
    "measure_copy_bandwidth", "derived", "format_table", "header_lines", "machine_info", "copy_ceiling_lines",
    "LEGEND", "write_json", "write_plot", "build_parser", "list_cases",
]
