"""Is the machine busy? fastconv-bench measures it instead of trusting the load average.

The 1-minute load average decays over minutes: right after the README's chained
``pip install ... && fastconv-bench`` it still counts the compile that just ended, and a
warning based on it fired on a machine that was idle by then. Instead, take the CPU time the
CPUs this process may run on spent busy (``/proc/stat``: user, nice, system, irq, softirq and
steal, the time a hypervisor gave our virtual CPU to someone else) over a window, minus this
process's own CPU time and that of its finished children (``os.times``). What is left is what
other processes used, in CPUs' worth over the window.

* Before the run: a 0.5 s window while the benchmark sleeps. It sees other processes; it does
  not see an overcommitted host (a sleeping virtual CPU is not counted as stolen).
* Over the whole run: the same difference between the first and last snapshot. It sees both,
  since our threads want the CPUs all along.

Where ``/proc/stat`` is missing (macOS, Windows) the 1-minute load average stands in, named as
such, with the rule used before (busy from 0.75 per CPU).
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Callable, Iterable, Optional

# /proc/stat's per-CPU columns: user nice system idle iowait irq softirq steal guest guest_nice;
# guest time is already inside user and nice.
_BUSY_COLUMNS = (0, 1, 2, 5, 6, 7)
_TICK_S = 1.0 / os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 0.01

# Other processes may use this many CPUs on top of those the run leaves free before the run
# is called busy: one other process on one of 2 cores stalls every 2-thread parallel region.
BUSY_MARGIN_CPUS = 0.5


def usable_cpus() -> Iterable[int]:
    """The CPUs this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return range(os.cpu_count() or 1)


def read_busy_seconds(cpus: Iterable[int], stat_text: Optional[str] = None) -> Optional[float]:
    """Busy CPU seconds since boot of ``cpus``, from /proc/stat (or ``stat_text``); None where
    it cannot be read."""
    if stat_text is None:
        try:
            with open("/proc/stat") as f:
                stat_text = f.read()
        except OSError:
            return None
    wanted = {f"cpu{c}" for c in cpus}
    ticks, seen = 0, 0
    for line in stat_text.splitlines():
        fields = line.split()
        if fields and fields[0] in wanted:
            values = [int(v) for v in fields[1:]]
            ticks += sum(values[i] for i in _BUSY_COLUMNS if i < len(values))
            seen += 1
    return ticks * _TICK_S if seen else None


def own_cpu_seconds() -> float:
    """CPU time of this process (every thread) and of its children that have been waited for."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


@dataclass(frozen=True)
class Snapshot:
    wall_s: float
    busy_s: Optional[float]  # None: no /proc/stat
    own_s: float


@dataclass(frozen=True)
class CpuUse:
    """What other processes used over a window, in CPUs' worth (1.0 = one CPU all along)."""

    others: float
    cpus: int
    seconds: float
    source: str  # "/proc/stat" or "load average"

    def describe(self) -> str:
        if self.source == "load average":
            return f"1-minute load average {self.others:.2f} on {self.cpus} CPUs (no /proc/stat here)"
        return f"other processes used {self.others:.2f} of {self.cpus} CPUs over {self.seconds:.1f} s"


def snapshot(cpus: Optional[Iterable[int]] = None, read_busy: Callable = read_busy_seconds,
             own: Callable[[], float] = own_cpu_seconds, clock: Callable[[], float] = time.monotonic) -> Snapshot:
    return Snapshot(clock(), read_busy(list(usable_cpus() if cpus is None else cpus)), own())


def use_between(a: Snapshot, b: Snapshot, cpus: int) -> CpuUse:
    """Other processes' CPU use between two snapshots."""
    seconds = max(b.wall_s - a.wall_s, 1e-9)
    if a.busy_s is None or b.busy_s is None:
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
        return CpuUse(load, cpus, seconds, "load average")
    others = (b.busy_s - a.busy_s) - (b.own_s - a.own_s)
    # /proc/stat and os.times count whole ticks: clip the rounding to the possible range.
    return CpuUse(min(max(others / seconds, 0.0), float(cpus)), cpus, seconds, "/proc/stat")


def sample(seconds: float = 0.5, cpus: Optional[Iterable[int]] = None) -> CpuUse:
    """Other processes' CPU use over the next ``seconds`` (this process sleeps meanwhile)."""
    cpus = list(usable_cpus() if cpus is None else cpus)
    a = snapshot(cpus)
    time.sleep(seconds)
    return use_between(a, snapshot(cpus), len(cpus))


def busy_threshold(cpus: int, threads: int) -> float:
    """Other processes' use above which a run on ``threads`` threads is disturbed: the CPUs the
    run leaves free plus :data:`BUSY_MARGIN_CPUS`."""
    return max(cpus - min(threads, cpus), 0) + BUSY_MARGIN_CPUS


# The load average counts this process too and cannot tell who is runnable: where it stands in,
# the run is called busy from this fraction of the CPUs (the rule before /proc/stat was read).
LOAD_AVERAGE_BUSY_FRACTION = 0.75


def is_busy(use: CpuUse, threads: int) -> bool:
    if use.source == "load average":
        return use.others >= LOAD_AVERAGE_BUSY_FRACTION * use.cpus
    return use.others > busy_threshold(use.cpus, threads)


def busy_warning(use: CpuUse, threads: int, when: str) -> Optional[str]:
    """The warning to print when ``use`` (measured ``when``) disturbs a ``threads``-thread run."""
    if not is_busy(use, threads):
        return None
    return (f"WARNING: the machine is busy {when}: {use.describe()}; this run uses {threads} threads. "
            "Figures are noisy, and multi-threaded ones (PyTorch's above all) can collapse while other "
            "processes take the cores; compare with --threads 1 or rerun when it is quiet.")
