"""The book's training step in fresh processes, NumPy imported before fastconv (the book's
order) and after it, with and without fastconv's OpenBLAS hook (``fastconv._blas``).

Two steps of the SimpleConvNet case: every layer fastconv's (no NumPy BLAS call in the step)
and the same step with the book's NumPy Affine layers (NumPy's BLAS between fastconv calls,
the thread fight the hook removes). Each configuration runs in its own interpreter, because
the import order and OpenBLAS's spin setting are fixed when a process loads them.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Dict, List, Sequence

_CHILD = r"""
import json, sys, time
{imports}
import numpy as np
from fastconv import _blas, bench
case = bench.CASES_BY_NAME["simpleconvnet-train"]
out = {{}}
for label, numpy_affine in (("all fastconv layers", False), ("book's NumPy Affine", True)):
    step = bench.SimpleConvNetStep(case, np.float64, np.random.default_rng(0), numpy_affine=numpy_affine)
    bench.warm_up(step, {warm})
    times = []
    for _ in range({repeats}):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    out[label] = sorted(times)[len(times) // 2]
out["hooked"] = _blas.hooked()
print(json.dumps(out))
"""

CONFIGS = (  # (label, imports, environment)
    ("NumPy first (the book's order)", "import numpy\nimport fastconv", {}),
    ("fastconv first", "import fastconv\nimport numpy", {}),
    ("NumPy first, hook off", "import numpy\nimport fastconv", {"FASTCONV_BLAS_THREADS": "0"}),
)


STEPS = ("all fastconv layers", "book's NumPy Affine")  # the child's two steps, as it labels them


def _run_config(label: str, imports: str, extra: Dict[str, str], threads: int, repeats: int, warm: float) -> Dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), **extra)
    for key in ("OPENBLAS_THREAD_TIMEOUT", "FASTCONV_BLAS_THREADS"):
        if key not in extra:
            env.pop(key, None)
    code = _CHILD.format(imports=imports, warm=warm, repeats=repeats)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"import-order run '{label}' failed:\n{proc.stderr.strip()}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def measure(threads: int, repeats: int = 40, warm: float = 0.5, rounds: int = 3) -> List[Dict]:
    """Median step time (s) of both steps in each configuration, one fresh process per
    configuration and round. Rounds rotate the order of the configurations: the first process
    of a sequence ran 10-60 % slower whatever its import order (benchmarks/NOTES.md section 37),
    so each figure is the median over rounds of the per-process medians."""
    runs: Dict[str, List[Dict]] = {label: [] for label, _, _ in CONFIGS}
    for r in range(max(rounds, 1)):
        for i in range(len(CONFIGS)):
            label, imports, extra = CONFIGS[(i + r) % len(CONFIGS)]
            runs[label].append(_run_config(label, imports, extra, threads, repeats, warm))
    rows = []
    for label, _, _ in CONFIGS:
        row: Dict = dict(config=label, rounds=len(runs[label]), hooked=runs[label][0]["hooked"])
        for step in STEPS:
            values = sorted(run[step] for run in runs[label])
            row[step] = values[len(values) // 2]
            row[step + " per round"] = [run[step] for run in runs[label]]
        rows.append(row)
    return rows


def format_rows(rows: Sequence[Dict]) -> str:
    base = rows[0]
    width = max(len(r["config"]) for r in rows)
    lines = [f"{'SimpleConvNet step, batch 100, f64 weights':<{width}}  " + "  ".join(f"{s:>24}" for s in STEPS)]
    for r in rows:
        cells = []
        for s in STEPS:
            ratio = base[s] / r[s] if r is not base else 1.0
            cells.append(f"{r[s] * 1e3:8.2f} ms ({ratio:4.2f}x)".rjust(24))
        lines.append(f"{r['config']:<{width}}  " + "  ".join(cells) + ("" if r["hooked"] else "  [no hook]"))
    lines.append(f"(x: speed relative to the first row; each figure is the median over {rows[0].get('rounds', 1)} rounds "
                 "of fresh processes, the configurations' order rotated per round)")
    return "\n".join(lines)
