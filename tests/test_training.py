"""Training-level guarantees: pruning invariants after many steps, and exact resume."""
import json

import pytest
import torch
from torch import nn

from dpap_deploy.checkpoint import load_checkpoint
from dpap_deploy.data import Dataset, load_dataset
from dpap_deploy.dpap import DPAP, DPAPConfig
from dpap_deploy.executor.run import run_window
from dpap_deploy.graph import graph_of
from dpap_deploy.neurons import lif
from dpap_deploy.training import TrainConfig, restore_run, train

# Aggressive settings: pruning starts in the first epoch and is heavy, so the invariants are
# tested on a network where many neurons and synapses (conv channels included) are gone.
AGGRESSIVE = {"conv": {"epsilon": 1.5, "eta": 3.0, "beta": 2.5, "C": 5.0, "warmup": 0},
              "linear": {"epsilon": 1.5, "eta": 3.0, "beta": 1.0, "C": 2.0, "warmup": 0}}


@pytest.fixture(scope="module")
def digits():
    d = load_dataset("digits")
    return Dataset("digits", d.x_train[:320], d.y_train[:320], d.x_test[:100], d.y_test[:100], 10)


def _spike_counts(model, x, kind, time_steps=8):
    """Output of every neuron module per unit, summed over samples and steps."""
    counts = {}
    hooks = []
    for name, m in model.named_modules():
        if isinstance(m, (nn.ReLU,)) or type(m).__name__ == "Leaky":
            def hook(mod, inp, out, name=name):
                o = out[0] if isinstance(out, tuple) else out
                s = o.detach().abs().sum(0)
                s = s.flatten(1).sum(1) if s.dim() > 1 else s
                counts[name] = counts.get(name, 0) + s
            hooks.append(m.register_forward_hook(hook))
    with torch.no_grad():
        run_window(graph_of(model, x), x, time_steps) if kind == "snn" else model(x)
    for h in hooks:
        h.remove()
    return counts


@pytest.mark.parametrize("model_name", ["snn-digits", "ann-digits"])
def test_pruned_weights_stay_zero_and_pruned_neurons_are_silent(tmp_path, digits, model_name):
    cfg = TrainConfig(model=model_name, epochs=4, batch_size=32, dpap_config=AGGRESSIVE)
    run = train(cfg, tmp_path, progress=False, data=digits)
    dp = run.dpap
    n_dead = sum(int((~st.neu_alive).sum()) for st in dp.states)
    n_dead_syn = sum(int((~st.syn_alive).sum()) for st in dp.states)
    assert n_dead > 10 and n_dead_syn > 5, "the aggressive config must prune for this test"
    assert (~dp.states[0].neu_alive).any(), "conv channels must be pruned too"
    for layer, st in zip(dp.layers, dp.states):
        w = layer.synapse.weight.detach()
        dead_w = ~(st.syn_alive & st.neu_alive[:, None])
        assert (w[dead_w] == 0).all()
        assert (layer.synapse.bias.detach()[~st.neu_alive] == 0).all()
    for mode in ("train", "eval"):
        getattr(run.model, mode)()   # train mode: hooks record, eval mode: they do not
        counts = _spike_counts(run.model, digits.x_test, run.kind)
        for layer, st in zip(dp.layers, dp.states):
            if layer.neuron_name is None:   # the ANN output layer (logits, never pruned)
                continue
            c = counts[layer.neuron_name]
            assert c[~st.neu_alive].sum() == 0, f"pruned neurons of {layer.name} fired ({mode})"
        assert counts[dp.layers[0].neuron_name].sum() > 0, "the check must see activity"


def test_bn_snn_pruned_channels_silent():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), lif(),
                          nn.AvgPool2d(2), nn.Flatten(), nn.Linear(8 * 4 * 4, 16), lif(),
                          nn.Linear(16, 4), lif())
    x = torch.rand(64, 1, 8, 8) * 2
    dp = DPAP(model, x[:2], DPAPConfig.from_dict(AGGRESSIVE))
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    y = torch.randint(0, 4, (64,))
    for epoch in range(4):
        for _ in range(5):
            model.train()
            out = run_window(graph_of(model, x), x, 4).mean(0)
            loss = ((out - nn.functional.one_hot(y, 4)) ** 2).sum(1).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            dp.step()
        dp.end_epoch()
    dead = ~dp.states[0].neu_alive
    assert dead.any() and dp.states[0].neu_alive.any()
    assert (model[1].weight[dead] == 0).all() and (model[1].bias[dead] == 0).all()
    model.train()
    counts = _spike_counts(model, x, "snn", 4)
    assert counts["2"][dead].sum() == 0 and counts["2"].sum() > 0


