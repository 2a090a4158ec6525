"""pytest-benchmark suite of fastconv: the cases of ``fastconv.bench.CASES`` on every backend.

    pytest benchmarks --benchmark-enable                 # time everything (a few minutes)
    pytest benchmarks --benchmark-enable -k simpleconvnet
    pytest benchmarks --benchmark-disable                # smoke run: every call once, checked

One benchmark group per (case, dtype, op) -- ``benchmark.group = "<case> <dtype> <op>"`` -- with
one entry per backend (numpy, native, torch; torch is skipped when PyTorch is missing). Every
benchmarked result is checked against the NumPy backend's, computed once per case and dtype.

With ``--benchmark-disable`` (pyproject's default) only the small cases (``Case.smoke``) run,
each call once; ``--bench-cases all`` (or a comma list of names / glob patterns) overrides that.
``--bench-threads N`` runs fastconv, PyTorch and NumPy's BLAS on N threads (default: fastconv's
current count). When timing, each function is warmed up for ``WARMUP_S`` first (PERF.md).
"""
from __future__ import annotations

import gc
from typing import Dict, Tuple

import pytest

import fastconv
from fastconv import bench
from fastconv.bench import networks as bench_networks

BACKENDS = ("numpy", "native", "torch")  # numpy first: its result becomes the reference
CASE_ARGS = {"conv_case": "conv", "pool_case": "pool", "train_case": "train"}
WARMUP_S = 0.25

_state: Dict[str, object] = {"peaks": None, "threads": None}


def pytest_addoption(parser):
    group = parser.getgroup("fastconv benchmarks")
    group.addoption("--bench-cases", default=None, metavar="NAMES",
                    help="comma list of fastconv-bench case names or globs, or 'all' (default: all "
                         "cases when timing, the small ones under --benchmark-disable)")
    group.addoption("--bench-networks", default=None, metavar="NAMES",
                    help="comma list of fastconv-bench --suite networks networks, or 'all' (default: all when "
                         "timing, the book's SimpleConvNet and LeNet-5 under --benchmark-disable)")
    group.addoption("--bench-threads", type=int, default=None, metavar="N",
                    help="threads for fastconv, PyTorch and NumPy's BLAS (default: fastconv's current)")


def _timing(config) -> bool:
    return not config.getoption("benchmark_disable") or config.getoption("benchmark_enable")


def _cases(config, kind: str):
    spec = config.getoption("bench_cases")
    if spec == "all":
        cases = list(bench.CASES)
    elif spec:
        try:
            cases = bench.select_cases(spec)
        except ValueError as exc:
            raise pytest.UsageError(f"--bench-cases: {exc}") from exc
    else:
        cases = [c for c in bench.CASES if c.smoke or _timing(config)]
    return [c for c in cases if c.kind == kind]


SMOKE_NETWORKS = ("simpleconvnet", "lenet5")


def _network_cases(config):
    spec = config.getoption("bench_networks")
    if spec == "all" or (spec is None and _timing(config)):
        names = None
    else:
        names = [n.strip() for n in (spec or ",".join(SMOKE_NETWORKS)).split(",") if n.strip()]
    try:
        return bench_networks.cases(names)
    except ValueError as exc:
        raise pytest.UsageError(f"--bench-networks: {exc}") from exc


def pytest_generate_tests(metafunc):
    for arg, kind in CASE_ARGS.items():
        if arg in metafunc.fixturenames:
            cases = _cases(metafunc.config, kind)
            metafunc.parametrize(arg, cases, ids=[c.name for c in cases])
    if "dtype" in metafunc.fixturenames:
        metafunc.parametrize("dtype", bench.DTYPES)
    if "network_case" in metafunc.fixturenames:
        # NumPy only where its im2col finishes in seconds (bench_networks.NUMPY_MAX_FLOP).
        pairs = [(c, b) for c in _network_cases(metafunc.config) for b in BACKENDS
                 if b != "numpy" or bench_networks.numpy_timed(c)]
        metafunc.parametrize("network_case, backend", pairs, ids=[f"{c.name}-{b}" for c, b in pairs])
    elif "backend" in metafunc.fixturenames:
        metafunc.parametrize("backend", BACKENDS)


def pytest_collection_modifyitems(config, items):
    """Run each case's entries together (numpy first), so one workload is alive at a time."""
    case_rank = {c.name: i for i, c in enumerate(list(bench.CASES) + bench_networks.cases())}

    def key(item):
        params = getattr(getattr(item, "callspec", None), "params", {})
        case = next((params[a] for a in list(CASE_ARGS) + ["network_case"] if a in params), None)
        if case is None or "op" not in params:
            return (-1, "", 0, 0)  # not a benchmark: keep first, in collection order
        op = params["op"]  # a full op name, or "fwd"/"bwd" for the network layers
        op_rank = bench.OPS.index(op) if op in bench.OPS else ("fwd", "bwd").index(op)
        return (case_rank[case.name], params.get("dtype", ""), op_rank, BACKENDS.index(params.get("backend", "numpy")))

    items.sort(key=key)


