"""The two event formats, read and checked: N-MNIST ``.bin`` and DVS-Gesture ``.npy`` files, and
the folder layouts that hold them. Nothing damaged is binned, cached or trained on.

A split folder is checked before tonic walks it (tonic turns a misplaced file into a crash or,
worse, a wrong label: N-MNIST's label is the last character of the folder name, so ``13/``
would be class 3). Every event file is checked before any frame is binned or cached:
:func:`check` for all files up front, and :func:`decode` (the same rules, then tonic's reading)
whenever a file is binned. Problems raise :class:`EventDataError`, whose message the caller
prefixes with the file's path relative to the data root.

Layouts (files that do not end with the format's extension are ignored, as tonic ignores them):

- N-MNIST: ``NMNIST/{Train,Test}/<digit>/<name>.bin``; the label folder is one digit 0-9, and
  no ``.bin`` lies at split level or deeper than a label folder.
- DVS-Gesture: ``DVSGesture/ibmGesture{Train,Test}/user<NN>_<lighting>/<label>.npy``; every
  folder below the split folder is such a user folder (tonic parses every one), labels 0..10,
  no ``.npy`` at split level.

Events (one shared rule, :func:`check_events`, on the columns as stored):

- at least one event: a recording of a digit or a gesture always has thousands; a file without
  any is a failed copy or extraction, and would train its label on empty frames. Refused, not
  skipped: skipping would change the set and its class balance behind the user's back;
- ``x``, ``y`` inside the sensor (34 x 34 for N-MNIST, 128 x 128 for DVS-Gesture) and polarity
  0 or 1: binning indexes a frame with them, so an outside value either crashes or (negative,
  or DVS polarity cast to bool) lands silently on the wrong pixel or channel;
- time stamps non-negative and never decreasing (equal stamps are fine): cameras emit events in
  time order, and tonic's time binning finds bin edges by binary search from the first to the
  last event, so an unsorted stream is binned wrongly without any error;
- a span of at least one microsecond per time bin: a shorter recording bins to all-empty frames.
"""
from __future__ import annotations

import io
import os
import re
from pathlib import Path

import numpy as np

from .validation import DataError

SENSORS = {"nmnist": (34, 34, 2), "dvs-gesture": (128, 128, 2)}     # width, height, polarities
N_CLASSES = {"nmnist": 10, "dvs-gesture": 11}
EXT = {"nmnist": ".bin", "dvs-gesture": ".npy"}
SPLIT_FOLDERS = {"nmnist": {"train": "NMNIST/Train", "test": "NMNIST/Test"},
                 "dvs-gesture": {"train": "DVSGesture/ibmGestureTrain",
                                 "test": "DVSGesture/ibmGestureTest"}}
NMNIST_EVENT_BYTES = 5
DVS_US_PER_TICK = 1000                       # DVS-Gesture .npy time stamps are milliseconds
REPLACE = "the file is damaged: remove or replace it"
EMPTY_FILE = ("is empty (0 bytes); a recording always has events: it was truncated or never "
              "written: remove or replace it")


class EventDataError(DataError):
    """An event file or folder that cannot be read as its dataset's format."""


# --- events -----------------------------------------------------------------------------------

def _first(mask: np.ndarray) -> int | None:
    """Index of the first True of ``mask``, or None."""
    return int(np.argmax(mask)) if mask.any() else None


def _outside(v: np.ndarray, lo: int, hi: int) -> int | None:
    """Index of the first value of ``v`` outside ``[lo, hi]``, or None (min and max first:
    a good column costs two reductions)."""
    if v.min() >= lo and v.max() <= hi:
        return None
    return _first((v < lo) | (v > hi))


def _check_coordinates(x: np.ndarray, y: np.ndarray, p: np.ndarray, sensor: tuple) -> None:
    w, h, _ = sensor
    for axis, v, size in (("x", x, w), ("y", y, h)):
        i = _outside(v, 0, size - 1)
        if i is not None:
            raise EventDataError(f"has event {i} at {axis}={v[i]}, outside the {w}x{h} sensor "
                                 f"({axis} in 0..{size - 1}); {REPLACE}")
    i = _outside(p, 0, 1)
    if i is not None:
        raise EventDataError(f"has event {i} with polarity {p[i]}; polarity is 0 (OFF) or 1 (ON); "
                             f"{REPLACE}")


