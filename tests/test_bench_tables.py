"""Every shape of fastconv-bench's case table, at a reduced batch, native against the NumPy
reference with outputs and scratch poisoned. The table's shapes are the ones users time, so
they run in every build, the sanitizer build included (tools/sanitize.sh runs tests/)."""
from __future__ import annotations

import dataclasses

import pytest

import fastconv
from fastconv import _core, bench
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