def pytest_report_header(config):
    info = fastconv._core.build_info()
    mode = "timing" if _timing(config) else "smoke run (--benchmark-disable: each call once, checked)"
    return [f"fastconv {fastconv.__version__}: gemm {info['gemm_f32']} / {info['gemm_f64']}; "
            f"backends {', '.join(fastconv.available_backends())}; benchmarks: {mode}"]


@pytest.fixture(scope="session", autouse=True)
def bench_threads(request):
    """Same thread count for every library; the same-run ceilings when timing."""
    config = request.config
    n = config.getoption("bench_threads") or fastconv.get_num_threads()
    with bench.thread_settings(n, fastconv.available_backends()) as threads:
        _state["threads"] = threads
        if _timing(config) and _state["peaks"] is None:
            _state["peaks"] = bench.measure_peaks()
        yield threads


# Workloads (inputs + cached NumPy reference results) of the case being run; items are sorted
# so that each (case, dtype) is needed by a contiguous run of tests and only one is kept.
_workloads: Dict[Tuple[str, str], bench.Workload] = {}


def _workload(case: bench.Case, dtype: str) -> bench.Workload:
    key = (case.name, dtype)
    if key not in _workloads:
        _workloads.clear()
        gc.collect()
        _workloads[key] = bench.Workload(case, dtype)
    return _workloads[key]


@pytest.fixture
def measure(benchmark, dtype, backend):
    """``measure(case, op)``: benchmark ``op`` of ``case`` on this test's backend and dtype,
    then check the result against the NumPy backend's (the NumPy backend's against native)."""

    def _measure(case: bench.Case, op: str):
        if backend == "torch":
            pytest.importorskip("torch")
        wl = _workload(case, dtype)
        fn = wl.fn(op)
        itemsize = 4 if dtype == "float32" else 8
        # Network layers group per network ("vgg16@b8 float32 conv-fwd"), the cases per case.
        net, _, layer = case.name.partition("/")
        benchmark.group = (f"{net}@{layer.rsplit('@', 1)[1]} {dtype} {op}" if layer else f"{case.name} {dtype} {op}")
        benchmark.extra_info.update(
            case=case.name, shape=case.describe(), op=op, dtype=dtype, backend=backend,
            threads=fastconv.get_num_threads(), flop=case.flop(op), bytes=case.bytes_moved(op, itemsize))
        with fastconv.use_backend(backend):
            if benchmark.enabled:
                bench.warm_up(fn, WARMUP_S)
            result = benchmark(fn)
        if backend == "numpy":
            # The reference itself is checked against an independent implementation (the
            # native kernels), never against its own result.
            wl.offer_reference(op, result)
            with fastconv.use_backend("native"):
                check = wl.check(op, result, ref=fn())
        else:
            check = wl.check(op, result)
        benchmark.extra_info["max_rel_err"] = check.max_rel_err
        _add_rates(benchmark, case, op, dtype)
        assert check.ok, f"{backend} disagrees with numpy on {case.name} {dtype} {op}: {check.message}"
        return result

    return _measure


def _add_rates(benchmark, case: bench.Case, op: str, dtype: str) -> None:
    stats = getattr(getattr(benchmark, "stats", None), "stats", None)
    peaks = _state["peaks"]
    if stats is None or not stats.median:
        return
    info = benchmark.extra_info
    if info["flop"]:
        info["gflops"] = info["flop"] / stats.median / 1e9
        if peaks:
            info["pct_fma_peak"] = 100 * info["gflops"] / peaks[dtype]
    elif info["bytes"]:
        info["gbps"] = info["bytes"] / stats.median / 1e9
        if peaks:
            info["pct_copy_bandwidth"] = 100 * info["gbps"] / peaks["copy_GBps"]


def pytest_benchmark_update_machine_info(config, machine_info):
    machine_info["fastconv"] = bench.machine_info()
    machine_info["fastconv_threads"] = _state["threads"]
    machine_info["fastconv_peaks"] = _state["peaks"]


def pytest_terminal_summary(terminalreporter, config):
    peaks = _state["peaks"]
    if peaks:
        terminalreporter.write_line(
            f"fastconv same-run ceilings on {fastconv.get_num_threads()} threads: FMA f32 {peaks['float32']:.1f} "
            f"GFLOP/s, f64 {peaks['float64']:.1f} GFLOP/s; copy {peaks['copy_GBps']:.1f} GB/s "
            "(GFLOP/s, GB/s and % of these are in each benchmark's extra_info: --benchmark-json)")
