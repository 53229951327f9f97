"""Event frames binned on demand (data/event_frames.py): the same frames as binning up front,
a per-sample cache that is keyed by content, verified and written atomically, the rule that
picks the path, and training through the DataLoader path without the frames in memory."""
from __future__ import annotations

import multiprocessing
from pathlib import Path

import numpy as np
import pytest
import torch

from dpap_deploy.data import load_dataset
from dpap_deploy.data.event_frames import (ENV, STREAM_ABOVE_BYTES, LazyFrames, StreamedDataset,
                                           decode_entry, entry_key, frames_path)
from dpap_deploy.data.events import Binning
from dpap_deploy.errors import ConfigError, DPAPError

pytest.importorskip("tonic")


@pytest.fixture(scope="module")
def nmnist_root(tmp_path_factory):
    """Saccade events of 24 + 8 real digits, written as N-MNIST .bin files (synth-events)."""
    import torch.nn.functional as F
    from dpap_deploy.data.saccade import write_nmnist_tree
    root = tmp_path_factory.mktemp("nmnist")
    d = load_dataset("digits")
    imgs = F.interpolate(d.x_train[:32], size=(28, 28), mode="bilinear")[:, 0].numpy()
    labels = d.y_train[:32].numpy()
    write_nmnist_tree(root, "train", imgs[:24], labels[:24], progress=False)
    write_nmnist_tree(root, "test", imgs[24:], labels[24:], progress=False)
    return root


def _both(monkeypatch, name: str, root: Path, T: int):
    monkeypatch.setenv(ENV, "memory")
    eager = load_dataset(name, str(root), T)
    monkeypatch.setenv(ENV, "stream")
    lazy = load_dataset(name, str(root), T)
    assert isinstance(lazy, StreamedDataset) and isinstance(lazy.x_train, LazyFrames)
    assert not isinstance(eager, StreamedDataset) and isinstance(eager.x_train, torch.Tensor)
    return eager, lazy


def test_lazy_nmnist_samples_equal_the_eager_rows(nmnist_root, monkeypatch):
    eager, lazy = _both(monkeypatch, "nmnist", nmnist_root, 6)
    assert lazy.x_train.shape == eager.x_train.shape and lazy.is_sequence
    assert lazy.input_shape == eager.input_shape == (2, 34, 34)
    assert torch.equal(lazy.y_train, eager.y_train) and torch.equal(lazy.y_test, eager.y_test)
    for i in range(len(eager.y_train)):
        assert torch.equal(lazy.x_train[i], eager.x_train[i]), i
    assert float(eager.x_train.sum()) > 1000           # the saccades did produce spikes
    # every way the training code indexes the frame tensor
    idx = torch.tensor([5, 0, 23, 5])
    assert torch.equal(lazy.x_train[idx], eager.x_train[idx])
    assert torch.equal(lazy.x_train[[3, 1]], eager.x_train[[3, 1]])
    pick = torch.arange(24) % 5 == 0
    assert torch.equal(lazy.x_train[pick], eager.x_train[pick])
    assert torch.equal(lazy.x_test[2:7], eager.x_test[2:7])
    assert torch.equal(lazy.x_test[-1], eager.x_test[-1])
    assert lazy.x_test[5:5].shape == (0, 6, 2, 34, 34)
    with pytest.raises(IndexError):
        lazy.x_test[8]


def test_lazy_dvs_gesture_samples_equal_the_eager_rows(tmp_path, monkeypatch):
    rng = np.random.default_rng(1)
    for split in ("ibmGestureTrain", "ibmGestureTest"):
        for user, label in (("user01_fluorescent", 3), ("user02_led", 10), ("user03_natural", 0)):
            d = tmp_path / "DVSGesture" / split / user
            d.mkdir(parents=True)
            n = 400
            ev = np.stack([rng.integers(0, 128, n), rng.integers(0, 128, n), rng.integers(0, 2, n),
                           np.sort(rng.integers(0, 1500, n))], axis=1).astype(np.int64)
            np.save(d / f"{label}.npy", ev)
    eager, lazy = _both(monkeypatch, "dvs-gesture", tmp_path, 5)
    assert lazy.x_train.shape == (3, 5, 2, 32, 32)
    assert torch.equal(lazy.x_train[:], eager.x_train) and torch.equal(lazy.x_test[:], eager.x_test)
    assert torch.equal(lazy.y_train, eager.y_train) and float(eager.x_train.sum()) > 100


