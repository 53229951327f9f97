"""IDX datasets (the MNIST file format): ``mnist``, ``fashion-mnist`` and ``idx:DIR``.

A folder holds ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
``t10k-images-idx3-ubyte`` and ``t10k-labels-idx1-ubyte``, each gzipped (``.gz``) or not.
Fashion-MNIST is found without ``--data-root`` at the Debian package's path
(``apt-get install dataset-fashion-mnist``). Pixels 0..255 scale to [0, 1].
"""
from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

import numpy as np
import torch

from ..errors import DPAPError
from .base import Dataset
from .validation import check_split

FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
         "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
FASHION_DEBIAN = Path("/usr/share/datasets/fashion-mnist")
_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
SOURCES = {"mnist": "http://yann.lecun.com/exdb/mnist/ (or any MNIST mirror)",
           "fashion-mnist": "'apt-get install dataset-fashion-mnist' (Debian) or "
                            "https://github.com/zalandoresearch/fashion-mnist"}


def read_idx(path: str | Path) -> np.ndarray:
    """One IDX file (optionally gzipped) as a numpy array."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            raw = fh.read()
    except (OSError, EOFError, zlib.error) as exc:   # BadGzipFile is an OSError
        raise DPAPError(f"{path} cannot be read ({type(exc).__name__}: {exc}); "
                        + ("the gzip stream is corrupt or truncated: download it again"
                           if path.suffix == ".gz" else "check the file")) from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _DTYPES or not 1 <= raw[3] <= 4:
        raise DPAPError(f"{path} is not an IDX file (bad magic number {raw[:4].hex()}); "
                        "expected 0x0000, a type byte and 1-4 dimensions")
    ndim = raw[3]
    if len(raw) < 4 + 4 * ndim:
        raise DPAPError(f"{path}: IDX header is cut off ({len(raw)} bytes); the file is truncated")
    dims = struct.unpack(f">{ndim}I", raw[4:4 + 4 * ndim])
    dtype = np.dtype(_DTYPES[raw[2]])
    expect = int(np.prod(dims, dtype=object)) * dtype.itemsize
    body = raw[4 + 4 * ndim:]
    if len(body) != expect:
        raise DPAPError(f"{path}: IDX header says {dims} ({expect} bytes) but the file holds "
                        f"{len(body)} bytes: truncated or corrupt")
    return np.frombuffer(body, dtype=dtype).reshape(dims)


def _find(folder: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz"):
        if (folder / name).is_file():
            return folder / name
    return None


def load_idx_folder(folder: str | Path, name: str) -> Dataset:
    folder = Path(folder)
    found = {s: [_find(folder, stem) for stem in FILES[s]] for s in FILES}
    missing = [stem for s in FILES for stem, p in zip(FILES[s], found[s]) if p is None]
    if missing:
        src = SOURCES.get(name, "the dataset's publisher")
        raise DPAPError(f"{name}: missing {', '.join(m + '[.gz]' for m in missing)} in {folder}; "
                        f"get them from {src} and pass the folder with --data-root")
    arrays = {}
    for split, (img, lab) in found.items():
        x, y = read_idx(img), read_idx(lab)
        if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
            raise DPAPError(f"{name}: {img.name} holds {x.shape} but {lab.name} holds {y.shape}; "
                            "expected [N, H, W] images with N labels")
        check_split(x, y, split, f"{name} ({folder})")
        arrays[split] = (torch.from_numpy(x.astype(np.float32) / 255.0).unsqueeze(1),
                         torch.from_numpy(y.astype(np.int64)))
    n_classes = int(max(arrays["train"][1].max(), arrays["test"][1].max())) + 1
    return Dataset(name, *arrays["train"], *arrays["test"], n_classes=n_classes)


def _root_with_files(root: Path, subdirs: tuple[str, ...]) -> Path:
    for cand in (root, *[root / s for s in subdirs]):
        if _find(cand, FILES["train"][0]):
            return cand
    return root


def load_mnist(data_root: str | None, time_steps: int | None = None) -> Dataset:
    if data_root is None:
        raise DPAPError("mnist needs --data-root DIR with the four MNIST IDX files "
                        f"({', '.join(FILES['train'] + FILES['test'])}, gzipped or not); get them "
                        f"from {SOURCES['mnist']}")
    return load_idx_folder(_root_with_files(Path(data_root), ("MNIST/raw", "mnist", "MNIST")), "mnist")


def load_fashion_mnist(data_root: str | None, time_steps: int | None = None) -> Dataset:
    root = Path(data_root) if data_root is not None else FASHION_DEBIAN
    return load_idx_folder(_root_with_files(root, ("FashionMNIST/raw", "fashion-mnist")),
                           "fashion-mnist")
