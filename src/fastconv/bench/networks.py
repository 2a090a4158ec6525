"""``fastconv-bench --suite networks``: every distinct conv and pooling layer of the networks the
seed documents walk through (LeNet-5, AlexNet, ZFNet, VGG-16), what users meet next (ResNet-18,
ResNet-50's 1x1 bottleneck layers) and the book's own (SimpleConvNet, DeepConvNet) plus the
seed's PyTorch MNIST CNN, at an inference and a training batch.

A layer is (kind, C, H, W, FN, k, stride, pad); pooling layers are max pooling (FN unused). The
NumPy reference is timed only on layers whose forward is at most ``NUMPY_MAX_FLOP`` (its im2col
would take minutes on VGG-16's first layers); above it, native is checked against PyTorch.
"""
from __future__ import annotations

import math
from typing import Dict, List, Optional, Sequence, Tuple

from .cases import SHORT_DTYPE, Case
from .timing import Result, Settings, _median_of

Layer = Tuple[str, str, int, int, int, int, int, int, int]  # (name, kind, C, H, W, FN, k, stride, pad)

# Forward FLOP above which the NumPy reference is not timed (backward is ~2x that).
NUMPY_MAX_FLOP = 3e9

# The suite times ~15x more rows than the case table: shorter budgets, two alternating rounds.
NETWORKS_FULL = Settings(rounds=2, warmup_s=0.1, budget_s=0.25, min_reps=3, max_reps=60, slow_call_s=0.1,
                         min_reps_slow=2, peak_s=0.2, copy_s=0.03)
NETWORKS_QUICK = Settings(rounds=1, warmup_s=0.02, budget_s=0.05, min_reps=2, max_reps=10, slow_call_s=0.03,
                          min_reps_slow=1, peak_s=0.1, copy_s=0.02)


def _conv(name, C, H, FN, k, stride=1, pad=0, W=None) -> Layer:
    return (name, "conv", C, H, W or H, FN, k, stride, pad)


def _pool(name, C, H, k=2, stride=2, pad=0) -> Layer:
    return (name, "pool", C, H, H, 0, k, stride, pad)


NETWORKS: Dict[str, Tuple[Tuple[int, ...], Tuple[Layer, ...]]] = {
    # name: (batches: inference first, then training; layers)
    "lenet5": ((1, 8), (
        _conv("c1", 1, 32, 6, 5), _pool("s2", 6, 28), _conv("c3", 6, 14, 16, 5), _pool("s4", 16, 10),
        _conv("c5", 16, 5, 120, 5))),
    "alexnet": ((1, 8), (
        _conv("conv1", 3, 227, 96, 11, 4), _pool("pool1", 96, 55, 3, 2), _conv("conv2", 96, 27, 256, 5, 1, 2),
        _pool("pool2", 256, 27, 3, 2), _conv("conv3", 256, 13, 384, 3, 1, 1), _conv("conv4", 384, 13, 384, 3, 1, 1),
        _conv("conv5", 384, 13, 256, 3, 1, 1), _pool("pool5", 256, 13, 3, 2))),
    "zfnet": ((1, 8), (
        _conv("conv1", 3, 224, 96, 7, 2, 1), _pool("pool1", 96, 110, 3, 2, 1), _conv("conv2", 96, 55, 256, 5, 2),
        _pool("pool2", 256, 26, 3, 2, 1), _conv("conv3", 256, 13, 384, 3, 1, 1), _conv("conv4", 384, 13, 384, 3, 1, 1),
        _conv("conv5", 384, 13, 256, 3, 1, 1), _pool("pool5", 256, 13, 3, 2))),
    "vgg16": ((1, 8), (
        _conv("conv1_1", 3, 224, 64, 3, 1, 1), _conv("conv1_2", 64, 224, 64, 3, 1, 1), _pool("pool1", 64, 224),
        _conv("conv2_1", 64, 112, 128, 3, 1, 1), _conv("conv2_2", 128, 112, 128, 3, 1, 1), _pool("pool2", 128, 112),
        _conv("conv3_1", 128, 56, 256, 3, 1, 1), _conv("conv3_2", 256, 56, 256, 3, 1, 1), _pool("pool3", 256, 56),
        _conv("conv4_1", 256, 28, 512, 3, 1, 1), _conv("conv4_2", 512, 28, 512, 3, 1, 1), _pool("pool4", 512, 28),
        _conv("conv5_1", 512, 14, 512, 3, 1, 1), _pool("pool5", 512, 14))),
    "resnet18": ((1, 8), (
        _conv("stem", 3, 224, 64, 7, 2, 3), _pool("maxpool", 64, 112, 3, 2, 1), _conv("l1", 64, 56, 64, 3, 1, 1),
        _conv("l2_down3x3", 64, 56, 128, 3, 2, 1), _conv("l2", 128, 28, 128, 3, 1, 1), _conv("l2_proj", 64, 56, 128, 1, 2),
        _conv("l3_down3x3", 128, 28, 256, 3, 2, 1), _conv("l3", 256, 14, 256, 3, 1, 1),
        _conv("l3_proj", 128, 28, 256, 1, 2), _conv("l4_down3x3", 256, 14, 512, 3, 2, 1), _conv("l4", 512, 7, 512, 3, 1, 1),
        _conv("l4_proj", 256, 14, 512, 1, 2))),
    "resnet50-1x1": ((1, 8), (
        _conv("s1_reduce_in", 64, 56, 64, 1), _conv("s1_expand", 64, 56, 256, 1), _conv("s1_reduce", 256, 56, 64, 1),
        _conv("s2_reduce_in", 256, 56, 128, 1), _conv("s2_expand", 128, 28, 512, 1), _conv("s2_reduce", 512, 28, 128, 1),
        _conv("s2_proj", 256, 56, 512, 1, 2), _conv("s3_expand", 256, 14, 1024, 1), _conv("s3_reduce", 1024, 14, 256, 1),
        _conv("s3_proj", 512, 28, 1024, 1, 2), _conv("s4_expand", 512, 7, 2048, 1), _conv("s4_reduce", 2048, 7, 512, 1),
        _conv("s4_proj", 1024, 14, 2048, 1, 2))),
    "simpleconvnet": ((1, 100), (_conv("conv1", 1, 28, 30, 5), _pool("pool1", 30, 24))),
    "deepconvnet": ((1, 100), (
        _conv("conv1", 1, 28, 16, 3, 1, 1), _conv("conv2", 16, 28, 16, 3, 1, 1), _pool("pool1", 16, 28),
        _conv("conv3", 16, 14, 32, 3, 1, 1), _conv("conv4", 32, 14, 32, 3, 1, 2), _pool("pool2", 32, 16),
        _conv("conv5", 32, 8, 64, 3, 1, 1), _conv("conv6", 64, 8, 64, 3, 1, 1), _pool("pool3", 64, 8))),
    "seed-mnist-cnn": ((1, 100), (
        _conv("conv1", 1, 28, 32, 3, 1, 1), _pool("pool1", 32, 28), _conv("conv2", 32, 14, 64, 3, 1, 1),
        _pool("pool2", 64, 14), _conv("conv3", 64, 7, 128, 3, 1, 1), _pool("pool3", 128, 7, 2, 2, 1))),
}