def test_source_key_is_the_same_on_both_paths_and_follows_the_files(
        nmnist_root, tmp_path, monkeypatch):
    """A run's data fingerprint hashes ``Dataset.source_key`` for event frames: a run trained
    in memory and resumed streamed (or under torchrun) sees the same key; a changed event file
    or another T gives another."""
    import shutil
    from dpap_deploy.data.events import dataset_key, source_key
    shutil.copytree(nmnist_root / "NMNIST", tmp_path / "NMNIST")
    eager, lazy = _both(monkeypatch, "nmnist", tmp_path, 4)
    key = eager.source_key
    assert isinstance(key, str) and len(key) == 64 and lazy.source_key == key
    files = {split: sorted(str(p) for p in (tmp_path / "NMNIST" / folder).glob("*/*.bin"))
             for split, folder in (("train", "Train"), ("test", "Test"))}
    assert key == dataset_key({s: source_key(f, "nmnist", s, 4) for s, f in files.items()})
    assert _both(monkeypatch, "nmnist", tmp_path, 5)[0].source_key != key        # another T
    src = Path(files["test"][3])
    src.write_bytes(src.read_bytes()[: 5 * 100])         # the first 100 events only
    eager2, lazy2 = _both(monkeypatch, "nmnist", tmp_path, 4)
    assert eager2.source_key == lazy2.source_key != key
    assert load_dataset("digits").source_key is None     # images: their arrays are hashed
    from dpap_deploy.runfolder import data_fingerprint
    assert data_fingerprint(eager) == data_fingerprint(lazy)         # resume may switch paths
    assert data_fingerprint(eager2) == data_fingerprint(lazy2) != data_fingerprint(eager)


class CountingBinning(Binning):
    """Binning that counts the samples it bins (in this process)."""
    calls = 0

    def frames(self, raw: bytes) -> np.ndarray:
        CountingBinning.calls += 1
        return super().frames(raw)


def _lazy(root: Path, cache: Path, T: int = 4) -> LazyFrames:
    files = sorted(str(p) for p in (root / "NMNIST" / "Test").glob("*/*.bin"))
    assert len(files) == 8
    return LazyFrames(files, CountingBinning("nmnist", T), cache)


def test_cache_entries_are_used_verified_and_rebuilt(nmnist_root, tmp_path):
    import shutil
    shutil.copytree(nmnist_root / "NMNIST" / "Test", tmp_path / "src" / "NMNIST" / "Test")
    frames = _lazy(tmp_path / "src", tmp_path / "c")
    CountingBinning.calls = 0
    first = frames[:]
    assert CountingBinning.calls == 8
    entries = sorted((tmp_path / "c").glob("*/*.bits"))
    assert len(entries) == 8 and not list((tmp_path / "c").glob("*/.*tmp*"))
    assert torch.equal(frames[:], first) and CountingBinning.calls == 8      # all hits
    # 8 values a byte (4 x 2 x 34 x 34 / 8 = 1156) after an 89-byte header
    assert all(p.stat().st_size == 8 + 32 + 32 + 1 + 4 * 4 + 1156 for p in entries)

    def key_of(i):
        src = Path(frames.files[i])
        return entry_key(frames.binning, src.name, src.read_bytes())
    # damaged entries: a flipped payload bit, a truncated file, another sample's entry, empty
    p = [frames.entry_path(key_of(i)) for i in range(4)]
    blob = bytearray(p[0].read_bytes())
    blob[-1] ^= 1
    p[0].write_bytes(bytes(blob))
    p[1].write_bytes(p[1].read_bytes()[:-10])
    p[2].write_bytes(p[3].read_bytes())
    p[3].write_bytes(b"")
    for i in range(4):
        assert decode_entry(p[i].read_bytes(), key_of(i), (4, 2, 34, 34)) is None
    assert torch.equal(frames[:], first) and CountingBinning.calls == 12   # 4 rebuilt
    assert all(decode_entry(p[i].read_bytes(), key_of(i), (4, 2, 34, 34)) is not None
               for i in range(4))
    # a changed event file has another key: its old entry is never read again
    src = Path(frames.files[5])
    old_entry = frames.entry_path(key_of(5))
    src.write_bytes(src.read_bytes()[: 5 * 100])         # the first 100 events only
    fewer = frames[5]
    assert CountingBinning.calls == 13 and old_entry.exists()
    assert frames.entry_path(key_of(5)) != old_entry
    assert 0 < float(fewer.sum()) < float(first[5].sum())
    src.unlink()                                          # listed, then gone: one line
    with pytest.raises(DPAPError, match=rf"{src.name}: cannot read this event file .*restore it"):
        frames[5]


def test_entries_are_keyed_by_the_time_steps_too(nmnist_root, tmp_path):
    a, b = _lazy(nmnist_root, tmp_path / "c", 4), _lazy(nmnist_root, tmp_path / "c", 5)
    assert a[0].shape == (4, 2, 34, 34) and b[0].shape == (5, 2, 34, 34)
    assert len(list((tmp_path / "c").glob("*/*.bits"))) == 2


def test_lazy_frames_travel_to_spawned_workers(nmnist_root, tmp_path):
    """Plain data (file names, the binning's name and T): a worker started by spawn (the
    default outside Linux) rebuilds tonic's transform itself."""
    import pickle
    frames = LazyFrames(_lazy(nmnist_root, tmp_path / "c").files, Binning("nmnist", 4),
                        tmp_path / "c")
    copy = pickle.loads(pickle.dumps(frames))
    assert copy.shape == frames.shape and torch.equal(copy[3], frames[3])


