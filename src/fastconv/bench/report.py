"""What a run prints and writes: the header (machine, kernels, threads, measured ceilings, busy
check), the results table with its rates, % of the same-run ceilings and speed-ups
(:func:`derived`), the legend, the pooling rows' copy ceilings, and the ``--json`` file."""
from __future__ import annotations

import json
import math
import os
import platform
import time
from dataclasses import asdict
from typing import Any, Dict, List, Optional, Sequence, Tuple

import fastconv
from fastconv import _config

from . import busy
from .cases import CASES, SHORT_DTYPE
from .ceilings import _megabytes
from .timing import Result, Settings, _median_of


def derived(r: Result, results: Sequence[Result], peaks: Dict[str, float]) -> Dict[str, float]:
    """Rates, fraction of the same-run ceiling and speed-ups of one result."""
    t = r.median_s
    d: Dict[str, float] = {"median_s": t}
    if r.flop:
        d["gflops"] = r.flop / t / 1e9
        d["pct_fma_peak"] = 100 * d["gflops"] / peaks[r.dtype]
    elif r.bytes:
        # the row's own copy ceiling; the header's large copy for a Result made without one
        d["gbps"] = r.bytes / t / 1e9
        d["copy_GBps"] = r.copy_GBps or peaks["copy_GBps"]
        d["pct_copy_bw"] = 100 * d["gbps"] / d["copy_GBps"]
    for other in ("numpy", "torch"):
        d[f"speedup_vs_{other}"] = _median_of(results, r.case, r.dtype, r.op, other) / t
    return d


def _fmt(v: float, spec: str, suffix: str = "") -> str:
    return "-" if v is None or not math.isfinite(v) else format(v, spec) + suffix


def format_table(results: Sequence[Result], peaks: Dict[str, float]) -> str:
    """The results table: one row per backend, grouped by case / dtype / op."""
    head = ("case", "dtype", "op", "backend", "median ms", "rate", "% FMA peak", "% copy bw", "vs numpy", "vs torch",
            "check")
    rows: List[Tuple[str, ...]] = []
    prev: Tuple[Optional[str], ...] = (None, None, None)
    for r in results:
        key = (r.case, r.dtype, r.op)
        new_block = key[:2] != prev[:2]  # a new case or dtype: blank line, full label
        if new_block and prev[0] is not None:
            rows.append(("",) * len(head))
        label = (r.case if new_block else "", SHORT_DTYPE[r.dtype] if new_block else "",
                 r.op if key != prev else "")
        prev = key
        if not r.samples_s:
            rows.append(label + (r.backend,) + ("-",) * 7 + (r.check,))
            continue
        d = derived(r, results, peaks)
        rate = _fmt(d.get("gflops"), ".1f", " GF/s") if r.flop else _fmt(d.get("gbps"), ".1f", " GB/s")
        rows.append(label + (
            r.backend, _fmt(d["median_s"] * 1e3, ".3f"), rate,
            _fmt(d.get("pct_fma_peak", math.nan), ".1f", "%"), _fmt(d.get("pct_copy_bw", math.nan), ".1f", "%"),
            _fmt(d["speedup_vs_numpy"], ".2f", "x"), _fmt(d["speedup_vs_torch"], ".2f", "x"),
            f"ok {r.max_rel_err:.0e}" if r.check == "ok" and r.max_rel_err else r.check))
    widths = [max(len(row[i]) for row in rows + [head]) for i in range(len(head))]
    right = {4, 5, 6, 7, 8, 9}

    def line(row):
        return "  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))).rstrip()

    out = [line(head), "  ".join("-" * w for w in widths)]
    out += [line(row) for row in rows]
    return "\n".join(out)


LEGEND = (
    "rate: GFLOP/s for conv (forward 2*N*OH*OW*FN*C*kh*kw FLOP, backward twice that) and the training step\n"
    "      (its conv and affine GEMMs), GB/s of bytes read + written for pooling: fwd reads x and writes out and\n"
    "      the int64 indices, bwd reads dout and the indices and writes dx.\n"
    "% FMA peak (conv, train): of the FMA peak measured at the start of this run.\n"
    "% copy bw (pool, memory-bound): of np.copyto's bandwidth on a working set of the row's byte count, measured\n"
    "      right before and after the row (the higher of the two); above 100 % only by a read-heavier mix\n"
    "      than a copy's or by noise (benchmarks/README.md).\n"
    "vs numpy / vs torch: their median time / this row's (higher is faster). check: max |x - numpy| / max |numpy|.\n"
    "train-step: the book's SimpleConvNet on float32 images (as load_mnist gives them); f32 / f64 is the weights'\n"
    "      dtype (the book's np.random.randn weights are float64, so f64 is the book's own configuration)."
)


