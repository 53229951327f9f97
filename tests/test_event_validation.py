"""Damaged event data and arrays are refused, never trained on (data/event_formats.py,
data/validation.py): each case names the file (relative to the data root) and the problem,
raises a DPAPError, and leaves the input folder byte-identical, with no ``.dpap-cache``.

The trees are written in exactly the documented formats: N-MNIST
``NMNIST/{Train,Test}/<digit>/<name>.bin`` (5 bytes an event), DVS-Gesture
``DVSGesture/ibmGesture{Train,Test}/user<NN>_<lighting>/<label>.npy`` ((N, 4) int64 x, y, p,
t in ms). tonic's own existence check (archive file, 10,000 / 100 files) is replaced by the
loader's, so these small trees load as they are.
"""
from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from dpap_deploy.data import load_dataset
from dpap_deploy.data.validation import MAX_ABS_PIXEL, DataError
from dpap_deploy.errors import DPAPError

from conftest import shared_cli

pytest.importorskip("tonic")
T = 4


def nmnist_bytes(n: int = 40, seed: int = 0) -> bytes:
    """A valid N-MNIST recording of ``n`` events in time order over 300 ms."""
    from dpap_deploy.data.saccade import DTYPE, encode_bin
    rng = np.random.default_rng(seed)
    ev = np.zeros(n, dtype=DTYPE)
    ev["x"], ev["y"] = rng.integers(0, 34, n), rng.integers(0, 34, n)
    ev["t"], ev["p"] = np.sort(rng.integers(0, 300_000, n)), rng.integers(0, 2, n)
    return encode_bin(ev)


def dvs_events(n: int = 60, seed: int = 0) -> np.ndarray:
    """A valid DVS-Gesture recording: (n, 4) int64 x, y, p, t (ms) in time order."""
    rng = np.random.default_rng(seed)
    return np.stack([rng.integers(0, 128, n), rng.integers(0, 128, n), rng.integers(0, 2, n),
                     np.sort(rng.integers(0, 1500, n))], axis=1).astype(np.int64)


def nmnist_tree(root: Path) -> Path:
    for i, (folder, label) in enumerate((("Train", 3), ("Train", 7), ("Test", 3), ("Test", 7))):
        d = root / "NMNIST" / folder / str(label)
        d.mkdir(parents=True)
        (d / "00000.bin").write_bytes(nmnist_bytes(seed=i))
    return root


def dvs_tree(root: Path) -> Path:
    for i, (split, user, label) in enumerate((("Train", "user01_led", 3),
                                              ("Train", "user02_fluorescent_led", 10),
                                              ("Test", "user03_natural", 3),
                                              ("Test", "user04_lab", 10))):
        d = root / "DVSGesture" / f"ibmGesture{split}" / user
        d.mkdir(parents=True)
        np.save(d / f"{label}.npy", dvs_events(seed=i))
    return root


