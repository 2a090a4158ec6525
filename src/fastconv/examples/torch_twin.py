"""The seed's MNIST CNN in PyTorch, beside fastconv's :class:`~fastconv.examples.SeedCNN`.

:class:`SeedCNNTorch` is the seed documents' ``CNN(torch.nn.Module)`` written out as they
write it (``layer1``..``layer4`` as ``nn.Sequential``, ``fc1``/``fc2`` Xavier-uniform, dropout
``1 - keep_prob`` after ``fc1``'s ReLU). :func:`twin_of` builds one with the weights of a
SeedCNN copied across, and :func:`train_torch` trains it with ``torch.optim`` on the same data
in the same batch order as :func:`fastconv.examples.train.train` does the NumPy network, so
``fastconv-train --model seed-cnn --with-torch`` can put both side by side.

Dropout masks: ``share_dropout=True`` (the default of :func:`twin_of`) replaces
``nn.Dropout`` by :class:`SharedMaskDropout`, which draws its masks with NumPy from a copy of
the SeedCNN's dropout generator, exactly as :class:`~fastconv.examples.InvertedDropout` does:
both frameworks then train on the same masks and, in float64, follow the same loss trajectory
to rounding. With ``share_dropout=False`` the model keeps ``torch.nn.Dropout`` (masks from
``torch.manual_seed``), so only the initial weights and the batch order are shared.

Weights: fastconv keeps convolution filters as PyTorch does, ``(out, in, kh, kw)``; the
book's ``Affine`` keeps ``W`` as ``(in, out)``, i.e. ``Linear.weight`` transposed.
"""
from __future__ import annotations

import copy
import math
from typing import Dict, Optional

import numpy as np
import torch
from torch import nn

from .networks import SeedCNN
from .optimizers import DEFAULT_LR

__all__ = ["SeedCNNTorch", "SharedMaskDropout", "twin_of", "copy_to_torch", "params_from_torch",
           "grads_from_torch", "torch_optimizer", "train_torch", "TORCH_OPTIMIZERS"]

_DTYPES = {np.dtype(np.float32): torch.float32, np.dtype(np.float64): torch.float64}


class SharedMaskDropout(nn.Module):
    """``nn.Dropout(p)`` with its masks drawn by NumPy: ``rng.rand(*x.shape) > p``, then
    ``x * (mask / (1 - p))`` while training, the identity in ``eval()`` mode -- the draw and the
    arithmetic of :class:`~fastconv.examples.InvertedDropout`."""

    def __init__(self, p: float, rng: np.random.RandomState):
        super().__init__()
        self.p = p
        self.rng = rng

    def forward(self, x):
        if not self.training:
            return x
        mask = self.rng.rand(*x.shape) > self.p
        noise = torch.from_numpy(mask).to(x.dtype) / (1.0 - self.p)
        return x * noise

    def extra_repr(self) -> str:
        return f"p={self.p}, masks from a NumPy RandomState"


