"""The CLI as a user meets it: files written, one-line errors with non-zero exit status."""
import csv
import json
import subprocess
import sys

import numpy as np


def cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "dpap_deploy", *args], capture_output=True,
                          text=True, cwd=cwd, timeout=600)


def test_train_writes_report_history_checkpoint(tmp_path):
    out = tmp_path / "run"
    r = cli("train", "--epochs", "3", "--batch-size", "128", "--out", str(out), "--quiet")
    assert r.returncode == 0, r.stderr
    rep = json.loads((out / "report.json").read_text())
    for key in ("dataset", "model", "kind", "epochs", "seed", "dpap", "accuracy", "pruning"):
        assert key in rep
    assert rep["dataset"] == "digits" and rep["model"] == "snn-digits" and rep["kind"] == "snn"
    assert rep["epochs"] == 3 and rep["dpap"] is True
    assert 0.0 <= rep["accuracy"]["test"] <= 1.0 and rep["accuracy"]["best"] >= rep["accuracy"]["test"]
    assert 0.0 <= rep["pruning"]["params_removed_fraction"] < 1.0
    layers = rep["pruning"]["layers"]
    assert [l["neurons_total"] for l in layers] == [16, 32, 128, 10]
    assert all(l["neurons_kept"] <= l["neurons_total"] for l in layers)
    rows = list(csv.DictReader((out / "history.csv").open()))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    assert float(rows[-1]["test_acc"]) == rep["accuracy"]["test"]
    assert {"loss", "train_acc", "test_acc", "wall_time_s", "7:neurons_kept",
            "7:synapses_kept"} <= set(rows[0])
    assert (out / "checkpoint.pt").exists()
    # resume a finished run: nothing to train, the report is rewritten
    r = cli("train", "--resume", "--out", str(out), "--quiet")
    assert r.returncode == 0, r.stderr


def _assert_one_line_error(r, *fragments):
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dpap-deploy: error: "), r.stderr
    assert "Traceback" not in r.stderr
    for f in fragments:
        assert f in lines[0], lines[0]


def test_bad_input_gives_one_line_errors(tmp_path):
    _assert_one_line_error(cli("train", "--epochs", "0", "--out", str(tmp_path / "a")), "epochs 0")
    _assert_one_line_error(cli("train", "--dataset", "nope", "--out", str(tmp_path / "b")), "'nope'")
    _assert_one_line_error(cli("train", "--dataset", f"npz:{tmp_path}/missing.npz",
                               "--out", str(tmp_path / "c")), "missing.npz", "does not exist")
    _assert_one_line_error(cli("train", "--model", "ann-lenet", "--out", str(tmp_path / "d")),
                           "(1, 8, 8)", "ann-lenet")
    cfg = tmp_path / "bad.toml"
    cfg.write_text("[dpap.linear]\nepsilon = 3.0\n")
    _assert_one_line_error(cli("train", "--config", str(cfg), "--out", str(tmp_path / "e")),
                           "epsilon=3.0")
    cfg.write_text("epochs = 2\n[dpap]\nrule = 'oja'\n")
    _assert_one_line_error(cli("train", "--config", str(cfg), "--out", str(tmp_path / "f")),
                           "rule='oja'")
    run = tmp_path / "g"
    run.mkdir()
    (run / "checkpoint.pt").write_bytes(b"not a checkpoint at all")
    _assert_one_line_error(cli("train", "--resume", "--out", str(run)), "checkpoint.pt",
                           "not a readable checkpoint")


def test_npz_dataset_and_config_file(tmp_path):
    rng = np.random.default_rng(0)
    f = tmp_path / "toy.npz"
    np.savez(f, x_train=rng.integers(0, 256, (64, 8, 8), dtype=np.uint8),
             y_train=rng.integers(0, 3, 64), x_test=rng.integers(0, 256, (16, 8, 8), dtype=np.uint8),
             y_test=rng.integers(0, 3, 16))
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"epochs": 1, "batch_size": 32, "dpap": {"rule": "hebb"}}))
    out = tmp_path / "run"
    r = cli("train", "--dataset", f"npz:{f}", "--config", str(cfg), "--model", "ann-digits",
            "--out", str(out), "--quiet")
    assert r.returncode == 0, r.stderr
    rep = json.loads((out / "report.json").read_text())
    assert rep["epochs"] == 1 and rep["kind"] == "ann" and rep["dpap_config"]["rule"] == "hebb"
    assert rep["pruning"]["layers"][-1]["neurons_total"] == 3


def test_version_and_dataset_names_in_help():
    from dpap_deploy import __version__
    r = cli("--version")
    assert r.returncode == 0 and r.stdout.strip() == f"dpap-deploy {__version__}"
    help_text = " ".join(cli("train", "--help").stdout.split()).replace("- ", "-")  # wrapped
    assert "digits, mnist, fashion-mnist, cifar10, nmnist, dvs-gesture, idx:DIR or npz:FILE" \
        in help_text


