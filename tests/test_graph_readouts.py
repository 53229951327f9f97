"""What a model returns (spikes, a neuron's membrane, a synapse's current) and which synapses
are fed by spikes, read off the model graph."""
from __future__ import annotations

import pytest
import snntorch as snn
import torch
from torch import nn

from dpap_deploy.graph import build_graph
from dpap_deploy.errors import UnsupportedModelError
from dpap_deploy.graph.model_graph import NEURON, SYNAPSE
from dpap_deploy.graph.neurons import supported_names

T = 4



class OwnLoop(nn.Module):
    """Tutorial-5 style own loop; ``readout`` picks what it returns."""

    def __init__(self, readout: str):
        super().__init__()
        self.readout = readout
        self.fc1 = nn.Linear(16, 12)
        self.lif1 = snn.Leaky(beta=0.9, reset_mechanism="zero")
        self.drop = nn.Dropout(0.2)
        self.fc2 = nn.Linear(12, 5)
        reset = "none" if readout == "membrane" else "zero"
        self.lif2 = snn.Leaky(beta=0.9, reset_mechanism=reset)

    def forward(self, x):
        mem1, mem2 = self.lif1.init_leaky(), self.lif2.init_leaky()
        spk_rec, mem_rec, cur_rec = [], [], []
        for _ in range(T):
            spk1, mem1 = self.lif1(self.fc1(x.flatten(1)), mem1)
            cur2 = self.fc2(self.drop(spk1))
            if self.readout == "current":
                cur_rec.append(cur2)
                continue
            spk2, mem2 = self.lif2(cur2, mem2)
            spk_rec.append(spk2)
            mem_rec.append(mem2)
        if self.readout == "current":
            return torch.stack(cur_rec).sum(0)
        if self.readout == "membrane":
            return torch.stack(mem_rec)
        return torch.stack(spk_rec), torch.stack(mem_rec)


def _node(graph, name):
    return next(n for n in graph.nodes if n.name == name)


def test_readout_spikes_membrane_current():
    x = torch.rand(2, 4, 4)
    assert build_graph(OwnLoop("spikes"), x).readout == "spikes"
    assert build_graph(OwnLoop("membrane"), x).readout == "membrane"
    g = build_graph(OwnLoop("current"), x)
    assert g.readout == "current"
    assert g.nodes[g.output].op == SYNAPSE and g.nodes[g.output].name == "fc2"


def test_readout_of_a_one_call_per_step_model():
    spikes = nn.Sequential(nn.Linear(8, 6), snn.Leaky(beta=0.5, init_hidden=True),
                           nn.Linear(6, 3), snn.Leaky(beta=0.5, init_hidden=True, output=True))
    assert build_graph(spikes, torch.rand(2, 8)).readout == "spikes"