def _interrupt_after(epoch):
    def log(msg):
        if msg.startswith(f"epoch {epoch:3d}/"):
            raise KeyboardInterrupt
    return log


@pytest.mark.parametrize("model_name", ["snn-digits", "ann-digits"])
def test_interrupted_and_resumed_run_equals_uninterrupted(tmp_path, digits, model_name):
    cfg = TrainConfig(model=model_name, epochs=4, batch_size=32, dpap_config=AGGRESSIVE, seed=3)
    full = train(cfg, tmp_path / "full", progress=False, data=digits)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "cut", progress=False, data=digits, log=_interrupt_after(2))
    assert load_checkpoint(tmp_path / "cut")["epoch"] == 2
    resumed = train(cfg, tmp_path / "cut", resume=True, progress=False, data=digits)
    assert resumed.epoch == full.epoch == 4
    for (k, a), (_, b) in zip(full.model.state_dict().items(), resumed.model.state_dict().items()):
        assert torch.equal(a, b), k
    assert any(not st.neu_alive.all() for st in full.dpap.states)
    for sa, sb in zip(full.dpap.states, resumed.dpap.states):
        assert torch.equal(sa.syn_alive, sb.syn_alive) and torch.equal(sa.neu_alive, sb.neu_alive)
        assert torch.equal(sa.F_syn, sb.F_syn) and torch.equal(sa.theta, sb.theta)
    assert [h["test_acc"] for h in full.history] == [h["test_acc"] for h in resumed.history]
    assert (tmp_path / "cut" / "history.csv").read_text().count("\n") == 5


def test_checkpoint_restores_dpap_state_and_loads_weights_only(tmp_path, digits):
    cfg = TrainConfig(epochs=2, batch_size=32, dpap_config=AGGRESSIVE)
    run = train(cfg, tmp_path, progress=False, data=digits)
    ckpt = load_checkpoint(tmp_path)   # weights_only=True inside
    back = restore_run(ckpt, data=digits)
    assert back.dpap.epoch == 2 and back.dpap.num_batches == run.dpap.num_batches
    for layer, st in zip(back.dpap.layers, back.dpap.states):
        assert (layer.synapse.weight[~st.neu_alive] == 0).all()
    assert len(back.dpap.states[0].f_neu_hist) == 2
    cfg_json = json.loads((tmp_path / "config.json").read_text())
    assert cfg_json["dpap_config_resolved"]["conv"]["epsilon"] == 1.5


def test_existing_run_needs_resume_and_same_options(tmp_path, digits):
    from dpap_deploy.errors import DPAPError
    cfg = TrainConfig(epochs=1, batch_size=32)
    train(cfg, tmp_path, progress=False, data=digits)
    with pytest.raises(DPAPError, match="--resume"):
        train(cfg, tmp_path, progress=False, data=digits)
    with pytest.raises(DPAPError, match="different batch-size"):
        train(TrainConfig(epochs=1, batch_size=16), tmp_path, resume=True, progress=False,
              data=digits, explicit={"batch_size"})
    asked = TrainConfig.from_file(None, epochs=1, batch_size=16)     # as the command line gives it
    assert asked.given == {"epochs", "batch_size"}
    with pytest.raises(DPAPError, match="different batch-size"):
        train(asked, tmp_path, resume=True, progress=False, data=digits)


@pytest.mark.parametrize("dpap", [False, True])
def test_step_loop_forward_traces_the_model_once(monkeypatch, digits, dpap):
    """With the step loop (``executor="step"``) the training forward runs the run's graph: the
    model is traced when the run is built, never per batch."""
    from dpap_deploy.graph import trace
    from dpap_deploy.training import build_run
    run = build_run(TrainConfig(model="snn-digits", epochs=1, batch_size=16, executor="step",
                                dpap=dpap), digits)
    assert run.executor is None and run.graph is not None and run.graph.model is run.model
    traced, real = [], trace.build_graph
    monkeypatch.setattr(trace, "build_graph", lambda *a, **k: traced.append(1) or real(*a, **k))
    for i in range(2):
        assert run.forward(digits.x_train[16 * i:16 * (i + 1)]).shape == (16, 10)
    assert not traced, f"the forward traced the model {len(traced)} times in 2 batches"