def test_nir_file_options_are_refused_for_a_run(tmp_path):
    """--dt / --time-steps / --input steer a NIR file's run; a run folder's export would ignore
    them, so they are refused instead of silently dropped."""
    r = cli("export", str(tmp_path / "run"), "--target", "nir", "--dt", "0.5",
            "--time-steps", "4", "--out", str(tmp_path / "o"))
    _assert_one_line_error(r, "--time-steps, --dt apply to a NIR file only")
    assert not (tmp_path / "o").exists()


def test_fixed_point_options_reach_the_pipeline_or_are_refused_in_one_line(tmp_path, capsys):
    """--fixed-point (loihi-sim) and --fine-tune EPOCHS (netx) on export and train-and-export;
    for another target, or a NIR file's run (which would ignore them), one line, nothing
    written."""
    from dpap_deploy.cli import build_parser, main
    parse = build_parser().parse_args
    args = parse(["train-and-export", "--target", "loihi-sim", "--fixed-point", "--out", "o"])
    assert (args.fixed_point, args.fine_tune) == (True, None)
    args = parse(["export", "run", "--target", "netx", "--fine-tune", "2", "--out", "o"])
    assert (args.fixed_point, args.fine_tune) == (None, 2)
    run = tmp_path / "run"
    run.mkdir()
    (run / "checkpoint.pt").write_bytes(b"")        # refused before the checkpoint is read
    cases = [(["export", str(run), "--target", "netx", "--fixed-point"],
              "--fixed-point is for --target loihi-sim, not 'netx'"),
             (["export", str(run), "--target", "loihi-sim", "--fine-tune", "1"],
              "fine_tune=1", "use --target netx"),
             (["export", "x.nir", "--target", "loihi-sim", "--fixed-point", "--fine-tune", "1"],
              "--fixed-point, --fine-tune apply to a run's export"),
             (["train-and-export", "--target", "nir", "--fixed-point"],
              "--fixed-point is for --target loihi-sim, not 'nir'")]
    for argv, *fragments in cases:
        assert main([*argv, "--out", str(tmp_path / "o")]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("dpap-deploy: error: "), err
        assert all(f in err[0] for f in fragments), err[0]
    assert not (tmp_path / "o").exists()


def test_nir_file_does_not_write_over_another_run(tmp_path):
    """export FILE.nir --out D: D may hold an earlier run of the same file; another run there is
    refused (nothing changed) unless --overwrite."""
    from pathlib import Path
    nir_file = Path(__file__).parent / "data" / "nir_foreign" / "snntorch_leaky.nir"
    other = tmp_path / "other"
    other.mkdir()
    (other / "report.json").write_text('{"dataset": "digits"}\n')
    (other / "history.csv").write_text("epoch\n1\n")
    before = {p.name: p.read_bytes() for p in other.iterdir()}
    args = ("export", str(nir_file), "--target", "loihi-sim", "--max-samples", "3", "--quiet")
    _assert_one_line_error(cli(*args, "--out", str(other)), "holds another run", "--overwrite")
    assert {p.name: p.read_bytes() for p in other.iterdir()} == before
    first = cli(*args, "--out", str(tmp_path / "a"))
    assert first.returncode == 0, first.stderr
    again = cli(*args, "--out", str(tmp_path / "a"))          # the same file again: allowed
    assert again.returncode == 0, again.stderr
    r = cli(*args, "--overwrite", "--out", str(other))
    assert r.returncode == 0, r.stderr
    assert not (other / "history.csv").exists()
    manifest = json.loads((other / "run.json").read_text())
    assert manifest["stage"] == "export --target loihi-sim"


def test_export_writes_the_nir_encoding_asked_for(tmp_path):
    """--nir-encoding / --nir-pooling reach the NIR file (its metadata says which) and the
    export still passes its parity check; for a target that writes no NIR file they are
    refused, not ignored."""
    import nir
    run = tmp_path / "run"
    r = cli("train", "--epochs", "1", "--quiet", "--out", str(run))
    assert r.returncode == 0, r.stderr
    out = tmp_path / "nir"
    r = cli("export", str(run), "--target", "nir", "--nir-encoding", "unit-r", "--nir-pooling",
            "sum", "--max-samples", "20", "--quiet", "--out", str(out))
    assert r.returncode == 0, r.stderr
    meta = nir.read(str(out / "network.nir")).metadata
    assert (meta["neuron_encoding"], meta["pooling"]) == ("unit-r", "sum")
    r = cli("export", str(run), "--target", "netx", "--nir-encoding", "unit-r",
            "--out", str(tmp_path / "netx"))
    _assert_one_line_error(r, "--nir-encoding", "--target netx writes none")
    assert not (tmp_path / "netx").exists()
    r = cli("export", str(run), "--target", "loihi-sim", "--fixed-point", "--max-samples", "4",
            "--quiet", "--out", str(tmp_path / "fixed"))
    assert r.returncode == 0, r.stderr
    parity = json.loads((tmp_path / "fixed" / "report.json").read_text())["export"]["parity"]
    assert parity["fixed_identical"] == 1.0, parity
    # what agrees is Lava with the emulation, and the line and report.md say so
    assert "agreement with its fixed-point emulation 100.00%" in r.stdout, r.stdout
    assert "agreement with the fixed-point emulation: 100" in \
        (tmp_path / "fixed" / "report.md").read_text()
