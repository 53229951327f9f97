"""Model zoo: ordinary snnTorch / torch ``nn.Sequential`` models (one call = one time step).

| name          | kind | architecture                                                    |
|---------------|------|-----------------------------------------------------------------|
| snn-digits    | snn  | 16C3-AP2-32C3-AP2-128FC-10FC (default for the 8x8 digits)       |
| ann-digits    | ann  | same, ReLU                                                      |
| snn-mnist     | snn  | 15C3-AP2-40C3-AP2-300FC-10FC (paper: MNIST, N-MNIST, DVS)       |
| snn-cifar10   | snn  | 128C3-BN-128C3-BN-MP2-256C3-BN-256C3-BN-MP2-512C3-BN-512C3-BN-512FC-10FC |
| ann-lenet     | ann  | 20C5-MP2-50C5-MP2-500FC-10FC (paper: MNIST ANN)                 |
| ann-vgg16-bn  | ann  | VGG16 with BatchNorm, 512FC-10FC classifier (paper: CIFAR-10)   |

Input channels, input size and class count come from the dataset. Convolutions with kernel 3
use padding 1 (size kept); LeNet's kernel-5 convolutions use none, as in LeNet.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from .errors import ConfigError, DPAPError
from .neurons import lif


@dataclass(frozen=True)
class ModelSpec:
    name: str
    kind: str
    build: Callable[[tuple[int, int, int], int], nn.Sequential]
    description: str


def _act(kind: str) -> nn.Module:
    return lif() if kind == "snn" else nn.ReLU()


def _flat_size(features: nn.Sequential, in_shape: tuple[int, int, int], name: str) -> int:
    try:
        with torch.no_grad():
            out = features(torch.zeros(1, *in_shape))
    except RuntimeError as exc:
        raise DPAPError(f"input of shape {in_shape} (C, H, W) is too small for model '{name}': "
                        f"{str(exc).splitlines()[0]}") from None
    finally:
        for m in features.modules():
            if hasattr(m, "reset_mem"):
                m.reset_mem()
    return int(out[0].numel())


def _conv_stack(kind: str, in_ch: int, plan: list, kernel: int = 3, pad: int = 1,
                bn: bool = False, pool: type = nn.AvgPool2d) -> list[nn.Module]:
    """``plan`` items: an int (conv channels) or ``'P'`` (2x2 pooling)."""
    mods: list[nn.Module] = []
    ch = in_ch
    for item in plan:
        if item == "P":
            mods.append(pool(kernel_size=(2, 2), stride=(2, 2)))
            continue
        mods.append(nn.Conv2d(ch, item, kernel, padding=pad, bias=not bn))
        if bn:
            mods.append(nn.BatchNorm2d(item))
        mods.append(_act(kind))
        ch = item
    return mods


def _conv_fc(name: str, kind: str, plan: list, fc: list[int], kernel: int = 3, pad: int = 1,
             bn: bool = False, pool: type = nn.AvgPool2d):
    def build(in_shape: tuple[int, int, int], n_classes: int) -> nn.Sequential:
        features = nn.Sequential(*_conv_stack(kind, in_shape[0], plan, kernel, pad, bn, pool),
                                 nn.Flatten())
        width = _flat_size(features, in_shape, name)
        mods = list(features)
        for h in fc:
            mods += [nn.Linear(width, h), _act(kind)]
            width = h
        mods.append(nn.Linear(width, n_classes))
        if kind == "snn":
            mods.append(lif())
        return nn.Sequential(*mods)
    return build


_VGG16 = [64, 64, "P", 128, 128, "P", 256, 256, 256, "P", 512, 512, 512, "P", 512, 512, 512, "P"]

ZOO: dict[str, ModelSpec] = {s.name: s for s in [
    ModelSpec("snn-digits", "snn", _conv_fc("snn-digits", "snn", [16, "P", 32, "P"], [128]),
              "16C3-AP2-32C3-AP2-128FC-10FC SNN sized for 8x8 digits"),
    ModelSpec("ann-digits", "ann", _conv_fc("ann-digits", "ann", [16, "P", 32, "P"], [128]),
              "16C3-AP2-32C3-AP2-128FC-10FC ReLU ANN sized for 8x8 digits"),
    ModelSpec("snn-mnist", "snn", _conv_fc("snn-mnist", "snn", [15, "P", 40, "P"], [300]),
              "paper's SNN for MNIST / N-MNIST / DVS-Gesture: 15C3-AP2-40C3-AP2-300FC-10FC"),
    ModelSpec("snn-cifar10", "snn",
              _conv_fc("snn-cifar10", "snn", [128, 128, "P", 256, 256, "P", 512, 512], [512],
                       bn=True, pool=nn.MaxPool2d),
              "paper's CIFAR-10 SNN: six 3x3 conv with BN, two max-pools, 512FC-10FC"),
    ModelSpec("ann-lenet", "ann",
              _conv_fc("ann-lenet", "ann", [20, "P", 50, "P"], [500], kernel=5, pad=0,
                       pool=nn.MaxPool2d),
              "LeNet: 20C5-MP2-50C5-MP2-500FC-10FC"),
    ModelSpec("ann-vgg16-bn", "ann",
              _conv_fc("ann-vgg16-bn", "ann", _VGG16, [512], bn=True, pool=nn.MaxPool2d),
              "VGG16 with BatchNorm and a 512FC-10FC classifier"),
]}


def build_model(name: str, in_shape: tuple[int, int, int], n_classes: int) -> tuple[nn.Sequential, str]:
    """Return ``(model, kind)`` for a zoo name, sized for ``in_shape = (C, H, W)``."""
    if name not in ZOO:
        raise ConfigError(f"unknown model {name!r}; choose one of {', '.join(ZOO)}")
    spec = ZOO[name]
    return spec.build(tuple(in_shape), n_classes), spec.kind
