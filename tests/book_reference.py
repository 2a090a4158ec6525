"""A re-implementation of the book's layers, used as the reference for the drop-in tests.

Source: "Deep Learning from Scratch" (Koki Saitoh, O'Reilly Japan), repository
oreilly-japan/deep-learning-from-scratch, files common/util.py (im2col, col2im),
common/layers.py (every class), common/functions.py (softmax, cross_entropy_error,
sigmoid), common/optimizer.py (every optimiser), ch07/simple_convnet.py (SimpleConvNet)
and ch08/deep_convnet.py (DeepConvNet). Written here from the book's algorithms, keeping
their behaviour on purpose: im2col always returns float64, Pooling's output size ignores
``pad``, Relu.backward writes into ``dout``, Convolution keeps ``col``/``col_W`` from the
forward pass.

The networks take a ``layers`` namespace (this module's classes, or fastconv's swapped in) so
the same code builds every variant.
"""
from __future__ import annotations

import types

import numpy as np

# --- common/util.py --------------------------------------------------------------------


def im2col(input_data, filter_h, filter_w, stride=1, pad=0):
    N, C, H, W = input_data.shape
    out_h = (H + 2 * pad - filter_h) // stride + 1
    out_w = (W + 2 * pad - filter_w) // stride + 1
    img = np.pad(input_data, [(0, 0), (0, 0), (pad, pad), (pad, pad)], "constant")
    col = np.zeros((N, C, filter_h, filter_w, out_h, out_w))  # float64, as in the book
    for y in range(filter_h):
        y_max = y + stride * out_h
        for x in range(filter_w):
            x_max = x + stride * out_w
            col[:, :, y, x, :, :] = img[:, :, y:y_max:stride, x:x_max:stride]
    return col.transpose(0, 4, 5, 1, 2, 3).reshape(N * out_h * out_w, -1)


def col2im(col, input_shape, filter_h, filter_w, stride=1, pad=0):
    N, C, H, W = input_shape
    out_h = (H + 2 * pad - filter_h) // stride + 1
    out_w = (W + 2 * pad - filter_w) // stride + 1
    col = col.reshape(N, out_h, out_w, C, filter_h, filter_w).transpose(0, 3, 4, 5, 1, 2)
    img = np.zeros((N, C, H + 2 * pad + stride - 1, W + 2 * pad + stride - 1))
    for y in range(filter_h):
        y_max = y + stride * out_h
        for x in range(filter_w):
            x_max = x + stride * out_w
            img[:, :, y:y_max:stride, x:x_max:stride] += col[:, :, y, x, :, :]
    return img[:, :, pad:H + pad, pad:W + pad]


# --- common/functions.py -------------------------------------------------------------------


def softmax(x):
    x = x - np.max(x, axis=-1, keepdims=True)
    return np.exp(x) / np.sum(np.exp(x), axis=-1, keepdims=True)


def cross_entropy_error(y, t):
    if y.ndim == 1:
        t = t.reshape(1, t.size)
        y = y.reshape(1, y.size)
    if t.size == y.size:  # one-hot labels
        t = t.argmax(axis=1)
    batch_size = y.shape[0]
    return -np.sum(np.log(y[np.arange(batch_size), t] + 1e-7)) / batch_size


# --- common/layers.py ------------------------------------------------------------------------


class Sigmoid:
    def __init__(self):
        self.out = None

    def forward(self, x):
        self.out = 1 / (1 + np.exp(-x))
        return self.out

    def backward(self, dout):
        return dout * (1.0 - self.out) * self.out


class Dropout:
    def __init__(self, dropout_ratio=0.5):
        self.dropout_ratio = dropout_ratio
        self.mask = None

    def forward(self, x, train_flg=True):
        if train_flg:
            self.mask = np.random.rand(*x.shape) > self.dropout_ratio
            return x * self.mask
        return x * (1.0 - self.dropout_ratio)

    def backward(self, dout):
        return dout * self.mask


