"""User data: ``npz:FILE`` holding ``x_train, y_train, x_test, y_test``.

Images may be ``[N, H, W]`` (one channel) or ``[N, C, H, W]``; ``uint8`` pixels are scaled to
[0, 1], floats are used as they are. Loaded with ``allow_pickle=False``.
"""
from __future__ import annotations

from pathlib import Path

import zipfile

import numpy as np
import torch

from ..errors import DPAPError
from .base import Dataset
from .validation import check_split

NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")


def _images(a: np.ndarray, key: str, path: Path) -> torch.Tensor:
    if a.ndim == 3:
        a = a[:, None]
    if a.ndim != 4:
        raise DPAPError(f"{path}: '{key}' must be [N, H, W] or [N, C, H, W], got shape {a.shape}")
    x = torch.from_numpy(np.ascontiguousarray(a))
    return x.float() / 255.0 if a.dtype == np.uint8 else x.float()


def load_npz(spec: str) -> Dataset:
    path = Path(spec)
    if not path.is_file():
        raise DPAPError(f"dataset file {path} does not exist; 'npz:FILE' needs a .npz with "
                        f"arrays {', '.join(NPZ_KEYS)}")
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in NPZ_KEYS if k not in z.files]
            if missing:
                raise DPAPError(f"{path} lacks array(s) {', '.join(missing)}; it needs "
                                f"{', '.join(NPZ_KEYS)}")
            arrays = {k: z[k] for k in NPZ_KEYS}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        first = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
        raise DPAPError(f"{path} is not a readable .npz file ({first}); write it with "
                        f"numpy.savez holding {', '.join(NPZ_KEYS)}") from None
    for k in ("y_train", "y_test"):       # [N, 1] label columns are common: take them as [N]
        if arrays[k].ndim == 2 and arrays[k].shape[1] == 1:
            arrays[k] = arrays[k][:, 0]
    for split in ("train", "test"):
        check_split(arrays[f"x_{split}"], arrays[f"y_{split}"], split, str(path))
    y_train = torch.from_numpy(arrays["y_train"].astype(np.int64))
    y_test = torch.from_numpy(arrays["y_test"].astype(np.int64))
    n_classes = int(max(y_train.max(), y_test.max())) + 1
    return Dataset(f"npz:{path}", _images(arrays["x_train"], "x_train", path), y_train,
                   _images(arrays["x_test"], "x_test", path), y_test, n_classes)
