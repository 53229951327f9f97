"""CIFAR-10 from the standard python-pickle batches (``cifar-10-batches-py/data_batch_1..5``,
``test_batch``), loaded **safely**: the batches are pickles, and a pickle can run code, so they
are read with an unpickler that admits only what a CIFAR batch contains (dicts, lists, bytes,
numbers, and numpy arrays rebuilt by numpy's own reconstructor); anything else is refused.
"""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch

from ..errors import DPAPError
from .base import Dataset

FOLDER = "cifar-10-batches-py"
TRAIN = [f"data_batch_{i}" for i in range(1, 6)]
TEST = ["test_batch"]
SOURCE = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz (extract it)"
_ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
            ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
            ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar")}


class _SafeUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}: a CIFAR batch holds "
                                     "only arrays, lists and bytes")


def read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with open(path, "rb") as fh:
            d = _SafeUnpickler(fh, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError) as exc:
        raise DPAPError(f"{path} is not a readable CIFAR-10 batch: {exc}") from None
    get = lambda k: d.get(k, d.get(k.decode()) if isinstance(d, dict) else None)  # noqa: E731
    data, labels = get(b"data"), get(b"labels")
    if data is None or labels is None:
        raise DPAPError(f"{path} lacks 'data' or 'labels': not a CIFAR-10 python batch")
    data = np.asarray(data, dtype=np.uint8)
    if data.ndim != 2 or data.shape[1] != 3072:
        raise DPAPError(f"{path}: 'data' has shape {data.shape}, expected [N, 3072]")
    return data.reshape(-1, 3, 32, 32), np.asarray(labels, dtype=np.int64)


def load_cifar10(data_root: str | None, time_steps: int | None = None) -> Dataset:
    if data_root is None:
        raise DPAPError(f"cifar10 needs --data-root DIR holding {FOLDER}/ ({', '.join(TRAIN + TEST)}); "
                        f"get it from {SOURCE}")
    root = Path(data_root)
    folder = root / FOLDER if (root / FOLDER).is_dir() else root
    missing = [f for f in TRAIN + TEST if not (folder / f).is_file()]
    if missing:
        raise DPAPError(f"cifar10: missing {', '.join(missing)} in {folder}; get them from {SOURCE}")
    split = lambda names: [read_batch(folder / f) for f in names]  # noqa: E731
    tr, te = split(TRAIN), split(TEST)
    cat = lambda parts, i: np.concatenate([p[i] for p in parts])  # noqa: E731
    to_x = lambda a: torch.from_numpy(a.astype(np.float32) / 255.0)  # noqa: E731
    return Dataset("cifar10", to_x(cat(tr, 0)), torch.from_numpy(cat(tr, 1)),
                   to_x(cat(te, 0)), torch.from_numpy(cat(te, 1)), n_classes=10)
