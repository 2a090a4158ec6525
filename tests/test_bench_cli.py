"""fastconv-bench itself: the README's main command must run, check results and report."""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys

import pytest

from fastconv import bench
from fastconv.bench_console import Console


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


# --- header, progress and table on a terminal ----------------------------------------

class FakeTerminal(io.StringIO):
    """One screen for stdout and stderr, as a terminal is; isatty() says yes."""

    def isatty(self):
        return True


def render(raw: str) -> list:
    """The lines a terminal shows for ``raw``: \\r goes to column 0, ESC[K erases to the end of
    the line, \\n starts a new line (a pseudo-terminal sends \\r\\n)."""
    lines, cur, col, i = [], [], 0, 0
    while i < len(raw):
        if raw.startswith("\033[K", i):
            del cur[col:]
            i += 3
            continue
        c = raw[i]
        if c == "\r":
            col = 0
        elif c == "\n":
            lines.append("".join(cur))
            cur, col = [], 0
        else:
            cur[col:col + 1] = [c]
            col += 1
        i += 1
    if cur:
        lines.append("".join(cur))
    return lines


def test_console_keeps_progress_off_the_result_lines():
    screen = FakeTerminal()
    con = Console(out=screen, err=screen, columns=40)
    con.progress("measuring the FMA peaks ...")
    con.print("header line 1")
    con.print("header line 2")
    con.progress("[1/2] case f32 conv-fwd numpy ...")
    con.progress("[2/2] a progress message far longer than the forty columns of this terminal ...")
    assert len(render(screen.getvalue())[-1]) < 40  # cut: it cannot wrap onto a row \r cannot reach
    con.print("")
    con.print("case  dtype")
    con.warn("a warning")
    assert render(screen.getvalue()) == ["header line 1", "header line 2", "", "case  dtype", "a warning"]


def test_console_without_a_terminal_writes_one_progress_line_each():
    out, err = io.StringIO(), io.StringIO()
    con = Console(out=out, err=err)
    con.progress("step 1 ...")
    con.print("result")
    con.progress("step 2 ...")
    assert (out.getvalue(), err.getvalue()) == ("result\n", "step 1 ...\nstep 2 ...\n")


def _check_terminal_lines(lines):
    assert lines[0].startswith("fastconv "), lines[:3]
    assert not [ln for ln in lines if ln.rstrip().endswith("...")], "a progress line was left on screen"
    assert sum(ln.startswith("fastconv ") or "fastconv 0" in ln for ln in lines) == 1
    head = [ln for ln in lines if ln.startswith("case ")]
    assert len(head) == 1 and "vs numpy" in head[0], lines
    assert any(ln.startswith("dlfs-pool2x2") for ln in lines)


def test_main_on_a_terminal_prints_header_progress_and_table_on_their_own_lines(monkeypatch):
    """The whole header/progress/table path of main() on one fake terminal, no timed figure checked."""
    monkeypatch.setattr(bench, "measure_peaks", lambda seconds: {"float32": 100.0, "float64": 50.0, "copy_GBps": 10.0})
    screen = FakeTerminal()
    rc = bench.main(["--quick", "--cases", "dlfs-pool2x2", "--dtype", "float32", "--backends", "numpy,native",
                     "--threads", "1"], console=Console(out=screen, err=screen, columns=100))
    assert rc == 0
    raw = screen.getvalue()
    assert "\r\033[K[1/4] dlfs-pool2x2 f32 pool-fwd numpy" in raw  # progress was drawn in place
    _check_terminal_lines(render(raw))


@pytest.mark.skipif(not hasattr(os, "openpty"), reason="needs a pseudo-terminal")
def test_cli_under_a_pseudo_terminal_keeps_the_header_off_the_progress_line():
    """The real thing: fastconv-bench with stdout and stderr on one pseudo-terminal."""
    master, slave = os.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "fastconv.bench", "--quick", "--cases", "dlfs-pool2x2", "--dtype", "float32",
         "--backends", "numpy,native", "--threads", "1"],
        stdin=subprocess.DEVNULL, stdout=slave, stderr=slave)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the child closed its end
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    assert proc.wait(timeout=300) == 0
    raw = b"".join(chunks).decode()
    assert "\r\033[K" in raw  # it did see a terminal
    _check_terminal_lines(render(raw))
