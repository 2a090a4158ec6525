"""fastconv-bench itself: the README's main command must run, check results and report."""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time

import pytest

from fastconv import bench
from fastconv.bench import busy, ceilings
from fastconv.bench.busy import CpuUse
from fastconv.bench.console import Console


def test_rounds_alternate_backends_and_pool_their_samples():
    settings = bench.Settings(rounds=2, warmup_s=0.0, budget_s=0.0, min_reps=2, max_reps=2, peak_s=0.01)
    seen = []
    results = bench.run([bench.CASES_BY_NAME["dlfs-pool2x2"]], ["float32"], ["native", "numpy"], settings,
                        progress=seen.append)
    # numpy first in every round, then native; two rounds of each (op) row.
    order = [m.split()[4] for m in seen if m.startswith("[") and "pool-fwd" in m]
    assert order == ["numpy", "native", "numpy", "native"], seen
    assert [(r.op, r.backend) for r in results] == [("pool-fwd", "numpy"), ("pool-fwd", "native"),
                                                     ("pool-bwd", "numpy"), ("pool-bwd", "native")]
    for r in results:
        assert len(r.samples_s) == 2 and r.warmup_calls == 2, (r.backend, r.op, r.samples_s)
        assert r.check == ("ref" if r.backend == "numpy" else "ok"), r.message


def _run_cli(tmp_path, *args):
    """fastconv-bench with `args` and --json in a fresh process: its stdout and the JSON, after
    checking it exited 0."""
    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, "-m", "fastconv.bench", *args, "--json", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout, json.loads(out.read_text())


def test_cli_quick_run_writes_checked_json(tmp_path):
    stdout, data = _run_cli(tmp_path, "--quick", "--cases", "dlfs-simpleconvnet", "--dtype", "float64",
                            "--backends", "numpy,native", "--threads", "1")
    assert "vs numpy" in stdout and "FAIL" not in stdout
    rows = {(r["op"], r["backend"]): r for r in data["results"]}
    assert set(rows) == {("conv-fwd", "numpy"), ("conv-fwd", "native"), ("conv-bwd", "numpy"), ("conv-bwd", "native")}
    for (op, backend), r in rows.items():
        assert r["check"] == ("ref" if backend == "numpy" else "ok")
        assert r["median_s"] > 0 and 0 < r["pct_fma_peak"] and "pct_copy_bw" not in r
    assert rows[("conv-fwd", "native")]["speedup_vs_numpy"] > 0


def test_networks_suite_layers_have_the_published_sizes():
    """The layer tables chain: each network's last layer gives the published feature-map size."""
    from fastconv.bench import networks as nets

    last = {c.source: c for c in nets.cases() if c.x_shape[0] == 1}  # the last layer of each network
    expected = {"lenet5": (1, 1), "alexnet": (6, 6), "zfnet": (6, 6), "vgg16": (7, 7), "resnet18": (7, 7),
                "resnet50-1x1": (7, 7), "simpleconvnet": (12, 12), "deepconvnet": (4, 4), "seed-mnist-cnn": (4, 4)}
    assert {net: last[net].out_hw for net in expected} == expected
    names = [c.name for c in nets.cases()]
    assert len(names) == len(set(names))
    assert all(min(c.out_hw) >= 1 for c in nets.cases())


def test_networks_suite_skips_numpy_only_on_the_big_layers():
    from fastconv.bench import networks as nets

    big = [c for c in nets.cases(["vgg16"]) if not nets.numpy_timed(c)]
    assert big and all(c.kind == "conv" and c.conv_flop() > nets.NUMPY_MAX_FLOP for c in big)
    assert all(nets.numpy_timed(c) for c in nets.cases(["simpleconvnet", "lenet5"]))


def test_cli_networks_suite_prints_per_network_summaries(tmp_path):
    stdout, data = _run_cli(tmp_path, "--suite", "networks", "--networks", "lenet5,simpleconvnet", "--quick",
                            "--dtype", "float32", "--backends", "numpy,native", "--threads", "1")
    assert "FAIL" not in stdout and "ERROR" not in stdout
    summary = stdout.split("vs numpy geo", 1)[1]
    for net in ("lenet5", "simpleconvnet"):
        assert any(line.startswith(net) for line in summary.splitlines()), summary
    assert {r["case"].split("/")[0] for r in data["results"]} == {"lenet5", "simpleconvnet"}
    assert all(r["check"] in ("ref", "ok") for r in data["results"])


def test_cli_dezero_suite_times_dezero_own_and_installed(tmp_path):
    """Both variants per row, the installed one checked against DeZero's own, and the summary;
    DeZero's functions are in place again afterwards."""
    pytest.importorskip("matplotlib", reason="DeZero 0.0.13 imports matplotlib; both come with the test extra")
    stdout, data = _run_cli(tmp_path, "--suite", "dezero", "--quick", "--cases", "dezero-cnn-*1", "--dtype", "float32",
                            "--threads", "1")
    rows = {(r["case"], r["backend"]): r["check"] for r in data["results"]}
    assert rows == {("dezero-cnn-conv1", "dezero"): "ref", ("dezero-cnn-conv1", "native"): "ok",
                    ("dezero-cnn-pool1", "dezero"): "ref", ("dezero-cnn-pool1", "native"): "ok"}, rows
    summary = stdout.split("fastconv.dezero.install() vs DeZero's own", 1)[1]
    assert "dezero-cnn-conv1" in summary and "geometric mean" in summary