class BatchNormalization:
    def __init__(self, gamma, beta, momentum=0.9, running_mean=None, running_var=None):
        self.gamma = gamma
        self.beta = beta
        self.momentum = momentum
        self.input_shape = None
        self.running_mean = running_mean
        self.running_var = running_var
        self.batch_size = None
        self.xc = None
        self.std = None
        self.dgamma = None
        self.dbeta = None

    def forward(self, x, train_flg=True):
        self.input_shape = x.shape
        if x.ndim != 2:
            x = x.reshape(x.shape[0], -1)
        if self.running_mean is None:
            self.running_mean = np.zeros(x.shape[1])
            self.running_var = np.zeros(x.shape[1])
        if train_flg:
            mu = x.mean(axis=0)
            xc = x - mu
            var = np.mean(xc ** 2, axis=0)
            std = np.sqrt(var + 10e-7)
            xn = xc / std
            self.batch_size = x.shape[0]
            self.xc = xc
            self.xn = xn
            self.std = std
            self.running_mean = self.momentum * self.running_mean + (1 - self.momentum) * mu
            self.running_var = self.momentum * self.running_var + (1 - self.momentum) * var
        else:
            xc = x - self.running_mean
            xn = xc / np.sqrt(self.running_var + 10e-7)
        return (self.gamma * xn + self.beta).reshape(*self.input_shape)

    def backward(self, dout):
        if dout.ndim != 2:
            dout = dout.reshape(dout.shape[0], -1)
        dbeta = dout.sum(axis=0)
        dgamma = np.sum(self.xn * dout, axis=0)
        dxn = self.gamma * dout
        dxc = dxn / self.std
        dstd = -np.sum((dxn * self.xc) / (self.std * self.std), axis=0)
        dvar = 0.5 * dstd / self.std
        dxc += (2.0 / self.batch_size) * self.xc * dvar
        dmu = np.sum(dxc, axis=0)
        dx = dxc - dmu / self.batch_size
        self.dgamma = dgamma
        self.dbeta = dbeta
        return dx.reshape(*self.input_shape)


class Relu:
    def __init__(self):
        self.mask = None

    def forward(self, x):
        self.mask = x <= 0
        out = x.copy()
        out[self.mask] = 0
        return out

    def backward(self, dout):
        dout[self.mask] = 0
        return dout


class Affine:
    def __init__(self, W, b):
        self.W = W
        self.b = b
        self.x = None
        self.original_x_shape = None
        self.dW = None
        self.db = None

    def forward(self, x):
        self.original_x_shape = x.shape
        x = x.reshape(x.shape[0], -1)
        self.x = x
        return np.dot(self.x, self.W) + self.b

    def backward(self, dout):
        dx = np.dot(dout, self.W.T)
        self.dW = np.dot(self.x.T, dout)
        self.db = np.sum(dout, axis=0)
        return dx.reshape(*self.original_x_shape)


class SoftmaxWithLoss:
    def __init__(self):
        self.loss = None
        self.y = None
        self.t = None

    def forward(self, x, t):
        self.t = t
        self.y = softmax(x)
        self.loss = cross_entropy_error(self.y, self.t)
        return self.loss

    def backward(self, dout=1):
        batch_size = self.t.shape[0]
        if self.t.size == self.y.size:
            return (self.y - self.t) / batch_size
        dx = self.y.copy()
        dx[np.arange(batch_size), self.t] -= 1
        return dx / batch_size


