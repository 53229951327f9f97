"""Every loader on small files written in exactly the real format, through load_dataset."""
import gzip
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest

from dpap_deploy.data import load_dataset
from dpap_deploy.data.idx import FASHION_DEBIAN, FILES
from dpap_deploy.errors import DPAPError


def write_idx(path: Path, arr: np.ndarray, gz: bool) -> None:
    code = {np.uint8: 0x08}[arr.dtype.type]
    raw = bytes([0, 0, code, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.tobytes()
    if gz:
        with gzip.open(str(path) + ".gz", "wb") as fh:
            fh.write(raw)
    else:
        path.write_bytes(raw)


def make_idx_folder(folder: Path, gz: bool, n=(12, 5), seed=0):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    data = {}
    for split, count in zip(("train", "test"), n):
        x = rng.integers(0, 256, (count, 28, 28), dtype=np.uint8)
        y = rng.integers(0, 10, count).astype(np.uint8)
        write_idx(folder / FILES[split][0], x, gz)
        write_idx(folder / FILES[split][1], y, gz)
        data[split] = (x, y)
    return data


@pytest.mark.parametrize("gz", [True, False])
def test_mnist_idx_with_and_without_gzip(tmp_path, gz):
    data = make_idx_folder(tmp_path / "MNIST" / "raw", gz)
    for name, root in (("mnist", tmp_path), (f"idx:{tmp_path / 'MNIST' / 'raw'}", None)):
        d = load_dataset(name, root)
        assert d.x_train.shape == (12, 1, 28, 28) and d.x_test.shape == (5, 1, 28, 28)
        assert np.array_equal((d.x_train[:, 0].numpy() * 255).round().astype(np.uint8), data["train"][0])
        assert d.y_test.tolist() == data["test"][1].tolist()


def test_idx_missing_and_corrupt_files_say_what_and_where(tmp_path):
    make_idx_folder(tmp_path, gz=False)
    os.remove(tmp_path / FILES["test"][0])
    with pytest.raises(DPAPError, match=r"missing t10k-images-idx3-ubyte\[\.gz\] in .*yann\.lecun"):
        load_dataset("mnist", str(tmp_path))
    with pytest.raises(DPAPError, match="--data-root"):
        load_dataset("mnist", None)
    make_idx_folder(tmp_path, gz=False)
    raw = (tmp_path / FILES["train"][0]).read_bytes()
    (tmp_path / FILES["train"][0]).write_bytes(raw[:-10])
    with pytest.raises(DPAPError, match="truncated"):
        load_dataset("mnist", str(tmp_path))


def test_fashion_mnist_from_the_debian_package():
    if not (FASHION_DEBIAN / "train-images-idx3-ubyte.gz").exists():
        if os.environ.get("CI"):
            pytest.fail("scripts/setup.sh must install dataset-fashion-mnist for CI")
        pytest.skip("dataset-fashion-mnist is not installed here")
    d = load_dataset("fashion-mnist")
    assert d.x_train.shape == (60000, 1, 28, 28) and d.x_test.shape == (10000, 1, 28, 28)
    assert d.n_classes == 10 and float(d.x_train.max()) == 1.0
    assert d.y_train.bincount().tolist() == [6000] * 10


def write_cifar(folder: Path, seed=0):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    for name, n in [(f"data_batch_{i}", 4) for i in range(1, 6)] + [("test_batch", 3)]:
        batch = {b"batch_label": name.encode(), b"labels": rng.integers(0, 10, n).tolist(),
                 b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                 b"filenames": [f"{i}.png".encode() for i in range(n)]}
        with open(folder / name, "wb") as fh:
            pickle.dump(batch, fh, protocol=2)


def test_cifar10_batches_load_safely(tmp_path):
    write_cifar(tmp_path / "cifar-10-batches-py")
    d = load_dataset("cifar10", str(tmp_path))
    assert d.x_train.shape == (20, 3, 32, 32) and d.x_test.shape == (3, 3, 32, 32)
    with open(tmp_path / "cifar-10-batches-py" / "test_batch", "rb") as fh:
        ref = pickle.load(fh, encoding="bytes")
    first = (d.x_test[0].numpy() * 255).round().astype(np.uint8).reshape(-1)
    assert np.array_equal(first, ref[b"data"][0]) and d.y_test.tolist() == ref[b"labels"]

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned > " + str(tmp_path / "pwned"),))
    with open(tmp_path / "cifar-10-batches-py" / "data_batch_3", "wb") as fh:
        pickle.dump({b"data": Evil(), b"labels": []}, fh, protocol=2)
    with pytest.raises(DPAPError, match="refusing to load"):
        load_dataset("cifar10", str(tmp_path))
    assert not (tmp_path / "pwned").exists()


def write_nmnist_events(root: Path):
    """Hand-made events in the N-MNIST .bin layout; returns them for comparison."""
    from dpap_deploy.data.saccade import DTYPE, encode_bin
    events = {}
    for split, folder in (("train", "Train"), ("test", "Test")):
        for label in (3, 7):
            ev = np.zeros(4, dtype=DTYPE)
            ev["x"], ev["y"] = [1, 33, 5, 5], [2, 0, 33, 6]
            ev["t"] = [10, 70_000, 140_000, (1 << 23) - 1]      # the last uses all 23 bits
            ev["p"] = [1, 0, 1, 0]
            d = root / "NMNIST" / folder / str(label)
            d.mkdir(parents=True)
            (d / "00000.bin").write_bytes(encode_bin(ev))
            events[(split, label)] = ev
    return events


def test_nmnist_bin_tree_read_by_tonic_and_binned(tmp_path):
    import tonic
    from dpap_deploy.data.events import _offline
    written = write_nmnist_events(tmp_path)
    ds = _offline(tonic.datasets.NMNIST, ".bin")(save_to=str(tmp_path), train=True)
    assert len(ds) == 2
    for i in range(2):
        ev, label = ds[i]
        ref = written[("train", label)]
        for f in ("x", "y", "t", "p"):
            assert ev[f].tolist() == ref[f].tolist(), f
    d = load_dataset("nmnist", str(tmp_path), time_steps=4)
    assert d.x_train.shape == (2, 4, 2, 34, 34) and d.is_sequence
    # frames are [T, polarity, y, x]; the 4 events span [10, 2^23 - 1] us, so 4 bins of ~2.1 s:
    # the first three events fall into bin 0 (tonic's ToFrame windows are right-open, so the
    # stream's very last event is not binned)
    x0 = d.x_train[0]
    assert x0[0, 1, 2, 1] == 1 and x0[0, 0, 0, 33] == 1 and x0[0, 1, 33, 5] == 1
    assert float(d.x_train.sum()) == 6.0
    assert list((tmp_path / ".dpap-cache").glob("nmnist-train-T4-*.npz"))
    again = load_dataset("nmnist", str(tmp_path), time_steps=4)      # from the cache
    assert np.array_equal(again.x_train.numpy(), d.x_train.numpy())
    with pytest.raises(DPAPError, match=r"no \.bin files under .*NMNIST/Train; get them from .*synth-events"):
        load_dataset("nmnist", str(tmp_path / "empty"), time_steps=4)


def test_dvs_gesture_npy_tree(tmp_path):
    rng = np.random.default_rng(0)
    for split in ("ibmGestureTrain", "ibmGestureTest"):
        for user, label in (("user01_fluorescent", 3), ("user02_led", 10)):
            d = tmp_path / "DVSGesture" / split / user
            d.mkdir(parents=True, exist_ok=True)
            n = 50
            ev = np.stack([rng.integers(0, 128, n), rng.integers(0, 128, n), rng.integers(0, 2, n),
                           np.sort(rng.integers(0, 1000, n))], axis=1).astype(np.int64)
            np.save(d / f"{label}.npy", ev)
    d = load_dataset("dvs-gesture", str(tmp_path), time_steps=5)
    assert d.x_train.shape == (2, 5, 2, 32, 32) and sorted(d.y_train.tolist()) == [3, 10]
    assert d.n_classes == 11 and 0 < float(d.x_train.sum()) <= 100


def test_saccade_events_are_read_back_intact_by_tonic(tmp_path):
    import tonic
    from dpap_deploy.data.events import _offline
    from dpap_deploy.data.saccade import simulate, write_nmnist_tree
    digits = load_dataset("digits")
    import torch.nn.functional as F
    imgs = F.interpolate(digits.x_train[:6], size=(28, 28), mode="bilinear")[:, 0].numpy()
    streams = simulate(imgs, seed=0)
    assert all(len(s) > 500 for s in streams)
    assert all((np.diff(s["t"]) >= 0).all() and s["t"].max() < 315_000 for s in streams)
    assert all(set(np.unique(s["p"])) == {0, 1} for s in streams)
    assert write_nmnist_tree(tmp_path, "train", imgs, digits.y_train[:6].numpy(),
                             batch=6, progress=False) == 6
    ds = _offline(tonic.datasets.NMNIST, ".bin")(save_to=str(tmp_path), train=True)
    assert len(ds) == 6
    for path, (ev, label) in zip(ds.data, (ds[i] for i in range(6))):
        k = int(Path(path).stem)
        assert label == int(digits.y_train[k])
        for f in ("x", "y", "t", "p"):
            assert ev[f].tolist() == streams[k][f].tolist(), (k, f)