def test_dezero_suite_leaves_dezero_own_functions_in_place():
    from fastconv.bench import dezero as bench_dezero
    _, F, fdz = bench_dezero._import_dezero()
    own = F.conv2d
    cases = [c for c in bench_dezero.cases() if c.name == "dezero-cnn-pool1"]
    results = bench_dezero.run(cases, ["float64"], [], bench.QUICK)
    assert [r.check for r in results] == ["ref", "ok"] and F.conv2d is own and not fdz.installed()


def test_scaling_suite_takes_the_batch1_conv_layers_above_50_mflop():
    from fastconv.bench import networks as nets, scaling

    chosen = {c.name for c in scaling.cases()}
    expected = {c.name for c in nets.cases() if c.kind == "conv" and c.x_shape[0] == 1 and c.conv_flop() > 50e6}
    assert chosen == expected
    assert "vgg16/conv1_1@b1" in chosen and "resnet18/l4@b1" in chosen
    assert "resnet50-1x1/s1_reduce_in@b1" not in chosen  # 25.7 MFLOP
    assert not any(name.startswith("lenet5/") or name.endswith("@b8") for name in chosen)


def test_scaling_summary_reports_geomean_worst_and_the_rows_under_target():
    from fastconv.bench import scaling

    def row(case, threads, seconds):
        return bench.Result(case, "conv-fwd", "float32", scaling.backend_name(threads), samples_s=[seconds] * 3)

    results = [row("a", 1, 4.0), row("a", 2, 2.0), row("b", 1, 3.0), row("b", 2, 2.0)]
    text = scaling.summary(results, [])
    assert "2 threads vs 1" in text and "target >= 1.70x" in text
    assert "2 layers: geometric mean 1.73x, worst 1.50x (b), 1 under 1.70x" in text, text
    assert "b: 3000.00 -> 2000.00 ms, 1.50x" in text and "a: " not in text.split("under the target:")[1]


def test_scaling_run_checks_the_parallel_result_against_one_thread(monkeypatch):
    """A kernel whose result depends on the thread count is caught: the N-thread row fails."""
    import numpy as np

    import fastconv
    from fastconv.bench import scaling

    before = fastconv.get_num_threads()
    case = next(c for c in scaling.cases() if c.name == "resnet50-1x1/s2_expand@b1")
    monkeypatch.setattr(scaling.Workload, "fn",
                        lambda self, op: lambda: np.full(self.case.out_shape, float(fastconv.get_num_threads()),
                                                         dtype=self.dtype))
    settings = bench.Settings(rounds=2, warmup_s=0.0, budget_s=0.0, min_reps=2, max_reps=2, peak_s=0.01)
    fastconv.set_num_threads(max(before, 2))
    try:
        results = scaling.run([case], ["float32"], [], settings)
    finally:
        fastconv.set_num_threads(before)
    conv = [(r.op, r.backend, r.check) for r in results if r.case == case.name]
    assert conv[:2] == [("conv-fwd", "native-1T", "ref"), ("conv-fwd", f"native-{max(before, 2)}T", "FAIL")]
    assert all(len(r.samples_s) == 2 for r in results if r.case == case.name)


def test_cli_scaling_suite_times_one_and_two_threads(tmp_path):
    stdout, data = _run_cli(tmp_path, "--suite", "scaling", "--quick", "--cases", "resnet50-1x1/s2_expand@b1",
                            "--dtype", "float32", "--threads", "2")
    rows = {(r["case"], r["op"], r["backend"]): r["check"] for r in data["results"]}
    case = "resnet50-1x1/s2_expand@b1"
    assert rows == {("fma-probe", "fma", "native-1T"): "ref", ("fma-probe", "fma", "native-2T"): "-",
                    (case, "conv-fwd", "native-1T"): "ref", (case, "conv-fwd", "native-2T"): "ok",
                    (case, "conv-bwd", "native-1T"): "ref", (case, "conv-bwd", "native-2T"): "ok"}, rows
    summary = stdout.split("thread scaling, 2 threads vs 1", 1)[1]
    assert "FMA probe" in summary and "conv-fwd  1 layers: geometric mean" in summary