class SeedCNNTorch(nn.Module):
    """The seed's ``CNN``: the same modules, names and order. ``channels`` (the three
    convolutions' filters), ``hidden_size`` (fc1's outputs) and the image size may differ from
    the seed's 32/64/128, 625 and 1x28x28. ``dropout_rng`` (a ``np.random.RandomState``) makes
    the dropout a :class:`SharedMaskDropout`; ``None`` keeps ``torch.nn.Dropout``."""

    def __init__(self, input_dim=(1, 28, 28), output_size=10, channels=SeedCNN.SEED_CHANNELS,
                 hidden_size=SeedCNN.SEED_HIDDEN, keep_prob=0.5,
                 dropout_rng: Optional[np.random.RandomState] = None):
        super().__init__()
        self.keep_prob = keep_prob
        c_in, h, w = input_dim
        c1, c2, c3 = channels
        hidden = hidden_size
        # L1 (?, 1, 28, 28) -> conv (?, 32, 28, 28) -> pool (?, 32, 14, 14)
        self.layer1 = nn.Sequential(
            nn.Conv2d(c_in, c1, kernel_size=3, stride=1, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(kernel_size=2, stride=2))
        # L2 -> conv (?, 64, 14, 14) -> pool (?, 64, 7, 7)
        self.layer2 = nn.Sequential(
            nn.Conv2d(c1, c2, kernel_size=3, stride=1, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(kernel_size=2, stride=2))
        # L3 -> conv (?, 128, 7, 7) -> pool (?, 128, 4, 4)
        self.layer3 = nn.Sequential(
            nn.Conv2d(c2, c3, kernel_size=3, stride=1, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(kernel_size=2, stride=2, padding=1))
        for _ in range(2):
            h, w = h // 2, w // 2
        h, w = h // 2 + 1, w // 2 + 1
        # L4 FC 4x4x128 inputs -> 625 outputs
        self.fc1 = nn.Linear(c3 * h * w, hidden, bias=True)
        nn.init.xavier_uniform_(self.fc1.weight)
        p = 1 - self.keep_prob
        self.layer4 = nn.Sequential(
            self.fc1,
            nn.ReLU(),
            nn.Dropout(p=p) if dropout_rng is None else SharedMaskDropout(p, dropout_rng))
        # L5 Final FC 625 inputs -> 10 outputs
        self.fc2 = nn.Linear(hidden, output_size, bias=True)
        nn.init.xavier_uniform_(self.fc2.weight)

    def forward(self, x):
        out = self.layer1(x)
        out = self.layer2(out)
        out = self.layer3(out)
        out = out.view(out.size(0), -1)  # flatten them for FC
        out = self.layer4(out)
        out = self.fc2(out)
        return out


def _pairs(model: SeedCNNTorch):
    """(fastconv name, torch parameter, transposed?) for every parameter."""
    convs = [model.layer1[0], model.layer2[0], model.layer3[0]]
    out = []
    for i, layer in enumerate(convs + [model.fc1, model.fc2], start=1):
        linear = isinstance(layer, nn.Linear)
        out += [(f"W{i}", layer.weight, linear), (f"b{i}", layer.bias, False)]
    return out


def copy_to_torch(net: SeedCNN, model: SeedCNNTorch) -> None:
    """Copy the SeedCNN's parameters into ``model`` (Affine ``W`` transposed to ``Linear.weight``)."""
    with torch.no_grad():
        for name, param, transposed in _pairs(model):
            arr = net.params[name].T if transposed else net.params[name]
            if tuple(arr.shape) != tuple(param.shape):
                raise ValueError(f"{name}: SeedCNN has {arr.shape}, the torch model {tuple(param.shape)}")
            param.copy_(torch.from_numpy(np.ascontiguousarray(arr)))


def params_from_torch(model: SeedCNNTorch) -> Dict[str, np.ndarray]:
    """The model's parameters as NumPy arrays in SeedCNN's layout, keyed like ``SeedCNN.params``."""
    return {name: np.ascontiguousarray(p.detach().cpu().numpy().T if t else p.detach().cpu().numpy())
            for name, p, t in _pairs(model)}


def grads_from_torch(model: SeedCNNTorch) -> Dict[str, np.ndarray]:
    """``param.grad`` of every parameter after ``backward()``, in SeedCNN's layout."""
    return {name: np.ascontiguousarray(p.grad.cpu().numpy().T if t else p.grad.cpu().numpy())
            for name, p, t in _pairs(model)}


def twin_of(net: SeedCNN, share_dropout: bool = True) -> SeedCNNTorch:
    """A :class:`SeedCNNTorch` of the same sizes and dtype as ``net`` holding a copy of its
    weights. With ``share_dropout`` its masks come from a copy of ``net``'s dropout generator
    as it is now, so the two draw the same masks if they train from here in step."""
    rng = copy.deepcopy(net.dropout.rng) if share_dropout else None
    if share_dropout and rng is None:
        raise ValueError("share_dropout needs a SeedCNN built with its own rng (np.random.RandomState)")
    model = SeedCNNTorch(net.input_dim, net.output_size, channels=net.channels, hidden_size=net.hidden_size,
                         keep_prob=net.keep_prob, dropout_rng=rng)
    model = model.to(_DTYPES[np.dtype(net.dtype)])
    copy_to_torch(net, model)
    return model


# --- optimisers -------------------------------------------------------------------------------

def _book_adam(params, lr):
    """torch.optim.Adam computing the book's Adam: its ``sqrt(v) + 1e-7`` with the bias
    correction folded into the step is PyTorch's rule with ``eps = 1e-7 / sqrt(1 - beta2**t)``,
    set before each step."""
    opt = torch.optim.Adam(params, lr=lr, betas=(0.9, 0.999))
    steps = [0]

    def set_eps(optimizer, args, kwargs):
        steps[0] += 1
        for group in optimizer.param_groups:
            group["eps"] = 1e-7 / math.sqrt(1.0 - group["betas"][1] ** steps[0])

    opt.register_step_pre_hook(set_eps)
    return opt


# Each entry computes the rule of fastconv.examples.get_optimizer(name) (the book's, or
# PyTorch's Adam for adam-torch): the book's Momentum v = 0.9 v - lr g is SGD's buf = 0.9 buf + g
# with v = -lr buf, its Nesterov is SGD's nesterov=True, its AdaGrad and RMSprop use eps 1e-7.
TORCH_OPTIMIZERS = {
    "sgd": lambda params, lr: torch.optim.SGD(params, lr=lr),
    "momentum": lambda params, lr: torch.optim.SGD(params, lr=lr, momentum=0.9),
    "nesterov": lambda params, lr: torch.optim.SGD(params, lr=lr, momentum=0.9, nesterov=True),
    "adagrad": lambda params, lr: torch.optim.Adagrad(params, lr=lr, eps=1e-7),
    "rmsprop": lambda params, lr: torch.optim.RMSprop(params, lr=lr, alpha=0.99, eps=1e-7),
    "adam": _book_adam,
    "adam-torch": lambda params, lr: torch.optim.Adam(params, lr=lr),  # the seed's optimizer
}


def torch_optimizer(name: str, params, lr: Optional[float] = None) -> torch.optim.Optimizer:
    """The ``torch.optim`` optimiser that computes what ``get_optimizer(name, lr)`` does."""
    key = name.lower()
    if key not in TORCH_OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; choose one of {sorted(TORCH_OPTIMIZERS)}")
    return TORCH_OPTIMIZERS[key](params, DEFAULT_LR[key] if lr is None else lr)


# --- training -----------------------------------------------------------------------------------

def train_torch(network: SeedCNN, data, *, epochs: int = 1, batch_size: int = 100, optimizer: str = "adam-torch",
                lr: Optional[float] = None, seed: int = 0, eval_size: Optional[int] = None, progress: bool = True,
                share_dropout: bool = True, label: str = "torch-model", log=print):
    """Train the PyTorch twin of ``network`` (its weights copied in) and copy the trained weights
    back into ``network``; returns a :class:`~fastconv.examples.train.RunResult` like
    :func:`~fastconv.examples.train.train`, whose loop (batch order from ``seed``, timing,
    accuracy per epoch) it shares. ``data`` should already have ``network``'s dtype."""
    from .train import fit

    data = data.astype(network.dtype)  # torch.from_numpy keeps the dtype: no float64 batches into a float32 model
    if not share_dropout:
        torch.manual_seed(seed)
    model = twin_of(network, share_dropout=share_dropout)
    opt = torch_optimizer(optimizer, model.parameters(), lr)
    criterion = nn.CrossEntropyLoss()  # softmax is computed inside, as in the seed

    def step(x, t):
        xb, tb = torch.from_numpy(x), torch.from_numpy(t)
        opt.zero_grad()
        cost = criterion(model(xb), tb)
        cost.backward()
        opt.step()
        return cost.item()

    def accuracy(x, t, batch_size=100):
        model.eval()
        try:
            with torch.no_grad():
                correct = 0
                for start in range(0, len(x), batch_size):
                    scores = model(torch.from_numpy(x[start:start + batch_size]))
                    correct += int((scores.argmax(dim=1).numpy() == t[start:start + batch_size]).sum())
        finally:
            model.train()
        return correct / len(x) if len(x) else float("nan")

    model.train()
    result = fit(label, network, data, step, accuracy, epochs=epochs, batch_size=batch_size, seed=seed,
                 eval_size=eval_size, progress=progress, log=log)
    network._set_params({k: v.astype(network.dtype, copy=False) for k, v in params_from_torch(model).items()})
    result.model = model
    return result