class Convolution:
    def __init__(self, W, b, stride=1, pad=0):
        self.W = W
        self.b = b
        self.stride = stride
        self.pad = pad
        self.x = None
        self.col = None
        self.col_W = None
        self.dW = None
        self.db = None

    def forward(self, x):
        FN, C, FH, FW = self.W.shape
        N, C, H, W = x.shape
        out_h = 1 + int((H + 2 * self.pad - FH) / self.stride)
        out_w = 1 + int((W + 2 * self.pad - FW) / self.stride)
        col = im2col(x, FH, FW, self.stride, self.pad)
        col_W = self.W.reshape(FN, -1).T
        out = np.dot(col, col_W) + self.b
        out = out.reshape(N, out_h, out_w, -1).transpose(0, 3, 1, 2)
        self.x = x
        self.col = col
        self.col_W = col_W
        return out

    def backward(self, dout):
        FN, C, FH, FW = self.W.shape
        dout = dout.transpose(0, 2, 3, 1).reshape(-1, FN)
        self.db = np.sum(dout, axis=0)
        self.dW = np.dot(self.col.T, dout).transpose(1, 0).reshape(FN, C, FH, FW)
        dcol = np.dot(dout, self.col_W.T)
        return col2im(dcol, self.x.shape, FH, FW, self.stride, self.pad)


class Pooling:
    # The book's default stride is 1 (fastconv's Pooling defaults to 2); callers here always
    # pass it explicitly.
    def __init__(self, pool_h, pool_w, stride=1, pad=0):
        self.pool_h = pool_h
        self.pool_w = pool_w
        self.stride = stride
        self.pad = pad
        self.x = None
        self.arg_max = None

    def forward(self, x):
        N, C, H, W = x.shape
        out_h = int(1 + (H - self.pool_h) / self.stride)  # ignores pad, as the book does
        out_w = int(1 + (W - self.pool_w) / self.stride)
        col = im2col(x, self.pool_h, self.pool_w, self.stride, self.pad)
        col = col.reshape(-1, self.pool_h * self.pool_w)
        arg_max = np.argmax(col, axis=1)
        out = np.max(col, axis=1)
        out = out.reshape(N, out_h, out_w, C).transpose(0, 3, 1, 2)
        self.x = x
        self.arg_max = arg_max
        return out

    def backward(self, dout):
        dout = dout.transpose(0, 2, 3, 1)
        pool_size = self.pool_h * self.pool_w
        dmax = np.zeros((dout.size, pool_size))
        dmax[np.arange(self.arg_max.size), self.arg_max.flatten()] = dout.flatten()
        dmax = dmax.reshape(dout.shape + (pool_size,))
        dcol = dmax.reshape(dmax.shape[0] * dmax.shape[1] * dmax.shape[2], -1)
        return col2im(dcol, self.x.shape, self.pool_h, self.pool_w, self.stride, self.pad)


LAYER_NAMES = ("Convolution", "Pooling", "Relu", "Affine", "SoftmaxWithLoss", "Dropout", "Sigmoid",
               "BatchNormalization")
BOOK_LAYERS = types.SimpleNamespace(**{name: globals()[name] for name in LAYER_NAMES})


def fastconv_layers(swap=("Convolution", "Pooling", "Relu")):
    """The book's namespace with fastconv's drop-ins for the classes in ``swap`` ("all": every one)."""
    import fastconv.layers as L

    swap = LAYER_NAMES if swap == "all" else swap
    return types.SimpleNamespace(**{name: getattr(L if name in swap else BOOK_LAYERS, name) for name in LAYER_NAMES})


# --- networks --------------------------------------------------------------------------------