def test_cli_scaling_suite_needs_two_threads():
    proc = subprocess.run([sys.executable, "-m", "fastconv.bench", "--suite", "scaling", "--quick", "--threads", "1",
                           "--cases", "resnet50-1x1/s2_expand@b1"], capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0 and "--threads N, N >= 2" in proc.stderr, proc.stderr


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
    monkeypatch.setattr(ceilings, "measure_peaks", lambda seconds: {"float32": 100.0, "float64": 50.0, "copy_GBps": 10.0})
    monkeypatch.setattr(busy, "sample", lambda seconds: CpuUse(0.0, 2, seconds, "/proc/stat"))
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


# --- is the machine busy -------------------------------------------------------------

STAT = """cpu  900 0 90 9000 5 0 3 7 0 0
cpu0 100 10 20 5000 4 1 2 3 50 0
cpu1 200 0 30 4000 1 0 1 4 0 0
intr 12345
"""


def test_busy_seconds_sum_the_busy_columns_of_our_cpus():
    tick = busy._TICK_S
    # user nice system irq softirq steal; not idle, iowait or guest (already in user)
    assert busy.read_busy_seconds([0], STAT) == pytest.approx((100 + 10 + 20 + 1 + 2 + 3) * tick)
    assert busy.read_busy_seconds([0, 1], STAT) == pytest.approx((136 + 235) * tick)
    assert busy.read_busy_seconds([5], STAT) is None


def test_other_processes_use_is_busy_time_minus_our_own():
    a = busy.Snapshot(wall_s=10.0, busy_s=100.0, own_s=5.0)
    # 2 s: the CPUs were busy 3.2 s, 1.2 s of it ours -> others used 1.0 CPU
    use = busy.use_between(a, busy.Snapshot(12.0, 103.2, 6.2), cpus=2)
    assert (use.others, use.source) == (pytest.approx(1.0), "/proc/stat")
    # all the busy time was ours (the run itself): nobody else
    assert busy.use_between(a, busy.Snapshot(12.0, 104.0, 9.0), 2).others == pytest.approx(0.0)
    # tick rounding never gives a negative or an impossible share
    assert busy.use_between(a, busy.Snapshot(12.0, 104.0, 9.02), 2).others == 0.0
    assert busy.use_between(a, busy.Snapshot(12.0, 108.1, 5.0), 2).others == 2.0


def test_busy_decision_counts_the_cores_the_run_leaves_free():
    def use(others):
        return CpuUse(others, 2, 0.5, "/proc/stat")

    assert not busy.is_busy(use(0.05), threads=2)       # an idle machine's background
    assert not busy.is_busy(use(0.45), threads=2)
    assert busy.is_busy(use(0.9), threads=2)            # one other process on one core
    assert not busy.is_busy(use(1.0), threads=1)        # ... leaves a 1-thread run its core
    assert busy.is_busy(use(1.8), threads=1)
    assert busy.is_busy(use(0.9), threads=4)            # more threads than cores
    assert busy.busy_warning(use(0.1), 2, "before the run") is None
    msg = busy.busy_warning(use(1.9), 2, "before the run")
    assert msg.startswith("WARNING: the machine is busy before the run") and "1.90 of 2 CPUs" in msg


def test_header_ignores_the_load_average_of_a_build_that_just_ended():
    """The README's `pip install ... && fastconv-bench`: load average 5.5 from the compile, nobody
    running now -> no warning; somebody running now -> the warning."""
    info = {"fastconv": "x", "numpy": "y", "cpu": "cpu", "cpu_count": 2, "loadavg": (5.5, 2.3, 0.9)}
    peaks = {"float32": 1.0, "float64": 1.0, "copy_GBps": 1.0}
    quiet = bench.header_lines(info, {"native": 2}, peaks, CpuUse(0.03, 2, 0.5, "/proc/stat"))
    assert not [ln for ln in quiet if "WARNING" in ln]
    assert "other processes used 0.03 of 2 CPUs" in quiet[2] and "load average 5.50" in quiet[2]
    loaded = bench.header_lines(info, {"native": 2}, peaks, CpuUse(1.7, 2, 0.5, "/proc/stat"))
    assert [ln for ln in loaded if ln.startswith("WARNING: the machine is busy before the run")]
    # where /proc/stat is missing, the load average stands in, and says so
    fallback = bench.header_lines(info, {"native": 2}, peaks, CpuUse(5.5, 2, 0.5, "load average"))
    assert [ln for ln in fallback if "1-minute load average 5.50" in ln and ln.startswith("WARNING")]
    # ... with its old rule, as it counts this process too: 3 of 4 CPUs
    assert not busy.is_busy(CpuUse(2.9, 4, 60.0, "load average"), threads=4)
    assert busy.is_busy(CpuUse(3.0, 4, 60.0, "load average"), threads=4)


@pytest.mark.skipif(busy.read_busy_seconds(busy.usable_cpus()) is None, reason="needs /proc/stat")
def test_a_real_busy_process_is_seen():
    """One process spinning on a core: the sample sees at least the share it got (other users of
    this shared machine can only add to it)."""
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)  # past its start-up
        use = busy.sample(0.6)
        assert spinner.poll() is None
    finally:
        spinner.kill()
        spinner.wait()
    assert use.source == "/proc/stat"
    assert busy.is_busy(use, threads=use.cpus), use
