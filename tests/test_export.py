"""Exports run in their real consumers (nir.read + torch, the Lava simulator, onnxruntime) on
trained, pruned, compacted models, and the parity figures are asserted."""
import json
import subprocess
import sys

import nir
import numpy as np
import pytest
import torch
from torch import nn

from dpap_deploy.data import load_dataset
from dpap_deploy.errors import ParityError, UnsupportedModelError
from dpap_deploy.exporters import ExportJob, export
from dpap_deploy.neurons import lif
from dpap_deploy.pipeline import compact as compact_run, export as export_run
from dpap_deploy.serialize import load_model
from dpap_deploy.training import TrainConfig, train

PRUNE_FAST = {"conv": {"epsilon": 1.0, "eta": 3.0, "beta": 2.0, "warmup": 0},
              "linear": {"epsilon": 1.5, "eta": 3.0, "beta": 2.0, "warmup": 0}}


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "dpap_deploy", *args], capture_output=True,
                          text=True, timeout=900)


@pytest.fixture(scope="module")
def snn_run(tmp_path_factory):
    """A trained, DPAP-pruned digits SNN, compacted."""
    out = tmp_path_factory.mktemp("snn")
    train(TrainConfig(epochs=8, dpap_config=PRUNE_FAST), out, progress=False)
    report = compact_run(out, out).to_dict()
    model, kind, meta = load_model(out / "compact.pt")
    d = load_dataset("digits")
    return out, report, ExportJob(model, kind, d.x_test, d.y_test, meta["time_steps"])


@pytest.fixture(scope="module")
def ann_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("ann")
    train(TrainConfig(model="ann-digits", epochs=4, dpap_config=PRUNE_FAST), out, progress=False)
    return out, compact_run(out, out).to_dict()


def test_nir_round_trip_identical_spikes(snn_run, tmp_path):
    _, report, job = snn_run
    assert report["compaction"]["layers"][2]["neurons_kept"] < 128   # really pruned
    res = export("nir", job, tmp_path)
    assert res.passed and res.parity["identical_spike_trains"] == 1.0
    assert res.parity["n_samples"] == 397 and res.accuracy == report["accuracy"]["test"]
    graph = nir.read(str(tmp_path / "network.nir"))
    kinds = [type(n).__name__ for n in graph.nodes.values()]
    assert kinds.count("LIF") == 4 and "AvgPool2d" in kinds and "Flatten" in kinds
    lif_node = next(n for n in graph.nodes.values() if isinstance(n, nir.LIF))
    dt = graph.metadata["dt"]   # tau = dt/(1-lambda), r = tau/dt: v' = 0.2 v + I
    assert np.allclose(1 - dt / lif_node.tau, 0.2) and np.allclose(lif_node.r * dt / lif_node.tau, 1)
    # the file holds exactly the compacted network's non-zero weights
    assert res.details["synapses"] == report["params"]["compact_nonzero_weights"]


def test_lava_float_agrees_with_torch(snn_run, tmp_path):
    _, report, job = snn_run
    job = ExportJob(job.model, job.kind, job.x, job.y, job.time_steps, max_samples=120)
    res = export("loihi-sim", job, tmp_path)
    assert res.parity["n_samples"] == 120
    assert res.parity["agreement"] >= 0.99 and res.passed
    assert abs(res.accuracy - res.parity["accuracy_torch"]) <= 0.01
    # pooling is its own depthwise stage in Lava (C x k x k taps per pool), not folded into
    # the next layer's weights: the deployed count stays near the compacted one
    convs = [m for m in job.model if isinstance(m, torch.nn.Conv2d)]
    pool_taps = sum(c.out_channels * 4 for c in convs)
    assert res.details["synapses"] == report["params"]["compact_nonzero_weights"] + pool_taps
    assert res.details["synapses"] < report["params"]["deploy_nonzero_weights"]


def test_lava_uses_sparse_for_pruned_synapses_and_matches_exactly():
    from dpap_deploy.compaction import deployment_graph
    from dpap_deploy.exporters._compare import torch_spikes
    from dpap_deploy.exporters.nir_graph import to_nir
    from dpap_deploy.exporters.nir_to_lava import LavaNetwork
    from dpap_deploy.zoo import build_model
    torch.manual_seed(0)
    model, _ = build_model("snn-digits", (1, 8, 8), 10)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(2.5)                                  # activity all the way to the output
        model[7].weight[model[7].weight.abs() < 0.05] = 0  # synapse-level zeros in kept units
    x = torch.rand(12, 1, 8, 8) * 3
    folded = deployment_graph(model.eval(), x, time_steps=8)
    net = LavaNetwork(to_nir(folded, x[:2], 8), 8)
    got = net.run(x.numpy())
    ref = torch_spikes(folded, x, 8)
    assert ref.sum() > 0 and np.array_equal(got, ref)
    assert [l.kind for l in net.layers if l.kind != "lif"] == ["conv", "conv", "sparse", "dense"]


