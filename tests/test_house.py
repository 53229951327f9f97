"""The house: extension points that take one file, a typed report, stages that touch no global
state, one owner of time_steps."""
import json
import os
import random
import re
import subprocess
import sys
import types

import numpy as np
import pytest
import torch

from dpap_deploy import cli, pipeline
from dpap_deploy.data import DATASETS, load_dataset, register
from dpap_deploy.errors import ConfigError, DPAPError
from dpap_deploy.exporters import TARGETS, ExportJob, ExportResult, register_target
from dpap_deploy.report import Report, read_report
from dpap_deploy.train_config import TrainConfig


@pytest.fixture(scope="module")
def ann_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("ann")
    pipeline.train(TrainConfig(model="ann-digits", epochs=1), out, progress=False)
    return out


def _roundtrip_target() -> types.ModuleType:
    """A target written in one module: the compacted ANN saved as a file and run again from it."""
    from dpap_deploy.serialize import load_model, save_model
    mod = types.ModuleType("roundtrip")
    mod.KINDS = ("ann",)

    def export(job: ExportJob, out):
        x, y = job.samples()
        path = save_model(out / "model.dpap", job.model, job.kind)
        again, _, _ = load_model(path)
        with torch.no_grad():
            got, ref = again(x), job.model(x)
        agree = float((got.argmax(1) == ref.argmax(1)).float().mean())
        acc = float((got.argmax(1) == y).float().mean())
        return ExportResult("roundtrip", [path.name], acc, {"agreement": agree, "n_samples": len(x)},
                            passed=bool(torch.equal(got, ref)))
    mod.export = export
    return mod


def test_a_target_added_in_one_place_runs_from_the_command_line(ann_run, tmp_path, capsys):
    register_target("roundtrip", _roundtrip_target())
    try:
        assert cli.main(["export", str(ann_run), "--target", "roundtrip", "--out",
                         str(tmp_path)]) == 0
        assert "roundtrip: accuracy" in capsys.readouterr().out
        e = read_report(tmp_path).export
        assert e.target == "roundtrip" and e.passed and e.files == ["model.dpap"]
    finally:
        del TARGETS["roundtrip"]
    with pytest.raises(SystemExit) as exit_:
        cli.main(["export", str(ann_run), "--target", "roundtrip", "--out", str(tmp_path)])
    assert exit_.value.code == 2
    assert "invalid choice: 'roundtrip'" in capsys.readouterr().err      # gone with its entry
    with pytest.raises(ConfigError, match="defines KINDS and export"):
        register_target("broken", types.ModuleType("broken"))


def test_a_dataset_added_in_one_place_trains(tmp_path):
    @register("digits-small")
    def load(data_root, time_steps):
        d = load_dataset("digits")
        return type(d)("digits-small", d.x_train[:256], d.y_train[:256], d.x_test[:64],
                       d.y_test[:64], d.n_classes)
    try:
        rep = pipeline.train(TrainConfig(dataset="digits-small", model="ann-digits", epochs=1),
                             tmp_path, progress=False)
        assert rep.dataset == "digits-small" and rep.output.measured_on == "64 test samples"
    finally:
        del DATASETS["digits-small"]
    with pytest.raises(ConfigError, match="unknown dataset 'digits-small'"):
        load_dataset("digits-small")


def test_event_data_needs_the_runs_time_steps():
    with pytest.raises(DPAPError, match="pass time_steps"):
        load_dataset("nmnist", "/nonexistent")


def test_the_report_is_typed_and_checked(ann_run):
    text = json.loads((ann_run / "report.json").read_text())
    rep = Report.from_dict(text)
    assert rep.to_dict() == text and rep.schema_version == 1
    assert rep.pruning.layers[0].neurons_total >= rep.pruning.layers[0].neurons_kept
    for key, value, msg in [("accuracy", {"best": 0.5}, "report.accuracy lacks 'test'"),
                            ("epochs", "3", "report.epochs is '3', not int"),
                            ("pruning", {"params_removed_fraction": 0.1, "layers": [{"name": "1"}]},
                             "report.pruning.layers[0] lacks 'neurons_total'")]:
        with pytest.raises(DPAPError, match=re.escape(msg)):
            Report.from_dict({**text, key: value})
    newer = Report.from_dict({**text, "from_a_newer_version": [1, 2]})
    assert newer.to_dict()["from_a_newer_version"] == [1, 2]       # kept, not dropped


def test_a_damaged_report_is_refused_in_one_line(ann_run, tmp_path):
    bad = json.loads((ann_run / "report.json").read_text())
    bad["accuracy"]["test"] = "high"
    (tmp_path / "report.json").write_text(json.dumps(bad))
    with pytest.raises(DPAPError) as err:
        read_report(tmp_path)
    assert "accuracy.test is 'high', not float" in str(err.value) and "\n" not in str(err.value)


