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
Binned frames are cached in ``root/.dpap-cache/`` (keyed by the file list and ``T``).
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ..errors import DPAPError
from .base import Dataset, register

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


def _frames(ds, transform, name: str, split: str, cache: Path, time_steps: int):
    key = hashlib.sha1(("|".join(ds.data) + f"|{time_steps}").encode()).hexdigest()[:16]
    path = cache / f"{name}-{split}-T{time_steps}-{key}.npz"
    if path.exists():
        with np.load(path) as z:
            return torch.from_numpy(z["x"]).float(), torch.from_numpy(z["y"])
    xs, ys = [], []
    for i in tqdm(range(len(ds)), desc=f"{name} {split}: binning events", unit="sample",
                  disable=len(ds) < 200):
        events, target = ds[i]
        xs.append((transform(events) > 0).astype(np.uint8))
        ys.append(int(target))
    x, y = np.stack(xs), np.asarray(ys, dtype=np.int64)
    cache.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez_compressed(tmp, x=x, y=y)
    os.replace(tmp, path)
    return torch.from_numpy(x).float(), torch.from_numpy(y)


def _load(name: str, cls, ext: str, data_root: str | None, time_steps: int, transform_fn,
          n_classes: int) -> Dataset:
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


@register("nmnist")
def load_nmnist(data_root: str | None, time_steps: int = 8) -> Dataset:
    tonic = _tonic()
    sensor = tonic.datasets.NMNIST.sensor_size
    return _load("nmnist", tonic.datasets.NMNIST, ".bin", data_root, time_steps,
                 lambda t, T: t.transforms.ToFrame(sensor_size=sensor, n_time_bins=T), 10)


@register("dvs-gesture")
def load_dvs_gesture(data_root: str | None, time_steps: int = 8) -> Dataset:
    tonic = _tonic()

    def transform(t, T):
        return t.transforms.Compose([
            t.transforms.Downsample(spatial_factor=0.25),
            t.transforms.ToFrame(sensor_size=(32, 32, 2), n_time_bins=T)])
    return _load("dvs-gesture", tonic.datasets.DVSGesture, ".npy", data_root, time_steps,
                 transform, 11)
