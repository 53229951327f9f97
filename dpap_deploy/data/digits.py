"""The embedded default: scikit-learn's handwritten digits (1,797 real 8x8 images, 10 classes),
shipped inside the scikit-learn wheel, so it needs no download.

Split: a fixed permutation (seed 0, independent of the training seed, so every run tests on
the same images) puts 1,400 images in train and 397 in test. Pixels 0..16 scale to [0, 1].
"""
from __future__ import annotations

import numpy as np
import torch

from .base import Dataset

N_TRAIN = 1400
SPLIT_SEED = 0


def load_digits(data_root: str | None = None, time_steps: int | None = None) -> Dataset:
    from sklearn.datasets import load_digits as sk_digits

    d = sk_digits()
    x = torch.from_numpy((d.images / 16.0).astype(np.float32)).unsqueeze(1)
    y = torch.from_numpy(d.target.astype(np.int64))
    perm = torch.from_numpy(np.random.RandomState(SPLIT_SEED).permutation(len(y)))
    tr, te = perm[:N_TRAIN], perm[N_TRAIN:]
    return Dataset("digits", x[tr], y[tr], x[te], y[te], n_classes=10)