def _check_times(t: np.ndarray, time_steps: int, us_per_tick: int, limit: int | None) -> None:
    i = _outside(t, 0, limit if limit is not None else int(np.iinfo(np.int64).max))
    if i is not None and t[i] < 0:
        raise EventDataError(f"has event {i} at the negative time {t[i]}; {REPLACE}")
    if i is not None:
        raise EventDataError(f"has event {i} at time {t[i]}, beyond {limit} "
                             f"(its microseconds overflow {t.dtype}); {REPLACE}")
    i = _first(t[1:] < t[:-1])
    if i is not None:
        raise EventDataError(f"has event {i + 1} at time {t[i + 1]}, before event {i} ({t[i]}); "
                             "events must be in time order, or binning places them wrongly; "
                             f"{REPLACE}")
    span_us = (int(t[-1]) - int(t[0])) * us_per_tick
    if span_us < time_steps:
        raise EventDataError(f"spans {span_us} us with {len(t)} event(s), less than one us per "
                             f"time bin ({time_steps} bins): every frame would be empty; remove "
                             "the file or use fewer --time-steps")


def check_events(x: np.ndarray, y: np.ndarray, p: np.ndarray, t: np.ndarray, sensor: tuple,
                 time_steps: int, us_per_tick: int = 1, t_limit: int | None = None) -> None:
    """The rules on events of the module docstring, on whole columns at once. ``t`` counts
    ``us_per_tick`` microseconds a tick; ``t_limit`` is the largest stamp whose microseconds
    fit the column's type."""
    if len(t) == 0:
        raise EventDataError("holds no events; a recording always has some: it was truncated "
                             "or never written: remove or replace it")
    _check_coordinates(x, y, p, sensor)
    _check_times(t, time_steps, us_per_tick, t_limit)


def _nmnist_columns(raw: bytes) -> tuple[np.ndarray, ...]:
    """x, y, p, t of the events of N-MNIST bytes, computed as tonic's ``read_mnist_file`` does
    (a record with y = 240 is a time-stamp overflow: it adds 2**13 us to itself and all later
    records and is dropped), without its per-overflow loop."""
    r = np.frombuffer(raw, dtype=np.uint8).reshape(-1, NMNIST_EVENT_BYTES)
    x, y, pt = r[:, 0], r[:, 1], r[:, 2]
    t = (pt & 127).astype(np.int64) << 16 | r[:, 3].astype(np.int64) << 8 | r[:, 4]
    overflow = y == 240
    if overflow.any():
        keep = ~overflow
        t = t + (np.cumsum(overflow, dtype=np.int64) << 13)
        x, y, pt, t = x[keep], y[keep], pt[keep], t[keep]
    return x, y, pt >> 7, t


def check_nmnist(raw: bytes, time_steps: int) -> None:
    """One N-MNIST ``.bin`` (5 bytes an event) holds a recording that bins as it should."""
    if len(raw) == 0:
        raise EventDataError(EMPTY_FILE)
    if len(raw) % NMNIST_EVENT_BYTES:
        raise EventDataError(f"is {len(raw)} bytes, not a multiple of {NMNIST_EVENT_BYTES} (one "
                             f"N-MNIST event); it is truncated or not an N-MNIST file: remove or "
                             "replace it")
    check_events(*_nmnist_columns(raw), SENSORS["nmnist"], time_steps)


def decode_nmnist(raw: bytes, time_steps: int) -> np.ndarray:
    """The checked events of one N-MNIST ``.bin``, read by tonic's own reader."""
    import tonic
    check_nmnist(raw, time_steps)
    return tonic.io.read_mnist_file(io.BytesIO(raw), dtype=tonic.datasets.NMNIST.dtype,
                                    is_stream=True)


