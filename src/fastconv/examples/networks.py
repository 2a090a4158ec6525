"""The book's convolutional networks, built on :mod:`fastconv.layers`.

* :class:`SimpleConvNet` is ch07's ``SimpleConvNet``:
  conv 5x5 - ReLU - 2x2 max-pool - affine - ReLU - affine - softmax.
* :class:`DeepConvNet` is ch08's ``DeepConvNet``: three blocks of (3x3 conv - ReLU - 3x3 conv -
  ReLU - 2x2 max-pool), then affine - ReLU - dropout - affine - dropout - softmax, with He
  initialisation. ``width`` scales the channel counts (1.0 = the book's 16/16/32/32/64/64).
* :class:`SeedCNN` is the PyTorch MNIST CNN of the seed documents: three blocks of (3x3 conv -
  ReLU - 2x2 max-pool, the last pool padded), affine 625 - ReLU - dropout 0.5 - affine 10, with
  PyTorch's initialisation and layer semantics, so that it computes what the PyTorch model does
  (:mod:`fastconv.examples.torch_twin` builds that model and copies weights across).

All keep the book's interface: a ``params`` dict of arrays shared with the layers (float64;
``astype(np.float32)`` converts a network),
``predict``, ``loss``, ``gradient`` (backprop; returns a dict keyed like ``params``),
``accuracy`` and ``save_params`` / ``load_params`` (a pickle of a dict of arrays; loading
reassigns ``layer.W`` / ``layer.b``). Unlike the book, shapes are derived from ``input_dim``, so
any image size works (for example the 8x8 scikit-learn digits), and random numbers come from an
optional ``rng`` (``np.random`` by default, as in the book) so two runs can be made identical.
"""
from __future__ import annotations

import pickle
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..layers import Convolution, Pooling, Relu
from .layers import Affine, Dropout, InvertedDropout, SoftmaxCrossEntropyLoss, SoftmaxWithLoss

__all__ = ["ConvNetBase", "SimpleConvNet", "DeepConvNet", "SeedCNN"]


def _conv_out(size: int, k: int, stride: int, pad: int) -> int:
    out = (size + 2 * pad - k) // stride + 1
    if out < 1:
        raise ValueError(f"a {k}x{k} window with pad {pad} does not fit a {size}-pixel input")
    return out