def snapshot(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root`` and the names of its folders."""
    out = {}
    for path, dirs, files in os.walk(root):
        for d in dirs:
            out[str(Path(path, d).relative_to(root)) + "/"] = "dir"
        for f in files:
            out[str(Path(path, f).relative_to(root))] = hashlib.sha256(
                Path(path, f).read_bytes()).hexdigest()
    return out


def _write(path: Path, raw: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(raw)


def _npy(path: Path, a: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, a, allow_pickle=True)


def _dvs_with(column: int, row: int, value: int) -> np.ndarray:
    a = dvs_events()
    a[row, column] = value
    return a


NM, DV = "NMNIST", "DVSGesture/ibmGestureTest"
# (case, dataset, damage(root), file named in the message, what the message says)
CASES = [
    ("nmnist-random-bytes", "nmnist",
     lambda r: _write(r / NM / "Test/3/junk.bin", np.random.default_rng(5).bytes(500)),
     "NMNIST/Test/3/junk.bin", "outside the 34x34 sensor"),
    ("nmnist-not-5-bytes", "nmnist",
     lambda r: _write(r / NM / "Test/7/cut.bin", nmnist_bytes()[:-3]),
     "NMNIST/Test/7/cut.bin", "197 bytes, not a multiple of 5"),
    ("nmnist-empty-file", "nmnist", lambda r: _write(r / NM / "Test/7/empty.bin", b""),
     "NMNIST/Test/7/empty.bin", "is empty (0 bytes)"),
    ("nmnist-only-overflow-records", "nmnist",
     lambda r: _write(r / NM / "Test/7/ovf.bin", bytes([0, 240, 0, 0, 0]) * 3),
     "NMNIST/Test/7/ovf.bin", "holds no events"),
    ("nmnist-label-not-a-digit", "nmnist",
     lambda r: _write(r / NM / "Test/3a/00001.bin", nmnist_bytes()),
     "NMNIST/Test/3a/00001.bin", "label folder '3a' is not one digit"),
    ("nmnist-label-13", "nmnist",     # tonic would take the last character: class 3
     lambda r: _write(r / NM / "Train/13/00001.bin", nmnist_bytes()),
     "NMNIST/Train/13/00001.bin", "label folder '13' is not one digit"),
    ("nmnist-stray-file", "nmnist",
     lambda r: _write(r / NM / "Test/00001.bin", nmnist_bytes()),
     "NMNIST/Test/00001.bin", "lies next to the label folders"),
    ("nmnist-nested", "nmnist",
     lambda r: _write(r / NM / "Test/3/more/00001.bin", nmnist_bytes()),
     "NMNIST/Test/3/more/00001.bin", "subfolder of a label folder"),
    ("nmnist-time-goes-back", "nmnist",
     lambda r: _write(r / NM / "Test/3/back.bin", nmnist_bytes(seed=9)[5:] + nmnist_bytes()[:5]),
     "NMNIST/Test/3/back.bin", "before event"),
    ("nmnist-one-event", "nmnist",
     lambda r: _write(r / NM / "Test/3/one.bin", nmnist_bytes(1)),
     "NMNIST/Test/3/one.bin", "spans 0 us with 1 event(s)"),
    ("dvs-folder-without-underscore", "dvs-gesture",
     lambda r: _npy(r / DV / "user05" / "3.npy", dvs_events()),
     "DVSGesture/ibmGestureTest/user05", "not named user<NN>_<lighting>"),
    ("dvs-label-11", "dvs-gesture",
     lambda r: _npy(r / DV / "user05_led" / "11.npy", dvs_events()),
     "DVSGesture/ibmGestureTest/user05_led/11.npy", "label 0..10"),
    ("dvs-stray-npy", "dvs-gesture", lambda r: _npy(r / DV / "3.npy", dvs_events()),
     "DVSGesture/ibmGestureTest/3.npy", "outside the user<NN>_<lighting> folders"),
    ("dvs-three-columns", "dvs-gesture",
     lambda r: _npy(r / DV / "user05_led" / "3.npy", dvs_events()[:, :3]),
     "DVSGesture/ibmGestureTest/user05_led/3.npy", "shape (60, 3)"),
    ("dvs-object-dtype", "dvs-gesture",
     lambda r: _npy(r / DV / "user05_led" / "3.npy", dvs_events().astype(object)),
     "DVSGesture/ibmGestureTest/user05_led/3.npy", "not a readable .npy array"),
    ("dvs-float-dtype", "dvs-gesture",
     lambda r: _npy(r / DV / "user05_led" / "3.npy", dvs_events().astype(np.float64)),
     "DVSGesture/ibmGestureTest/user05_led/3.npy", "holds float64 values"),
    ("dvs-x-outside", "dvs-gesture",
     lambda r: _npy(r / DV / "user05_led" / "3.npy", _dvs_with(0, 7, 128)),
     "DVSGesture/ibmGestureTest/user05_led/3.npy", "event 7 at x=128, outside the 128x128 sensor"),
    ("dvs-y-negative", "dvs-gesture",
     lambda r: _npy(r / DV / "user05_led" / "3.npy", _dvs_with(1, 2, -1)),
     "DVSGesture/ibmGestureTest/user05_led/3.npy", "event 2 at y=-1"),
    ("dvs-polarity", "dvs-gesture",
     lambda r: _npy(r / DV / "user05_led" / "3.npy", _dvs_with(2, 4, -1)),
     "DVSGesture/ibmGestureTest/user05_led/3.npy", "event 4 with polarity -1"),
    ("dvs-negative-time", "dvs-gesture",
     lambda r: _npy(r / DV / "user05_led" / "3.npy", _dvs_with(3, 0, -5)),
     "DVSGesture/ibmGestureTest/user05_led/3.npy", "negative time -5"),
    ("dvs-no-events", "dvs-gesture",
     lambda r: _npy(r / DV / "user05_led" / "3.npy", np.zeros((0, 4), np.int64)),
     "DVSGesture/ibmGestureTest/user05_led/3.npy", "holds no events"),
    ("dvs-empty-file", "dvs-gesture",
     lambda r: _write(r / DV / "user05_led" / "3.npy", b""),
     "DVSGesture/ibmGestureTest/user05_led/3.npy", "is empty (0 bytes)"),
]


@pytest.mark.parametrize("case,name,damage,where,what", CASES, ids=[c[0] for c in CASES])
def test_damaged_event_data_is_refused_and_leaves_the_folder_as_it_was(
        tmp_path, case, name, damage, what, where):
    root = (nmnist_tree if name == "nmnist" else dvs_tree)(tmp_path / "data")
    damage(root)
    before = snapshot(root)
    with pytest.raises(DataError) as err:
        load_dataset(name, str(root), T)
    msg = str(err.value)
    assert isinstance(err.value, DPAPError) and "\n" not in msg
    assert f"{name}: {where}" in msg and what in msg, msg
    assert str(tmp_path) not in msg                          # relative to the data root
    assert snapshot(root) == before and not (root / ".dpap-cache").exists()


def test_the_nmnist_check_reads_events_as_tonic_does():
    """The check decodes the bytes itself (vectorised); with time-stamp overflow records
    (y = 240: +2**13 us from there on, dropped) its columns equal tonic's reader's."""
    import io
    import tonic
    from dpap_deploy.data.event_formats import _nmnist_columns
    rec = np.frombuffer(nmnist_bytes(300, seed=4), np.uint8).reshape(-1, 5).copy()
    rec = np.insert(rec, [0, 17, 17, 150, 300], [7, 240, 0x80, 1, 2], axis=0)
    ev = tonic.io.read_mnist_file(io.BytesIO(rec.tobytes()), dtype=tonic.datasets.NMNIST.dtype,
                                  is_stream=True)
    x, y, p, t = _nmnist_columns(rec.tobytes())
    assert len(ev) == 300 and t.max() > 300_000
    for name, col in zip("xypt", (x, y, p, t)):
        assert col.tolist() == ev[name].tolist(), name


@pytest.mark.parametrize("path", ["stream", "memory"])
def test_good_trees_still_load_and_tolerated_extras_are_ignored(tmp_path, monkeypatch, path):
    """Files tonic does not read (a README, .DS_Store) and empty odd folders are harmless."""
    monkeypatch.setenv("DPAP_EVENT_FRAMES", path)
    root = nmnist_tree(tmp_path / "n")
    _write(root / NM / "Train" / "README.txt", b"notes")
    _write(root / NM / "Test" / "3" / ".DS_Store", b"\0")
    (root / NM / "Test" / "extra").mkdir()
    d = load_dataset("nmnist", str(root), T)
    assert d.x_train.shape == (2, T, 2, 34, 34) and float(d.x_train[:].sum()) > 0
    d = load_dataset("dvs-gesture", str(dvs_tree(tmp_path / "d")), T)
    assert sorted(d.y_test.tolist()) == [3, 10] and float(d.x_test[:].sum()) > 0


def test_streamed_sample_changed_to_junk_after_listing_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("DPAP_EVENT_FRAMES", "stream")
    root = nmnist_tree(tmp_path / "n")
    d = load_dataset("nmnist", str(root), T)
    src = Path(d.x_train.files[0])
    src.write_bytes(b"\x01\x02")
    with pytest.raises(DataError, match=rf"{src.name} is 2 bytes, not a multiple of 5"):
        d.x_train[0]


def test_a_load_failing_after_binning_removes_the_cache_it_created(tmp_path, monkeypatch):
    """The backstop behind the checks: whatever fails once frames were cached, a cache folder
    this load created goes again (one that existed before stays)."""
    import dpap_deploy.data.events as events
    monkeypatch.setenv("DPAP_EVENT_FRAMES", "memory")
    root = nmnist_tree(tmp_path / "n")
    calls = []

    def failing(*args, **kw):
        calls.append((root / ".dpap-cache").exists())
        raise DataError("refused after binning")
    monkeypatch.setattr(events, "Dataset", failing)
    with pytest.raises(DataError, match="after binning"):
        load_dataset("nmnist", str(root), T)
    assert calls == [True] and not (root / ".dpap-cache").exists()
    (root / ".dpap-cache").mkdir()
    with pytest.raises(DataError):
        load_dataset("nmnist", str(root), T)
    assert len(list((root / ".dpap-cache").glob("nmnist-*.npz"))) == 2


@pytest.mark.parametrize("other_writes", ["before the first cache file", "after it"])
def test_a_failing_load_removes_only_its_own_cache_files(tmp_path, monkeypatch, other_writes):
    """Another process (here: another dataset's load) writing into the same new .dpap-cache
    while this load runs keeps its files, whether it made the folder or this load did; this
    load's own files go, and the folder stays because it is not empty."""
    import dpap_deploy.data.events as events
    monkeypatch.setenv("DPAP_EVENT_FRAMES", "memory")
    root = nmnist_tree(tmp_path / "n")
    other = root / ".dpap-cache" / "dvs-gesture-train-T4-0123456789abcdef.npz"

    def other_writer():
        other.parent.mkdir(exist_ok=True)
        other.write_bytes(b"another process's cache file")

    frames_path, real_dataset = events.frames_path, events.Dataset

    def path_then_writer(*args):
        other_writer()
        return frames_path(*args)

    def writer_then_failure(*args, **kw):
        assert len(list((root / ".dpap-cache").glob("nmnist-*.npz"))) == 2
        if other_writes == "after it":
            other_writer()
        raise DataError("refused after binning")
    if other_writes == "before the first cache file":
        monkeypatch.setattr(events, "frames_path", path_then_writer)
    monkeypatch.setattr(events, "Dataset", writer_then_failure)
    with pytest.raises(DataError, match="after binning"):
        load_dataset("nmnist", str(root), T)
    assert sorted(p.name for p in (root / ".dpap-cache").iterdir()) == [other.name]
    assert other.read_bytes() == b"another process's cache file"
    monkeypatch.setattr(events, "Dataset", real_dataset)    # and a later load works there
    assert len(load_dataset("nmnist", str(root), T).y_train) == 2


def test_ctrl_c_keeps_the_split_already_cached(tmp_path, monkeypatch):
    """Ctrl-C while the test split is binned: the train split's cache file, written whole
    (atomically), stays and is used by the next load; nothing half-written is left."""
    import dpap_deploy.data.events as events
    monkeypatch.setenv("DPAP_EVENT_FRAMES", "memory")
    root = nmnist_tree(tmp_path / "n")
    real = events._frames
    binned = []

    def interrupted(ds, transform, name, split, *args, **kw):
        if split == "test":
            raise KeyboardInterrupt
        binned.append(split)
        return real(ds, transform, name, split, *args, **kw)
    monkeypatch.setattr(events, "_frames", interrupted)
    with pytest.raises(KeyboardInterrupt):
        load_dataset("nmnist", str(root), T)
    kept = list((root / ".dpap-cache").iterdir())
    assert binned == ["train"] and len(kept) == 1 and kept[0].name.startswith("nmnist-train-")
    files = sorted(str(p) for p in (root / NM / "Train").glob("*/*.bin"))
    key = events.source_key(files, "nmnist", "train", T)
    assert events.read_cache(kept[0], key) is not None          # whole and valid
    monkeypatch.setattr(events, "_frames", real)
    calls = []
    monkeypatch.setattr(events, "tqdm", lambda it, **kw: calls.append(kw["desc"]) or it)
    d = load_dataset("nmnist", str(root), T)
    assert calls == ["nmnist: checking event files", "nmnist test: binning events"]  # train hit
    assert float(d.x_train.sum()) > 0
    assert sorted(p.name.split("-")[1] for p in (root / ".dpap-cache").iterdir()) == [
        "test", "train"]


def _npz(path: Path, **override) -> Path:
    rng = np.random.default_rng(0)
    arrays = {"x_train": rng.integers(0, 256, (32, 8, 8), dtype=np.uint8),
              "y_train": np.arange(32) % 3, "x_test": rng.integers(0, 256, (9, 8, 8), np.uint8),
              "y_test": np.arange(9) % 3}
    arrays.update(override)
    np.savez(path, **arrays)
    return path


@pytest.mark.parametrize("override,what", [
    (dict(x_train=np.array(3.0)), "'x_train' is a single value (float64 scalar)"),
    (dict(x_test=np.array(7, np.uint8)), "'x_test' is a single value (uint8 scalar)"),
    (dict(x_train=np.full((32, 8, 8), 1e30, np.float32)), "'x_train' holds the value 1e+30"),
    (dict(x_test=np.r_[np.zeros((8, 8, 8)), np.full((1, 8, 8), -2e6)]), "value -2e+06"),
    (dict(x_train=np.full((32, 8, 8), 2**40, np.int64)), "value 1.1e+12"),
], ids=["scalar-train", "scalar-test", "1e30", "minus-2e6", "int64-2^40"])
def test_npz_scalars_and_huge_magnitudes_are_refused(tmp_path, override, what):
    path = _npz(tmp_path / "d.npz", **override)
    with pytest.raises(DataError) as err:
        load_dataset(f"npz:{path}")
    assert what in str(err.value) and str(path) in str(err.value)
    if "single" not in what:
        assert "normalise your data" in str(err.value)


def test_npz_ordinary_pixels_and_standardised_data_are_accepted(tmp_path):
    rng = np.random.default_rng(1)
    assert load_dataset(f"npz:{_npz(tmp_path / 'u8.npz')}").x_train.max() <= 1.0
    std = rng.standard_normal((32, 8, 8)).astype(np.float32) * 3
    assert load_dataset(f"npz:{_npz(tmp_path / 's.npz', x_train=std)}").x_train.min() < -3
    sixteen = np.full((32, 8, 8), 65535.0, np.float32)
    load_dataset(f"npz:{_npz(tmp_path / 'w.npz', x_train=sixteen)}")
    edge = np.full((32, 8, 8), MAX_ABS_PIXEL, np.float32)
    load_dataset(f"npz:{_npz(tmp_path / 'e.npz', x_train=edge)}")


def _cli(dataset: str, root: Path | None, out: Path) -> subprocess.CompletedProcess:
    """The real command line in its own process (conftest's ``Cli``)."""
    where = ["--data-root", str(root), "--time-steps", str(T)] if root else []
    return shared_cli()(["train", "--dataset", dataset, *where, "--out", out, "--epochs", "1",
                         "--device", "cpu"], timeout=120)


def _one_error_line(r: subprocess.CompletedProcess, *needles: str) -> None:
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2, r.stderr
    assert len(lines) == 1 and lines[0].startswith("dpap-deploy: error: "), r.stderr
    assert all(n in lines[0] for n in needles) and "Traceback" not in r.stderr, lines[0]


@pytest.mark.parametrize("case", ["nmnist-random-bytes", "nmnist-not-5-bytes",
                                  "nmnist-empty-file", "nmnist-stray-file",
                                  "dvs-label-11"])
def test_cli_refuses_damaged_event_data_in_one_line(tmp_path, case):
    _, name, damage, where, what = next(c for c in CASES if c[0] == case)
    root = (nmnist_tree if name == "nmnist" else dvs_tree)(tmp_path / "data")
    damage(root)
    before = snapshot(root)
    _one_error_line(_cli(name, root, tmp_path / "F"), where, what)
    assert not (tmp_path / "F").exists()
    assert snapshot(root) == before and not (root / ".dpap-cache").exists()


@pytest.mark.parametrize("override,what", [
    (dict(x_train=np.array(3.0)), "is a single value"),
    (dict(x_train=np.full((32, 8, 8), 1e30, np.float32)), "normalise your data"),
], ids=["scalar", "1e30"])
def test_cli_refuses_scalar_and_huge_npz_in_one_line(tmp_path, override, what):
    path = _npz(tmp_path / "d.npz", **override)
    _one_error_line(_cli(f"npz:{path}", None, tmp_path / "F"), "d.npz", what)
    assert not (tmp_path / "F").exists()
