"""fastconv-bench itself: the README's main command must run, check results and report."""
from __future__ import annotations

import json
import subprocess
import sys

from fastconv import bench


def test_rounds_alternate_backends_and_pool_their_samples():
    settings = bench.Settings(rounds=2, warmup_s=0.0, budget_s=0.0, min_reps=2, max_reps=2, peak_s=0.01)
    seen = []
    results = bench.run([bench.CASES_BY_NAME["dlfs-pool2x2"]], ["float32"], ["native", "numpy"], settings,
                        progress=seen.append)
    # numpy first in every round, then native; two rounds of each (op) row.
    order = [m.split()[4] for m in seen if "pool-fwd" in m]
    assert order == ["numpy", "native", "numpy", "native"], seen
    assert [(r.op, r.backend) for r in results] == [("pool-fwd", "numpy"), ("pool-fwd", "native"),
                                                     ("pool-bwd", "numpy"), ("pool-bwd", "native")]
    for r in results:
        assert len(r.samples_s) == 2 and r.warmup_calls == 2, (r.backend, r.op, r.samples_s)
        assert r.check == ("ref" if r.backend == "numpy" else "ok"), r.message


def test_cli_quick_run_writes_checked_json(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, "-m", "fastconv.bench", "--quick", "--cases", "dlfs-simpleconvnet", "--dtype", "float64",
         "--backends", "numpy,native", "--threads", "1", "--json", str(out)],
        capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "vs numpy" in proc.stdout and "FAIL" not in proc.stdout
    data = json.loads(out.read_text())
    rows = {(r["op"], r["backend"]): r for r in data["results"]}
    assert set(rows) == {("conv-fwd", "numpy"), ("conv-fwd", "native"), ("conv-bwd", "numpy"), ("conv-bwd", "native")}
    for (op, backend), r in rows.items():
        assert r["check"] == ("ref" if backend == "numpy" else "ok")
        assert r["median_s"] > 0 and 0 < r["pct_peak"]
    assert rows[("conv-fwd", "native")]["speedup_vs_numpy"] > 0


def test_networks_suite_layers_have_the_published_sizes():
    """The layer tables chain: each network's last layer gives the published feature-map size."""
    from fastconv import bench_networks as nets

    last = {c.source: c for c in nets.cases() if c.x_shape[0] == 1}  # the last layer of each network
    expected = {"lenet5": (1, 1), "alexnet": (6, 6), "zfnet": (6, 6), "vgg16": (7, 7), "resnet18": (7, 7),
                "resnet50-1x1": (7, 7), "simpleconvnet": (12, 12), "deepconvnet": (4, 4), "seed-mnist-cnn": (4, 4)}
    assert {net: last[net].out_hw for net in expected} == expected
    names = [c.name for c in nets.cases()]
    assert len(names) == len(set(names))
    assert all(min(c.out_hw) >= 1 for c in nets.cases())


def test_networks_suite_skips_numpy_only_on_the_big_layers():
    from fastconv import bench_networks as nets

    big = [c for c in nets.cases(["vgg16"]) if not nets.numpy_timed(c)]
    assert big and all(c.kind == "conv" and c.conv_flop() > nets.NUMPY_MAX_FLOP for c in big)
    assert all(nets.numpy_timed(c) for c in nets.cases(["simpleconvnet", "lenet5"]))


def test_cli_networks_suite_prints_per_network_summaries(tmp_path):
    out = tmp_path / "net.json"
    proc = subprocess.run(
        [sys.executable, "-m", "fastconv.bench", "--suite", "networks", "--networks", "lenet5,simpleconvnet", "--quick",
         "--dtype", "float32", "--backends", "numpy,native", "--threads", "1", "--json", str(out)],
        capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "FAIL" not in proc.stdout and "ERROR" not in proc.stdout
    summary = proc.stdout.split("vs numpy geo", 1)[1]
    for net in ("lenet5", "simpleconvnet"):
        assert any(line.startswith(net) for line in summary.splitlines()), summary
    data = json.loads(out.read_text())
    assert {r["case"].split("/")[0] for r in data["results"]} == {"lenet5", "simpleconvnet"}
    assert all(r["check"] in ("ref", "ok") for r in data["results"])
