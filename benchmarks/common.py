"""Shared pieces of the benchmarks."""
from __future__ import annotations

import statistics
import time
from typing import Callable

import torch.nn.functional as F

from dpap_deploy.data import Dataset, load_dataset


def digits_28(n_train: int | None = None) -> Dataset:
    """The real scikit-learn digits upsampled (bilinear) to 28x28, for the paper-sized
    networks when no 28x28 dataset is at hand. ``n_train`` repeats the training images."""
    d = load_dataset("digits")
    up = lambda x: F.interpolate(x, size=(28, 28), mode="bilinear", align_corners=False)  # noqa: E731
    x, y = up(d.x_train), d.y_train
    if n_train is not None:
        reps = -(-n_train // len(y))
        x, y = x.repeat(reps, 1, 1, 1)[:n_train], y.repeat(reps)[:n_train]
    return Dataset("digits-28", x, y, up(d.x_test), d.y_test, 10)


def interleaved_medians(fns: list[Callable[[], object]], repeats: int) -> list[list[float]]:
    """Time each function ``repeats`` times, alternating their order every round."""
    times: list[list[float]] = [[] for _ in fns]
    for r in range(repeats):
        order = range(len(fns)) if r % 2 == 0 else reversed(range(len(fns)))
        for i in order:
            t0 = time.perf_counter()
            fns[i]()
            times[i].append(time.perf_counter() - t0)
    return times


def median(xs: list[float]) -> float:
    return statistics.median(xs)
