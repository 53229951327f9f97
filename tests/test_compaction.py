"""Compaction: the compacted (and the folded) network computes what the masked one computed,
with exactly the parameters the masks imply."""
import json
import subprocess
import sys

import pytest
import torch
from torch import nn

from dpap_deploy.compaction import compact, deployment_graph
from dpap_deploy.compaction.compact import outputs
from dpap_deploy.compaction.plan import constant_drive
from dpap_deploy.dpap import find_prunable_layers
from dpap_deploy.errors import DPAPError
from dpap_deploy.serialize import load_model, save_model
from dpap_deploy.zoo import build_model

ZOO = [("snn-digits", (1, 8, 8)), ("ann-digits", (1, 8, 8)), ("snn-mnist", (1, 28, 28)),
       ("ann-lenet", (1, 28, 28)), ("snn-cifar10", (3, 32, 32)), ("ann-vgg16-bn", (3, 32, 32))]


def _randomise_bn(model, gen):
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            with torch.no_grad():
                m.weight.uniform_(0.5, 1.5, generator=gen)
                m.bias.uniform_(-0.2, 0.4, generator=gen)
                m.running_mean.uniform_(-0.1, 0.1, generator=gen)
                m.running_var.uniform_(0.5, 2.0, generator=gen)


def _gain(model, g):
    """Scale synaptic weights so that spiking activity reaches the output of a random SNN."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                m.weight.mul_(g)


def _layer_activity(model, x, kind):
    """Every prunable layer's neuron output (spikes / ReLU), stacked over time steps."""
    _, layers = find_prunable_layers(model, x[:2])
    got = {l.name: [] for l in layers}
    hooks = [(l.neuron or l.bn or l.synapse).register_forward_hook(
        lambda m, i, o, n=l.name: got[n].append((o[0] if isinstance(o, tuple) else o).detach()))
        for l in layers]
    outputs(model, x, kind, 8, multistep=False)   # hooks see one call per step
    for h in hooks:
        h.remove()
    return {k: torch.stack(v) for k, v in got.items()}


def _random_masks(layers, gen, p_syn=0.3, p_neu=0.4):
    return {l.name: (torch.rand(l.n_out, l.n_in, generator=gen) > p_syn,
                     torch.rand(l.n_out, generator=gen) > (0 if l.is_output else p_neu))
            for l in layers}


def _expected_params(model_layers, plan):
    """Parameters of the compacted layers from the kept index sets alone."""
    total = 0
    for layer, lp in zip(model_layers, plan.layers):
        w = layer.synapse.weight
        per_pair = w[0, 0].numel() if w.dim() == 4 else 1
        total += len(lp.keep_out) * len(lp.keep_in) * per_pair
        total += len(lp.keep_out) * (layer.synapse.bias is not None)
        total += 2 * len(lp.keep_out) * (layer.bn is not None)
    return total


@pytest.mark.parametrize("name,shape", ZOO)
def test_compacted_and_folded_equal_masked_for_every_zoo_model(name, shape):
    gen = torch.Generator().manual_seed(1)
    torch.manual_seed(0)
    model, kind = build_model(name, shape, 10)
    _randomise_bn(model, gen)
    if kind == "snn":
        _gain(model, 2.5)
    x = torch.rand(6 if "vgg" in name or "cifar" in name else 16, *shape, generator=gen)
    x = x * 3 if kind == "snn" else x
    _, layers = find_prunable_layers(model, x[:2])
    masks = _random_masks(layers, gen)
    res = compact(model, x, masks, time_steps=8)   # verifies internally, explicit checks below
    masked = _masked_copy(model, x, masks)
    a, b = outputs(masked, x, kind, 8), outputs(res.model, x, kind, 8)
    if kind == "snn":
        assert torch.equal(a, b) and a.sum() > 0, "identical, non-trivial output spikes"
    else:
        assert (a - b).abs().max() < 1e-5
    act_masked, act_small = _layer_activity(masked, x, kind), _layer_activity(res.model, x, kind)
    for lp in res.plan.layers:      # every kept unit of every layer does exactly the same
        ref = act_masked[lp.name].index_select(2, lp.keep_out)
        assert torch.equal(ref, act_small[lp.name]) if kind == "snn" else \
            (ref - act_small[lp.name]).abs().max() < 1e-5
        assert kind == "ann" or lp.name == res.plan.layers[-1].name or ref.sum() > 0
    small_layers = find_prunable_layers(res.model, x[:2])[1]
    # zoo models hold parameters only in Conv2d / Linear / BatchNorm
    assert sum(p.numel() for p in res.model.parameters()) == _expected_params(layers, res.plan)
    for lp, sl in zip(res.plan.layers, small_layers):
        assert sl.n_out == len(lp.keep_out) and sl.n_in == len(lp.keep_in)
    for layer, lp in zip(layers, res.plan.layers):   # kept units are never pruned ones
        assert masks[layer.name][1][lp.keep_out].all()
        assert len(lp.keep_out) + lp.pruned_out + lp.derived_out == layer.n_out
    folded = deployment_graph(res.model, x, time_steps=8)
    assert not any(isinstance(m, (nn.BatchNorm2d, nn.AvgPool2d)) for m in folded.modules())
    c = outputs(folded, x, kind, 8)
    assert torch.equal(a, c) if kind == "snn" else (a - c).abs().max() < 1e-4


