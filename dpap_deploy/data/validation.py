"""Checks of dataset contents, on the arrays as read (before any conversion could hide a fault:
``astype(int64)`` truncates float labels, NaN pixels train an all-NaN network).

Images: an array (not a scalar), non-empty, numeric, finite, and no value beyond
``MAX_ABS_PIXEL`` in magnitude. Labels: integers (not floats, not bool), one per image, in
``[0, MAX_CLASSES)``. The class count is ``max label + 1``, so a label of 1e9 would ask for a
1e9-way output layer: refused here, not when torch tries to allocate it.

``MAX_ABS_PIXEL = 1e6``: pixels are 0..255 (or 0..65535 from 16-bit sensors), [0, 1] or
standardised (a few units); 1e6 is far above all of them and below 2**24 (1.7e7), where
float32 no longer tells neighbouring integers apart. Larger inputs swamp every weight and
threshold of the network (1e30 trains to chance, its square overflows float32): they are
data that was not normalised, and are refused with that fix.
"""
from __future__ import annotations

import numpy as np

from ..errors import DPAPError

MAX_CLASSES = 10_000
MAX_ABS_PIXEL = 1e6


class DataError(DPAPError):
    """A dataset's files or arrays hold something that cannot be trained on (damaged,
    mislaid or out of range); the message names the file or array and the value."""


def check_images(x: np.ndarray, key: str, source: str) -> None:
    """An array of at least one image, of integers or floats, finite and within
    ``MAX_ABS_PIXEL``."""
    if x.ndim == 0:
        raise DataError(f"{source}: '{key}' is a single value ({x.dtype} scalar), not an array "
                        "of images; store images as [N, H, W] or [N, C, H, W]")
    if x.size == 0 or len(x) == 0:
        raise DataError(f"{source}: '{key}' is empty (shape {x.shape}); it needs at least one "
                        "image")
    if x.dtype == bool or not (np.issubdtype(x.dtype, np.integer)
                               or np.issubdtype(x.dtype, np.floating)):
        raise DataError(f"{source}: '{key}' has dtype {x.dtype}; images must be uint8 pixels "
                        "(0..255) or floats")
    if np.issubdtype(x.dtype, np.floating):
        bad = ~np.isfinite(x)
        if bad.any():
            first = np.argwhere(bad)[0].tolist()
            raise DataError(f"{source}: '{key}' holds {int(bad.sum())} non-finite value(s) "
                            f"(NaN or inf; first at index {first}, value {x[tuple(first)]}); "
                            "replace them with finite pixels")
    check_magnitude(x, key, source)


def check_magnitude(x: np.ndarray, key: str, source: str) -> None:
    """No value of ``x`` beyond ``MAX_ABS_PIXEL`` in magnitude (module docstring)."""
    lo, hi = float(x.min()), float(x.max())
    if max(-lo, hi) <= MAX_ABS_PIXEL:
        return
    worst, at = (lo, np.argmin(x)) if -lo > hi else (hi, np.argmax(x))
    index = [int(i) for i in np.unravel_index(int(at), x.shape)]
    raise DataError(f"{source}: '{key}' holds the value {worst:.3g} (at index {index}); "
                    f"inputs beyond +-{MAX_ABS_PIXEL:.0e} overflow or swamp float32 training: "
                    "normalise your data (e.g. scale to [0, 1] or standardise)")


def check_labels(y: np.ndarray, key: str, source: str, n_images: int | None = None) -> None:
    if y.size == 0:
        raise DataError(f"{source}: '{key}' is empty; it needs one label per image")
    if y.dtype == bool or not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"{source}: '{key}' has dtype {y.dtype}; labels must be integers "
                        "0..K-1 (class indices), e.g. y.astype(np.int64) after checking them")
    if y.ndim != 1:
        raise DataError(f"{source}: '{key}' has shape {y.shape}; labels must be one integer "
                        "per image, shape [N]")
    if n_images is not None and len(y) != n_images:
        raise DataError(f"{source}: '{key}' holds {len(y)} labels for {n_images} images; "
                        "give one label per image")
    lo, hi = int(y.min()), int(y.max())
    if lo < 0 or hi >= MAX_CLASSES:
        bad = lo if lo < 0 else hi
        raise DataError(f"{source}: '{key}' holds label {bad}; labels must be class indices in "
                        f"[0, {MAX_CLASSES}) (0..K-1 for K classes)")


def check_split(x: np.ndarray, y: np.ndarray, split: str, source: str) -> None:
    check_images(x, f"x_{split}", source)
    check_labels(y, f"y_{split}", source, len(x))


def check_same_frame(train_shape: tuple, test_shape: tuple, source: str) -> None:
    if tuple(train_shape[1:]) != tuple(test_shape[1:]):
        raise DataError(f"{source}: train images are {tuple(train_shape[1:])} but test images "
                        f"are {tuple(test_shape[1:])}; both splits need the same image shape")
