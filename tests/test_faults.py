"""Faults (marker ``faults``): ``kill -9`` at any point of a command leaves only complete files,
and two writers to one folder cannot both run (one is refused, naming the other)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.faults
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
PNG_END = b"IEND\xaeB`\x82"


def start(*args) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "dpap_deploy", *map(str, args)], cwd=ROOT,
                            env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dpap_deploy", *map(str, args)], cwd=ROOT,
                          env=ENV, capture_output=True, text=True, timeout=600)


def kill_after(p: subprocess.Popen, seconds: float) -> bool:
    """SIGKILL ``p`` after ``seconds`` (True) unless it finished first (False)."""
    try:
        p.wait(timeout=seconds)
        return False
    except subprocess.TimeoutExpired:
        p.send_signal(signal.SIGKILL)
        p.wait()
        return True


def assert_complete(folder: Path) -> list[Path]:
    """Every visible file in ``folder`` is whole and readable by its own reader; returns the
    hidden temporaries (``.NAME.XXXX.tmp*``) a killed writer may leave."""
    from dpap_deploy.checkpoint import load_checkpoint
    from dpap_deploy.report import read_history
    from dpap_deploy.serialize import load_model
    hidden = []
    for p in sorted(folder.rglob("*")):
        if not p.is_file():
            continue
        if p.name.startswith("."):
            assert p.name == ".dpap-lock" or ".tmp" in p.name, p
            hidden += [p] if ".tmp" in p.name else []
            continue
        if p.suffix == ".json":
            json.loads(p.read_text())
        elif p.suffix == ".csv":
            read_history(p)
        elif p.name == "checkpoint.pt":
            load_checkpoint(p)
        elif p.suffix == ".pt":
            load_model(p)
        elif p.suffix == ".png":
            raw = p.read_bytes()
            assert raw.startswith(b"\x89PNG") and raw.endswith(PNG_END), p
        elif p.suffix == ".md":
            text = p.read_text()
            assert text.startswith("# ") and text.endswith("\n") and "## Layers" in text, p
        elif p.suffix == ".onnx":
            import onnx
            onnx.checker.check_model(onnx.load(str(p)), full_check=True)
        else:
            raise AssertionError(f"unexpected file {p}")
    return hidden


def test_kill_9_during_train_leaves_complete_files(tmp_path):
    out = tmp_path / "run"
    kills = 0
    args = ["train", "--model", "ann-digits", "--epochs", "25", "--quiet", "--out", out]
    for delay in (1.6, 2.2, 2.8, 3.4, 4.0, 4.6, 5.5):
        kills += kill_after(start(*args, *(["--resume"] if out.exists() else [])), delay)
        assert_complete(out) if out.exists() else None
    assert kills >= 5
    r = cli(*args, "--resume")       # the run finishes from its last complete checkpoint
    assert r.returncode == 0, r.stderr
    assert assert_complete(out) == []     # the lock holder removed the killed writers' temporaries
    assert json.loads((out / "report.json").read_text())["epochs"] == 25


@pytest.fixture(scope="module")
def ann_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("faults") / "ann"
    r = cli("train", "--model", "ann-digits", "--epochs", "2", "--quiet", "--out", out)
    assert r.returncode == 0, r.stderr
    return out


def test_kill_9_during_export_and_report(ann_run, tmp_path):
    out = tmp_path / "exp"
    r = cli("export", ann_run, "--target", "onnx", "--out", out)
    assert r.returncode == 0, r.stderr
    assert not list(out.glob("*.data"))      # weights are inside model.onnx
    states, kills = set(), 0
    for delay in (1.8, 2.6, 3.4, 4.2, 5.0):
        kills += kill_after(start("export", ann_run, "--target", "onnx", "--out", out), delay)
        assert_complete(out)
        states.add(json.loads((out / "report.json").read_text())["export"].get("status", "done"))
    for delay in (1.8, 2.4, 3.0):
        kills += kill_after(start("report", out), delay)
        assert_complete(out)
    assert kills >= 4
    assert states <= {"pending", "done"}
    r = cli("export", ann_run, "--target", "onnx", "--out", out)
    assert r.returncode == 0, r.stderr
    assert assert_complete(out) == []
    rep = json.loads((out / "report.json").read_text())
    assert rep["export"]["passed"] is True and "status" not in rep["export"]


def test_onnx_file_runs_alone(ann_run, tmp_path):
    """model.onnx copied by itself into another folder still runs (weights embedded)."""
    import numpy as np
    import onnxruntime as ort
    out = tmp_path / "exp"
    assert cli("export", ann_run, "--target", "onnx", "--out", out).returncode == 0
    alone = tmp_path / "alone"
    alone.mkdir()
    (alone / "model.onnx").write_bytes((out / "model.onnx").read_bytes())
    sess = ort.InferenceSession(str(alone / "model.onnx"), providers=["CPUExecutionProvider"])
    logits = sess.run(None, {"input": np.zeros((3, 1, 8, 8), np.float32)})[0]
    assert logits.shape == (3, 10)
    assert json.loads((out / "report.json").read_text())["export"]["files"] == ["model.onnx"]


def test_second_writer_is_refused(tmp_path):
    out = tmp_path / "busy"
    first = start("train", "--model", "ann-digits", "--epochs", "500", "--quiet", "--out", out)
    try:
        deadline = time.time() + 60
        while not (out / "checkpoint.pt").exists():   # lock held, first epoch written
            assert time.time() < deadline and first.poll() is None, first.stderr.read()
            time.sleep(0.05)
        for args in (["train", "--resume", "--out", out], ["compact", out, "--out", out],
                     ["report", out]):
            if args[0] == "report" and not (out / "report.json").exists():
                continue
            r = cli(*args)
            lines = r.stderr.strip().splitlines()
            assert r.returncode == 2 and len(lines) == 1, r.stderr
            assert f"in use by pid {first.pid} (train" in lines[0], lines[0]
    finally:
        first.kill()
        first.wait()


def test_two_trains_at_once_one_wins(tmp_path):
    out = tmp_path / "race"
    procs = [start("train", "--model", "ann-digits", "--epochs", "2", "--seed", seed, "--quiet",
                   "--out", out) for seed in (1, 2)]
    results = [(p.wait(timeout=600), p.stderr.read()) for p in procs]
    codes = sorted(rc for rc, _ in results)
    assert codes == [0, 2], results
    loser = next(err for rc, err in results if rc == 2)
    # the winner's pid is named once it is written; before that, "another process"
    assert "is in use by" in loser or "already holds a run" in loser, loser
    seeds = {json.loads((out / "config.json").read_text())["seed"],
             json.loads((out / "report.json").read_text())["seed"]}
    from dpap_deploy.checkpoint import load_checkpoint
    seeds.add(load_checkpoint(out)["train_config"]["seed"])
    assert len(seeds) == 1, seeds            # one run's files, not a mix


def test_compacting_again_marks_an_earlier_export_stale(ann_run, tmp_path):
    out = tmp_path / "exp"
    assert cli("export", ann_run, "--target", "onnx", "--out", out).returncode == 0
    r = cli("compact", ann_run, "--out", out)
    assert r.returncode == 0, r.stderr
    e = json.loads((out / "report.json").read_text())["export"]
    assert e["status"] == "stale" and e["passed"] is False
    assert "**stale**" in (out / "report.md").read_text()
