"""Checks of dataset contents, on the arrays as read (before any conversion could hide a fault:
``astype(int64)`` truncates float labels, NaN pixels train an all-NaN network).

Images: non-empty, numeric, finite. Labels: integers (not floats, not bool), one per image,
in ``[0, MAX_CLASSES)``. The class count is ``max label + 1``, so a label of 1e9 would ask for
a 1e9-way output layer: refused here, not when torch tries to allocate it.
"""
from __future__ import annotations

import numpy as np

from ..errors import DPAPError

MAX_CLASSES = 10_000


def check_images(x: np.ndarray, key: str, source: str) -> None:
    if x.size == 0 or len(x) == 0:
        raise DPAPError(f"{source}: '{key}' is empty (shape {x.shape}); it needs at least one image")
    if x.dtype == bool or not (np.issubdtype(x.dtype, np.integer)
                               or np.issubdtype(x.dtype, np.floating)):
        raise DPAPError(f"{source}: '{key}' has dtype {x.dtype}; images must be uint8 pixels "
                        "(0..255) or floats")
    if np.issubdtype(x.dtype, np.floating):
        bad = ~np.isfinite(x)
        if bad.any():
            first = np.argwhere(bad)[0].tolist()
            raise DPAPError(f"{source}: '{key}' holds {int(bad.sum())} non-finite value(s) "
                            f"(NaN or inf; first at index {first}, value {x[tuple(first)]}); "
                            "replace them with finite pixels")


def check_labels(y: np.ndarray, key: str, source: str, n_images: int | None = None) -> None:
    if y.size == 0:
        raise DPAPError(f"{source}: '{key}' is empty; it needs one label per image")
    if y.dtype == bool or not np.issubdtype(y.dtype, np.integer):
        raise DPAPError(f"{source}: '{key}' has dtype {y.dtype}; labels must be integers "
                        "0..K-1 (class indices), e.g. y.astype(np.int64) after checking them")
    if y.ndim != 1:
        raise DPAPError(f"{source}: '{key}' has shape {y.shape}; labels must be one integer "
                        "per image, shape [N]")
    if n_images is not None and len(y) != n_images:
        raise DPAPError(f"{source}: '{key}' holds {len(y)} labels for {n_images} images; "
                        "give one label per image")
    lo, hi = int(y.min()), int(y.max())
    if lo < 0 or hi >= MAX_CLASSES:
        bad = lo if lo < 0 else hi
        raise DPAPError(f"{source}: '{key}' holds label {bad}; labels must be class indices in "
                        f"[0, {MAX_CLASSES}) (0..K-1 for K classes)")


def check_split(x: np.ndarray, y: np.ndarray, split: str, source: str) -> None:
    check_images(x, f"x_{split}", source)
    check_labels(y, f"y_{split}", source, len(x))


def check_same_frame(train_shape: tuple, test_shape: tuple, source: str) -> None:
    if tuple(train_shape[1:]) != tuple(test_shape[1:]):
        raise DPAPError(f"{source}: train images are {tuple(train_shape[1:])} but test images "
                        f"are {tuple(test_shape[1:])}; both splits need the same image shape")