def test_loading_a_trained_run_leaves_the_callers_random_state_alone(ann_run):
    from dpap_deploy.trained import load_trained
    torch.manual_seed(123)
    random.seed(5)
    np.random.seed(7)
    before = torch.get_rng_state(), random.getstate(), np.random.get_state()[1].copy()
    t = load_trained(ann_run)
    assert torch.equal(torch.get_rng_state(), before[0]) and random.getstate() == before[1]
    assert np.array_equal(np.random.get_state()[1], before[2])
    assert not hasattr(t, "optimizer") and t.epoch == 1 and not t.model.training


def test_train_and_export_loads_the_dataset_once(tmp_path, monkeypatch):
    import dpap_deploy.data as data
    real, calls = data.load_dataset, []
    monkeypatch.setattr(data, "load_dataset", lambda *a, **k: calls.append(a) or real(*a, **k))
    rep = pipeline.train_and_export(TrainConfig(model="ann-digits", epochs=1), "onnx", tmp_path,
                                    progress=False)
    assert rep.export.passed and len(calls) == 1


def test_a_static_input_without_time_steps_is_refused_not_run_for_8_steps():
    from dpap_deploy.executor.run import outputs
    from dpap_deploy.graph import build_graph
    from dpap_deploy.zoo import build_model
    model, _ = build_model("snn-digits", (1, 8, 8), 10)
    graph = build_graph(model, torch.zeros(2, 1, 8, 8))
    with pytest.raises(ConfigError, match="the T the network runs with"):
        outputs(graph, torch.zeros(2, 1, 8, 8), None)
    with pytest.raises(ConfigError, match="needs the run's time steps"):
        ExportJob(model, "snn", torch.zeros(2, 1, 8, 8), torch.zeros(2, dtype=torch.long))


def test_compacted_files_carry_time_steps_and_a_mismatch_is_refused(ann_run, tmp_path):
    snn = tmp_path / "snn"
    pipeline.train(TrainConfig(epochs=1, time_steps=4), snn, progress=False)
    pipeline.compact(snn, snn)
    d = load_dataset("digits")
    assert ExportJob.from_files(snn, d.x_test, d.y_test, 4).time_steps == 4
    with pytest.raises(DPAPError, match="compacted for time_steps=4, the run has 8"):
        ExportJob.from_files(snn, d.x_test, d.y_test, 8)


def test_importing_the_package_changes_no_process_state(tmp_path):
    """The umask is read by the kernel when a file is made (not cached at import), and the
    plots draw on Figure objects (the process's matplotlib backend stays the user's)."""
    code = (
        "import os, matplotlib\n"
        "import dpap_deploy.report.plots as plots, dpap_deploy.atomic as atomic\n"
        "import dpap_deploy.pipeline, dpap_deploy.exporters.lava_process\n"
        "os.umask(0o077)\n"
        f"atomic.atomic_write_text({str(tmp_path / 'f.txt')!r}, 'x')\n"
        f"plots.plot_accuracy([{{'epoch': 1, 'test_acc': 0.5}}], {str(tmp_path / 'a.png')!r})\n"
        "print(oct(os.stat(" + repr(str(tmp_path / "f.txt")) + ").st_mode & 0o777), "
        "matplotlib.get_backend())\n")
    env = {**os.environ, "MPLBACKEND": "svg", "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == ["0o600", "svg"] and (tmp_path / "a.png").stat().st_size > 1000


def test_the_cli_module_only_parses_and_prints():
    import ast
    import inspect
    tree = ast.parse(inspect.getsource(cli))
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level
                for a in n.names} | {n.module for n in ast.walk(tree)
                                     if isinstance(n, ast.ImportFrom) and n.level and n.module}
    heavy = {"training", "compaction", "counting", "trained", "report", "serialize", "graph"}
    assert not imported & heavy, imported & heavy


def test_a_nir_file_read_back_with_another_time_steps_is_refused(tmp_path):
    import nir
    from dpap_deploy.exporters.nir_export import read_nir
    from dpap_deploy.exporters.nir_graph import to_nir
    from dpap_deploy.zoo import build_model
    model, _ = build_model("snn-digits", (1, 8, 8), 10)
    nir.write(str(tmp_path / "n.nir"), to_nir(model.eval(), torch.zeros(2, 1, 8, 8), 4))
    assert read_nir(tmp_path / "n.nir", 4).metadata["time_steps"] == 4
    with pytest.raises(DPAPError, match="says time_steps=4, the run has 8"):
        read_nir(tmp_path / "n.nir", 8)
