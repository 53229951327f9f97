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

Two paths, chosen per dataset by :func:`.event_frames.frames_path` (the binned size of both
splits; ``DPAP_EVENT_FRAMES=memory|stream`` overrides it):

- *memory* (small sets, e.g. DVS-Gesture at 32x32): every sample binned once, up front, into
  one tensor per split, cached as one ``root/.dpap-cache/<name>-<split>-T<T>-<key>.npz`` keyed
  by a sha256 of the split's event files' names and contents and ``T``; an entry is used only
  if it records that key and its arrays match their stored digest (a replaced or damaged cache
  file is rebuilt, never used);
- *stream* (large sets, e.g. all of N-MNIST): :class:`.event_frames.LazyFrames` bins a sample
  when it is first asked for (in DataLoader workers with ``--workers N``) and caches it alone.

Both bin with :class:`Binning`; the stream path reads the files with its own readers, the
same as tonic's ``__getitem__`` (tested equal), so that workers need no tonic dataset object.

Nothing damaged is binned (:mod:`.event_formats`): each split folder's layout is checked before
tonic walks it, and every event file of both splits is read and checked before the first frame
is binned or cached; the first problem is refused with the file's path relative to the data
root. Those same reads give each split's :func:`source_key`, and the returned dataset's
``source_key`` (:func:`dataset_key`, equal on both paths) is what a run's data fingerprint
hashes for the frames.

A load that fails (raises an exception) after writing cache files, in a data root that had no
``.dpap-cache`` when it started, removes the files it wrote, and the folder if it made it and
it is then empty: a refused load leaves the data root as it was, while files that other
processes write there at the same time stay. Ctrl-C (KeyboardInterrupt) removes nothing: every
cache file is written atomically, so a finished one is valid and the next load uses it.
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ..atomic import atomic_write_bytes
from ..errors import DPAPError
from .base import Dataset
from .event_formats import EXT, N_CLASSES, EventDataError, check, check_layout, decode
from .event_frames import LazyFrames, StreamedDataset, frames_path

SOURCES = {"nmnist": "https://www.garrickorchard.com/datasets/n-mnist (Train.zip, Test.zip; "
                     "extract into ROOT/NMNIST/), or 'dpap-deploy synth-events'",
           "dvs-gesture": "https://research.ibm.com/interactive/dvsgesture/ via tonic's "
                          "preprocessed .npy layout under ROOT/DVSGesture/"}
FRAME_HW = {"nmnist": 34, "dvs-gesture": 32}     # DVS-Gesture's 128 x 128 downsampled 4x


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


@functools.lru_cache(maxsize=None)
def _transform(name: str, time_steps: int):
    """tonic's binning of ``name`` into ``time_steps`` frames (built once per process)."""
    t = _tonic()
    if name == "nmnist":
        return t.transforms.ToFrame(sensor_size=t.datasets.NMNIST.sensor_size,
                                    n_time_bins=time_steps)
    return t.transforms.Compose([t.transforms.Downsample(spatial_factor=0.25),
                                 t.transforms.ToFrame(sensor_size=(32, 32, 2),
                                                      n_time_bins=time_steps)])


@dataclass(frozen=True)
class Binning:
    """How one event file of dataset ``name`` becomes ``[T, 2, H, W]`` frames of 0/1: a bin
    holding at least one event of a polarity at a pixel is a spike. Plain data, so DataLoader
    workers receive it and rebuild tonic's transform themselves."""

    name: str                 # "nmnist" or "dvs-gesture"
    time_steps: int

    @property
    def frame_shape(self) -> tuple[int, int, int, int]:
        hw = FRAME_HW[self.name]
        return (self.time_steps, 2, hw, hw)

    def transform(self):
        return _transform(self.name, self.time_steps)

    def bin(self, events: np.ndarray) -> np.ndarray:
        return (self.transform()(events) > 0).astype(np.uint8)

    def read(self, raw: bytes) -> np.ndarray:
        """The events of one file's bytes, as tonic's ``__getitem__`` reads them, after the
        format's checks (:func:`.event_formats.decode`; raises :class:`EventDataError`)."""
        return decode(self.name, raw, self.time_steps)

    def check(self, raw: bytes) -> None:
        """Refuse one file's bytes that do not hold a recording of this format."""
        check(self.name, raw, self.time_steps)

    def frames(self, raw: bytes) -> np.ndarray:
        return self.bin(self.read(raw))


def _key_start(name: str, split: str, time_steps: int, n_files: int):
    return hashlib.sha256(f"{name}|{split}|T{time_steps}|{n_files}".encode())


def _key_name(h, f: str) -> None:
    h.update(b"\0" + Path(f).name.encode() + b"\0")


def source_key(files: list[str], name: str, split: str, time_steps: int) -> str:
    """sha256 over the sources' names and contents and the binning: a changed, added or removed
    event file gives another cache entry. (:func:`check_files` computes the same while it
    reads the files.)"""
    h = _key_start(name, split, time_steps, len(files))
    for f in files:
        _key_name(h, f)
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def dataset_key(split_keys: dict[str, str]) -> str:
    """The dataset's ``source_key``: one sha256 over its splits' :func:`source_key` (each
    covers the split's event files' names and contents, the dataset and T)."""
    text = "|".join(f"{split}={key}" for split, key in split_keys.items())
    return hashlib.sha256(f"dpap-event-source-v1|{text}".encode()).hexdigest()


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


