"""Bad-input corpus (marker ``bad_inputs``: ``pytest -m bad_inputs``).

Every case runs the real CLI in its own process (``cli`` in conftest.py: ``python -m
dpap_deploy`` forked from a process that has done the imports) and must end with exit status 2,
exactly one stderr line ``dpap-deploy: error: ...`` that names the bad value, no traceback,
nothing left in a fresh output folder and no file changed in an existing one. Four cases run at
a time (each with its own folders, so they cannot disturb each other); the Python API cases at
the end check that the same functions raise the same errors.
"""
from __future__ import annotations

import argparse
import gzip
import hashlib
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.bad_inputs
CASE_TIMEOUT_S = 180   # a refusal takes seconds; a case that trains instead is stopped here


def _npz(path: Path, **override) -> Path:
    rng = np.random.default_rng(0)
    arrays = {"x_train": rng.integers(0, 256, (64, 8, 8), dtype=np.uint8),
              "y_train": rng.integers(0, 3, 64),
              "x_test": rng.integers(0, 256, (16, 8, 8), dtype=np.uint8),
              "y_test": np.arange(16) % 3}
    arrays.update(override)
    np.savez(path, **{k: v for k, v in arrays.items() if v is not None})
    return path


def _idx_bytes(a: np.ndarray) -> bytes:
    return bytes([0, 0, 8, a.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in a.shape) + a.tobytes()


def _other_runs(w: Path, good: Path) -> dict[str, Path]:
    """Folders of another run than ``run``: its training folder, a compact and an export of it."""
    from dpap_deploy.pipeline import compact, export, train
    from dpap_deploy.training import TrainConfig
    other = w / "run_other"
    train(TrainConfig(dataset=f"npz:{good}", model="ann-digits", epochs=1, batch_size=32, seed=1),
          other, progress=False)
    compact(other, w / "run_compact")
    export(other, "onnx", w / "run_export")
    return {"other": other, "compact": w / "run_compact", "export": w / "run_export"}


def _idx_dir(d: Path, damage: str) -> Path:
    d.mkdir()
    imgs, labs = np.zeros((4, 8, 8), np.uint8), np.arange(4, dtype=np.uint8) % 2
    files = {"train-images-idx3-ubyte": _idx_bytes(imgs), "train-labels-idx1-ubyte": _idx_bytes(labs),
             "t10k-images-idx3-ubyte": _idx_bytes(imgs), "t10k-labels-idx1-ubyte": _idx_bytes(labs)}
    if damage == "magic":
        files["train-images-idx3-ubyte"] = b"\x12\x34" + files["train-images-idx3-ubyte"][2:]
    if damage == "truncated":
        files["train-images-idx3-ubyte"] = files["train-images-idx3-ubyte"][:-10]
    if damage == "missing":
        del files["t10k-labels-idx1-ubyte"]
    for name, raw in files.items():
        if damage == "gzip" and name.startswith("train-images"):
            (d / (name + ".gz")).write_bytes(gzip.compress(raw)[:30] + b"garbage")
        else:
            (d / name).write_bytes(raw)
    return d


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Input files shared by all cases (never written by them) and a trained ANN run."""
    from dpap_deploy.checkpoint import load_checkpoint, save_checkpoint
    from dpap_deploy.pipeline import train as train_stage
    from dpap_deploy.training import TrainConfig

    w = tmp_path_factory.mktemp("world")
    good = _npz(w / "good.npz")
    nan_x = np.random.default_rng(1).random((64, 8, 8)).astype(np.float32)
    nan_x[3, 2, 2] = np.nan
    files = {
        "good": good,
        "nan": _npz(w / "nan.npz", x_train=nan_x),
        "inf": _npz(w / "inf.npz", x_test=np.full((16, 8, 8), np.inf, np.float32)),
        "float_labels": _npz(w / "float_labels.npz", y_train=np.linspace(0, 2, 64)),
        "neg_labels": _npz(w / "neg_labels.npz", y_test=np.full(16, -1)),
        "huge_label": _npz(w / "huge_label.npz", y_train=np.r_[np.zeros(63, int), 10**9]),
        "empty_arrays": _npz(w / "empty_arrays.npz", x_train=np.zeros((0, 8, 8), np.uint8),
                             y_train=np.zeros(0, int)),
        "missing_key": _npz(w / "missing_key.npz", y_test=None),
        "count_mismatch": _npz(w / "count_mismatch.npz", y_train=np.zeros(60, int)),
        "flat_images": _npz(w / "flat_images.npz", x_train=np.zeros((64, 64), np.uint8)),
        "shape_mismatch": _npz(w / "shape_mismatch.npz", x_test=np.zeros((16, 9, 9), np.uint8)),
        "bool_labels": _npz(w / "bool_labels.npz", y_train=np.ones(64, bool)),
    }
    (w / "zero.npz").write_bytes(b"")
    (w / "garbage.npz").write_bytes(b"PK\x03\x04 this is no zip")
    np.savez(w / "no_arrays.npz")
    for dmg in ("magic", "truncated", "missing", "gzip"):
        _idx_dir(w / f"idx_{dmg}", dmg)
    cfgs = {"syntax.toml": "epochs = = 3\n", "list.json": "[1, 2]\n",
            "tau.toml": "[dpap]\ntau = 'a'\n", "dpap5.toml": "dpap = 5\n",
            "epochs_str.toml": "epochs = '3'\n", "seed_neg.toml": "seed = -5\n",
            "unknown.toml": "epoch = 3\n", "eps.toml": "[dpap.conv]\nepsilon = 'x'\n",
            "flag.toml": "[dpap]\nprune_output_synapses = 'yes'\n",
            "warmup.toml": "[dpap.linear]\nwarmup = 2.5\n", "nan_lr.json": '{"lr": NaN}\n',
            "dataset_int.toml": "dataset = 5\n", "epochs_huge.toml": "epochs = 99999999999999999\n",
            "deep.json": '{"dpap": ' + "[" * 100_000 + "]" * 100_000 + "}\n",
            "deep40.json": '{"dpap": {"a": ' + "[" * 40 + "]" * 40 + "}}\n",
            "deep.toml": "x = " + "[" * 100_000 + "]" * 100_000 + "\n"}
    for name, text in cfgs.items():
        (w / name).write_text(text)
    (w / "afile").write_text("a file, not a folder\n")
    (w / "empty_dir").mkdir()
    (w / "readonly").mkdir(mode=0o555)
    (w / "garbage.pt").write_bytes(b"not a checkpoint at all")
    torch.save({"a": torch.zeros(2)}, w / "foreign.pt")
    torch.save({"x": argparse.Namespace(a=1)}, w / "code.pt")

    run = w / "run"
    train_stage(TrainConfig(dataset=f"npz:{good}", model="ann-digits", epochs=1,
                                 batch_size=32), run, progress=False)
    variants = _other_runs(w, good)
    for name in ("badmask", "badjson", "listjson", "badhistory", "badckpt", "missing_rng",
                 "nockpt", "symloop", "fingerprint"):
        variants[name] = w / f"run_{name}"
        shutil.copytree(run, variants[name])
    ck = load_checkpoint(run)
    ck.pop("path")
    ck["dpap"]["layers"][0]["syn_alive"] = torch.ones(3, 3, dtype=torch.bool)
    save_checkpoint(variants["badmask"] / "checkpoint.pt", ck)
    ck = load_checkpoint(run)
    ck.pop("path")
    ck.pop("rng")
    save_checkpoint(variants["missing_rng"] / "checkpoint.pt", ck)
    (variants["badjson"] / "report.json").write_text('{"dataset": "x", ')
    (variants["listjson"] / "report.json").write_text("[]\n")
    (variants["badhistory"] / "history.csv").write_text("epoch,test_acc\n1,abc\n")
    (variants["badckpt"] / "checkpoint.pt").write_bytes(b"\x80\x02garbage")
    (variants["nockpt"] / "checkpoint.pt").unlink()           # report.json, history.csv, ... left
    (variants["symloop"] / "checkpoint.pt").unlink()
    (variants["symloop"] / "checkpoint.pt").symlink_to("checkpoint.pt")
    ck = load_checkpoint(run)
    ck.pop("path")
    ck["data_fingerprint"] = "0" * 64                          # as if the data had changed
    save_checkpoint(variants["fingerprint"] / "checkpoint.pt", ck)
    (w / "junk.pt").write_bytes(b"junk")
    raw = (run / "checkpoint.pt").read_bytes()
    (w / "truncated.pt").write_bytes(raw[:len(raw) // 2])
    return {"w": w, "run": run, **{k: str(v) for k, v in files.items()},
            **{f"run_{k}": v for k, v in variants.items()}}


# (id, argv, fragments the line must contain, folder kind). Placeholders: {F} a fresh output
# folder (must not exist afterwards), {E} a private copy of the trained run (must be unchanged),
# {w} the input folder, {run}/{run_*} shared runs used read-only, {npz:NAME} an input file.
CASES = [
    # train: options
    ("train-seed-neg", "train --seed -1 --out {F}", ["seed -1"], "fresh"),
    ("train-seed-huge", "train --seed 99999999999 --out {F}", ["seed 99999999999"], "fresh"),
    ("train-epochs-0", "train --epochs 0 --out {F}", ["epochs 0"], "fresh"),
    ("train-epochs-text", "train --epochs x --out {F}", ["'x'"], "fresh"),
    ("train-batch-0", "train --batch-size 0 --out {F}", ["batch-size 0"], "fresh"),
    ("train-T-0", "train --time-steps 0 --out {F}", ["time-steps 0"], "fresh"),
    ("train-T-million", "train --time-steps 1000000 --out {F}", ["1000000"], "fresh"),
    ("train-memory", "train --time-steps 50000 --batch-size 1400 --out {F}",
     ["--time-steps 50000", "GiB"], "fresh"),
    ("train-lr-0", "train --lr 0 --out {F}", ["learning rate 0"], "fresh"),
    ("train-lr-nan", "train --lr nan --out {F}", ["nan"], "fresh"),
    ("train-device", "train --device tpu --out {F}", ["'tpu'"], "fresh"),
    ("train-dataset", "train --dataset nope --out {F}", ["'nope'"], "fresh"),
    ("train-model", "train --model nope --out {F}", ["nope"], "fresh"),
    ("train-model-size", "train --model ann-lenet --out {F}", ["ann-lenet"], "fresh"),
    ("train-prune-target", "train --no-dpap --baseline magnitude --prune-target 1.5 --out {F}",
     ["1.5"], "fresh"),
    ("train-baseline-dpap", "train --baseline magnitude --prune-target 0.5 --out {F}",
     ["--no-dpap"], "fresh"),
    ("train-preset", "train --preset nope --out {F}", ["'nope'"], "fresh"),
    ("train-rule", "train --rule oja --out {F}", ["'oja'"], "fresh"),
    ("train-out-file", "train --out {w}/afile", ["afile", "is a file"], "none"),
    ("train-out-under-file", "train --out {w}/afile/sub", ["afile", "is a file"], "none"),
    ("train-out-proc", "train --epochs 1 --out /proc/dpap-nope/out", ["/proc/dpap-nope"], "none"),
    ("train-no-out", "train --epochs 1", ["--out"], "none"),
    ("train-out-empty", "train --epochs 1 --out {EMPTY}", ["--out ''", "current folder"], "none"),
    ("train-epochs-huge", "train --epochs 99999999999999999999 --out {F}",
     ["epochs 99999999999999999999", "a year", "sample-steps"], "fresh"),
    ("train-epochs-cost", "train --epochs 100000000000000 --dataset npz:{good} --model ann-digits "
     "--out {F}", ["epochs 100000000000000", "64 training samples", "at most 61593750000000"], "fresh"),
    ("train-prune-target-alone", "train --epochs 1 --prune-target 0.5 --out {F}",
     ["--prune-target 0.5", "ignored", "--baseline"], "fresh"),
    ("train-prune-kind-alone", "train --epochs 1 --prune-target-kind synops --out {F}",
     ["--prune-target-kind synops", "ignored"], "fresh"),
    ("train-prune-kind-params", "train --epochs 1 --prune-target-kind params --out {F}",
     ["--prune-target-kind params", "ignored"], "fresh"),
    ("train-data-root-digits", "train --epochs 1 --dataset digits --data-root {w} --out {F}",
     ["--data-root", "'digits'", "ignored"], "fresh"),
    ("tae-prune-target-alone", "train-and-export --epochs 1 --model ann-digits --target onnx "
     "--prune-target 0.5 --out {F}",
     ["--prune-target 0.5"], "fresh"),
    # train: config files
    ("cfg-missing", "train --config {w}/nope.toml --out {F}", ["nope.toml", "does not exist"], "fresh"),
    ("cfg-syntax", "train --config {w}/syntax.toml --out {F}", ["syntax.toml", "TOML"], "fresh"),
    ("cfg-list", "train --config {w}/list.json --out {F}", ["list.json", "table"], "fresh"),
    ("cfg-tau", "train --config {w}/tau.toml --out {F}", ["tau='a'"], "fresh"),
    ("cfg-dpap-5", "train --config {w}/dpap5.toml --out {F}", ["'dpap'", "5"], "fresh"),
    ("cfg-epochs-str", "train --config {w}/epochs_str.toml --out {F}", ["epochs='3'"], "fresh"),
    ("cfg-seed-neg", "train --config {w}/seed_neg.toml --out {F}", ["seed -5"], "fresh"),
    ("cfg-unknown", "train --config {w}/unknown.toml --out {F}", ["epoch"], "fresh"),
    ("cfg-epsilon", "train --config {w}/eps.toml --out {F}", ["epsilon='x'"], "fresh"),
    ("cfg-flag", "train --config {w}/flag.toml --out {F}", ["prune_output_synapses='yes'"], "fresh"),
    ("cfg-warmup", "train --config {w}/warmup.toml --out {F}", ["warmup=2.5"], "fresh"),
    ("cfg-lr-nan", "train --config {w}/nan_lr.json --out {F}", ["lr=nan"], "fresh"),
    ("cfg-dataset-int", "train --config {w}/dataset_int.toml --out {F}", ["dataset=5"], "fresh"),
    ("cfg-epochs-huge", "train --config {w}/epochs_huge.toml --out {F}",
     ["epochs 99999999999999999", "a year"], "fresh"),
    ("cfg-deep-json", "train --config {w}/deep.json --out {F}", ["deep.json", "too deeply"], "fresh"),
    ("cfg-deep-40", "train --config {w}/deep40.json --out {F}", ["deep40.json", "42 levels"], "fresh"),
    ("cfg-deep-toml", "train --config {w}/deep.toml --out {F}", ["deep.toml", "too deeply"], "fresh"),
    # train: data files
    ("npz-nan", "train --dataset npz:{nan} --model ann-digits --out {F}", ["x_train", "NaN"], "fresh"),
    ("npz-inf", "train --dataset npz:{inf} --model ann-digits --out {F}", ["x_test", "inf"], "fresh"),
    ("npz-float-labels", "train --dataset npz:{float_labels} --model ann-digits --out {F}",
     ["y_train", "float64"], "fresh"),
    ("npz-bool-labels", "train --dataset npz:{bool_labels} --model ann-digits --out {F}",
     ["y_train", "bool"], "fresh"),
    ("npz-neg-labels", "train --dataset npz:{neg_labels} --model ann-digits --out {F}",
     ["y_test", "label -1"], "fresh"),
    ("npz-huge-label", "train --dataset npz:{huge_label} --model ann-digits --out {F}",
     ["label 1000000000"], "fresh"),
    ("npz-empty", "train --dataset npz:{empty_arrays} --model ann-digits --out {F}",
     ["x_train", "empty"], "fresh"),
    ("npz-missing-key", "train --dataset npz:{missing_key} --out {F}", ["y_test"], "fresh"),
    ("npz-no-arrays", "train --dataset npz:{w}/no_arrays.npz --out {F}", ["x_train"], "fresh"),
    ("npz-zero-bytes", "train --dataset npz:{w}/zero.npz --out {F}", ["zero.npz", "not a readable"], "fresh"),
    ("npz-garbage", "train --dataset npz:{w}/garbage.npz --out {F}", ["garbage.npz", "not a readable"], "fresh"),
    ("npz-count", "train --dataset npz:{count_mismatch} --out {F}", ["60 labels for 64"], "fresh"),
    ("npz-flat", "train --dataset npz:{flat_images} --out {F}", ["(64, 64)"], "fresh"),
    ("npz-shapes", "train --dataset npz:{shape_mismatch} --model ann-digits --out {F}",
     ["same image shape"], "fresh"),
    ("npz-missing-file", "train --dataset npz:{w}/nope.npz --out {F}", ["nope.npz", "does not exist"], "fresh"),
    ("idx-magic", "train --dataset idx:{w}/idx_magic --out {F}", ["magic"], "fresh"),
    ("idx-truncated", "train --dataset idx:{w}/idx_truncated --out {F}", ["truncated"], "fresh"),
    ("idx-missing", "train --dataset idx:{w}/idx_missing --out {F}", ["t10k-labels-idx1-ubyte"], "fresh"),
    ("idx-gzip", "train --dataset idx:{w}/idx_gzip --out {F}", ["train-images-idx3-ubyte.gz", "gzip"], "fresh"),
    ("mnist-no-root", "train --dataset mnist --out {F}", ["--data-root"], "fresh"),
    ("cifar-no-files", "train --dataset cifar10 --data-root {w}/empty_dir --out {F}", ["data_batch_1"], "fresh"),
    # train into an existing run
    ("train-existing", "train --epochs 2 --out {E}", ["already holds a run"], "existing"),
    ("resume-epochs-0", "train --resume --epochs 0 --out {E}", ["epochs 0"], "existing"),
    ("resume-other-seed", "train --resume --seed 3 --out {E}", ["seed", "3"], "existing"),
    ("resume-badckpt", "train --resume --out {E:badckpt}", ["checkpoint.pt", "not a readable"], "existing"),
    ("resume-badmask", "train --resume --out {E:badmask}", ["syn_alive", "(3, 3)"], "existing"),
    ("resume-missing-rng", "train --resume --out {E:missing_rng}", ["rng"], "existing"),
    # runs own their folders: resume exactly the run in --out, write over no other run
    ("resume-no-checkpoint", "train --resume --epochs 1 --model ann-digits --out {E:nockpt}",
     ["nothing to resume", "checkpoint.pt", "report.json"], "existing"),
    ("resume-symlink-loop", "train --resume --epochs 1 --model ann-digits --out {E:symloop}", ["checkpoint.pt", "symbolic link"],
     "existing"),
    ("resume-compact-folder", "train --resume --epochs 1 --model ann-digits --out {E:compact}", ["nothing to resume", "compact"],
     "existing"),
    ("resume-export-folder", "train --resume --epochs 1 --model ann-digits --out {E:export}",
     ["nothing to resume", "export --target onnx"], "existing"),
    ("resume-fresh", "train --resume --epochs 1 --model ann-digits --out {F}", ["nothing to resume", "drop --resume"], "fresh"),
    ("resume-empty-dir", "train --resume --epochs 1 --model ann-digits --out {w}/empty_dir", ["nothing to resume", "empty"], "none"),
    ("resume-overwrite", "train --resume --overwrite --out {E}", ["--overwrite"], "existing"),
    ("resume-changed-data", "train --resume --out {E:fingerprint}",
     ["changed", "npz:", "000000000000", "fingerprint"], "existing"),
    ("train-into-compact", "train --epochs 1 --model ann-digits --out {E:compact}", ["already holds a run", "--overwrite"],
     "existing"),
    ("tae-into-compact", "train-and-export --epochs 1 --model ann-digits --target onnx "
     "--out {E:compact}",
     ["already holds a run"], "existing"),
    ("compact-into-other-compact", "compact {run} --out {E:compact}",
     ["holds another run", "compact output", "--overwrite"], "existing"),
    ("compact-into-other-train", "compact {run} --out {E:other}",
     ["holds another run", "training run", "--overwrite"], "existing"),
    ("export-into-other-compact", "export {run} --target onnx --out {E:compact}",
     ["holds another run", "--overwrite"], "existing"),
    ("export-into-other-export", "export {run} --target onnx --out {E:export}",
     ["holds another run", "export --target onnx"], "existing"),
    # compact
    ("compact-missing", "compact {w}/nope --out {F}", ["nope", "does not exist"], "fresh"),
    ("compact-out-file", "compact {run} --out {w}/afile", ["afile", "is a file"], "none"),
    ("compact-empty-dir", "compact {w}/empty_dir --out {F}", ["empty_dir", "checkpoint.pt"], "fresh"),
    ("compact-garbage", "compact {w}/garbage.pt --out {F}", ["garbage.pt", "not a readable"], "fresh"),
    ("compact-junk", "compact {w}/junk.pt --out {F}", ["junk.pt", "not a readable"], "fresh"),
    ("compact-truncated", "compact {w}/truncated.pt --out {F}", ["truncated.pt", "not a readable"],
     "fresh"),
    ("compact-foreign", "compact {w}/foreign.pt --out {F}", ["foreign.pt", "not a dpap-deploy"], "fresh"),
    ("compact-code", "compact {w}/code.pt --out {F}", ["code.pt", "could run code"], "fresh"),
    ("compact-badmask", "compact {run_badmask} --out {F}", ["syn_alive", "(3, 3)"], "fresh"),
    ("compact-badmask-inplace", "compact {E:badmask} --out {E:badmask}", ["syn_alive"], "existing"),
    ("compact-no-source", "compact --out {F}", ["RUN_DIR_OR_CHECKPOINT"], "fresh"),
    # export
    ("export-max-0", "export {run} --target onnx --max-samples 0 --out {F}", ["max-samples 0"], "fresh"),
    ("export-max-neg", "export {run} --target onnx --max-samples -5 --out {F}", ["max-samples -5"], "fresh"),
    ("export-kind", "export {run} --target nir --out {F}", ["'nir'", "ANN"], "fresh"),
    ("export-target", "export {run} --target tpu --out {F}", ["'tpu'"], "fresh"),
    ("export-missing", "export {w}/nope --target onnx --out {F}", ["nope", "does not exist"], "fresh"),
    ("export-out-file", "export {run} --target onnx --out {w}/afile", ["afile", "is a file"], "none"),
    ("export-inplace-max", "export {E} --target onnx --out {E} --max-samples 0", ["max-samples 0"], "existing"),
    ("export-code", "export {w}/code.pt --target onnx --out {F}", ["could run code"], "fresh"),
    # report
    ("report-missing", "report {w}/nope", ["nope", "does not exist"], "none"),
    ("report-baseline-missing", "report {E} --baseline {w}/nope", ["nope", "does not exist"], "existing"),
    ("report-baseline-empty", "report {E} --baseline {w}/empty_dir", ["empty_dir", "history.csv"], "existing"),
    ("report-badjson", "report {E:badjson}", ["report.json", "not valid JSON"], "existing"),
    ("report-listjson", "report {E:listjson}", ["report.json", "list"], "existing"),
    ("report-badhistory", "report {E:badhistory}", ["history.csv", "'abc'"], "existing"),
    ("report-empty-dir", "report {w}/empty_dir", ["empty_dir", "report.json"], "none"),
    # train-and-export
    ("tae-kind", "train-and-export --target onnx --out {F}", ["'onnx'", "SNN"], "fresh"),
    ("tae-max-0", "train-and-export --target onnx --model ann-digits --max-samples 0 --out {F}",
     ["max-samples 0"], "fresh"),
    ("tae-seed", "train-and-export --seed -2 --out {F}", ["seed -2"], "fresh"),
    ("tae-target", "train-and-export --target nope --out {F}", ["'nope'"], "fresh"),
    ("tae-nan", "train-and-export --target onnx --model ann-digits --dataset npz:{nan} --out {F}",
     ["NaN"], "fresh"),
    # synth-events
    ("synth-limit-neg", "synth-events --limit-train -3 --out {F}", ["limit-train -3"], "fresh"),
    ("synth-limit-0", "synth-events --limit-test 0 --out {F}", ["limit-test 0"], "fresh"),
    ("synth-out-file", "synth-events --dataset digits --out {w}/afile", ["afile", "is a file"], "none"),
    ("synth-dataset", "synth-events --dataset nope --out {F}", ["'nope'"], "fresh"),
    ("synth-color", "synth-events --dataset npz:{w}/nope.npz --out {F}", ["nope.npz"], "fresh"),
    # the command line itself
    ("no-command", "", ["command"], "none"),
    ("unknown-command", "frobnicate", ["'frobnicate'"], "none"),
    ("unknown-option", "models --colour", ["--colour"], "none"),
]


if os.geteuid() != 0:   # root may write anywhere: a read-only folder can only be tested as a user
    CASES.append(("train-out-readonly", "train --out {w}/readonly/sub", ["readonly", "not writable"],
                  "none"))


def _snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _prepare(world, case_dir: Path, argv: str):
    """Fill the placeholders; returns the argument list and the folders to check."""
    fresh, existing = case_dir / "out", []

    def copy(variant: str) -> str:
        dst = case_dir / f"existing_{variant or 'run'}"
        if not dst.exists():
            shutil.copytree(world[f"run_{variant}"] if variant else world["run"], dst,
                            symlinks=True)
            existing.append(dst)
        return str(dst)

    out = []
    for tok in argv.split():
        for key in sorted(world, key=len, reverse=True):
            tok = tok.replace("{" + key + "}", str(world[key]))
        tok = tok.replace("{F}", str(fresh)).replace("{EMPTY}", "")
        while "{E" in tok:
            a = tok.index("{E")
            b = tok.index("}", a)
            tok = tok[:a] + copy(tok[a + 3:b]) + tok[b + 1:]
        out.append(tok)
    return out, fresh, existing


@pytest.fixture(scope="module")
def results(world, tmp_path_factory, cli):
    tmp = tmp_path_factory.mktemp("cases")
    inputs_before = _snapshot(world["w"])
    prepared = {}
    for name, argv, _frags, _kind in CASES:
        (tmp / name).mkdir()
        args, fresh, existing = _prepare(world, tmp / name, argv)
        prepared[name] = (args, fresh, existing, {str(e): _snapshot(e) for e in existing})
    runs = cli.many([p[0] for p in prepared.values()], timeout=CASE_TIMEOUT_S)
    done = {name: (r, fresh, before, {str(e): _snapshot(e) for e in existing})
            for (name, (_, fresh, existing, before)), r in zip(prepared.items(), runs)}
    done["__inputs__"] = (inputs_before, _snapshot(world["w"]))
    return done


def test_corpus_is_large():
    assert len(CASES) >= 60 and len({c[0] for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input(results, case):
    name, _argv, frags, kind = case
    r, fresh, before, after = results[name]
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    assert "Traceback" not in r.stderr and "weights_only" not in r.stderr
    assert len(lines) == 1 and lines[0].startswith("dpap-deploy: error: "), r.stderr
    for f in frags:
        assert f in lines[0], (f, lines[0])
    assert not fresh.exists(), sorted(p.name for p in fresh.rglob("*"))
    assert before == after, f"{name} changed files in an existing run folder"


def test_inputs_untouched(results):
    before, after = results["__inputs__"]
    assert before == after


# The Python API raises the same errors (no subprocess: these are what scripts see).
def test_api_refuses_bad_values(world, tmp_path):
    from dpap_deploy import DPAPConfig, TrainConfig, train
    from dpap_deploy.checkpoint import load_checkpoint
    from dpap_deploy.data import load_dataset
    from dpap_deploy.data.idx import read_idx
    from dpap_deploy.data.saccade import synth_events
    from dpap_deploy.errors import DPAPError
    from dpap_deploy.pipeline import compact as compact_run, export as export_run, report as write_human_report
    from dpap_deploy.pipeline import train as train_stage

    out = tmp_path / "out"
    cases = [
        (lambda: TrainConfig(seed=-1), "seed -1"),
        (lambda: TrainConfig(epochs="3"), "epochs='3'"),
        (lambda: TrainConfig(lr=float("inf")), "lr=inf"),
        (lambda: DPAPConfig.from_dict({"tau": "a"}), "tau='a'"),
        (lambda: load_dataset(f"npz:{world['nan']}"), "NaN"),
        (lambda: load_dataset(f"npz:{world['float_labels']}"), "float64"),
        (lambda: compact_run(world["w"] / "nope", out), "does not exist"),
        (lambda: compact_run(world["run_badmask"], out), "syn_alive"),
        (lambda: export_run(world["run"], "onnx", out, max_samples=0), "max-samples 0"),
        (lambda: write_human_report(world["run"], baseline=world["w"] / "nope"), "nope"),
        (lambda: train(TrainConfig(epochs=1), world["w"] / "afile"), "is a file"),
        (lambda: read_idx(world["w"] / "idx_gzip" / "train-images-idx3-ubyte.gz"), "gzip"),
        (lambda: synth_events("digits", None, out, limit_train=-1), "limit-train -1"),
        (lambda: load_checkpoint(world["w"] / "code.pt"), "could run code"),
        (lambda: TrainConfig(epochs=10**20), "a year"),
        (lambda: train(TrainConfig(epochs=1, prune_target=0.5), out), "--prune-target 0.5"),
        (lambda: train(TrainConfig(epochs=1, data_root=str(world["w"])), out), "--data-root"),
        (lambda: train_stage(TrainConfig(epochs=1), out, resume=True), "nothing to resume"),
        (lambda: train_stage(TrainConfig(epochs=1), ""), "current folder"),
    ]
    for fn, frag in cases:
        with pytest.raises(DPAPError) as exc:
            fn()
        assert frag in str(exc.value) and "weights_only" not in str(exc.value)
        assert "\n" not in str(exc.value)
    assert not out.exists()


def test_api_refuses_writing_over_another_run(world, tmp_path):
    """compact / export / train / train_and_export into a folder of another run raise one line
    and change nothing there; resume refuses a folder that is not a training run."""
    from dpap_deploy import TrainConfig
    from dpap_deploy.errors import DPAPError
    from dpap_deploy.pipeline import compact, export, train, train_and_export
    folder = tmp_path / "other"
    shutil.copytree(world["run_compact"], folder)
    before = _snapshot(folder)
    cfg = TrainConfig(dataset=f"npz:{world['good']}", model="ann-digits", epochs=1)
    cases = [(lambda: compact(world["run"], folder), "holds another run"),
             (lambda: export(world["run"], "onnx", folder), "holds another run"),
             (lambda: train(cfg, folder), "already holds a run"),
             (lambda: train(cfg, folder, resume=True), "nothing to resume"),
             (lambda: train_and_export(cfg, "onnx", folder), "already holds a run")]
    for fn, frag in cases:
        with pytest.raises(DPAPError, match=frag) as exc:
            fn()
        assert "\n" not in str(exc.value)
    assert _snapshot(folder) == before


def test_unexpected_error_is_one_line_with_debug_hint(monkeypatch, capsys):
    """A bug (not a user error) still ends in one line, exit 1, and --debug shows the traceback."""
    from dpap_deploy import cli, zoo

    class Boom(dict):
        def values(self):
            raise RuntimeError("injected failure\nsecond line")
    monkeypatch.setattr(zoo, "ZOO", Boom())
    assert cli.main(["models"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["dpap-deploy: error: unexpected RuntimeError: injected failure; rerun with "
                   "--debug for the traceback and report it"]
    with pytest.raises(RuntimeError, match="injected failure"):
        cli.main(["models", "--debug"])