def test_netx_loads_in_lava_dl_and_fixed_point_is_within_two_points(snn_run, tmp_path):
    import h5py
    _, report, job = snn_run
    job = ExportJob(job.model, job.kind, job.x, job.y, job.time_steps, max_samples=150)
    res = export("netx", job, tmp_path)
    assert res.parity["n_samples"] == 150 and res.passed
    assert res.parity["accuracy_float"] - res.accuracy <= 0.02
    # 95% of samples agreed with argmax; a tie (float or fixed point) now agrees only with the
    # same tie, so each tied sample may move from agreeing to not
    ties = res.parity["output"]["tie_fraction"] + res.parity["output_torch"]["tie_fraction"]
    assert res.parity["agreement"] >= 0.95 - ties
    with h5py.File(tmp_path / "network.net") as f:
        types = [f[f"layer/{i}/type"][()].decode() for i in range(len(f["layer"]))]
        assert types == ["input", "conv", "conv", "flatten", "dense", "dense"]
        for i in (1, 2, 4, 5):
            w = f[f"layer/{i}/weight"][()]
            assert w.dtype.kind == "i" and w.min() >= -256 and w.max() <= 254 and (w % 2 == 0).all()
            assert f[f"layer/{i}/neuron/type"][()].decode() == "CUBA"
            assert f[f"layer/{i}/neuron/iDecay"][()] == 4096
            assert f[f"layer/{i}/neuron/vDecay"][()] == round(0.8 * 4096)
    # quantisation can only remove synapses (weights that round to 0), never add any
    assert 0 < res.details["synapses"] <= report["params"]["deploy_nonzero_weights"]
    # the loading parameters the HDF5 file cannot hold are written beside it, with a script
    assert res.files == ["network.net", "network.net.json", "load_network.py"]
    params = json.loads((tmp_path / "network.net.json").read_text())
    assert params == res.details["loading"]
    assert (params["input_message_bits"], params["reset_interval"], params["reset_offset"]) == \
        (5, job.time_steps, 1)
    # ...and the script, run as a user would, gives the same output spikes as the export's run
    from dpap_deploy.exporters.netx_export import run_netx
    np.save(tmp_path / "one.npy", job.x[0].numpy())
    r = subprocess.run([sys.executable, "load_network.py", "one.npy"], cwd=tmp_path,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    counts = run_netx(tmp_path / "network.net", job.x[:1].numpy(), job.time_steps)[0].sum(0)
    assert r.stdout.strip().endswith(f"spike counts {[int(c) for c in counts]}"), r.stdout


def test_onnx_matches_torch(ann_run, tmp_path):
    out, report = ann_run
    model, kind, _ = load_model(out / "compact.pt")
    d = load_dataset("digits")
    res = export("onnx", ExportJob(model, kind, d.x_test, d.y_test), tmp_path)
    assert res.passed and res.parity["max_abs_diff"] <= res.parity["tolerance"] <= 1e-4
    assert res.parity["agreement"] == 1.0
    assert res.accuracy == pytest.approx(report["compaction"]["accuracy_compact"])
    import onnxruntime as ort   # dynamic batch: any batch size runs
    sess = ort.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    for n in (1, 7):
        assert sess.run(None, {"input": d.x_test[:n].numpy()})[0].shape == (n, 10)


def test_targets_refuse_what_they_cannot_take(ann_run, tmp_path):
    out, _ = ann_run
    r = _cli("export", str(out), "--target", "loihi-sim", "--out", str(tmp_path / "a"))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert "'loihi-sim' takes SNN models" in r.stderr and "--target onnx" in r.stderr
    import time
    t0 = time.perf_counter()
    r = _cli("train-and-export", "--model", "ann-digits", "--target", "netx", "--out",
             str(tmp_path / "b"))
    assert r.returncode == 2 and "'netx' takes SNN models" in r.stderr
    assert time.perf_counter() - t0 < 30 and not (tmp_path / "b" / "checkpoint.pt").exists()
    # max pooling over currents (before the neuron) has no exact form in any target; over
    # spikes it is exact (a sum pool and a unit-threshold neuron) and exports
    maxpool_snn = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.MaxPool2d(2), lif(),
                                nn.Flatten(), nn.Linear(64, 3), lif())
    d = load_dataset("digits")
    job = ExportJob(maxpool_snn.eval(), "snn", d.x_test[:8], d.y_test[:8], 8)
    for target in ("nir", "netx"):
        with pytest.raises(UnsupportedModelError, match="max pooling.*(over currents|graded current)") as exc:
            export(target, job, tmp_path / target)
        assert "make_deployable" in str(exc.value) and "\n" not in str(exc.value)


def test_parity_failure_writes_report_and_raises(snn_run, tmp_path, monkeypatch):
    from dpap_deploy.exporters import nir_export
    run_dir, _, _ = snn_run
    real = nir_export.export

    def broken(job, out):
        res = real(job, out)
        res.passed = False
        return res
    monkeypatch.setattr(nir_export, "export", broken)
    with pytest.raises(ParityError, match="nir parity check failed"):
        export_run(run_dir, "nir", tmp_path)
    rep = json.loads((tmp_path / "report.json").read_text())
    assert rep["export"]["passed"] is False and "FAILED" in (tmp_path / "report.md").read_text()


