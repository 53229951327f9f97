"""Structured baselines: whole units go (compaction shrinks the layers), the deployed-cost
target is met to one unit, the output layer is never pruned."""
import pytest
import snntorch as snn
import torch
from torch import nn

from dpap_deploy.baselines import make_baseline
from dpap_deploy.baselines.cost import compacted_params
from dpap_deploy.compaction import compact
from dpap_deploy.counting import count_ops
from dpap_deploy.errors import ConfigError

T = 4


def _snn():
    torch.manual_seed(0)
    lif = lambda: snn.Leaky(beta=0.2, threshold=0.5, init_hidden=True, reset_mechanism="zero")  # noqa: E731
    return nn.Sequential(nn.Conv2d(1, 6, 3, padding=1), lif(), nn.AvgPool2d(2),
                         nn.Conv2d(6, 8, 3, padding=1), lif(), nn.AvgPool2d(2), nn.Flatten(),
                         nn.Linear(8 * 2 * 2, 20), lif(), nn.Linear(20, 3), lif())


def _ann():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 6, 3), nn.ReLU(), nn.Flatten(), nn.Linear(6 * 6 * 6, 12),
                         nn.ReLU(), nn.Linear(12, 3))


def _x(n=32):
    return torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(1)) * 2


def _prune(model, method, target, kind, x, epochs=3):
    pr = make_baseline(method, model, x[:2], target, 0, epochs, seed=0, target_kind=kind,
                       measure_input=x, time_steps=T)
    for _ in range(epochs):
        info = pr.end_epoch()
    return pr, info


@pytest.mark.parametrize("method", ["l1-structured", "rate-structured", "random-structured"])
def test_whole_units_go_and_compaction_shrinks_the_layers(method):
    model, x = _snn(), _x()
    pr, info = _prune(model, method, 0.5, "params", x)
    conv1, conv2, fc1, out = pr.graph.layers
    # a removed unit has no weights and no bias at all: a whole filter / row
    for layer, alive in zip(pr.layers, pr.alive):
        w = layer.synapse.weight.detach().flatten(1)
        assert (w[~alive] == 0).all() and (layer.synapse.bias[~alive] == 0).all()
    assert sum(int((~a).sum()) for a in pr.alive) > 0
    small = compact(model, x, pr.masks(), time_steps=T)        # verifies identical spikes
    kept = {lp.name: len(lp.keep_out) for lp in small.plan.layers}
    for layer, alive in zip(pr.layers, pr.alive):
        assert kept[layer.name] <= int(alive.sum()) < layer.n_out or alive.all()
    assert kept[out.name] == out.n_out == 3                     # the output layer keeps all
    # the params target: compacted parameters <= (1 - 0.5) * all, and one unit fewer misses it
    n_small = sum(p.numel() for p in small.model.parameters())
    assert n_small == compacted_params(pr.graph, pr.masks()) == info["cost"]
    assert n_small <= 0.5 * pr.reference
    assert pr.reference == sum(p.numel() for p in _snn().parameters())


def test_synops_target_is_met_to_one_unit_and_equals_the_compacted_count():
    model, x = _snn(), _x()
    pr = make_baseline("l1-structured", model, x[:2], 0.4, 0, 1, target_kind="synops",
                       measure_input=x, time_steps=T)              # one cut
    li, ui, _, most = pr.ranking()       # the order the cut uses (same weights)
    costs = [pr.cost(pr._alive_after(li, ui, n)) for n in range(most + 1)]
    info = pr.end_epoch()
    goal = 0.6 * pr.reference
    n = info["units_removed"]
    assert pr.reference == costs[0]
    assert info["reached"] and info["cost"] == costs[n] <= goal
    assert costs[n - 1] > goal                                   # one unit fewer misses it
    small = compact(model, x, pr.masks(), time_steps=T)
    assert count_ops(small.model, x, T, graph=small.graph).total("synops") == \
        pytest.approx(info["cost"], rel=1e-12)


def test_macs_target_on_an_ann_and_rate_is_mean_activation():
    model, x = _ann(), _x()
    pr, info = _prune(model, "rate-structured", 0.5, "macs", x)
    assert info["reached"] and info["cost"] <= 0.5 * pr.reference
    small = compact(model, x, pr.masks())
    assert count_ops(small.model, x, graph=small.graph).total("macs") == info["cost"]
    assert small.model[-1].out_features == 3


