"""What every dataset loader returns: float images ``[N, C, H, W]`` in [0, 1] and int64
labels, split into train and test.

``source_key``: for data binned from source files (event datasets), a sha256 hex of those
files' names and contents and the binning, the same whichever way the frames are held (one
tensor in memory, or :class:`.event_frames.LazyFrames` binning on demand); a run's data
fingerprint uses it for ``x_train`` / ``x_test`` instead of the frames. None for data held
as arrays from the start (images), whose fingerprint is their bytes."""
from __future__ import annotations

from dataclasses import dataclass
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
    source_key: str | None = None

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of one frame."""
        return tuple(self.x_train.shape[-3:])  # type: ignore[return-value]

    @property
    def is_sequence(self) -> bool:
        """Event data: ``[N, T, C, H, W]``, frame ``t`` is the input at step ``t``."""
        return self.x_train.dim() == 5

    def __post_init__(self) -> None:
        from .validation import check_same_frame, check_split
        for split, x, y in (("train", self.x_train, self.y_train), ("test", self.x_test, self.y_test)):
            if x.dim() not in (4, 5) or x.shape[0] != y.shape[0]:
                raise ConfigError(f"dataset {self.name!r}: {split} images must be [N, C, H, W] "
                                  f"(or [N, T, C, H, W] event frames) with one label each, got "
                                  f"{tuple(x.shape)} and {tuple(y.shape)}")
            check_split(x.detach().cpu().numpy(), y.detach().cpu().numpy(), split,
                        f"dataset {self.name!r}")
        check_same_frame(tuple(self.x_train.shape), tuple(self.x_test.shape), f"dataset {self.name!r}")
        top = int(max(self.y_train.max(), self.y_test.max()))
        if not 2 <= self.n_classes or top >= self.n_classes:
            raise ConfigError(f"dataset {self.name!r}: n_classes={self.n_classes} but labels go "
                              f"up to {top}; it needs at least 2 classes and labels 0..n_classes-1")