def _masked_copy(model, x, masks):
    import copy
    from dpap_deploy.masks import apply_to_model
    m = copy.deepcopy(model).eval()
    return apply_to_model(m, x, masks)


def test_derived_deaths_input_and_output_dead():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    with torch.no_grad():
        model[0].bias[0] = 0.0
    x = torch.rand(8, 3)
    ones = lambda *s: torch.ones(*s, dtype=torch.bool)  # noqa: E731
    syn0, syn1 = ones(4, 3), ones(3, 4)
    syn0[0] = False            # unit 0 of layer 0: no input and zero bias -> input-dead
    syn1[:, 1] = False         # unit 1 of layer 0: nobody reads it -> output-dead
    res = compact(model, x, {"0": (syn0, ones(4)), "2": (syn1, ones(3))})
    lp0 = res.plan.layers[0]
    assert lp0.keep_out.tolist() == [2, 3] and lp0.derived_out == 2 and lp0.pruned_out == 0
    assert res.plan.layers[1].keep_in.tolist() == [2, 3]
    assert res.model[0].weight.shape == (2, 3) and res.model[2].weight.shape == (3, 2)
    # a unit with no input but a non-zero bias is a constant source: it must stay
    with torch.no_grad():
        model[0].bias[0] = 0.5
    assert compact(model, x, {"0": (syn0, ones(4))}).plan.layers[0].keep_out.tolist() == [0, 1, 2, 3]


def test_constant_drive_through_batchnorm():
    conv, bn = nn.Conv2d(1, 2, 1, bias=False), nn.BatchNorm2d(2).eval()
    with torch.no_grad():
        bn.running_mean.copy_(torch.tensor([1.0, 0.0]))
        bn.weight.copy_(torch.tensor([2.0, 3.0]))
        bn.bias.copy_(torch.tensor([0.5, 0.0]))
    from dpap_deploy.dpap.layers import PrunableLayer
    d = constant_drive(PrunableLayer("c", conv, bn, "b"))
    assert d.tolist() == pytest.approx([2.0 * (0 - 1) / (1 + 1e-5) ** 0.5 + 0.5, 0.0])


def test_compacted_model_saves_loads_and_trains_further(tmp_path):
    torch.manual_seed(0)
    model, kind = build_model("snn-digits", (1, 8, 8), 10)
    x = torch.rand(8, 1, 8, 8) * 3
    _, layers = find_prunable_layers(model, x[:2])
    res = compact(model, x, _random_masks(layers, torch.Generator().manual_seed(3)), time_steps=8)
    save_model(tmp_path / "m.pt", res.model, kind, {"note": "test"})
    back, kind2, meta = load_model(tmp_path / "m.pt")
    assert kind2 == "snn" and meta == {"note": "test"}
    assert torch.equal(outputs(res.model, x, kind, 8), outputs(back, x, kind, 8))
    back.train()
    out = outputs(back, x, kind, 8)   # eval-mode helper; now a training step:
    from dpap_deploy.executor.run import run_window
    from dpap_deploy.graph import graph_of
    loss = run_window(graph_of(back, x), x, 4).mean()
    loss.backward()
    assert back[0].weight.grad is not None and out.shape[-1] == 10
    (tmp_path / "bad.pt").write_bytes(b"junk")
    with pytest.raises(DPAPError, match="not a readable model file"):
        load_model(tmp_path / "bad.pt")


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "dpap_deploy", *args], capture_output=True,
                          text=True, timeout=600)


AGGRESSIVE = ("[dpap.conv]\nepsilon = 1.5\neta = 3.0\nbeta = 2.5\nwarmup = 0\n"
              "[dpap.linear]\nepsilon = 1.5\neta = 3.0\nbeta = 1.0\nwarmup = 0\n")


