"""``fastconv-bench --plot``: the speed-ups over NumPy as a bar chart (needs matplotlib)."""
from __future__ import annotations

import math
from typing import Sequence

import fastconv

from .cases import BACKEND_ORDER, DTYPES
from .timing import Result, _median_of


def write_plot(path: str, results: Sequence[Result]) -> None:
    """Horizontal bars from 1x: speed-up of each non-NumPy backend over NumPy, one panel per dtype."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, NullFormatter

    dtypes = [dt for dt in DTYPES if any(r.dtype == dt for r in results)]
    others = [b for b in BACKEND_ORDER if b != "numpy" and any(r.backend == b for r in results)]
    groups = list(dict.fromkeys((r.case, r.op) for r in results))
    fig, axes = plt.subplots(1, len(dtypes), figsize=(6.5 * len(dtypes), 1.2 + 0.45 * len(groups)),
                             squeeze=False, sharey=True)
    height = 0.8 / max(1, len(others))
    for ax, dt in zip(axes[0], dtypes):
        for k, be in enumerate(others):
            for i, (case, op) in enumerate(groups):
                v = _median_of(results, case, dt, op, "numpy") / _median_of(results, case, dt, op, be)
                if not math.isfinite(v):
                    continue
                y = i + (k - (len(others) - 1) / 2) * height
                ax.barh(y, v - 1, left=1, height=height, color=f"C{k}", label=be if i == 0 else None)
                ax.text(v, y, f" {v:.2g}x ", va="center", ha="left" if v >= 1 else "right", fontsize=7)
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}x"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        lo, hi = ax.get_xlim()
        ax.set_xlim(min(lo, 0.5) / 1.5, max(hi, 2) * 1.5)
        ax.axvline(1.0, color="k", lw=0.8)
        ax.set_yticks(range(len(groups)))
        ax.set_yticklabels([f"{c} {op}" for c, op in groups], fontsize=8)
        ax.set_ylim(len(groups) - 0.5, -0.5)
        ax.set_xlabel("speed-up vs numpy (numpy time / backend time, log scale)")
        ax.set_title(f"{dt}, {fastconv.get_num_threads()} threads")
        ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
