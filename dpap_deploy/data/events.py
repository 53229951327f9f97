"""Event datasets through tonic (optional ``events`` extra; tonic is GPL-3.0 and imported only
here, only when such a dataset is asked for): ``nmnist`` and ``dvs-gesture``.

Files are read in tonic's layouts (``root/NMNIST/{Train,Test}/<label>/*.bin``;
``root/DVSGesture/ibmGesture{Train,Test}/user<NN>_<lighting>/<label>.npy``) by tonic's own
dataset classes, and binned with ``tonic.transforms.ToFrame`` into ``T`` time bins; a bin
holding at least one event of a polarity at a pixel is a spike (1). Samples become
``[T, 2, H, W]``; DVS-Gesture's 128x128 sensor is downsampled 4x to 32x32 first.

tonic's classes check for the downloaded archive and a minimum file count before reading, and
otherwise download (impossible offline, and wrong for a partial or re-created tree); we keep
their reading code and replace only that check by "the extracted folder holds files".
Binned frames are cached in ``root/.dpap-cache/``, keyed by a sha256 of the event files'
names and contents and ``T``; an entry is used only if it records that key and its arrays
match their stored digest (a replaced or damaged cache file is rebuilt, never used).
"""
from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ..atomic import atomic_write_bytes
from ..errors import DPAPError
from .base import Dataset

SOURCES = {"nmnist": "https://www.garrickorchard.com/datasets/n-mnist (Train.zip, Test.zip; "
                     "extract into ROOT/NMNIST/), or 'dpap-deploy synth-events'",
           "dvs-gesture": "https://research.ibm.com/interactive/dvsgesture/ via tonic's "
                          "preprocessed .npy layout under ROOT/DVSGesture/"}


def _tonic():
    try:
        import tonic
    except ImportError:
        raise DPAPError("event datasets need tonic: pip install 'dpap-deploy[events]' "
                        "(tonic is GPL-3.0 and therefore optional)") from None
    return tonic


def _offline(cls, ext: str, source: str = "the dataset's publisher"):
    """tonic dataset class whose existence check accepts any extracted tree."""
    class Offline(cls):
        def _check_exists(self) -> bool:
            return any(Path(self.location_on_system, self.folder_name).glob(f"**/*{ext}"))

        def download(self) -> None:
            raise DPAPError(f"no {ext} files under {Path(self.location_on_system, self.folder_name)}"
                            f"; get them from {source}")
    Offline.__name__ = cls.__name__   # tonic derives the folder name from the class name
    return Offline


def source_key(files: list[str], name: str, split: str, time_steps: int) -> str:
    """sha256 over the sources' names and contents and the binning: a changed, added or removed
    event file gives another cache entry."""
    h = hashlib.sha256(f"{name}|{split}|T{time_steps}|{len(files)}".encode())
    for f in files:
        h.update(b"\0" + Path(f).name.encode() + b"\0")
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def _array_digest(x: np.ndarray, y: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(x).tobytes() + np.ascontiguousarray(y).tobytes()).hexdigest()


def read_cache(path: Path, key: str) -> tuple[np.ndarray, np.ndarray] | None:
    """The cached frames if ``path`` holds the entry for ``key`` and its arrays are intact."""
    try:
        with np.load(path, allow_pickle=False) as z:
            x, y = z["x"], z["y"]
            ok = str(z["source_key"]) == key and str(z["digest"]) == _array_digest(x, y)
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None
    return (x, y) if ok else None


def _frames(ds, transform, name: str, split: str, cache: Path, time_steps: int):
    key = source_key(list(ds.data), name, split, time_steps)
    path = cache / f"{name}-{split}-T{time_steps}-{key[:16]}.npz"
    hit = read_cache(path, key) if path.exists() else None
    if hit is not None:
        return torch.from_numpy(hit[0]).float(), torch.from_numpy(hit[1])
    xs, ys = [], []
    for i in tqdm(range(len(ds)), desc=f"{name} {split}: binning events", unit="sample",
                  disable=len(ds) < 200):
        events, target = ds[i]
        xs.append((transform(events) > 0).astype(np.uint8))
        ys.append(int(target))
    x, y = np.stack(xs), np.asarray(ys, dtype=np.int64)
    atomic_write_bytes(path, lambda fh: np.savez_compressed(
        fh, x=x, y=y, source_key=np.array(key), digest=np.array(_array_digest(x, y))))
    return torch.from_numpy(x).float(), torch.from_numpy(y)


def _load(name: str, cls, ext: str, data_root: str | None, time_steps: int | None, transform_fn,
          n_classes: int) -> Dataset:
    if time_steps is None:
        raise DPAPError(f"{name} bins events into time steps: pass time_steps (--time-steps T)")
    if data_root is None:
        raise DPAPError(f"{name} needs --data-root ROOT; get the data from {SOURCES[name]}")
    tonic = _tonic()
    Offline = _offline(cls, ext, SOURCES[name])
    splits = {}
    for split, train in (("train", True), ("test", False)):
        ds = Offline(save_to=str(data_root), train=train)
        if len(ds) == 0:
            raise DPAPError(f"{name}: no {ext} files for the {split} split under "
                            f"{Path(ds.location_on_system, ds.folder_name)}; get them from "
                            f"{SOURCES[name]}")
        splits[split] = _frames(ds, transform_fn(tonic, time_steps), name, split,
                                Path(data_root) / ".dpap-cache", time_steps)
    return Dataset(name, *splits["train"], *splits["test"], n_classes=n_classes)


def load_nmnist(data_root: str | None, time_steps: int | None) -> Dataset:
    tonic = _tonic()
    sensor = tonic.datasets.NMNIST.sensor_size
    return _load("nmnist", tonic.datasets.NMNIST, ".bin", data_root, time_steps,
                 lambda t, T: t.transforms.ToFrame(sensor_size=sensor, n_time_bins=T), 10)


def load_dvs_gesture(data_root: str | None, time_steps: int | None) -> Dataset:
    tonic = _tonic()

    def transform(t, T):
        return t.transforms.Compose([
            t.transforms.Downsample(spatial_factor=0.25),
            t.transforms.ToFrame(sensor_size=(32, 32, 2), n_time_bins=T)])
    return _load("dvs-gesture", tonic.datasets.DVSGesture, ".npy", data_root, time_steps,
                 transform, 11)