class ConvNetBase:
    """What both networks share: forward/backward through ``self.layers``, accuracy, save/load.

    Subclasses fill ``self.params``, ``self.layers`` (in forward order), ``self.last_layer`` and
    ``self.param_layers`` (indices into ``self.layers`` of the layers owning W1/b1, W2/b2, ...).
    """

    params: Dict[str, np.ndarray]
    layers: List[object]
    param_layers: Tuple[int, ...]

    @property
    def dtype(self) -> np.dtype:
        """The parameters' dtype (float64 unless :meth:`astype` changed it)."""
        return next(iter(self.params.values())).dtype

    def astype(self, dtype) -> "ConvNetBase":
        """Convert every parameter to ``dtype`` (float32 or float64) in place and point the layers
        at the new arrays; inputs are then cast to it too. Returns ``self``."""
        dtype = np.dtype(dtype)
        if dtype not in (np.float32, np.float64):
            raise ValueError(f"networks compute in float32 or float64, not {dtype}")
        self._set_params({key: val.astype(dtype) for key, val in self.params.items()})
        return self

    def _set_params(self, params: Dict[str, np.ndarray]) -> None:
        self.params.update(params)
        for i, idx in enumerate(self.param_layers, start=1):
            self.layers[idx].W = self.params[f"W{i}"]
            self.layers[idx].b = self.params[f"b{i}"]

    def predict(self, x, train_flg=False):
        """Class scores (N, output_size) before the softmax (``x`` cast to :attr:`dtype`)."""
        x = np.asarray(x, dtype=self.dtype)
        for layer in self.layers:
            if isinstance(layer, Dropout):
                x = layer.forward(x, train_flg)
            else:
                x = layer.forward(x)
        return x

    def loss(self, x, t):
        """Mean cross-entropy of a training forward pass (dropout active)."""
        y = self.predict(x, train_flg=True)
        return self.last_layer.forward(y, t)

    def gradient(self, x, t):
        """Gradients of the loss by backpropagation, keyed like ``params``.

        The loss of this forward pass stays in ``self.last_layer.loss``, so a training loop can
        log it without a second forward pass (the book's ``Trainer`` computes it again).
        """
        self.loss(x, t)
        dout = self.last_layer.backward(1)
        for layer in reversed(self.layers):
            dout = layer.backward(dout)
        grads = {}
        for i, idx in enumerate(self.param_layers, start=1):
            grads[f"W{i}"] = self.layers[idx].dW
            grads[f"b{i}"] = self.layers[idx].db
        return grads

    def accuracy(self, x, t, batch_size=100):
        """Fraction of correct predictions, evaluated in batches (the last one may be shorter)."""
        t = np.asarray(t)
        if t.ndim != 1:
            t = np.argmax(t, axis=1)
        n = x.shape[0]
        if n == 0:
            return float("nan")
        correct = 0
        for start in range(0, n, batch_size):
            y = self.predict(x[start:start + batch_size], train_flg=False)
            correct += int(np.sum(np.argmax(y, axis=1) == t[start:start + batch_size]))
        return correct / n

    def save_params(self, file_name="params.pkl"):
        """Pickle ``{name: array}`` (plain NumPy arrays, the book's format)."""
        params = {key: np.asarray(val) for key, val in self.params.items()}
        with open(file_name, "wb") as f:
            pickle.dump(params, f)

    def load_params(self, file_name="params.pkl"):
        """Load a pickle written by :meth:`save_params` and point the layers at the new arrays.

        Only load files you trust: unpickling can run code.
        """
        with open(file_name, "rb") as f:
            params = pickle.load(f)
        missing = sorted(set(self.params) - set(params))
        if missing:
            raise ValueError(f"{file_name}: parameters {missing} are missing (is it from another network?)")
        loaded = {}
        for key, val in params.items():
            if key not in self.params:
                continue
            val = np.array(val, dtype=self.params[key].dtype)  # keeps this network's dtype
            if val.shape != self.params[key].shape:
                raise ValueError(
                    f"{file_name}: {key} has shape {val.shape}, this network needs {self.params[key].shape} "
                    "(was it saved with other --net/--width options or another image size?)"
                )
            loaded[key] = val
        self._set_params(loaded)


class SimpleConvNet(ConvNetBase):
    """conv - relu - pool - affine - relu - affine - softmax (the book's ch07 network).

    Parameters follow the book: ``input_dim=(C, H, W)``, ``conv_param`` with ``filter_num``,
    ``filter_size``, ``pad``, ``stride``; ``hidden_size``; ``output_size``; ``weight_init_std``
    (weights are ``weight_init_std * randn``, biases zero, all float64).
    """

    def __init__(self, input_dim=(1, 28, 28),
                 conv_param=None, hidden_size=100, output_size=10, weight_init_std=0.01, rng=None):
        cp = {"filter_num": 30, "filter_size": 5, "pad": 0, "stride": 1}
        cp.update(conv_param or {})
        rng = np.random if rng is None else rng
        C, H, W = input_dim
        fn, fs = cp["filter_num"], cp["filter_size"]
        oh = _conv_out(H, fs, cp["stride"], cp["pad"])
        ow = _conv_out(W, fs, cp["stride"], cp["pad"])
        ph, pw = _conv_out(oh, 2, 2, 0), _conv_out(ow, 2, 2, 0)  # after the 2x2 pool

        self.params = {
            "W1": weight_init_std * rng.randn(fn, C, fs, fs),
            "b1": np.zeros(fn),
            "W2": weight_init_std * rng.randn(fn * ph * pw, hidden_size),
            "b2": np.zeros(hidden_size),
            "W3": weight_init_std * rng.randn(hidden_size, output_size),
            "b3": np.zeros(output_size),
        }
        p = self.params
        self.layers = [
            Convolution(p["W1"], p["b1"], cp["stride"], cp["pad"]),
            Relu(),
            Pooling(pool_h=2, pool_w=2, stride=2),
            Affine(p["W2"], p["b2"]),
            Relu(),
            Affine(p["W3"], p["b3"]),
        ]
        self.param_layers = (0, 3, 5)
        self.last_layer = SoftmaxWithLoss()