def _load_npy(raw: bytes) -> np.ndarray:
    """One ``.npy`` array, without pickles."""
    if len(raw) == 0:
        raise EventDataError(EMPTY_FILE)
    try:
        a = np.load(io.BytesIO(raw), allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        first = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
        raise EventDataError(f"is not a readable .npy array ({first}); {REPLACE}") from None
    if not isinstance(a, np.ndarray):
        a.close()
        raise EventDataError(f"is an .npz archive, not one .npy array; {REPLACE}")
    return a


def check_dvs_gesture(raw: bytes, time_steps: int) -> np.ndarray:
    """One DVS-Gesture ``.npy`` holds an (N, 4) integer array x, y, p, t (ms) that bins as it
    should; returns the array."""
    a = _load_npy(raw)
    if a.ndim != 2 or a.shape[1] != 4:
        raise EventDataError(f"holds an array of shape {a.shape}; a DVS-Gesture recording is "
                             f"(N, 4): columns x, y, p, t (ms); {REPLACE}")
    if a.dtype == bool or not np.issubdtype(a.dtype, np.integer):
        raise EventDataError(f"holds {a.dtype} values; a DVS-Gesture recording is integers "
                             f"(int64 x, y, p, t in ms); {REPLACE}")
    check_events(a[:, 0], a[:, 1], a[:, 2], a[:, 3], SENSORS["dvs-gesture"], time_steps,
                 DVS_US_PER_TICK, int(np.iinfo(a.dtype).max) // DVS_US_PER_TICK)
    return a


def decode_dvs_gesture(raw: bytes, time_steps: int) -> np.ndarray:
    """The checked events of one DVS-Gesture ``.npy``, converted as tonic does (ms to us, its
    structured dtype)."""
    import numpy.lib.recfunctions as rfn
    import tonic
    a = check_dvs_gesture(raw, time_steps)
    a[:, 3] *= DVS_US_PER_TICK
    return rfn.unstructured_to_structured(a, tonic.datasets.DVSGesture.dtype)


CHECKS = {"nmnist": check_nmnist, "dvs-gesture": check_dvs_gesture}
DECODERS = {"nmnist": decode_nmnist, "dvs-gesture": decode_dvs_gesture}


def check(name: str, raw: bytes, time_steps: int) -> None:
    """Refuse one file of dataset ``name`` that would not bin as a recording should."""
    CHECKS[name](raw, time_steps)


def decode(name: str, raw: bytes, time_steps: int) -> np.ndarray:
    """The checked events of one file of dataset ``name``."""
    return DECODERS[name](raw, time_steps)


# --- folder layouts ----------------------------------------------------------------------------

def _walk(folder: Path) -> tuple[list[Path], list[Path]]:
    """Every folder and file below ``folder`` (hidden ones too: tonic walks them), relative to
    it, sorted."""
    dirs, files = [], []
    for path, subdirs, names in os.walk(folder):
        rel = Path(path).relative_to(folder)
        dirs += [rel / d for d in subdirs]
        files += [rel / f for f in names]
    return sorted(dirs), sorted(files)


def _event_files(files: list[Path], ext: str) -> list[Path]:
    """The files tonic reads as events: its test is the name's ending without the dot."""
    return [f for f in files if f.name.endswith(ext[1:])]


def _check_nmnist_layout(dirs: list[Path], files: list[Path], where: str) -> None:
    for f in _event_files(files, ".bin"):
        if len(f.parts) == 1:
            raise EventDataError(f"{where}/{f} lies next to the label folders; put it in the "
                                 "folder of its digit (0..9) or remove it")
        if len(f.parts) > 2:
            raise EventDataError(f"{where}/{f} lies in a subfolder of a label folder; N-MNIST "
                                 "is <split>/<digit>/<name>.bin: move it up or remove it")
        if not re.fullmatch(r"[0-9]", f.parts[0]):
            raise EventDataError(f"{where}/{f}: label folder {f.parts[0]!r} is not one digit "
                                 "0..9 (the file's class); rename or remove the folder")


def _check_dvs_layout(dirs: list[Path], files: list[Path], where: str) -> None:
    for d in dirs:
        if len(d.parts) > 1 or not re.fullmatch(r"user[0-9]+_.+", d.name):
            raise EventDataError(f"{where}/{d}: folder is not named user<NN>_<lighting> (e.g. "
                                 "user01_led) directly under the split folder; rename, move or "
                                 "remove it")
    n = N_CLASSES["dvs-gesture"]
    for f in _event_files(files, ".npy"):
        if len(f.parts) == 1:
            raise EventDataError(f"{where}/{f} lies outside the user<NN>_<lighting> folders; "
                                 "move it into its recording's user folder or remove it")
        m = re.fullmatch(r"([0-9]+)\.npy", f.name)
        if not m or int(m.group(1)) >= n:
            raise EventDataError(f"{where}/{f}: a recording is named <label>.npy with label "
                                 f"0..{n - 1}; rename or remove it")


LAYOUTS = {"nmnist": _check_nmnist_layout, "dvs-gesture": _check_dvs_layout}


def check_layout(name: str, root: str | Path, split: str) -> None:
    """The split folder of dataset ``name`` under ``root`` holds its event files where the
    format puts them (module docstring); a missing folder is left to the caller."""
    rel = SPLIT_FOLDERS[name][split]
    folder = Path(root) / rel
    if folder.is_dir():
        LAYOUTS[name](*_walk(folder), where=f"{name}: {rel}")
