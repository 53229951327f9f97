"""Event frames binned on demand, one sample at a time, each cached in its own file: the path
for event sets too large to hold binned in memory (all of N-MNIST at T = 8 is 70,000 x 18,496
values, 5.2 GB as float32).

:class:`LazyFrames` stands where a dataset's image tensor stands (``Dataset.x_train``): it has
a length, a ``shape`` and ``dim()``, and indexing it (an int, a slice, a list or tensor of
indices) returns float tensors. Sample ``i`` is read from its cache entry, or binned from its
event file and written there first. With ``--workers N`` that happens in the DataLoader's
worker processes (``data.loader.TensorSamples`` indexes one sample at a time); with
``--workers 0`` in the training process. Only labels and file names stay in memory.

Cache entry of one sample: ``CACHE/<k[:2]>/<k>.bits``, ``k`` the hex of
``key = sha256("dpap-event-frames-v1|" name "|T" T "|" file name "\\0" file content)``::

    b"DPAPEVF1" | key (32 bytes) | sha256 of payload (32) | ndim (u8) | shape (ndim x u32 LE)
    | payload = numpy.packbits(frames)        (frames are 0/1: 8 values a byte, C order)

An entry is used only if all of magic, key, shape, payload length and payload digest match;
otherwise (damaged, truncated, swapped, written by another version) the sample is binned again
and the entry replaced. A changed event file has another key, so a stale entry is never read.
Entries are written with :func:`..atomic.atomic_write_bytes` (a temporary file renamed into
place), so two workers or two ranks binning the same sample each publish a whole file and a
reader never sees half of one.
"""
from __future__ import annotations

import hashlib
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from ..atomic import atomic_write_bytes
from ..errors import ConfigError, DPAPError
from .base import Dataset
from .validation import DataError

MAGIC = b"DPAPEVF1"
VERSION = b"dpap-event-frames-v1"
STREAM_ABOVE_BYTES = 1 << 30        # binned float32 frames of both splits above this: stream
MEMORY_SHARE = 0.25                 # ... or above this share of the available memory
ENV = "DPAP_EVENT_FRAMES"           # memory | stream | auto (default)


def frames_path(n_samples: int, frame_shape: tuple[int, ...],
                available: int | None = None) -> str:
    """``"memory"`` or ``"stream"`` for ``n_samples`` frames of ``frame_shape``: in memory
    they take ``n * prod(shape) * 4`` bytes (float32, as training indexes them) in each process;
    stream when that exceeds ``STREAM_ABOVE_BYTES``, or when the copies of all processes on
    this machine (torchrun's ``LOCAL_WORLD_SIZE``) exceed ``MEMORY_SHARE`` of the available
    memory. ``DPAP_EVENT_FRAMES=memory|stream`` overrides the choice (both give the same
    batches)."""
    asked = os.environ.get(ENV, "auto").strip().lower()
    if asked not in ("auto", "memory", "stream"):
        raise ConfigError(f"invalid {ENV}={asked!r} in the environment; use memory, stream "
                          "or auto (or unset it)")
    if asked != "auto":
        return asked
    if available is None:
        from ..validate import available_memory_bytes
        available = available_memory_bytes()
    need = n_samples * int(np.prod(frame_shape)) * 4
    try:
        local = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    except ValueError:
        local = 1
    too_big = need > STREAM_ABOVE_BYTES or (
        available is not None and need * local > MEMORY_SHARE * available)
    return "stream" if too_big else "memory"


class Binner(Protocol):
    frame_shape: tuple[int, ...]
    name: str
    time_steps: int

    def frames(self, raw: bytes) -> np.ndarray: ...


def entry_key(binning: Binner, file_name: str, raw: bytes) -> bytes:
    h = hashlib.sha256(VERSION + f"|{binning.name}|T{binning.time_steps}|".encode())
    h.update(file_name.encode() + b"\0")
    h.update(raw)
    return h.digest()


def encode_entry(key: bytes, frames: np.ndarray) -> bytes:
    payload = np.packbits(frames.astype(bool, copy=False).ravel()).tobytes()
    return (MAGIC + key + hashlib.sha256(payload).digest()
            + struct.pack(f"<B{frames.ndim}I", frames.ndim, *frames.shape) + payload)