def test_gradual_schedule_and_masks_hold_through_training():
    model, x = _snn(), _x()
    pr = make_baseline("l1-structured", model, x[:2], 0.6, 0, 3, target_kind="params",
                       measure_input=x, time_steps=T)
    removed = []
    for _ in range(3):
        pr.end_epoch()
        removed.append(sum(int((~a).sum()) for a in pr.alive))
    assert removed[0] <= removed[1] <= removed[2]
    dead0 = ~pr.alive[0]
    opt = torch.optim.Adam(model.parameters(), 0.1)
    for _ in range(2):
        from dpap_deploy.executor.run import run_window
        from dpap_deploy.graph import graph_of
        run_window(graph_of(model, x[:4]), x[:4], T).sum().backward()
        assert (model[0].weight.grad[dead0] == 0).all()
        opt.step()
        pr.step()
        opt.zero_grad()
    assert (model[0].weight.detach()[dead0] == 0).all()


def test_bad_choices_are_refused():
    with pytest.raises(ConfigError, match="synops needs a spiking model"):
        make_baseline("l1-structured", _ann(), _x(2), 0.5, 0, 2, target_kind="synops")
    with pytest.raises(ConfigError, match="single weights"):
        make_baseline("magnitude", _snn(), _x(2), 0.5, 0, 2, target_kind="synops")
    with pytest.raises(ConfigError, match="unknown pruning baseline"):
        make_baseline("l2-structured", _snn(), _x(2), 0.5, 0, 2)


def test_cli_structured_baseline_then_compact(tmp_path):
    import json
    import subprocess
    import sys
    run, small = tmp_path / "run", tmp_path / "small"
    cli = lambda *a: subprocess.run([sys.executable, "-m", "dpap_deploy", *a],  # noqa: E731
                                    capture_output=True, text=True, timeout=600)
    r = cli("train", "--epochs", "3", "--batch-size", "128", "--no-dpap", "--baseline",
            "l1-structured", "--prune-target", "0.5", "--prune-target-kind", "synops",
            "--out", str(run), "--quiet")
    assert r.returncode == 0, r.stderr
    ckpt = torch.load(run / "checkpoint.pt", weights_only=False)
    last = ckpt["baseline"]["last"]
    assert last["reached"] and last["cost"] <= last["goal"]
    assert last["goal"] == pytest.approx(0.5 * ckpt["baseline"]["reference"])
    r = cli("compact", str(run), "--out", str(small))
    assert r.returncode == 0, r.stderr
    rep = json.loads((small / "report.json").read_text())
    assert rep["pruning_method"] == "l1-structured"
    rows = rep["compaction"]["layers"]
    assert sum(l["neurons_pruned"] for l in rows) == last["units_removed"]
    assert rows[-1]["neurons_kept"] == rows[-1]["neurons_total"] == 10
    assert rep["params"]["compact"] < rep["params"]["dense"]
    # NeuroBench's effective ACs of the pool-folded network are our SynOps (same test samples)
    nb = rep["neurobench"]["deploy"]
    assert nb["measured_on"] == rep["ops"]["measured_on"]
    assert nb["effective_acs"] == pytest.approx(rep["ops"]["synops_compact"], rel=1e-9)
    assert 0 < nb["activation_sparsity"] < 1 and nb["footprint_bytes"] > 0


def test_rate_and_l1_scores_by_construction():
    from dpap_deploy.baselines.unit_importance import l1_scores, normalized, rate_scores
    from dpap_deploy.graph import build_graph
    model, x = _snn(), _x()
    with torch.no_grad():
        model[0].weight[2] = 0
        model[0].bias[2] = -1.0                 # channel 2 can never reach the threshold
        model[0].weight[4] = 0
        model[0].bias[4] = 1.0                  # channel 4 fires at every step (1 > 0.5)
    g = build_graph(model, x[:2])
    layers = [l for l in g.layers if not l.is_output]
    rate = rate_scores(layers, graph=g, x=x, time_steps=T)[0]
    assert rate[2] == 0.0
    # channel 4: u = 1 at step 1 fires and resets to 0, so it fires every step: rate 1
    assert rate[4] == 1.0 and (rate <= 1).all()
    l1 = l1_scores(layers)[0]
    assert l1[2] == l1[4] == 1.0                 # |b| only: the filter is zero
    w0, b0 = model[0].weight.detach()[0], model[0].bias.detach()[0]
    assert l1[0] == pytest.approx(float(w0.abs().sum() + b0.abs()))
    assert normalized([l1])[0].mean() == pytest.approx(1.0)


def test_validation_knows_every_baseline():
    from dpap_deploy.baselines import METHODS
    from dpap_deploy.validate import BASELINES
    assert set(BASELINES) == set(METHODS)
