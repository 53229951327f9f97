"""Warnings about data that make a run's figures meaningless, checked once when training
starts: one line each, also stored in ``report.json`` (``data_warnings``).

- a single class (in train or test): any classifier that outputs it scores 100%;
- classes badly unbalanced: the most frequent training class has more than
  ``UNBALANCED_RATIO`` times the samples of the least frequent one, or some classes have none;
- train and test sharing samples: identical inputs (BLAKE2 hash of each sample's bytes), so
  test accuracy measures memory, not generalization;
- fewer training samples than one batch.
These are warnings, not errors: the run goes on.
"""
from __future__ import annotations

import hashlib

import numpy as np
import torch

from ..notices import warn
from .base import Dataset

UNBALANCED_RATIO = 10.0


def _count(n: int, word: str) -> str:
    return f"{n:,} {word}" + ("" if n == 1 else "s")


def sample_hashes(x: torch.Tensor) -> list[bytes]:
    """One 16-byte BLAKE2b digest per sample of ``x`` (its raw bytes; frames binned on demand
    hash their event files instead: ``event_frames.LazyFrames.sample_hashes``)."""
    if hasattr(x, "sample_hashes"):
        return x.sample_hashes()
    rows = np.ascontiguousarray(x.detach().cpu().numpy()).reshape(len(x), -1)
    return [hashlib.blake2b(r.tobytes(), digest_size=16).digest() for r in rows]


def _classes(split: str, y: torch.Tensor, n_classes: int) -> list[str]:
    counts = torch.bincount(y.cpu(), minlength=n_classes)
    present = torch.nonzero(counts).flatten().tolist()
    if len(present) == 1:
        return [f"the {split} set holds a single class (label {present[0]}, "
                f"{_count(len(y), 'sample')}): any network that always answers it scores 100%"]
    if split != "train" or not present:
        return []
    out = []
    missing = [c for c in range(n_classes) if counts[c] == 0]
    if missing:
        shown = ", ".join(map(str, missing[:10])) + (", ..." if len(missing) > 10 else "")
        out.append(f"the train set has no sample of {len(missing)} of {n_classes} classes "
                   f"({shown}): the network cannot learn them")
    hi, lo = max(present, key=lambda c: counts[c]), min(present, key=lambda c: counts[c])
    ratio = float(counts[hi]) / float(counts[lo])
    if ratio > UNBALANCED_RATIO:
        out.append(f"train classes are unbalanced {ratio:.0f}:1 (class {hi}: "
                   f"{_count(int(counts[hi]), 'sample')}, class {lo}: {int(counts[lo]):,}); "
                   "accuracy favours the large classes")
    return out


def _overlap(data: Dataset) -> list[str]:
    train = set(sample_hashes(data.x_train))
    shared = sum(h in train for h in sample_hashes(data.x_test))
    if not shared:
        return []
    n = len(data.y_test)
    verb = "is" if shared == 1 else "are"
    return [f"{shared:,} of {_count(n, 'test sample')} ({shared / n:.1%}) {verb} identical to "
            "training samples: test accuracy partly measures memory"]


def check_dataset(data: Dataset, batch_size: int) -> list[str]:
    """Log each problem found in ``data`` as a one-line warning; return their texts."""
    found = _classes("train", data.y_train, data.n_classes)
    found += _classes("test", data.y_test, data.n_classes)
    found += _overlap(data)
    if len(data.y_train) < batch_size:
        found.append(f"the train set has {_count(len(data.y_train), 'sample')}, fewer than "
                     f"one batch ({batch_size}): every epoch is a single partial batch")
    return [warn(f"data: {msg}") for msg in found]