class DeepConvNet(ConvNetBase):
    """The book's ch08 network (99%+ on full MNIST), with He initialisation.

    ``conv_params`` is a sequence of six dicts (``filter_num``, ``filter_size``, ``pad``,
    ``stride``); the default is the book's, with channel counts scaled by ``width`` (at least 1).
    Note the book's fourth convolution pads by 2, so a 28x28 input ends at 64 x 4 x 4.
    """

    BOOK_CONV_PARAMS = (
        {"filter_num": 16, "filter_size": 3, "pad": 1, "stride": 1},
        {"filter_num": 16, "filter_size": 3, "pad": 1, "stride": 1},
        {"filter_num": 32, "filter_size": 3, "pad": 1, "stride": 1},
        {"filter_num": 32, "filter_size": 3, "pad": 2, "stride": 1},
        {"filter_num": 64, "filter_size": 3, "pad": 1, "stride": 1},
        {"filter_num": 64, "filter_size": 3, "pad": 1, "stride": 1},
    )

    def __init__(self, input_dim=(1, 28, 28), conv_params: Optional[Sequence[dict]] = None,
                 hidden_size=50, output_size=10, width=1.0, dropout_ratio=0.5, rng=None):
        if conv_params is None:
            conv_params = [dict(cp, filter_num=max(1, int(round(cp["filter_num"] * width))))
                           for cp in self.BOOK_CONV_PARAMS]
        if len(conv_params) != 6:
            raise ValueError("DeepConvNet needs six conv_params")
        dropout_rng = rng  # None: the masks come from np.random at each call (and the network pickles)
        rng = np.random if rng is None else rng
        C, H, W = input_dim

        self.params = {}
        self.layers = []
        param_layers = []
        channels = C
        for i, cp in enumerate(conv_params, start=1):
            fn, fs = cp["filter_num"], cp["filter_size"]
            he = np.sqrt(2.0 / (channels * fs * fs))  # He init: fan-in of a ReLU unit
            self.params[f"W{i}"] = he * rng.randn(fn, channels, fs, fs)
            self.params[f"b{i}"] = np.zeros(fn)
            param_layers.append(len(self.layers))
            self.layers.append(Convolution(self.params[f"W{i}"], self.params[f"b{i}"], cp["stride"], cp["pad"]))
            self.layers.append(Relu())
            H, W = _conv_out(H, fs, cp["stride"], cp["pad"]), _conv_out(W, fs, cp["stride"], cp["pad"])
            channels = fn
            if i % 2 == 0:
                self.layers.append(Pooling(pool_h=2, pool_w=2, stride=2))
                H, W = _conv_out(H, 2, 2, 0), _conv_out(W, 2, 2, 0)

        flat = channels * H * W
        self.params["W7"] = np.sqrt(2.0 / flat) * rng.randn(flat, hidden_size)
        self.params["b7"] = np.zeros(hidden_size)
        self.params["W8"] = np.sqrt(2.0 / hidden_size) * rng.randn(hidden_size, output_size)
        self.params["b8"] = np.zeros(output_size)
        param_layers.append(len(self.layers))
        self.layers += [Affine(self.params["W7"], self.params["b7"]), Relu(),
                        Dropout(dropout_ratio, rng=dropout_rng)]
        param_layers.append(len(self.layers))
        self.layers += [Affine(self.params["W8"], self.params["b8"]), Dropout(dropout_ratio, rng=dropout_rng)]
        self.param_layers = tuple(param_layers)
        self.last_layer = SoftmaxWithLoss()