class _Net:
    """The book's network skeleton: predict / loss / gradient / accuracy / load_params."""

    param_layers: tuple = ()

    def predict(self, x, train_flg=False):
        for layer in self.layers:
            x = layer.forward(x, train_flg) if hasattr(layer, "dropout_ratio") else layer.forward(x)
        return x

    def loss(self, x, t):
        return self.last_layer.forward(self.predict(x, train_flg=True), t)

    def accuracy(self, x, t):
        y = np.argmax(self.predict(x), axis=1)
        return np.sum(y == t) / x.shape[0]

    def gradient(self, x, t):
        self.loss(x, t)
        dout = self.last_layer.backward(1)
        for layer in reversed(self.layers):
            dout = layer.backward(dout)
        grads = {}
        for i, idx in enumerate(self.param_layers):
            grads[f"W{i + 1}"] = self.layers[idx].dW
            grads[f"b{i + 1}"] = self.layers[idx].db
        return grads

    def load_params(self, params):
        """As the book's load_params after unpickling: new arrays assigned to the layers."""
        for key, val in params.items():
            self.params[key] = val
        for i, idx in enumerate(self.param_layers):
            self.layers[idx].W = self.params[f"W{i + 1}"]
            self.layers[idx].b = self.params[f"b{i + 1}"]


def simple_convnet_params(rng, input_dim=(1, 28, 28), filter_num=30, filter_size=5, hidden_size=100,
                          output_size=10, weight_init_std=0.01):
    conv_out = input_dim[1] - filter_size + 1
    pool_out = conv_out // 2
    return {
        "W1": weight_init_std * rng.standard_normal((filter_num, input_dim[0], filter_size, filter_size)),
        "b1": weight_init_std * rng.standard_normal(filter_num),  # non-zero so db matters
        "W2": weight_init_std * rng.standard_normal((filter_num * pool_out * pool_out, hidden_size)),
        "b2": weight_init_std * rng.standard_normal(hidden_size),
        "W3": weight_init_std * rng.standard_normal((hidden_size, output_size)),
        "b3": weight_init_std * rng.standard_normal(output_size),
    }


class SimpleConvNet(_Net):
    """ch07: conv(30x5x5) - relu - pool(2x2, s2) - affine(100) - relu - affine(10) - softmax."""

    param_layers = (0, 3, 5)

    def __init__(self, params, layers=BOOK_LAYERS):
        self.params = params
        L = layers
        self.layers = [
            L.Convolution(params["W1"], params["b1"], 1, 0),
            L.Relu(),
            L.Pooling(pool_h=2, pool_w=2, stride=2),
            L.Affine(params["W2"], params["b2"]),
            L.Relu(),
            L.Affine(params["W3"], params["b3"]),
        ]
        self.last_layer = L.SoftmaxWithLoss()


# (filter_num, pad) of the six 3x3 convolutions, as in ch08 but with fewer filters; the fourth
# keeps the book's pad=2 so the 14x14 maps grow to 16x16 before pooling (28 -> 14 -> 8 -> 4).
DEEP_CONVS = ((4, 1), (4, 1), (6, 1), (6, 2), (8, 1), (8, 1))


def deep_convnet_params(rng, input_dim=(1, 28, 28), hidden_size=20, output_size=10):
    params = {}
    pre = input_dim[0]
    for i, (fn, _) in enumerate(DEEP_CONVS):
        scale = np.sqrt(2.0 / (pre * 9))  # He initialisation, as in the book
        params[f"W{i + 1}"] = scale * rng.standard_normal((fn, pre, 3, 3))
        params[f"b{i + 1}"] = 0.1 * rng.standard_normal(fn)
        pre = fn
    flat = DEEP_CONVS[-1][0] * 4 * 4
    params["W7"] = np.sqrt(2.0 / flat) * rng.standard_normal((flat, hidden_size))
    params["b7"] = 0.1 * rng.standard_normal(hidden_size)
    params["W8"] = np.sqrt(2.0 / hidden_size) * rng.standard_normal((hidden_size, output_size))
    params["b8"] = 0.1 * rng.standard_normal(output_size)
    return params