def test_compact_and_report_on_a_real_dpap_run(tmp_path):
    cfg = tmp_path / "agg.toml"
    cfg.write_text("epochs = 5\nbatch_size = 64\n" + AGGRESSIVE)
    run, comp = tmp_path / "run", tmp_path / "compact"
    r = _cli("train", "--config", str(cfg), "--out", str(run), "--quiet")
    assert r.returncode == 0, r.stderr
    r = _cli("compact", str(run), "--out", str(comp))
    assert r.returncode == 0, r.stderr
    rep = json.loads((comp / "report.json").read_text())
    p, o, c = rep["params"], rep["ops"], rep["compaction"]
    assert p["compact"] < p["nonzero"] < p["dense"] == 22602
    assert p["compact_nonzero"] == _nonzero_within_kept(run) < p["nonzero"]
    assert c["accuracy_compact"] == c["accuracy_masked"] == rep["accuracy"]["test"]
    assert c["verified_on"] == 397
    assert 0 < o["synops_compact"] < o["synops_dense"] and 0 < o["macs_compact"] <= o["macs_dense"]
    assert sum(l["params_compact"] for l in c["layers"]) == p["compact"]
    for f in ("compact.pt", "deploy.pt", "report.md", "history.csv"):
        assert (comp / f).exists(), f
    (comp / "plots" / "accuracy.png").unlink()
    r = _cli("report", str(comp))
    assert r.returncode == 0, r.stderr
    for f in ("accuracy", "params_per_layer", "survival", "fc_map"):
        assert (comp / "plots" / f"{f}.png").stat().st_size > 5000, f
    md = (comp / "report.md").read_text()
    assert "SynOps dense" in md and f"{p['compact']:,}" in md
    model, kind, meta = load_model(comp / "compact.pt")
    assert sum(q.numel() for q in model.parameters()) == p["compact"]


def _nonzero_within_kept(run_dir):
    """Non-zero masked weights and biases that lie inside the kept units and inputs."""
    from dpap_deploy.checkpoint import load_checkpoint
    from dpap_deploy.masks import from_dpap_state
    from dpap_deploy.training import restore_run
    ck = load_checkpoint(run_dir)
    r = restore_run(ck)
    x = r.data.x_test[:4]
    plan = compact(r.model, x, from_dpap_state(ck["dpap"]), verify=False).plan
    n = 0
    for layer, lp in zip(r.dpap.layers, plan.layers):
        w = layer.synapse.weight.detach()[lp.keep_out][:, lp.keep_in]
        n += int(w.count_nonzero()) + int(layer.synapse.bias.detach()[lp.keep_out].count_nonzero())
    return n


def test_compact_rejects_corrupt_and_foreign_checkpoints(tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "checkpoint.pt").write_bytes(b"\x00garbage")
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {"w": torch.zeros(2)}}, foreign)
    for src, frag in ((bad, "not a readable checkpoint"), (foreign, "not a dpap-deploy checkpoint"),
                      (tmp_path / "none", "no checkpoint")):
        r = _cli("compact", str(src), "--out", str(tmp_path / "o"))
        assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1 and frag in r.stderr, r.stderr


@pytest.mark.parametrize("name,shape", [("snn-digits", (1, 8, 8)), ("ann-digits", (1, 8, 8)),
                                        ("snn-cifar10", (3, 16, 16))])
def test_cut_equals_torch_pruning_on_the_zoo(name, shape):
    """Torch-Pruning's dependency graph, given the units our plan removes, yields bit-identical
    parameters on the zoo's chains (surgery.py says why it does not do the cut itself)."""
    tp = pytest.importorskip("torch_pruning")
    import copy
    from dpap_deploy.compaction.plan import plan_compaction
    from dpap_deploy.graph import build_graph
    from dpap_deploy.masks import apply_to_model, check
    gen = torch.Generator().manual_seed(4)
    model, _ = build_model(name, shape, 10)
    _randomise_bn(model, gen)
    model.eval()
    x = torch.rand(4, *shape, generator=gen)
    graph = build_graph(model, x)
    masks = check(graph, _random_masks(graph.layers, gen, p_syn=0.0, p_neu=0.4))
    ours = compact(model, x, masks, graph=graph, verify=False).model
    theirs = copy.deepcopy(model)
    apply_to_model(theirs, x, masks)
    plan = plan_compaction(graph, masks)
    dg = tp.DependencyGraph().build_dependency(theirs, example_inputs=x[:2], verbose=False)
    named = dict(theirs.named_modules())
    for lp in plan.layers:
        syn = named[lp.name]
        removed = sorted(set(range(syn.weight.shape[0])) - set(lp.keep_out.tolist()))
        if removed:
            fn = tp.prune_conv_out_channels if isinstance(syn, nn.Conv2d) else \
                tp.prune_linear_out_channels
            dg.get_pruning_group(syn, fn, idxs=removed).prune()
    a, b = ours.state_dict(), theirs.state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
