"""End-to-end training example: the CNNs of "Deep Learning from Scratch" on fastconv layers.

The networks follow the book (oreilly-japan/deep-learning-from-scratch, ``ch07/simple_convnet.py``
and ``ch08/deep_convnet.py``): the convolution, pooling and ReLU layers come from
:mod:`fastconv.layers`, while the fully connected ``Affine``, ``SoftmaxWithLoss`` and ``Dropout``
layers and the optimisers are small NumPy classes in this subpackage, written in the book's style.
:class:`SeedCNN` is the seed documents' PyTorch MNIST CNN on the same layers, and
:mod:`fastconv.examples.torch_twin` (imported on demand: it needs PyTorch) the same model in PyTorch.

Run ``python -m fastconv.examples.train --help`` (or the ``fastconv-train`` command). The bundled
dataset needs the optional extra ``pip install 'fastconv[examples]'``; ``--mnist PATH`` reads MNIST
files you already have. Nothing is ever downloaded.
"""
from __future__ import annotations

from .datasets import Dataset, load_dataset, load_idx, load_mnist, load_mnist5k, load_digits, write_idx
from .layers import (Affine, Dropout, InvertedDropout, SoftmaxCrossEntropyLoss, SoftmaxWithLoss,
                     cross_entropy_error, softmax)
from .networks import DeepConvNet, SeedCNN, SimpleConvNet
from .optimizers import SGD, Adam, Momentum, TorchAdam, get_optimizer

__all__ = [
    "SimpleConvNet", "DeepConvNet", "SeedCNN",
    "Affine", "SoftmaxWithLoss", "Dropout", "InvertedDropout", "SoftmaxCrossEntropyLoss", "softmax",
    "cross_entropy_error",
    "SGD", "Momentum", "Adam", "TorchAdam", "get_optimizer",
    "Dataset", "load_dataset", "load_mnist", "load_mnist5k", "load_digits", "load_idx", "write_idx",
]
