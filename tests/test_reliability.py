"""The pieces behind the one error path and whole files: atomic writes, the folder lock, the
memory estimate, mask checks and the content-keyed event cache."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from dpap_deploy.atomic import atomic_path, atomic_write_text
from dpap_deploy.errors import ConfigError, DPAPError
from dpap_deploy.lock import output_lock

ROOT = Path(__file__).resolve().parents[1]


def test_atomic_write_keeps_old_file_when_the_writer_fails(tmp_path):
    f = tmp_path / "a.json"
    atomic_write_text(f, "old\n")
    with pytest.raises(RuntimeError):
        with atomic_path(f) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert f.read_text() == "old\n" and sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]
    with atomic_path(f) as tmp:
        assert tmp.parent == f.parent and tmp.suffix == ".json" and tmp.name.startswith(".a.")
        tmp.write_text("new\n")
    assert f.read_text() == "new\n" and len(list(tmp_path.iterdir())) == 1


def test_lock_refuses_another_process_and_cleans_up(tmp_path):
    out = tmp_path / "new" / "deeper"
    code = ("import sys; from dpap_deploy.lock import output_lock\n"
            "with output_lock(sys.argv[1], 'second'): pass")
    with output_lock(out, "first"):
        r = subprocess.run([sys.executable, "-c", code, str(out)], capture_output=True,
                           text=True, cwd=ROOT)
        assert r.returncode != 0 and "is in use by pid" in r.stderr and "(first)" in r.stderr
        with output_lock(out, "nested"):       # the same process may take it again
            pass
    assert not (tmp_path / "new").exists()      # created, nothing written: removed again
    out.mkdir(parents=True)
    (out / ".x.1234.tmp.json").write_text("left by a killed writer")
    with output_lock(out, "third"):
        assert not (out / ".x.1234.tmp.json").exists()
    assert out.is_dir() and list(out.iterdir()) == []


def test_memory_estimate_counts_activations():
    from dpap_deploy.resources import BYTES, SAVED_PER_VALUE, activations_per_step, training_bytes
    m = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(256, 10))
    x1 = torch.zeros(1, 1, 8, 8)
    # outputs: conv 4*8*8, relu 4*8*8, flatten 256, linear 10
    assert activations_per_step(m, x1) == 256 + 256 + 256 + 10
    params = sum(p.numel() for p in m.parameters())
    assert training_bytes(m, x1, "snn", 5, 3) == 5 * 3 * 778 * BYTES * SAVED_PER_VALUE + 16 * params
    assert training_bytes(m, x1, "ann", 5, 3) == 3 * 778 * BYTES * SAVED_PER_VALUE + 16 * params
    from dpap_deploy.resources import check_simulator_memory
    check_simulator_memory(1000, 8, 64, 10)        # the default Lava run: ~15 MB
    with pytest.raises(ConfigError, match="1000 samples x 1000000 time steps needs about 1,654.0 GiB"):
        check_simulator_memory(1000, 10**6, 64, 10)   # 1e9 steps x 74 values x 8 B x 3
    from dpap_deploy.validate import check_memory
    with pytest.raises(ConfigError, match="needs about 2.0 GiB of memory, 1.0 GiB are available"):
        check_memory(2 * 2**30, 2**30, "this run", "lower it")


def test_masks_that_do_not_fit_the_model_are_refused():
    from types import SimpleNamespace as NS

    from dpap_deploy.masks import check_state as check_dpap_masks
    layer = NS(name="0", n_out=4, n_in=9)
    ok = {"layers": [{"syn_alive": torch.ones(4, 9, dtype=torch.bool),
                      "neu_alive": torch.ones(4, dtype=torch.bool)}]}
    check_dpap_masks(ok, [layer], "ck.pt")
    for key, bad in (("syn_alive", torch.ones(4, 8, dtype=torch.bool)),
                     ("neu_alive", torch.ones(4)),          # float, not bool
                     ("syn_alive", None)):
        state = {"layers": [{**ok["layers"][0], key: bad}]}
        with pytest.raises(DPAPError, match=f"layer 0 {key} mask"):
            check_dpap_masks(state, [layer], "ck.pt")
    with pytest.raises(DPAPError, match="masks for 2 layers"):
        check_dpap_masks({"layers": ok["layers"] * 2}, [layer], "ck.pt")


class _FakeEvents:
    """Two 'event files' whose content is the sample: enough for the cache logic."""

    def __init__(self, folder: Path, values: list[int]):
        self.data = []
        for i, v in enumerate(values):
            f = folder / f"{i}.bin"
            f.write_bytes(bytes([v]))
            self.data.append(str(f))
        self.reads = 0

    def __len__(self):
        return len(self.data)

    def __getitem__(self, i):
        self.reads += 1
        return np.full((2, 1, 2, 2), Path(self.data[i]).read_bytes()[0]), i % 2


def test_event_cache_is_keyed_by_content_and_verified(tmp_path):
    from dpap_deploy.data.events import _frames
    src, cache = tmp_path / "src", tmp_path / "cache"
    src.mkdir()
    ds = _FakeEvents(src, [1, 0])
    x, y = _frames(ds, lambda e: e, "fake", "train", cache, 2)
    assert ds.reads == 2 and x[0].max() == 1 and x[1].max() == 0
    _frames(ds, lambda e: e, "fake", "train", cache, 2)
    assert ds.reads == 2                         # hit
    Path(ds.data[1]).write_bytes(bytes([1]))     # same names, new content: a new entry
    x, _ = _frames(ds, lambda e: e, "fake", "train", cache, 2)
    assert ds.reads == 4 and x[1].max() == 1 and len(list(cache.glob("*.npz"))) == 2
    entry = max(cache.glob("*.npz"), key=lambda p: p.stat().st_mtime)
    np.savez(entry, x=np.zeros((2, 2, 1, 2, 2), np.uint8), y=np.zeros(2, np.int64),
             source_key=np.array("forged"), digest=np.array("forged"))
    x, _ = _frames(ds, lambda e: e, "fake", "train", cache, 2)   # replaced entry: rebuilt
    assert ds.reads == 6 and x[1].max() == 1