def machine_info() -> Dict[str, Any]:
    info: Dict[str, Any] = dict(_config.config())
    info["cpu_count"] = os.cpu_count()
    try:
        with open("/proc/cpuinfo") as f:
            info["cpu"] = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), "")
    except OSError:
        info["cpu"] = platform.processor()
    if hasattr(os, "getloadavg"):
        info["loadavg"] = os.getloadavg()
    if "torch" in info["backends"]:  # available_backends() has imported it
        import torch

        info["torch"] = torch.__version__
    return info


def header_lines(info: Dict[str, Any], threads: Dict[str, Any], peaks: Dict[str, float],
                 cpu_use: Optional[busy.CpuUse] = None) -> List[str]:
    """The run's header; ``cpu_use`` (other processes' use, sampled just before) decides the
    busy warning, the load average where it is not given."""
    kernels = f"gemm f32 {info.get('gemm_f32')}, f64 {info.get('gemm_f64')}, selection {info.get('gemm_selection')}"
    lines = [
        f"fastconv {info['fastconv']}  ({info.get('compiler')}, {info.get('openmp')}; numpy {info['numpy']}"
        + (f", torch {info['torch']}" if "torch" in info else "") + ")",
        f"kernels: {kernels}; cpu isas {', '.join(info.get('cpu_isas', []))}",
        f"cpu: {info.get('cpu', '?')} x{info['cpu_count']}; "
        + (f"just before the run {cpu_use.describe()}; " if cpu_use and cpu_use.source != "load average" else "")
        + "load average " + " ".join(f"{v:.2f}" for v in info.get("loadavg", ()))
        + (" (decays over minutes: not the busy check)" if cpu_use and cpu_use.source != "load average" else ""),
        "threads: " + ", ".join(f"{k} {v}" for k, v in threads.items())
        + f"; numpy's BLAS spin: {info.get('blas_spin', '?')}",
        f"measured peaks (this run, {threads['native']} threads): FMA f32 {peaks['float32']:.1f} GFLOP/s, "
        f"f64 {peaks['float64']:.1f} GFLOP/s; large copy (256 MiB) {peaks['copy_GBps']:.1f} GB/s "
        "(pooling rows: a copy of their own size)",
    ]
    if cpu_use is None:
        cpu_use = busy.CpuUse(info.get("loadavg", (0.0,))[0], info.get("cpu_count") or 1, 60.0, "load average")
    warning = busy.busy_warning(cpu_use, threads["native"], "before the run")
    if warning:
        lines.append(warning)
    return lines


def copy_ceiling_lines(results: Sequence[Result], limit: int = 8) -> List[str]:
    """The pooling rows' copy ceilings: per (case, dtype), its working set and each op's ceiling."""
    seen: Dict[Tuple[str, str], Dict[str, Any]] = {}
    for r in results:
        if r.bytes and r.copy_GBps:
            entry = seen.setdefault((r.case, r.dtype), {"bytes": r.bytes, "ops": {}})
            entry["ops"][r.op.split("-")[-1]] = r.copy_GBps
    if not seen:
        return []
    if len(seen) > limit:
        values = [v for e in seen.values() for v in e["ops"].values()]
        return [f"copy ceilings of the {len(seen)} pooling working sets (np.copyto over the same byte count, this "
                f"run): {min(values):.1f} to {max(values):.1f} GB/s (--json has each row's)"]
    return ["copy ceilings (np.copyto over the same byte count, this run): " + "; ".join(
        f"{case} {SHORT_DTYPE[dt]} {_megabytes(e['bytes'])} MB: "
        + " / ".join(f"{v:.1f}" for v in e["ops"].values()) + f" GB/s ({' / '.join(e['ops'])})"
        for (case, dt), e in seen.items())]


def write_json(path: str, results: Sequence[Result], peaks, info, threads, settings: Settings, argv) -> None:
    doc = {
        "fastconv": fastconv.__version__,
        "argv": list(argv),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": info,
        "threads": threads,
        "peaks": {"fma_gflops_float32": peaks["float32"], "fma_gflops_float64": peaks["float64"],
                  "copy_GBps": peaks["copy_GBps"]},
        "settings": asdict(settings),
        "cases": {c.name: dict(asdict(c), describe=c.describe()) for c in CASES},
        "results": [dict(asdict(r), **(derived(r, results, peaks) if r.samples_s else {})) for r in results],
    }

    def clean(o):  # JSON has no inf/nan
        if isinstance(o, float) and not math.isfinite(o):
            return None
        if isinstance(o, dict):
            return {k: clean(v) for k, v in o.items()}
        if isinstance(o, (list, tuple)):
            return [clean(v) for v in o]
        return o

    with open(path, "w") as f:
        json.dump(clean(doc), f, indent=1)
