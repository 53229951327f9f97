"""Reports that cannot mislead: degenerate data warns, progress reaches log files, the pruning
and compaction layer tables agree, report.md explains deployed synapses, plots read alone."""
import json
import re
import subprocess
import sys
import time

import pytest
import torch

from dpap_deploy.report import plots
from dpap_deploy.data import Dataset, load_dataset
from dpap_deploy.data.checks import check_dataset
from dpap_deploy.pipeline import compact as compact_run
from dpap_deploy.report import render
from dpap_deploy.training import TrainConfig, train

PRUNE_FAST = {"conv": {"epsilon": 1.0, "eta": 3.0, "beta": 2.0, "warmup": 0},
              "linear": {"epsilon": 1.5, "eta": 3.0, "beta": 2.0, "warmup": 0}}
PROGRESS = re.compile(r"^epoch 1/1  batch \d+/\d+  [\d,]+/1,400 samples  [\d,]+ samples/s  "
                      r"loss \d\.\d{4}  ETA epoch [\d.]+ (s|min|h), run [\d.]+ (s|min|h)$")


def test_degenerate_data_warns_once_per_problem(caplog):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(30, 1, 4, 4, generator=g)
    y = torch.tensor([0] * 28 + [1] * 2)                     # 14:1, class 2 absent
    x_test = torch.cat([x[:2], torch.rand(3, 1, 4, 4, generator=g)])   # 2 copies of train
    data = Dataset("toy", x, y, x_test, torch.tensor([0, 1, 2, 0, 1]), n_classes=3)
    with caplog.at_level("WARNING", logger="dpap_deploy"):
        found = check_dataset(data, batch_size=64)
    assert len(found) == 4 and [r.getMessage() for r in caplog.records] == \
        [f"warning: {w}" for w in found]
    assert all("\n" not in w for w in found)
    text = " | ".join(found)
    for fragment in ("no sample of 1 of 3 classes (2)", "unbalanced 14:1", "class 0: 28 samples",
                     "2 of 5 test samples (40.0%) are identical", "30 samples, fewer than one "
                     "batch (64)"):
        assert fragment in text, text
    one = Dataset("one", x, torch.zeros(30, dtype=torch.long), x_test, torch.zeros(5, dtype=torch.long), 3)
    assert sum("single class (label 0" in w for w in check_dataset(one, 8)) == 2
    assert check_dataset(load_dataset("digits"), 64) == []   # real data: nothing to say


def test_log_file_run_prints_progress_lines(tmp_path, capsys):
    """stderr is not a terminal under pytest: progress comes as plain lines, not a bar."""
    train(TrainConfig(epochs=1, batch_size=16), tmp_path / "run", progress=True,
          progress_interval_s=0.0)
    lines = capsys.readouterr().err.splitlines()
    progress = [line for line in lines if line.startswith("epoch 1/1  batch")]
    assert len(progress) == -(-1400 // 16) - 1   # every batch but the last (the epoch line)
    assert all(PROGRESS.match(line) for line in progress), progress[:2]
    assert "\r" not in "".join(lines)


def test_non_tty_cli_run_prints_progress_before_the_epoch_ends(tmp_path):
    env = {**__import__("os").environ, "DPAP_DEPLOY_PROGRESS_S": "0.5", "OMP_NUM_THREADS": "1"}
    t0 = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "dpap_deploy", "train", "--epochs", "1",
                             "--batch-size", "4", "--out", str(tmp_path / "run")],
                            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env)
    first, seen = None, []
    for line in proc.stderr:
        seen.append(line)
        if first is None and line.startswith("epoch 1/1  batch"):
            first = time.monotonic() - t0
    assert proc.wait(timeout=300) == 0, "".join(seen)
    assert first is not None and first < 30, "".join(seen)
    epoch_line = next(i for i, line in enumerate(seen) if line.startswith("epoch   1/1"))
    assert any(line.startswith("epoch 1/1  batch") for line in seen[:epoch_line])


def _one_recording_tree(root):
    """One real-format N-MNIST recording (a digit 0 seen in saccades) in Train and in Test."""
    import torch.nn.functional as F
    from sklearn.datasets import load_digits
    from dpap_deploy.data.saccade import write_nmnist_tree
    d = load_digits()
    img = torch.from_numpy(d.images[d.target == 0][:1] / 16.0).float()[:, None]
    img = F.interpolate(img, size=(28, 28), mode="bilinear")[:, 0].numpy()
    for split in ("train", "test"):
        write_nmnist_tree(root, split, img, [0], progress=False)