def decode_entry(blob: bytes, key: bytes, shape: tuple[int, ...]) -> np.ndarray | None:
    """The uint8 frames of an intact entry for ``key`` of ``shape``, else None."""
    head = len(MAGIC) + 64 + 1 + 4 * len(shape)
    size = int(np.prod(shape))
    if (len(blob) != head + (size + 7) // 8 or blob[:8] != MAGIC or blob[8:40] != key
            or blob[72] != len(shape)
            or struct.unpack(f"<{len(shape)}I", blob[73:head]) != tuple(shape)
            or hashlib.sha256(blob[head:]).digest() != blob[40:72]):
        return None
    bits = np.frombuffer(blob, dtype=np.uint8, offset=head)
    return np.unpackbits(bits, count=size).reshape(shape)


class LazyFrames:
    """``[N, *binning.frame_shape]`` float32 frames of ``files``, binned when indexed and
    cached per sample under ``cache`` (module docstring)."""

    dtype = torch.float32
    device = torch.device("cpu")

    def __init__(self, files, binning: Binner, cache: str | Path) -> None:
        self.files = [str(f) for f in files]
        self.binning, self.cache = binning, Path(cache)
        self.shape = torch.Size((len(self.files), *binning.frame_shape))

    def __len__(self) -> int:
        return len(self.files)

    def dim(self) -> int:
        return len(self.shape)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __repr__(self) -> str:
        return f"LazyFrames({tuple(self.shape)}, cache={str(self.cache)!r})"

    def __getitem__(self, key) -> torch.Tensor:
        if isinstance(key, (int, np.integer)) or (torch.is_tensor(key) and key.dim() == 0):
            return torch.from_numpy(self.sample(int(key))).float()
        if isinstance(key, slice):
            idx = range(*key.indices(len(self)))
        else:
            idx = torch.as_tensor(key)
            idx = (idx.nonzero() if idx.dtype == torch.bool else idx).long().flatten().tolist()
        if len(idx) == 0:
            return torch.zeros((0, *self.shape[1:]), dtype=self.dtype)
        return torch.from_numpy(np.stack([self.sample(i) for i in idx])).float()

    def entry_path(self, key: bytes) -> Path:
        k = key.hex()
        return self.cache / k[:2] / f"{k}.bits"

    def sample(self, i: int) -> np.ndarray:
        """uint8 frames of sample ``i``, from the cache or binned (and cached)."""
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"sample {i} of {n}")
        src = Path(self.files[i])
        try:
            raw = src.read_bytes()
        except OSError as exc:
            raise DPAPError(f"{src}: cannot read this event file ({exc.strerror or exc}); it "
                            "was listed when the dataset was opened: restore it") from None
        key = entry_key(self.binning, src.name, raw)
        path = self.entry_path(key)
        shape = tuple(self.shape[1:])
        try:
            hit = decode_entry(path.read_bytes(), key, shape)
        except OSError:
            hit = None
        if hit is not None:
            return hit
        try:
            frames = self.binning.frames(raw)          # the format's checks come first
        except DataError as exc:
            raise DataError(f"{src} {exc}") from None
        if frames.shape != shape:
            raise DPAPError(f"{src}: binned into frames of shape {frames.shape}, expected "
                            f"{shape}; the file does not hold a valid {self.binning.name} "
                            "recording: remove or replace it")
        atomic_write_bytes(path, lambda fh: fh.write(encode_entry(key, frames)))
        return frames

    def sample_hashes(self) -> list[bytes]:
        """One digest per sample of its event file's content (for ``data.checks``: identical
        recordings bin to identical frames; hashing files does not bin the whole set)."""
        return [hashlib.blake2b(Path(f).read_bytes(), digest_size=16).digest()
                for f in self.files]


@dataclass
class StreamedDataset(Dataset):
    """A :class:`Dataset` whose ``x_train`` / ``x_test`` are :class:`LazyFrames`. Frames are
    0/1 by construction, so only labels, shapes and the class count are checked here (the
    tensor check would bin every sample)."""

    def __post_init__(self) -> None:
        from .validation import check_labels, check_same_frame
        source = f"dataset {self.name!r}"
        for split, x, y in (("train", self.x_train, self.y_train),
                            ("test", self.x_test, self.y_test)):
            check_labels(y.numpy(), f"y_{split}", source, len(x))
        check_same_frame(tuple(self.x_train.shape), tuple(self.x_test.shape), source)
        top = int(max(self.y_train.max(), self.y_test.max()))
        if top >= self.n_classes:
            raise DPAPError(f"dataset {self.name!r}: labels go up to {top} but it has "
                            f"{self.n_classes} classes")