def cases(networks: Optional[Sequence[str]] = None, quick: bool = False) -> List[Case]:
    """One Case per (network, batch, layer), named ``network/layer@bN``; ``quick``: the training
    batch of the book's networks and the inference batch of the others."""
    out = []
    for net in networks or NETWORKS:
        if net not in NETWORKS:
            raise ValueError(f"unknown network {net!r}; choose from {', '.join(NETWORKS)}")
        batches, layers = NETWORKS[net]
        if quick:
            batches = batches[-1:] if batches[-1] == 100 else batches[:1]
        for n in batches:
            for name, kind, C, H, W, FN, k, stride, pad in layers:
                out.append(Case(f"{net}/{name}@b{n}", kind, (n, C, H, W), k, k, FN=FN, stride=stride, pad=pad,
                                source=net))
    return out


def numpy_timed(case: Case) -> bool:
    """Whether the NumPy reference is timed (and is the check) on this layer."""
    return case.kind == "pool" or case.conv_flop() <= NUMPY_MAX_FLOP


def _geomean(values: Sequence[float]) -> float:
    vals = [v for v in values if v and math.isfinite(v) and v > 0]
    return math.exp(sum(math.log(v) for v in vals) / len(vals)) if vals else math.nan


def summary(results: Sequence[Result], case_list: Sequence[Case]) -> str:
    """Per network, batch, dtype and direction: native's total time, and the geometric mean and
    worst layer of native's speed ratio vs numpy and vs torch."""
    groups: Dict[Tuple[str, str, str, str], List[Result]] = {}
    for r in results:
        if r.backend != "native" or not r.samples_s:
            continue
        net, rest = r.case.split("/", 1)
        batch = rest.rsplit("@", 1)[1]
        direction = "fwd" if r.op.endswith("fwd") else "bwd"
        groups.setdefault((net, batch, SHORT_DTYPE[r.dtype], direction), []).append(r)
    head = ("network", "batch", "dtype", "dir", "native ms", "vs numpy geo", "worst (layer)", "vs torch geo",
            "worst (layer)")
    rows = [head]
    for (net, batch, dt, direction), rs in groups.items():
        line = [net, batch, dt, direction, f"{sum(r.median_s for r in rs) * 1e3:.2f}"]
        for other in ("numpy", "torch"):
            ratios = {}
            for r in rs:
                ref = _median_of(results, r.case, r.dtype, r.op, other)
                if math.isfinite(ref):
                    ratios[r.case.split("/", 1)[1].rsplit("@", 1)[0]] = ref / r.median_s
            if ratios:
                worst = min(ratios, key=ratios.get)
                line += [f"{_geomean(list(ratios.values())):.2f}x", f"{ratios[worst]:.2f}x ({worst})"]
            else:
                line += ["-", "-"]
        rows.append(tuple(line))
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    text = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]
    text.insert(1, "  ".join("-" * w for w in widths))
    skipped = sorted({c.name for c in case_list if not numpy_timed(c)})
    if skipped:
        text.append(f"numpy not timed (forward > {NUMPY_MAX_FLOP / 1e9:g} GFLOP; native checked against torch "
                    f"there): {len(skipped)} layers, e.g. {', '.join(skipped[:4])}")
    return "\n".join(text)