def test_one_recording_nmnist_warns_and_does_not_score_100(tmp_path):
    pytest.importorskip("tonic")
    _one_recording_tree(tmp_path / "data")
    assert len(list((tmp_path / "data" / "NMNIST").glob("*/0/*.bin"))) == 2
    out = tmp_path / "run"
    r = subprocess.run([sys.executable, "-m", "dpap_deploy", "train", "--dataset", "nmnist",
                        "--data-root", str(tmp_path / "data"), "--epochs", "1", "--out", str(out)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    warnings = [line for line in r.stderr.splitlines() if line.startswith("warning: ")]
    for fragment in ("train set holds a single class (label 0", "test set holds a single class",
                     "1 of 1 test sample (100.0%) is identical to training samples",
                     "output layer is silent (no spike) on 100.0% of 1 sample"):
        assert sum(fragment in w for w in warnings) == 1, (fragment, r.stderr)
    rep = json.loads((out / "report.json").read_text())
    assert rep["accuracy"]["test"] == 0.0                 # argmax of silence said 1.0
    assert rep["output"]["silent_fraction"] == 1.0 and rep["output"]["firing_rate"] == 0.0
    assert len(rep["data_warnings"]) == 4 and rep["output"]["warning"]
    md = (out / "report.md").read_text()
    assert "## Warnings" in md and "single class" in md and "silent" in md


@pytest.mark.parametrize("method", ["dpap", "magnitude", "l1-structured"])
def test_pruning_and_compaction_layer_tables_agree(tmp_path, method):
    out = tmp_path / "run"
    cfg = TrainConfig(epochs=6, dpap_config=PRUNE_FAST) if method == "dpap" else \
        TrainConfig(epochs=4, dpap=False, baseline=method, prune_target=0.5,
                    prune_window=[0, 2])
    train(cfg, out, progress=False)
    rep = compact_run(out, tmp_path / "compact").to_dict()
    rows = {c["name"]: c for c in rep["compaction"]["layers"]}
    derived = 0
    for p in rep["pruning"]["layers"]:     # a baseline leaves the output layer out
        c = rows[p["name"]]
        for unit in ("neurons", "synapses"):
            assert p[f"{unit}_total"] == c[f"{unit}_total"]
            assert p[f"{unit}_pruned"] == c[f"{unit}_pruned"] == p[f"{unit}_total"] - p[f"{unit}_kept"]
            assert c[f"{unit}_kept"] == p[f"{unit}_kept"] - c[f"{unit}_derived_dead"]
            derived += c[f"{unit}_derived_dead"]
    pruned = sum(p["neurons_pruned"] + p["synapses_pruned"] for p in rep["pruning"]["layers"])
    assert pruned > 0 and (derived > 0 or method != "dpap")
    md = (tmp_path / "compact" / "report.md").read_text()
    assert "pruned + derived" in md and "Kept = total - pruned - derived" in md


def _report(export: dict | None = None, **sections) -> dict:
    rep = {"model": "m", "dataset": "d", "kind": "snn", "epochs": 1, "seed": 0, "dpap": True,
           "accuracy": {"test": 0.5, "best": 0.5}, "pruning": {"params_removed_fraction": 0.1,
                                                              "layers": []},
           "params": {"dense": 10, "nonzero": 9, "compact": 8, "compact_nonzero": 8,
                      "compact_nonzero_weights": 8_911, "deploy_nonzero_weights": 35_644},
           **sections}
    if export is not None:
        rep["export"] = {"files": ["network-bn-folded.nir"], "accuracy": 0.5, "passed": True,
                         "parity": {"agreement": 1.0, "n_samples": 4,
                                    "output": {"firing_rate": 0.1, "silent_fraction": 0.25,
                                               "tie_fraction": 0.25, "n_samples": 4}},
                         "warnings": ["loihi-sim export: the output layer is silent"], **export}
    return rep


def test_loihi_sim_synapses_are_the_files_and_the_pool_stages():
    """Lava runs each pool as its own depthwise process (C k^2 weights); nothing is copied into
    weights: 9,087 = the file's 8,911 + 176 (16 and 28 channels, 2 x 2 pools)."""
    md = render(_report({"target": "loihi-sim", "synapses": 9_087, "synapses_lava": 9_087,
                         "synapses_nir": 8_911}), [])
    line = [l for l in md.splitlines() if l.startswith("- synapses:")]
    assert line == ["- synapses: 8,911 non-zero weights in network-bn-folded.nir (the compacted "
                    "network's); the Lava network holds 9,087: those and the 176 weights of its "
                    "pooling stages (Lava runs each k x k pool as its own depthwise convolution "
                    "process, one k x k kernel per channel, of 1/k^2 for an average pool)"]
    assert "folded into the next" not in md and "copies" not in md
    older = render(_report({"target": "loihi-sim", "synapses": 9_087}), [])   # no file count
    assert "- synapses held by the Lava network: 9,087 (the file's non-zero weights and those " \
        "of its pooling stages)" in older and "copies" not in older
    assert "silent on 25.00% of samples" in md and "- loihi-sim export: the output" in md


def test_netx_synapses_are_the_folded_pools_after_quantisation():
    md = render(_report({"target": "netx", "files": ["network.net"], "synapses": 35_600}), [])
    assert "- non-zero synapses in the exported file: 35,600" in md
    line = [l for l in md.splitlines() if "copies each weight over the pooling window" in l]
    assert len(line) == 1 and "8,911 non-zero weights become 35,644" in line[0]
    assert line[0].endswith("; 44 of them round to zero when quantised for the target")


NEUROBENCH = {"effective_acs": 1_000.0, "effective_macs": 2_500.5, "dense_ops": 90_000.0,
              "connection_sparsity": 0.8125, "activation_sparsity": 0.93, "footprint_bytes": 41_600,
              "accuracy": 0.75, "accuracy_ties_wrong": 0.7, "measured_on": "397 test samples"}


def test_report_md_puts_neurobench_names_and_figures_beside_ours():
    ops = {"synops_dense": 9e3, "synops_compact": 1_234.0, "macs_dense": 3e3,
           "macs_compact": 3_000.0,
           "energy_pj_dense": 1e4, "energy_pj_compact": 5e3, "measured_on": "397 test samples"}
    deploy = {**NEUROBENCH, "footprint_bytes": 80_000}
    md = render(_report(ops=ops, neurobench={"compact": NEUROBENCH, "deploy": deploy}), [])
    rows = [l for l in md.splitlines() if l.startswith("| ") and "NeuroBench" not in l]
    assert rows[:7] == ["| Effective_ACs | 1,000 | 1,000 | 1,234 SynOps |",
                        "| Effective_MACs | 2,500 | 2,500 | 3,000 MACs |",
                        "| Dense (ops) | 90,000 | 90,000 |  |",
                        "| ConnectionSparsity | 0.8125 | 0.8125 |  |",
                        "| ActivationSparsity | 0.9300 | 0.9300 |  |",
                        "| Footprint (bytes) | 41,600 | 80,000 |  |",
                        "| ClassificationAccuracy (argmax) | 75.00% | 75.00% | "
                        "70.00% (ties wrong) |"]
    assert "They differ from ours on purpose: NeuroBench counts a layer's input as spikes" in md
    ties = [l for l in md.splitlines() if l.startswith("- ties:")]
    assert ties == ["- ties: a sample whose highest score is shared by several classes (a silent "
                    "output included) counts as wrong here; NeuroBench's `ChooseMaxCount` takes "
                    "the first of them: on the 397 test samples NeuroBench counts 75.00% "
                    "accurate where we count 70.00% (compacted network)"]
    lines = md.splitlines()                                   # right under the accuracy
    assert lines[lines.index(ties[0]) - 1].startswith("- test accuracy: 50.00%")


def _captured(monkeypatch):
    figs = []
    monkeypatch.setattr(plots, "save_figure", lambda fig, path: figs.append(fig) or path)
    return figs


def test_plots_read_alone(tmp_path, monkeypatch):
    out = tmp_path / "run"
    run = train(TrainConfig(epochs=1), out, progress=False)        # warm-up: nothing pruned
    state = run.dpap.state_dict()
    assert all((d["neu_pruned_epoch"] < 0).all() for d in state["layers"])
    figs = _captured(monkeypatch)
    layers = [("0", "conv"), ("3", "conv"), ("7", "linear"), ("9", "linear")]
    counts = {"0": (160, 160, 160), "3": (4_640, 4_640, 4_640), "7": (16_512, 5_800, 5_760),
              "9": (1_290, 1_290, None)}
    plots.plot_accuracy(run.history, out / "a.png")
    plots.plot_params_per_layer(run.history, layers, out / "b.png", counts)
    plots.plot_survival(state, out / "c.png")
    plots.plot_fc_map(state, out / "d.png")
    acc, per_layer, survival, fc = figs
    assert acc.axes[0].lines[0].get_marker() == per_layer.axes[0].lines[0].get_marker() == "o"
    assert [t.get_text() for t in acc.axes[0].get_legend().get_texts()] == \
        ["DPAP run: test accuracy", "parameters removed (right axis)"]
    # layers by kind and number, with their module; the three counts side by side
    assert [t.get_text() for t in per_layer.axes[0].get_legend().get_texts()] == \
        ["conv 1 (module 0)", "conv 2 (module 3)", "linear 1 (module 7)", "linear 2 (module 9)"]
    bars = per_layer.axes[1]
    assert [t.get_text() for t in bars.get_legend().get_texts()] == \
        ["before pruning", "after pruning (non-zero)",
         "after compaction (all, zeros in kept units too)"]
    assert [b.get_height() for b in bars.patches] == [160, 4_640, 16_512, 1_290, 160, 4_640,
                                                      5_800, 1_290, 160, 4_640, 5_760]
    assert bars.get_xticklabels()[2].get_text() == "linear 1\n(module 7)"
    assert [ax.get_title() for ax in survival.axes] == [
        "Survival score of each neuron, until it was pruned",
        "Survival score of sampled synapses, until they were pruned"]
    assert [[t.get_text() for t in ax.texts] for ax in survival.axes] == \
        [["no neuron was pruned"], ["no sampled synapse was pruned"]]
    assert survival.axes[0].get_xlabel() == "epochs before pruning (0: the epoch it was pruned)"
    legend = fc.axes[1].get_legend()
    assert [t.get_text() for t in legend.get_texts()] == ["kept", "pruned (a white row: a "
                                                          "pruned neuron)"]
    assert fc.axes[0].get_title() == "neuron\nkept\n(black)"
    assert fc.axes[1].get_title().startswith("Synapses of the first fully connected layer, "
                                             "linear 1 (module 7): 128 of 128 neurons")
    long = [dict(h, epoch=e) for e in range(1, 40) for h in run.history]
    plots.plot_accuracy(long, out / "e.png")
    assert figs[-1].axes[0].lines[0].get_marker() in (None, "None", "")


def test_survival_plot_names_the_layers_and_what_was_pruned(tmp_path, monkeypatch):
    """Two neurons of layer '7' die at epoch 2 with scores 1.0 -> -0.5 and 0.5 -> -1.5."""
    f = [torch.tensor([1.0, 0.5, 2.0]), torch.tensor([-0.5, -1.5, 1.0])]
    layer = {"name": "7", "kind": "linear", "f_neu_hist": f, "f_syn_hist": f,
             "neu_pruned_epoch": torch.tensor([1, 1, -1])}
    figs = _captured(monkeypatch)
    plots.plot_survival({"layers": [layer]}, tmp_path / "s.png", window=2)
    neurons = figs[0].axes[0]
    assert [t.get_text() for t in neurons.get_legend().get_texts()] == \
        ["linear 1 (module 7): 2 neurons pruned", "0: pruned below this line"]
    assert list(neurons.lines[0].get_ydata()) == [0.75, -1.0]


def test_export_of_a_silent_network_warns_and_scores_its_ties_as_wrong(tmp_path):
    from dpap_deploy.pipeline import export as export_run
    run = train(TrainConfig(epochs=1, lr=1e-3), tmp_path / "run", progress=False)
    assert run.history[-1]["test_silent_fraction"] > 0.5          # barely trained: mostly silent
    rep = export_run(tmp_path / "run", "nir", tmp_path / "nir").to_dict()
    par = rep["export"]["parity"]
    assert par["output"] == par["output_torch"] and par["agreement"] == 1.0   # a faithful copy
    assert par["accuracy"] <= 1 - par["output"]["tie_fraction"]
    assert len(rep["export"]["warnings"]) == 1 and "nir export: the output layer is silent" in \
        rep["export"]["warnings"][0]
    assert rep["accuracy"]["test"] == par["accuracy"]
