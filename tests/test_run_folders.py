"""Runs own their folders (dpap_deploy/runfolder.py): each folder records what made it
(``run.json``), ``resume`` continues exactly the run in its folder on the data it started
with, and no stage writes over another run unless asked to (``overwrite``)."""
from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest

from dpap_deploy.checkpoint import load_checkpoint, save_checkpoint
from dpap_deploy.errors import DPAPError
from dpap_deploy.pipeline import compact, export, train, train_and_export
from dpap_deploy.runfolder import MANIFEST, data_fingerprint, file_digest, read_manifest
from dpap_deploy.train_config import TrainConfig


def _npz(path: Path, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    np.savez(path, x_train=rng.integers(0, 256, (64, 8, 8), dtype=np.uint8),
             y_train=rng.integers(0, 3, 64), x_test=rng.integers(0, 256, (16, 8, 8), dtype=np.uint8),
             y_test=np.arange(16) % 3)
    return path


def _cfg(npz: Path, **kw) -> TrainConfig:
    return TrainConfig(**{"dataset": f"npz:{npz}", "model": "ann-digits", "epochs": 1,
                          "batch_size": 32, **kw})


def _files(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """Two finished training runs (A, B) on a small npz, and a compact of A."""
    w = tmp_path_factory.mktemp("runs")
    npz = _npz(w / "data.npz")
    train(_cfg(npz), w / "A", progress=False)
    train(_cfg(npz, seed=1), w / "B", progress=False)
    compact(w / "A", w / "A-small")
    return {"w": w, "npz": npz, "A": w / "A", "B": w / "B", "A-small": w / "A-small"}


def _copy(base, name: str, tmp_path: Path) -> Path:
    dst = tmp_path / name
    shutil.copytree(base[name], dst, symlinks=True)
    return dst


def test_training_manifest_and_checkpoint_record_the_run(base):
    from dpap_deploy.data import load_dataset
    m = read_manifest(base["A"])
    assert m.stage == "train" and m.stages == ["train"] and m.source_run_id is None
    assert len(m.run_id) == 32 and int(m.run_id, 16) >= 0
    assert m.data == data_fingerprint(load_dataset(f"npz:{base['npz']}"))
    assert m.config["seed"] == 0 and len(m.inputs) == 64 and m.inputs != m.data
    ck = load_checkpoint(base["A"])
    assert ck["run_id"] == m.run_id and ck["data_fingerprint"] == m.data
    assert read_manifest(base["B"]).run_id != m.run_id
    raw = json.loads((base["A"] / MANIFEST).read_text())
    assert raw["format"] == "dpap-deploy-run" and raw["version"] == 1


def test_compact_manifest_names_its_source(base):
    m = read_manifest(base["A-small"])
    assert m.stage == "compact" and m.source_run_id == read_manifest(base["A"]).run_id
    assert m.run_id != m.source_run_id
    assert m.inputs == file_digest(base["A"] / "checkpoint.pt")


def test_compact_into_another_run_is_refused_then_overwrite_replaces_it(base, tmp_path):
    b = _copy(base, "B", tmp_path)
    (b / "model.onnx").write_bytes(b"an export of run B")
    before = _files(b)
    with pytest.raises(DPAPError, match="holds another run: training run"):
        compact(base["A"], b)
    with pytest.raises(DPAPError, match="holds another run"):
        export(base["A"], "onnx", b)
    assert _files(b) == before
    compact(base["A"], b, overwrite=True)
    names = {p.name for p in b.iterdir()}
    assert not names & {"checkpoint.pt", "config.json", "model.onnx"}     # nothing of B left
    m = read_manifest(b)
    assert m.stage == "compact" and m.source_run_id == read_manifest(base["A"]).run_id
    rep = json.loads((b / "report.json").read_text())
    src = Path(rep["source_run"])                    # absolute, or relative to the folder
    assert (b / src).resolve() == base["A"].resolve() and rep["seed"] == 0
    assert (b / "history.csv").read_bytes() == (base["A"] / "history.csv").read_bytes()


def test_same_source_may_write_its_own_outputs_again(base, tmp_path):
    small = _copy(base, "A-small", tmp_path)
    first = read_manifest(small)
    export(base["A"], "onnx", small)                 # the same source run: allowed
    m = read_manifest(small)
    assert m.run_id == first.run_id and m.stage == "export --target onnx"
    assert m.stages == ["compact", "export --target onnx"]
    a = _copy(base, "A", tmp_path)                   # in place, on the run itself
    compact(a, a)
    m = read_manifest(a)
    assert m.stage == "train" and m.stages == ["train", "compact"]
    assert m.run_id == read_manifest(base["A"]).run_id


def test_deleted_manifest_the_checkpoint_still_names_the_run(base, tmp_path):
    b = _copy(base, "B", tmp_path)
    (b / MANIFEST).unlink()
    with pytest.raises(DPAPError, match="holds another run"):
        compact(base["A"], b)
    a = _copy(base, "A", tmp_path)
    (a / MANIFEST).unlink()
    out = tmp_path / "A-small"
    shutil.copytree(base["A-small"], out)
    compact(a, out)                                  # A's id comes from its checkpoint
    train(_cfg(base["npz"]), a, resume=True, progress=False)
    assert read_manifest(a).run_id == load_checkpoint(a)["run_id"]


def test_train_and_export_into_its_own_folder(base, tmp_path):
    out = tmp_path / "tae"
    rep = train_and_export(_cfg(base["npz"]), "onnx", out, progress=False)
    assert rep.export.passed
    m = read_manifest(out)
    assert m.stage == "train" and m.stages == ["train", "export --target onnx"]
    assert m.run_id == load_checkpoint(out)["run_id"]
    rep = train_and_export(_cfg(base["npz"]), "onnx", out, resume=True, progress=False)
    assert rep.export.passed and read_manifest(out).run_id == m.run_id


def test_resume_refuses_changed_data(base, tmp_path):
    npz = _npz(tmp_path / "data.npz")
    run = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        train(_cfg(npz, epochs=2), run, progress=False, log=_stop_after_first_epoch)
    before = _files(run)
    _npz(npz, seed=5)                                 # the data change under the run
    with pytest.raises(DPAPError) as exc:
        train(_cfg(npz, epochs=2), run, resume=True, progress=False)
    msg, recorded = str(exc.value), read_manifest(run).data
    assert f"npz:{npz}" in msg and recorded[:12] in msg and "\n" not in msg
    from dpap_deploy.data import load_dataset
    assert data_fingerprint(load_dataset(f"npz:{npz}"))[:12] in msg
    assert _files(run) == before
    _npz(npz)                                        # the run's own data again: it resumes
    rep = train(_cfg(npz, epochs=2), run, resume=True, progress=False)
    assert rep.epochs == 2


def _stop_after_first_epoch(msg: str) -> None:
    if msg.startswith("epoch "):
        raise KeyboardInterrupt


@pytest.fixture
def stopped(base, tmp_path):
    """Run A's first epoch of two, stopped."""
    run = tmp_path / "stopped"
    with pytest.raises(KeyboardInterrupt):
        train(_cfg(base["npz"], epochs=2), run, progress=False, log=_stop_after_first_epoch)
    return run


def test_checkpoint_from_before_fingerprints_resumes_with_a_warning(base, stopped, caplog):
    ck = load_checkpoint(stopped)
    ck.pop("path"), ck.pop("run_id"), ck.pop("data_fingerprint")
    save_checkpoint(stopped / "checkpoint.pt", ck)
    (stopped / MANIFEST).unlink()
    with caplog.at_level(logging.WARNING, logger="dpap_deploy"):
        rep = train(_cfg(base["npz"], epochs=2), stopped, resume=True, progress=False)
    assert rep.epochs == 2
    assert any("no fingerprint of its data" in r.getMessage() for r in caplog.records)
    assert read_manifest(stopped).data is None
    compact(stopped, stopped.parent / "small")       # its later stages still work


def test_resume_after_a_stop_before_the_first_epoch(base, tmp_path, caplog):
    """A start killed before its first epoch leaves run.json and config.json: resume starts
    that run (its own options and id) from epoch 1; a folder left with only a lock file
    starts the run asked for."""
    done = base["A"]
    run = tmp_path / "early"
    run.mkdir()
    for name in (MANIFEST, "config.json"):
        shutil.copy(done / name, run / name)
    with caplog.at_level(logging.WARNING, logger="dpap_deploy"):
        train(TrainConfig.from_file(None), run, resume=True, progress=False)
    assert load_checkpoint(run)["run_id"] == read_manifest(done).run_id
    assert load_checkpoint(run)["train_config"]["model"] == "ann-digits"
    assert any("no epoch of run" in r.getMessage() for r in caplog.records)
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / ".dpap-lock").write_text("pid 1 (train)\n")
    train(_cfg(base["npz"]), bare, resume=True, progress=False)
    assert (bare / "checkpoint.pt").is_file()


def test_resume_refuses_a_folder_mixing_two_runs(base, tmp_path):
    a = _copy(base, "A", tmp_path)
    shutil.copy(base["B"] / MANIFEST, a / MANIFEST)
    before = _files(a)
    with pytest.raises(DPAPError, match="mixes two runs"):
        train(_cfg(base["npz"]), a, resume=True, progress=False)
    assert _files(a) == before


def test_train_overwrite_replaces_the_old_run_whole(base, tmp_path):
    small = _copy(base, "A-small", tmp_path)
    with pytest.raises(DPAPError, match="already holds a run"):
        train(_cfg(base["npz"]), small, progress=False)
    train(_cfg(base["npz"], seed=2), small, progress=False, overwrite=True)
    assert not (small / "compact.pt").exists() and not (small / "deploy.pt").exists()
    m = read_manifest(small)
    assert m.stage == "train" and m.config["seed"] == 2
    rep = json.loads((small / "report.json").read_text())
    assert rep["seed"] == 2 and "compaction" not in rep and "params" not in rep


@pytest.mark.parametrize("field,value", [("stages", 7), ("source_run_id", 12), ("config", [1]),
                                         ("stages", [1, 2]), ("inputs", {"a": 1})])
def test_a_manifest_with_a_field_of_the_wrong_type_is_refused(base, tmp_path, field, value):
    """A damaged run.json is one DPAPError line, never a TypeError in the code reading it."""
    a = _copy(base, "A", tmp_path)
    raw = json.loads((a / MANIFEST).read_text())
    raw[field] = value
    (a / MANIFEST).write_text(json.dumps(raw))
    with pytest.raises(DPAPError, match="not a readable run manifest"):
        read_manifest(a)
    (a / MANIFEST).write_text('{"a":' * 100_000 + "1" + "}" * 100_000)     # beyond recursion
    with pytest.raises(DPAPError, match="not a readable run manifest"):
        read_manifest(a)


def test_overwrite_never_removes_the_file_it_reads(base, tmp_path):
    """A NIR file inside the run folder it would replace: --overwrite is refused (it would
    delete the run, the file included, before reading it); nothing in the folder changes."""
    from dpap_deploy.exporters.nir_file import run_nir_file
    a = _copy(base, "A", tmp_path)
    nir_file = Path(__file__).parent / "data" / "nir_foreign" / "snntorch_leaky.nir"
    shutil.copy(nir_file, a / "network.nir")
    before = _files(a)
    with pytest.raises(DPAPError, match="holds another run"):
        run_nir_file(a / "network.nir", a, samples=3)
    with pytest.raises(DPAPError, match="inside --out"):
        run_nir_file(a / "network.nir", a, samples=3, overwrite=True)
    assert _files(a) == before


def test_a_refused_nir_file_leaves_no_manifest(tmp_path):
    """Every refusal of a NIR file (here: too many Lava steps) comes before the folder is
    claimed: a fresh --out is not created."""
    from dpap_deploy.exporters.nir_file import run_nir_file
    nir_file = Path(__file__).parent / "data" / "nir_foreign" / "snntorch_leaky.nir"
    with pytest.raises(DPAPError, match="Lava steps"):
        run_nir_file(nir_file, tmp_path / "fresh", time_steps=100_000, samples=100)
    assert not (tmp_path / "fresh").exists()


def test_a_compact_folder_from_before_manifests_takes_its_own_source_again(base, tmp_path):
    """A compact folder written before run.json existed (no manifest; its report names the
    source run by absolute path) may be compacted into again from the same run; from another
    run it is refused."""
    old = _copy(base, "A-small", tmp_path)
    (old / MANIFEST).unlink()
    rep = json.loads((old / "report.json").read_text())
    rep["source_run"] = str(base["A"].resolve())
    (old / "report.json").write_text(json.dumps(rep))
    with pytest.raises(DPAPError, match="holds another run"):
        compact(base["B"], old)
    compact(base["A"], old)
    assert read_manifest(old).source_run_id == read_manifest(base["A"]).run_id