class ReturnsMembraneOneStep(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(8, 6)
        self.lif1 = snn.Leaky(beta=0.5, init_hidden=True)
        self.fc2 = nn.Linear(6, 3)
        self.lif2 = snn.Leaky(beta=0.5, init_hidden=True, reset_mechanism="none", output=True)

    def forward(self, x):
        _spk, mem = self.lif2(self.fc2(self.lif1(self.fc1(x))))
        return mem


def test_readout_membrane_one_call_per_step():
    g = build_graph(ReturnsMembraneOneStep(), torch.rand(2, 8))
    assert g.readout == "membrane" and g.nodes[g.output].name == "lif2"


def test_fed_by_spikes():
    g = build_graph(OwnLoop("current"), torch.rand(2, 4, 4))
    assert not g.fed_by_spikes(_node(g, "fc1").id)          # fed by the input (via flatten)
    assert g.fed_by_spikes(_node(g, "fc2").id)              # lif1 -> dropout -> fc2
    assert g.fed_by_spikes(g.nodes[-1].id) is False         # the output node reads fc2


class GradedInput(nn.Module):
    """A synapse reading a pooled spike map (graded) and one reading spikes through view."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.lif1 = snn.Leaky(beta=0.5, init_hidden=True)
        self.pool = nn.AvgPool2d(2)
        self.fc1 = nn.Linear(4 * 2 * 2, 6)
        self.lif2 = snn.Leaky(beta=0.5, init_hidden=True)
        self.fc2 = nn.Linear(6, 3)
        self.lif3 = snn.Leaky(beta=0.5, init_hidden=True)

    def forward(self, x):
        s = self.pool(self.lif1(self.conv(x)))
        s = self.lif2(self.fc1(s.view(s.size(0), -1)))
        return self.lif3(self.fc2(s.view(s.size(0), -1)))


def test_fed_by_spikes_stops_at_graded_ops():
    g = build_graph(GradedInput(), torch.rand(2, 1, 4, 4))
    assert not g.fed_by_spikes(_node(g, "fc1").id)          # avg pool in between: graded
    assert g.fed_by_spikes(_node(g, "fc2").id)
    assert g.readout == "spikes" and g.nodes[g.output].op == NEURON


class NextNeuron(snn.SpikingNeuron):
    """A spiking neuron type no adapter describes (the next one snnTorch or a user adds)."""

    def forward(self, x):
        return (x > self.threshold).float()


class StatefulUnit(nn.Module):
    """A home-made neuron keeping its membrane."""

    def __init__(self):
        super().__init__()
        self.mem = torch.zeros(0)

    def forward(self, x):
        self.mem = 0.5 * self.mem + x if self.mem.shape == x.shape else x
        return (self.mem > 1).float()


@pytest.mark.parametrize("neuron", [NextNeuron, StatefulUnit])
def test_unknown_neuron_types_are_refused_in_one_line(neuron):
    model = nn.Sequential(nn.Linear(4, 3), neuron())
    with pytest.raises(UnsupportedModelError) as err:
        build_graph(model, torch.rand(2, 4))
    text = str(err.value)
    assert "\n" not in text and f"{neuron.__name__} at '1'" in text
    assert supported_names() in text and "graph/neurons/__init__.py" in text and "@register" in text


def test_supported_snntorch_neurons_are_not_taken_as_activations():
    for neuron in (snn.Alpha(alpha=0.9, beta=0.8, init_hidden=True),
                   snn.Lapicque(beta=0.9, init_hidden=True)):
        model = nn.Sequential(nn.Linear(4, 3), neuron)
        try:
            g = build_graph(model, torch.rand(2, 4))
        except UnsupportedModelError as exc:               # no adapter: refused by name
            assert type(neuron).__name__ in str(exc)
            continue
        node = g.nodes[g.output]
        assert node.op == NEURON and node.adapter.kind == "snn" and g.kind == "snn"


def _scaled_loop(readout):
    torch.manual_seed(0)
    model = OwnLoop(readout).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(3.0)                                       # every layer spikes
    return model, torch.rand(6, 4, 4)


@pytest.mark.parametrize("readout", ["spikes", "membrane", "current"])
def test_outputs_record_the_readout(readout):
    from dpap_deploy.executor.run import outputs
    model, x = _scaled_loop(readout)
    g = build_graph(model, x)
    out = outputs(g, x, None, batch_size=4)                   # [T, B, C]
    with torch.no_grad():
        own = model(x)
    own = own[0] if isinstance(own, tuple) else own
    assert out.shape == (T, 6, 5)
    assert torch.equal(out.sum(0) if readout == "current" else out, own)
    if readout != "spikes":
        assert not torch.equal(out, (out > 0).float())      # graded, not spikes


class LinearReadoutOneStep(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(8, 6)
        self.lif1 = snn.Leaky(beta=0.5, init_hidden=True)
        self.fc2 = nn.Linear(6, 3)

    def forward(self, x):
        return self.fc2(self.lif1(self.fc1(x)))


@pytest.mark.parametrize("make", [ReturnsMembraneOneStep, LinearReadoutOneStep])
def test_graded_one_step_models_run_the_step_loop(make):
    from snntorch import utils
    from dpap_deploy.executor import MultiStep
    from dpap_deploy.executor.run import outputs
    torch.manual_seed(0)
    model = make().eval()
    with torch.no_grad():
        model.fc1.weight.mul_(4.0)
    x = torch.rand(5, 8)
    g = build_graph(model, x)
    assert g.readout in ("membrane", "current") and "graded" in MultiStep.unsupported(g)
    utils.reset(model)
    with torch.no_grad():
        want = torch.stack([model(x) for _ in range(T)])     # the user's own loop
    assert torch.equal(outputs(g, x, T), want)


@pytest.mark.parametrize("readout", ["membrane", "current"])
def test_compaction_keeps_a_graded_readout(readout):
    from dpap_deploy.compaction import compact
    from dpap_deploy.compaction.compact import check_same_function, copy_with_graph
    from dpap_deploy.errors import DPAPError
    model, x = _scaled_loop(readout)
    g = build_graph(model, x)
    gen = torch.Generator().manual_seed(1)
    masks = {l.name: (torch.rand(l.n_out, l.n_in, generator=gen) < 0.8,
                      torch.rand(l.n_out, generator=gen) < (1.0 if l.is_output else 0.5))
             for l in g.layers}
    result = compact(model, x, masks)                       # checks the readout itself
    assert result.graph.readout == readout
    assert result.model.fc1.out_features < 12
    # a real error in the compacted network is caught
    broken, bg = copy_with_graph(result.model, result.graph)
    with torch.no_grad():
        broken.fc2.bias[0] += 0.25                         # one output shifted
    masked, mg = copy_with_graph(model, g)
    from dpap_deploy.masks import apply_to_model
    apply_to_model(masked, None, masks, graph=mg)
    with pytest.raises(DPAPError, match=f"{readout} difference"):
        check_same_function(mg, bg, x, None)


def test_measure_runs_a_class_returning_spk_and_mem():
    """The house bug: compact_and_measure ran the model one call per step (its own step loop),
    which fails for a tutorial class returning ``(spk, mem)`` from its own loop."""
    from dpap_deploy.masks import apply_to_model
    from dpap_deploy.compaction.measure import compact_and_measure
    from dpap_deploy.metrics import correct, predictions
    model, x = _scaled_loop("spikes")
    x = torch.rand(24, 4, 4)
    y = torch.randint(0, 5, (24,))
    g = build_graph(model, x)
    gen = torch.Generator().manual_seed(2)
    masks = {l.name: (torch.ones(l.n_out, l.n_in, dtype=torch.bool),
                      torch.rand(l.n_out, generator=gen) < (1.0 if l.is_output else 0.6))
             for l in g.layers}
    apply_to_model(model, None, masks, graph=g)           # the masked model, as after DPAP
    r = compact_and_measure(model, "snn", masks, x, y, None)
    with torch.no_grad():
        spk, _mem = model(x)
    want = correct(predictions(spk.mean(0)), y) / len(y)     # the user's own reading
    assert r.accuracy_masked == r.accuracy_compact == want
    assert r.result.model.fc1.out_features < 12 and r.verified_on == 24


def test_membrane_of_a_hidden_state_call_is_the_neurons_state():
    """A hidden-state neuron returns spikes only: its membrane is the state it keeps (the
    adapter finds none in the output), not None."""
    import snntorch as snn
    from dpap_deploy.graph.neurons import adapter_for
    from dpap_deploy.graph.state import neuron_membrane
    lif = snn.Leaky(beta=0.5, init_hidden=True)
    out = lif(torch.full((1, 3), 0.4))
    assert isinstance(out, torch.Tensor)
    mem = neuron_membrane(adapter_for(lif), lif, out)
    assert mem is lif.mem and torch.allclose(mem, torch.full((1, 3), 0.4))


def test_an_output_computed_by_a_function_runs_from_the_forwards_returns():
    """``return lif(fc(x)) * 2`` (one call per step): no module to hook at the output, the
    readout is what the forward returns, call by call (it raised before)."""
    from dpap_deploy.executor.run import run_window

    class Step(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 3)
            self.lif = snn.Leaky(beta=0.5, init_hidden=True)
            with torch.no_grad():
                self.fc.weight.copy_(torch.tensor([[0.5, 0.2, 0.1, 0.0]] * 3) * torch.arange(
                    1.0, 4.0).view(3, 1))
                self.fc.bias.zero_()

        def forward(self, x):
            return self.lif(self.fc(x)) * 2

    x = torch.tensor([[1.0, 1.0, 1.0, 1.0], [0.5, 0.5, 0.5, 0.5], [2.0, 0.0, 0.0, 0.0]])
    model = Step().eval()
    with torch.no_grad():
        graph = build_graph(model, x)
        assert graph.nodes[graph.output].module is None
        got = run_window(graph, x, 5)
        model.lif.reset_mem()
        want = torch.stack([model(x) for _ in range(5)])
    assert got.shape == (5, 3, 3) and torch.equal(got, want)
    assert 0 < int(got.sum()) < 2 * got.numel()


@pytest.mark.parametrize("start", ["int", "zeros"])
def test_a_running_sum_of_a_linear_readout_is_its_current(start):
    """``out = 0`` (or a tensor of zeros), then ``out = out + readout(spk)`` at every step: the
    first step's add passes the readout through (it became an element-wise node, and DPAP's
    attach refused the readout as a synapse without a neuron); the readout is its current."""
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1 = nn.Linear(8, 6)
            self.lif1 = snn.Leaky(beta=0.9)
            self.readout = nn.Linear(6, 3)

        def forward(self, x):
            mem1 = self.lif1.init_leaky()
            out = 0 if start == "int" else torch.zeros(x.shape[0], 3)
            for _ in range(4):
                spk1, mem1 = self.lif1(self.fc1(x), mem1)
                out = out + self.readout(spk1)
            return out

    torch.manual_seed(0)
    model = Net().eval()
    x = torch.rand(5, 8) * 3
    graph = build_graph(model, x)
    assert graph.readout == "current" and graph.nodes[graph.output].name == "readout"
    with torch.no_grad():
        from dpap_deploy.executor.run import run_window
        got = run_window(graph, x, None)
        assert torch.allclose(got.sum(0), model(x), atol=1e-6)