class DeepConvNet(_Net):
    """ch08 structure (conv-relu-conv-relu-pool) x3 - affine - relu - dropout - affine - dropout
    - softmax, with fewer filters. Dropout draws from np.random: seed it alike before two
    networks' training calls to compare them."""

    param_layers = (0, 2, 5, 7, 10, 12, 15, 18)

    def __init__(self, params, layers=BOOK_LAYERS):
        self.params = params
        L = layers
        seq = []
        for i, (_, pad) in enumerate(DEEP_CONVS):
            seq.append(L.Convolution(params[f"W{i + 1}"], params[f"b{i + 1}"], 1, pad))
            seq.append(L.Relu())
            if i % 2 == 1:
                seq.append(L.Pooling(pool_h=2, pool_w=2, stride=2))
        seq += [L.Affine(params["W7"], params["b7"]), L.Relu(), L.Dropout(0.5),
                L.Affine(params["W8"], params["b8"]), L.Dropout(0.5)]
        self.layers = seq
        self.last_layer = L.SoftmaxWithLoss()


# --- common/optimizer.py ----------------------------------------------------------------------


class SGD:
    def __init__(self, lr=0.01):
        self.lr = lr

    def update(self, params, grads):
        for key in params.keys():
            params[key] -= self.lr * grads[key]


class Momentum:
    def __init__(self, lr=0.01, momentum=0.9):
        self.lr = lr
        self.momentum = momentum
        self.v = None

    def update(self, params, grads):
        if self.v is None:
            self.v = {key: np.zeros_like(val) for key, val in params.items()}
        for key in params.keys():
            self.v[key] = self.momentum * self.v[key] - self.lr * grads[key]
            params[key] += self.v[key]


class Nesterov:
    def __init__(self, lr=0.01, momentum=0.9):
        self.lr = lr
        self.momentum = momentum
        self.v = None

    def update(self, params, grads):
        if self.v is None:
            self.v = {key: np.zeros_like(val) for key, val in params.items()}
        for key in params.keys():
            params[key] += self.momentum * self.momentum * self.v[key]
            params[key] -= (1 + self.momentum) * self.lr * grads[key]
            self.v[key] *= self.momentum
            self.v[key] -= self.lr * grads[key]


class AdaGrad:
    def __init__(self, lr=0.01):
        self.lr = lr
        self.h = None

    def update(self, params, grads):
        if self.h is None:
            self.h = {key: np.zeros_like(val) for key, val in params.items()}
        for key in params.keys():
            self.h[key] += grads[key] * grads[key]
            params[key] -= self.lr * grads[key] / (np.sqrt(self.h[key]) + 1e-7)


class RMSprop:
    def __init__(self, lr=0.01, decay_rate=0.99):
        self.lr = lr
        self.decay_rate = decay_rate
        self.h = None

    def update(self, params, grads):
        if self.h is None:
            self.h = {key: np.zeros_like(val) for key, val in params.items()}
        for key in params.keys():
            self.h[key] *= self.decay_rate
            self.h[key] += (1 - self.decay_rate) * grads[key] * grads[key]
            params[key] -= self.lr * grads[key] / (np.sqrt(self.h[key]) + 1e-7)


class Adam:
    def __init__(self, lr=0.001, beta1=0.9, beta2=0.999):
        self.lr = lr
        self.beta1 = beta1
        self.beta2 = beta2
        self.iter = 0
        self.m = None
        self.v = None

    def update(self, params, grads):
        if self.m is None:
            self.m = {key: np.zeros_like(val) for key, val in params.items()}
            self.v = {key: np.zeros_like(val) for key, val in params.items()}
        self.iter += 1
        lr_t = self.lr * np.sqrt(1.0 - self.beta2 ** self.iter) / (1.0 - self.beta1 ** self.iter)
        for key in params.keys():
            self.m[key] += (1 - self.beta1) * (grads[key] - self.m[key])
            self.v[key] += (1 - self.beta2) * (grads[key] ** 2 - self.v[key])
            params[key] -= lr_t * self.m[key] / (np.sqrt(self.v[key]) + 1e-7)


OPTIMIZER_NAMES = ("SGD", "Momentum", "Nesterov", "AdaGrad", "RMSprop", "Adam")
