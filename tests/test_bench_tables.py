"""Every shape of fastconv-bench's case table, at a reduced batch, native against the NumPy
reference with outputs and scratch poisoned. The table's shapes are the ones users time, so
they run in every build, the sanitizer build included (tools/sanitize.sh runs tests/)."""
from __future__ import annotations

import dataclasses

import pytest

import fastconv
from fastconv import _core, bench
from fastconv.bench import ceilings
from support import FORWARD_ALGORITHMS, forward_algorithm

BATCH = 2
CASES = [dataclasses.replace(c, x_shape=(min(c.x_shape[0], BATCH),) + c.x_shape[1:])
         for c in bench.CASES if c.kind in ("conv", "pool")]


@pytest.fixture
def poisoned():
    _core.set_debug_poison(True)
    yield
    _core.set_debug_poison(False)


# Convolutions with every forward algorithm forced too; pooling has one algorithm.
RUNS = [(c, a) for c in CASES for a in (("auto",) + FORWARD_ALGORITHMS if c.kind == "conv" else ("auto",))]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("case, algorithm", RUNS, ids=[f"{c.name}-{a}" for c, a in RUNS])
def test_bench_case_native_matches_numpy(case, dtype, algorithm, poisoned):
    wl = bench.Workload(case, dtype)
    for op in case.ops:
        with fastconv.use_backend("native"), forward_algorithm(algorithm):
            result = wl.fn(op)()
        check = wl.check(op, result)
        assert check.ok, f"{case.name} (batch {case.x_shape[0]}) {dtype} {op}: {check.message}"


def test_the_table_has_conv_and_pool_cases():
    """The table this file runs still holds both kinds (a renamed kind would empty it)."""
    assert {c.kind for c in CASES} == {"conv", "pool"}, [c.kind for c in bench.CASES]


# --- pooling's ceiling: bytes moved over the copy bandwidth of the same working set ----------

def test_pooling_bytes_are_each_array_once():
    """dlfs-pool2x2 (100,30,24,24) -> (100,30,12,12): fwd reads x, writes out + int64 indices;
    bwd reads dout + indices, writes dx."""
    case = bench.CASES_BY_NAME["dlfs-pool2x2"]
    n_in, n_out = 100 * 30 * 24 * 24, 100 * 30 * 12 * 12
    assert case.bytes_moved("pool-fwd", 4) == 4 * n_in + (4 + 8) * n_out
    assert case.bytes_moved("pool-bwd", 8) == (8 + 8) * n_out + 8 * n_in
    assert bench.CASES_BY_NAME["vgg-3x3-mid"].bytes_moved("conv-fwd", 4) == 0


def test_copy_ceiling_is_measured_on_the_rows_byte_count_before_and_after(monkeypatch):
    """Each pooling row gets the higher of the copies right before and after it, over its own
    byte count; the after of one row is the before of the next of the same size."""
    calls = []
    values = iter([5.0, 7.0, 6.0, 3.0, 4.0, 2.0])

    def fake_ceiling(nbytes, threads, seconds=0.05):
        calls.append(nbytes)
        return next(values)

    monkeypatch.setattr(ceilings, "measure_copy_ceiling", fake_ceiling)
    settings = bench.Settings(rounds=1, warmup_s=0.0, budget_s=0.0, min_reps=1, max_reps=1)
    case = dataclasses.replace(bench.CASES_BY_NAME["dlfs-pool2x2"], x_shape=(2, 3, 24, 24))
    conv = dataclasses.replace(bench.CASES_BY_NAME["single-64x56"], x_shape=(1, 4, 8, 8), FN=4)
    results = bench.run([conv, case], ["float32", "float64"], ["native"], settings)
    pool = {(r.dtype, r.op): r.copy_GBps for r in results if r.bytes}
    # f32 fwd: 5 before, 7 after; f32 bwd: 7 (reused) before, 6 after; f64 fwd: 3, 4; f64 bwd: 4, 2
    assert pool == {("float32", "pool-fwd"): 7.0, ("float32", "pool-bwd"): 7.0,
                    ("float64", "pool-fwd"): 4.0, ("float64", "pool-bwd"): 4.0}
    b32, b64 = case.bytes_moved("pool-fwd", 4), case.bytes_moved("pool-fwd", 8)
    assert calls == [b32, b32, b32, b64, b64, b64]
    assert all(r.copy_GBps == 0.0 for r in results if r.flop)


def test_pooling_is_reported_against_its_copy_ceiling_convolutions_against_the_fma_peak():
    peaks = {"float32": 100.0, "float64": 50.0, "copy_GBps": 1.0}  # the large copy: not pooling's ceiling
    conv = bench.Result("c", "conv-fwd", "float32", "native", samples_s=[0.1], flop=int(5e9), check="ok")
    pool = bench.Result("p", "pool-fwd", "float32", "native", samples_s=[0.1], bytes=int(1e9), copy_GBps=20.0,
                        check="ok")
    d = bench.derived(pool, [conv, pool], peaks)
    assert d["gbps"] == pytest.approx(10.0) and d["pct_copy_bw"] == pytest.approx(50.0)
    assert "pct_fma_peak" not in d
    d = bench.derived(conv, [conv, pool], peaks)
    assert d["pct_fma_peak"] == pytest.approx(50.0) and "pct_copy_bw" not in d
    lines = bench.format_table([conv, pool], peaks).splitlines()
    head = lines[0].split("  ")
    head = [h.strip() for h in head if h.strip()]
    assert head[5:8] == ["rate", "% FMA peak", "% copy bw"], head
    cells = {ln.split()[0]: ln.split() for ln in lines[2:] if ln.strip()}
    # case dtype op backend ms rate unit, then % FMA peak and % copy bw
    assert cells["c"][7:9] == ["50.0%", "-"] and cells["p"][7:9] == ["-", "50.0%"], cells
    assert bench.copy_ceiling_lines([conv, pool]) == [
        "copy ceilings (np.copyto over the same byte count, this run): p f32 1000 MB: 20.0 GB/s (fwd)"]


@pytest.mark.parametrize("nbytes", [4096, 3 << 20])
def test_copy_ceiling_runs_on_small_and_split_working_sets(nbytes):
    gbps = bench.measure_copy_ceiling(nbytes, threads=2, seconds=0.005)
    assert 0 < gbps < float("inf")
