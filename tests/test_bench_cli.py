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