def _read_all(files, cache, T, out, start):
    frames = LazyFrames(files, Binning("nmnist", T), cache)
    start.wait(60)
    out.put([frames.sample(i).tobytes() for i in range(len(frames))])


def test_two_processes_binning_the_same_samples_never_see_half_an_entry(nmnist_root, tmp_path):
    files = sorted(str(p) for p in (nmnist_root / "NMNIST" / "Train").glob("*/*.bin"))[:16]
    ctx = multiprocessing.get_context("fork")
    q, start = ctx.Queue(), ctx.Barrier(2)
    procs = [ctx.Process(target=_read_all, args=(files, tmp_path / "c", 4, q, start))
             for _ in range(2)]
    for p in procs:
        p.start()
    got = [q.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(60)
    assert got[0] == got[1]
    frames = LazyFrames(files, Binning("nmnist", 4), tmp_path / "c")
    for i in range(16):                       # every entry whole and correct, no temporaries
        raw = Path(files[i]).read_bytes()
        blob = frames.entry_path(entry_key(frames.binning, Path(files[i]).name, raw)).read_bytes()
        assert decode_entry(blob, entry_key(frames.binning, Path(files[i]).name, raw),
                            (4, 2, 34, 34)).tobytes() == got[0][i]
    assert sorted(p.suffix for p in (tmp_path / "c").rglob("*") if p.is_file()) == [".bits"] * 16


def test_which_path_is_used(monkeypatch):
    monkeypatch.delenv(ENV, raising=False)
    frame = (8, 2, 34, 34)                         # N-MNIST at T = 8: 73,984 bytes as float32
    per = 8 * 2 * 34 * 34 * 4
    assert frames_path(STREAM_ABOVE_BYTES // per, frame, available=1 << 40) == "memory"
    assert frames_path(STREAM_ABOVE_BYTES // per + 1, frame, available=1 << 40) == "stream"
    assert frames_path(70_000, frame, available=64 << 30) == "stream"         # all of N-MNIST
    assert frames_path(1_341, (8, 2, 32, 32), available=64 << 30) == "memory"  # DVS-Gesture
    assert frames_path(2_000, frame, available=400 << 20) == "stream"         # 148 MB > 100 MB
    assert frames_path(2_000, frame, available=None) == "memory"
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "8")          # torchrun: 8 copies on this machine
    assert frames_path(2_000, frame, available=400 << 30) == "memory"
    assert frames_path(2_000, frame, available=4 << 30) == "stream"  # 8 x 148 MB > 1 GiB
    monkeypatch.delenv("LOCAL_WORLD_SIZE")
    monkeypatch.setenv(ENV, "stream")
    assert frames_path(1, frame) == "stream"
    monkeypatch.setenv(ENV, "Memory")
    assert frames_path(10**9, frame) == "memory"
    monkeypatch.setenv(ENV, "disk")
    with pytest.raises(ConfigError, match="DPAP_EVENT_FRAMES='disk'.*memory, stream or auto"):
        frames_path(1, frame)


def test_training_from_lazy_frames_with_workers_equals_training_from_memory(
        nmnist_root, tmp_path, monkeypatch):
    """The same batches reach the network: the histories are equal, bit for bit."""
    from dpap_deploy.data.checks import check_dataset
    from dpap_deploy.training import TrainConfig, train
    cfg = dict(dataset="nmnist", data_root=str(nmnist_root), model="snn-mnist", epochs=2,
               batch_size=8, time_steps=4, device="cpu", seed=3)
    monkeypatch.setenv(ENV, "memory")
    ref = train(TrainConfig(**cfg), tmp_path / "memory", progress=False)
    monkeypatch.setenv(ENV, "stream")
    run = train(TrainConfig(**cfg, workers=2), tmp_path / "stream", progress=False)
    assert isinstance(run.data.x_train, LazyFrames) and run.loader is not None
    drop = lambda h: [{k: v for k, v in r.items() if k != "wall_time_s"} for r in h]  # noqa: E731
    assert drop(run.history) == drop(ref.history)
    for k, w in ref.model.state_dict().items():
        assert torch.equal(run.model.state_dict()[k], w), k
    assert check_dataset(run.data, 8) == check_dataset(ref.data, 8)
    from dpap_deploy.pipeline import compact       # compaction reads the streamed test set
    report = compact(tmp_path / "stream", tmp_path / "compact")
    assert report.compaction.accuracy_compact == ref.history[-1]["test_acc"]


def test_cli_trains_streamed_nmnist_with_workers(nmnist_root, tmp_path, cli):
    import json
    from conftest import CLI_ENV
    r = cli(["train", "--dataset", "nmnist", "--data-root", nmnist_root, "--model", "snn-mnist",
             "--epochs", "1", "--batch-size", "8", "--time-steps", "3", "--workers", "2",
             "--device", "cpu", "--quiet", "--out", tmp_path / "run"],
            env={**CLI_ENV, ENV: "stream"})
    assert r.returncode == 0, r.stderr
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["dataset"] == "nmnist" and report["epochs"] == 1
    assert len(list((nmnist_root / ".dpap-cache" / "nmnist-T3").glob("*/*.bits"))) == 32