def _frames(ds, transform, name: str, split: str, cache: Path, time_steps: int,
            key: str | None = None, new: NewFiles | None = None):
    """The memory path: every sample of ``ds`` binned, as one tensor (one cache file).
    ``key``: the split's :func:`source_key` when already computed; ``new`` records the cache
    file if this call writes it."""
    key = key or source_key(list(ds.data), name, split, time_steps)
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
    if new is not None:
        new.will_write(path)
    atomic_write_bytes(path, lambda fh: np.savez_compressed(
        fh, x=x, y=y, source_key=np.array(key), digest=np.array(_array_digest(x, y))))
    return torch.from_numpy(x).float(), torch.from_numpy(y)


def check_files(binning: Binning, splits: dict[str, list[str]],
                root: str | Path) -> dict[str, str]:
    """Read and check every event file of each split (:meth:`Binning.check`); the first damaged
    one is refused with its path relative to ``root``. Returns each split's
    :func:`source_key`, computed from the same reads (each file is read once)."""
    keys = {split: _key_start(binning.name, split, binning.time_steps, len(files))
            for split, files in splits.items()}
    todo = [(split, f) for split, files in splits.items() for f in files]
    for split, f in tqdm(todo, desc=f"{binning.name}: checking event files", unit="file",
                         disable=len(todo) < 2000):
        raw = Path(f).read_bytes()
        try:
            binning.check(raw)
        except EventDataError as exc:
            rel = Path(f).relative_to(root) if Path(f).is_relative_to(root) else Path(f)
            raise EventDataError(f"{binning.name}: {rel} {exc}") from None
        _key_name(keys[split], f)
        keys[split].update(raw)
    return {split: h.hexdigest() for split, h in keys.items()}


class NewFiles:
    """The cache files one load writes into ``folder``, and whether it made the folder."""

    def __init__(self, folder: Path) -> None:
        self.folder, self.files, self.made_folder = Path(folder), [], False

    def will_write(self, path: Path) -> None:
        """Call before writing ``path`` (in ``folder``): makes the folder if it is missing,
        and records the file as this load's unless it already exists."""
        try:
            self.folder.mkdir()
            self.made_folder = True
        except OSError:         # there already, or the write that follows says why not
            pass
        if not path.exists():
            self.files.append(path)

    def remove(self) -> None:
        """Remove the recorded files, then the folder if this load made it and it is empty."""
        for path in self.files:
            with contextlib.suppress(OSError):
                path.unlink(missing_ok=True)
        if self.made_folder:
            with contextlib.suppress(OSError):    # not empty: another process wrote there
                self.folder.rmdir()


@contextlib.contextmanager
def removed_on_failure(cache: Path):
    """Yield a :class:`NewFiles` for ``cache``. If the block raises an exception and ``cache``
    did not exist when it began, remove the files recorded there (and the folder if the block
    made it and it is then empty): a refused load leaves nothing in the user's data folder.
    Files other processes write there meanwhile are not touched. A KeyboardInterrupt (or
    SystemExit) removes nothing: the cache files are written atomically, so those finished
    are whole and valid."""
    existed, new = cache.exists(), NewFiles(cache)
    try:
        yield new
    except Exception:
        if not existed:
            new.remove()
        raise


def _sources(name: str, cls, data_root: str) -> dict:
    """tonic's dataset object of each split, after checking the split folder's layout."""
    ext, Offline = EXT[name], _offline(cls, EXT[name], SOURCES[name])
    sources = {}
    for split, train in (("train", True), ("test", False)):
        check_layout(name, data_root, split)
        ds = Offline(save_to=str(data_root), train=train)
        if len(ds) == 0:
            raise DPAPError(f"{name}: no {ext} files for the {split} split under "
                            f"{Path(ds.location_on_system, ds.folder_name)}; get them from "
                            f"{SOURCES[name]}")
        sources[split] = ds
    return sources


def _load(name: str, cls, data_root: str | None, time_steps: int | None) -> Dataset:
    if time_steps is None:
        raise DPAPError(f"{name} bins events into time steps: pass time_steps (--time-steps T)")
    if data_root is None:
        raise DPAPError(f"{name} needs --data-root ROOT; get the data from {SOURCES[name]}")
    sources = _sources(name, cls, data_root)
    binning, cache = Binning(name, time_steps), Path(data_root) / ".dpap-cache"
    keys = check_files(binning, {split: list(ds.data) for split, ds in sources.items()},
                       data_root)
    with removed_on_failure(cache) as new:
        n = sum(len(ds) for ds in sources.values())
        if frames_path(n, binning.frame_shape) == "stream":
            parts = [(LazyFrames(ds.data, binning, cache / f"{name}-T{time_steps}"),
                      torch.as_tensor(ds.targets, dtype=torch.int64)) for ds in sources.values()]
            return StreamedDataset(name, *parts[0], *parts[1], n_classes=N_CLASSES[name],
                                   source_key=dataset_key(keys))
        splits = [_frames(ds, binning.transform(), name, split, cache, time_steps,
                          key=keys[split], new=new)
                  for split, ds in sources.items()]
        return Dataset(name, *splits[0], *splits[1], n_classes=N_CLASSES[name],
                       source_key=dataset_key(keys))


def load_nmnist(data_root: str | None, time_steps: int | None) -> Dataset:
    return _load("nmnist", _tonic().datasets.NMNIST, data_root, time_steps)


def load_dvs_gesture(data_root: str | None, time_steps: int | None) -> Dataset:
    return _load("dvs-gesture", _tonic().datasets.DVSGesture, data_root, time_steps)