@pytest.mark.slow
def test_train_and_export_default_command(tmp_path):
    """The README's main job: no option but --out."""
    out = tmp_path / "demo"
    r = _cli("train-and-export", "--target", "loihi-sim", "--out", str(out), "--quiet")
    assert r.returncode == 0, r.stderr[-2000:]
    rep = json.loads((out / "report.json").read_text())
    e = rep["export"]
    assert e["target"] == "loihi-sim" and e["passed"] and e["parity"]["agreement"] >= 0.99
    assert e["parity"]["n_samples"] == 397
    assert rep["pruning"]["params_removed_fraction"] >= 0.5
    assert rep["params"]["compact"] < rep["params"]["dense"]
    graph = nir.read(str(out / e["files"][0]))
    stored = sum(int(np.count_nonzero(n.weight)) for n in graph.nodes.values()
                 if isinstance(n, (nir.Conv2d, nir.Affine, nir.Linear)))
    # the Lava graph keeps pooling as a stage: its NIR file holds the compacted weights, and
    # Lava adds the pooling taps (two 2x2 pools), far fewer than folding would copy
    assert stored == rep["params"]["compact_nonzero_weights"] == e["synapses_nir"]
    assert stored < e["synapses"] < rep["params"]["deploy_nonzero_weights"]
    for f in ("report.md", "history.csv", "checkpoint.pt", "compact.pt", "plots/accuracy.png"):
        assert (out / f).exists(), f


def test_lava_is_stopped_when_a_run_fails(tmp_path):
    """An exception after Lava started must not leave its processes hanging the interpreter."""
    script = tmp_path / "fail.py"
    script.write_text('''
import torch
from dpap_deploy.compaction import deployment_graph
from dpap_deploy.exporters.nir_graph import to_nir
from dpap_deploy.exporters.nir_to_lava import LavaNetwork
from dpap_deploy.lava_compat import import_lava_runtime
from dpap_deploy.zoo import build_model
import_lava_runtime()
from lava.magma.core.process.variable import Var

def boom(self, *args, **kwargs):
    raise RuntimeError("boom after the run started")

Var.get = boom                      # fails inside the try, after Lava has run
model, _ = build_model("snn-digits", (1, 8, 8), 10)
x = torch.rand(3, 1, 8, 8)
folded = deployment_graph(model.eval(), x, time_steps=8)
LavaNetwork(to_nir(folded, x[:2], 8), 8).run(x.numpy())
''')
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "boom after the run started" in r.stderr


def test_onnx_parity_fails_on_one_flipped_weight_sign(ann_run, tmp_path, monkeypatch):
    """The file onnxruntime runs has one weight's sign flipped: the check must catch it."""
    import copy
    out, _ = ann_run
    model, kind, _ = load_model(out / "compact.pt")
    d = load_dataset("digits")
    real_export = torch.onnx.export

    def export_flipped(m, *args, **kwargs):
        bad = copy.deepcopy(m)
        with torch.no_grad():
            w = bad[0].weight
            i = int(w.abs().argmax())
            w.view(-1)[i] = -w.view(-1)[i]
        return real_export(bad, *args, **kwargs)

    monkeypatch.setattr(torch.onnx, "export", export_flipped)
    res = export("onnx", ExportJob(model, kind, d.x_test, d.y_test), tmp_path)
    assert not res.passed and res.parity["max_abs_diff"] > 100 * res.parity["tolerance"]


def test_compaction_fine_tuned_for_netx_reports_it_and_saves_the_tuned_network(snn_run, tmp_path):
    """pipeline's compaction with fine_tune=1 (on a small slice of the data, for time): the
    qat and chip sections, deploy.pt the fine-tuned network, report.md showing both."""
    from types import SimpleNamespace
    from dpap_deploy.pipeline import _compact, _check_fine_tune, report as render
    from dpap_deploy.trained import load_trained
    out, _, _ = snn_run
    d = load_dataset("digits")
    data = SimpleNamespace(x_train=d.x_train[:96], y_train=d.y_train[:96], x_test=d.x_test[:64],
                           y_test=d.y_test[:64], is_sequence=False)
    rep = _compact(load_trained(out), out, tmp_path, data, render=False, fine_tune=1).to_dict()
    q = rep["qat"]
    assert (q["target"], q["epochs"], q["train_samples"], len(q["loss"])) == ("netx", 1, 96, 1)
    assert all(0 <= q[k] <= 1 for k in ("accuracy_float", "accuracy_quantised",
                                         "accuracy_fine_tuned", "accuracy_fine_tuned_float"))
    assert rep["chip"]["dense"]["cores"] >= rep["chip"]["compacted"]["cores"] >= 4
    assert load_model(tmp_path / "deploy.pt")[2]["fine_tuned"] is True
    render(tmp_path)
    md = (tmp_path / "report.md").read_text()
    assert "## Fine-tuning for fixed point (netx)" in md and "## Loihi 2 resources" in md
    with pytest.raises(Exception, match="target 'loihi-sim' does not run them"):
        _check_fine_tune(2, "loihi-sim")
