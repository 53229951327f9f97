"""Dataset registry. Every loader returns float images ``[N, C, H, W]`` in [0, 1] and int64
labels, split into train and test."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from ..errors import ConfigError


@dataclass
class Dataset:
    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    n_classes: int

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(self.x_train.shape[1:])  # type: ignore[return-value]

    def __post_init__(self) -> None:
        for split, x, y in (("train", self.x_train, self.y_train), ("test", self.x_test, self.y_test)):
            if x.dim() != 4 or x.shape[0] != y.shape[0]:
                raise ConfigError(f"dataset {self.name!r}: {split} images must be [N, C, H, W] with "
                                  f"one label each, got {tuple(x.shape)} and {tuple(y.shape)}")


Loader = Callable[[str | None], Dataset]
DATASETS: dict[str, Loader] = {}


def register(name: str):
    def deco(fn: Loader) -> Loader:
        DATASETS[name] = fn
        return fn
    return deco


def load_dataset(name: str = "digits", data_root: str | None = None) -> Dataset:
    if name.startswith("npz:"):
        from .user import load_npz
        return load_npz(name[4:])
    if name not in DATASETS:
        raise ConfigError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}, "
                          "or npz:FILE")
    return DATASETS[name](data_root)


from . import digits  # noqa: E402,F401  (registers the embedded default)