class SeedCNN(ConvNetBase):
    """The seed documents' PyTorch MNIST CNN (the "deep CNN" lab of *Deep Learning Zero to All*,
    season 2) as fastconv layers, layer for layer::

        layer1: Conv2d(1, 32, 3, stride 1, pad 1) - ReLU - MaxPool2d(2, 2)             28 -> 14
        layer2: Conv2d(32, 64, 3, stride 1, pad 1) - ReLU - MaxPool2d(2, 2)            14 -> 7
        layer3: Conv2d(64, 128, 3, stride 1, pad 1) - ReLU - MaxPool2d(2, 2, pad 1)     7 -> 4
        flatten (N, 128*4*4) in C order, as ``out.view(N, -1)``
        layer4: Linear(2048, 625) - ReLU - Dropout(p = 1 - keep_prob = 0.5)
        fc2:    Linear(625, 10)
        loss:   CrossEntropyLoss (softmax inside)

    Parameters ``W1``..``W3`` (conv filters, (FN, C, 3, 3)), ``W4``, ``W5`` (affine, stored
    (in, out) as the book's ``Affine``, i.e. PyTorch's ``Linear.weight`` transposed) and
    ``b1``..``b5``. Initialisation as the seed's model gets it from PyTorch: ``fc1`` and ``fc2``
    weights Xavier-uniform (the seed's ``xavier_uniform_``), every other weight and every bias
    PyTorch's default ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``, drawn from ``rng`` (a
    ``np.random.RandomState``; ``np.random`` by default) in float64.

    PyTorch semantics where they differ from the book's: the padded pool pads with -inf
    (fastconv's ``Pooling(2, 2, stride=2, pad=1)``, as ``MaxPool2d(2, 2, padding=1)``), the
    dropout is inverted (:class:`InvertedDropout`: scaled by 1/keep_prob while training, the
    identity at test time) and the loss is the exact cross-entropy (:class:`SoftmaxCrossEntropyLoss`,
    no ``+ 1e-7``). ``width`` scales the channel counts and the hidden size (1.0 = 32/64/128 and
    625); ``input_dim`` may be any image size (the sizes follow from it).
    """

    SEED_CHANNELS = (32, 64, 128)
    SEED_HIDDEN = 625

    def __init__(self, input_dim=(1, 28, 28), output_size=10, width=1.0, keep_prob=0.5, rng=None,
                 dtype=np.float64):
        dropout_rng = rng  # None: the dropout draws from np.random at each call (and the network pickles)
        rng = np.random if rng is None else rng
        C, H, W = input_dim
        channels = [max(1, int(round(c * width))) for c in self.SEED_CHANNELS]
        hidden = max(1, int(round(self.SEED_HIDDEN * width)))

        def uniform(bound, shape):
            return rng.uniform(-bound, bound, size=shape)

        self.params = {}
        self.layers = []
        param_layers = []
        cin = C
        for i, cout in enumerate(channels, start=1):
            fan_in = cin * 3 * 3
            # torch's Conv2d.reset_parameters: kaiming_uniform_(a=sqrt(5)) = U(+-1/sqrt(fan_in)), bias alike
            self.params[f"W{i}"] = uniform(1.0 / np.sqrt(fan_in), (cout, cin, 3, 3))
            self.params[f"b{i}"] = uniform(1.0 / np.sqrt(fan_in), (cout,))
            param_layers.append(len(self.layers))
            pad = 1 if i == len(channels) else 0  # layer3's MaxPool2d(2, 2, padding=1)
            self.layers += [Convolution(self.params[f"W{i}"], self.params[f"b{i}"], stride=1, pad=1), Relu(),
                            Pooling(pool_h=2, pool_w=2, stride=2, pad=pad)]
            H, W = _conv_out(H, 3, 1, 1), _conv_out(W, 3, 1, 1)
            H, W = _conv_out(H, 2, 2, pad), _conv_out(W, 2, 2, pad)
            cin = cout

        flat = cin * H * W
        for i, (fan_in, fan_out) in enumerate([(flat, hidden), (hidden, output_size)], start=len(channels) + 1):
            # the seed's torch.nn.init.xavier_uniform_ on the weight; Linear's default on the bias
            self.params[f"W{i}"] = uniform(np.sqrt(6.0 / (fan_in + fan_out)), (fan_in, fan_out))
            self.params[f"b{i}"] = uniform(1.0 / np.sqrt(fan_in), (fan_out,))
        p = self.params
        param_layers.append(len(self.layers))
        self.layers += [Affine(p["W4"], p["b4"]), Relu(), InvertedDropout(1.0 - keep_prob, rng=dropout_rng)]
        param_layers.append(len(self.layers))
        self.layers.append(Affine(p["W5"], p["b5"]))
        self.param_layers = tuple(param_layers)
        self.last_layer = SoftmaxCrossEntropyLoss()
        self.input_dim, self.output_size, self.keep_prob = tuple(input_dim), output_size, keep_prob
        self.channels, self.hidden_size = tuple(channels), hidden
        if np.dtype(dtype) != np.float64:
            self.astype(dtype)

    @property
    def dropout(self) -> InvertedDropout:
        """The dropout layer (its ``rng`` draws the masks)."""
        return next(layer for layer in self.layers if isinstance(layer, InvertedDropout))
