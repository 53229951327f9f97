"""Datasets as in-memory tensors: ``load_dataset(name, data_root, time_steps) -> Dataset``.

The registry is this table: a dataset name and the ``module:function`` in this package that
loads it, imported when the dataset is asked for (so tonic, an optional GPL-3.0 extra, is
imported only for event data). A new dataset is one module with a loader
``fn(data_root, time_steps) -> Dataset`` and one row here; a user's own loader can also be
added at run time with :func:`register`. ``idx:DIR`` and ``npz:FILE`` name files directly.
"""
from __future__ import annotations

import importlib
from typing import Callable

from ..errors import ConfigError
from .base import Dataset

Loader = Callable[[str | None, int | None], Dataset]   # (data_root, time_steps) -> Dataset

DATASETS: dict[str, str | Loader] = {
    "digits": "digits:load_digits",           # embedded scikit-learn digits, the default
    "mnist": "idx:load_mnist",
    "fashion-mnist": "idx:load_fashion_mnist",
    "cifar10": "cifar:load_cifar10",
    "nmnist": "events:load_nmnist",           # needs the 'events' extra (tonic)
    "dvs-gesture": "events:load_dvs_gesture",
}


def register(name: str):
    """Add a loader ``fn(data_root, time_steps) -> Dataset`` under ``name``."""
    def deco(fn: Loader) -> Loader:
        DATASETS[name] = fn
        return fn
    return deco


def dataset_loader(name: str) -> Loader:
    if name not in DATASETS:
        raise ConfigError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}, "
                          "idx:DIR or npz:FILE")
    entry = DATASETS[name]
    if callable(entry):
        return entry
    module, fn = entry.split(":")
    return getattr(importlib.import_module(f".{module}", __name__), fn)


def load_dataset(name: str, data_root: str | None = None,
                 time_steps: int | None = None) -> Dataset:
    """Load a dataset by name. ``time_steps``: the number of time bins of event datasets,
    the run's own setting (no default: an event dataset refuses to load without it); images
    do not use it."""
    if not isinstance(name, str):
        raise ConfigError(f"dataset name must be a string, got {name!r}; choose one of "
                          f"{', '.join(DATASETS)}, idx:DIR or npz:FILE")
    if name.startswith("npz:"):
        from .user import load_npz
        return load_npz(name[4:])
    if name.startswith("idx:"):
        from .idx import load_idx_folder
        return load_idx_folder(name[4:], name)
    return dataset_loader(name)(data_root, time_steps)


__all__ = ["Dataset", "DATASETS", "load_dataset", "register"]
