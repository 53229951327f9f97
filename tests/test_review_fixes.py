"""Review fixes in the graph, NIR and Lava paths: each test reproduces one finding (a model
written the way users write it) and checks the result against snnTorch itself."""
from __future__ import annotations

import numpy as np
import pytest
import snntorch as snn
import torch
import torch.nn.functional as F
from torch import nn

from dpap_deploy.errors import UnsupportedModelError
from dpap_deploy.exporters import nir_export
from dpap_deploy.exporters.nir_graph import to_nir
from dpap_deploy.exporters.nir_torch import run_reference
from dpap_deploy.graph import build_graph
from dpap_deploy.graph.time_axis import index_axis

T = 4


def snn_spikes(net: nn.Module, x: torch.Tensor) -> np.ndarray:
    """The model's own loop output ``[T, B, ...]`` as ``[B, T, ...]``."""
    with torch.no_grad():
        return net(x).transpose(0, 1).numpy()


def nir_spikes(net: nn.Module, x: torch.Tensor, per_sample: torch.Tensor | None = None,
               **kw) -> np.ndarray:
    """The NIR file's spikes (torch reference executor), sample first ``[B, T, ...]``."""
    graph = build_graph(net, x, **kw)
    got = run_reference(to_nir(graph, time_steps=T), (x if per_sample is None
                                                      else per_sample).numpy(), T)
    return got


# -- finding 1: a time-first loop indexing x[step, :] / x[t, ...] ------------------------------

@pytest.mark.parametrize("key, axis", [
    (3, 0), ((3, slice(None)), 0), ((3, Ellipsis), 0), ((3, slice(None), slice(None)), 0),
    ((slice(None), 2), 1), ((slice(None), 2, slice(None)), 1), ((slice(None), 2, Ellipsis), 1),
    ((3, slice(0, 2)), None), ((slice(None), 2, 1), None), (slice(0, 2), None),
    ((slice(None), slice(None)), None)])
def test_index_axis_forms(key, axis):
    assert index_axis(key) == axis


class TimeFirstColon(nn.Module):
    """snnTorch's spikegen layout ``[T, B, F]`` read as ``x[step, :]`` / ``x[step, ...]``."""

    def __init__(self, index):
        super().__init__()
        self.index = index
        self.fc1 = nn.Linear(10, 12)
        self.lif1 = snn.Leaky(beta=0.9)
        self.fc2 = nn.Linear(12, 4)
        self.lif2 = snn.Leaky(beta=0.9)

    def forward(self, x):
        mem1, mem2 = self.lif1.reset_mem(), self.lif2.reset_mem()
        rec = []
        for step in range(x.size(0)):
            xi = x[step, :] if self.index == "colon" else x[step, ...]
            spk1, mem1 = self.lif1(self.fc1(xi), mem1)
            spk2, mem2 = self.lif2(self.fc2(spk1), mem2)
            rec.append(spk2)
        return torch.stack(rec)


@pytest.mark.parametrize("index", ["colon", "ellipsis"])
def test_time_first_colon_loop_exports_exactly(index):
    torch.manual_seed(3)
    net = TimeFirstColon(index).eval()
    with torch.no_grad():
        net.fc2.weight.mul_(3)
    x = (torch.rand(T, 6, 10) < 0.5).float() * 2            # [T, B, F]
    graph = build_graph(net, x)
    assert graph.time_axis == 0 and graph.steps_per_call == T and graph.input_shape == (10,)
    assert nir_export.blockers(graph, T) == []
    ref = snn_spikes(net, x)
    got = nir_spikes(net, x, per_sample=x.transpose(0, 1))
    assert ref.mean() > 0.1
    np.testing.assert_array_equal(got.reshape(ref.shape), ref)


def test_nir_type_check_refusal_is_a_blocker_and_one_line(monkeypatch):
    """What only nir's own type check refuses is listed by blockers() and raised as an
    UnsupportedModelError (not nir's ValueError)."""
    import nir

    torch.manual_seed(3)
    net = TimeFirstColon("colon").eval()
    graph = build_graph(net, torch.rand(T, 2, 10), time_axis=0)

    def refuse(*a, **k):
        raise ValueError("Type inference error: type mismatch")
    monkeypatch.setattr(nir, "NIRGraph", refuse)
    with pytest.raises(UnsupportedModelError, match="type check"):
        to_nir(graph, time_steps=T)
    found = nir_export.blockers(graph, T)
    assert len(found) == 1 and "type check" in found[0]


# -- finding 2 (and the minor one): decays of 1 under reset to zero ----------------------------

class OneLayer(nn.Module):
    """``fc`` -> one neuron population, snnTorch's own loop over a static input."""

    def __init__(self, neuron: nn.Module, n_in: int = 3, n_out: int = 4):
        super().__init__()
        self.fc = nn.Linear(n_in, n_out, bias=False)
        self.lif = neuron

    def forward(self, x):
        state, rec = None, []
        for _ in range(T):
            out = self.lif(self.fc(x)) if state is None else self.lif(self.fc(x), *state)
            state, spk = out[1:], out[0]
            rec.append(spk)
        return torch.stack(rec)


def _synaptic(alpha, beta):
    return snn.Synaptic(alpha=alpha, beta=beta, reset_mechanism="zero", reset_delay=False)


@pytest.mark.parametrize("attr", ["alpha", "beta"])
def test_synaptic_decay_one_zero_reset_refused_in_one_line(attr):
    """snnTorch clamps a learned alpha / beta to 1; CubaLIF has no finite tau for it."""
    decays = {"alpha": 0.5, "beta": 0.5, attr: 1.0}
    net = OneLayer(_synaptic(**decays)).eval()
    graph = build_graph(net, torch.rand(2, 3))
    found = nir_export.blockers(graph, T)
    assert len(found) == 1 and f"{attr}=1" in found[0] and "clamp" in found[0]
    with pytest.raises(UnsupportedModelError, match=f"{attr}=1"):
        to_nir(graph, time_steps=T)


def test_synaptic_decay_next_to_one_is_exact():
    """The largest float32 decay below 1 is written as a finite tau that reads back to itself
    (it was clipped to 1 - 1e-7, and the decoder divided by zero on the candidate 1.0)."""
    from dpap_deploy.graph.nir_neurons import discretise
    near_one = float(np.nextafter(np.float32(1), np.float32(0)))
    torch.manual_seed(0)
    net = OneLayer(_synaptic(near_one, 0.75)).eval()
    with torch.no_grad():
        net.fc.weight.uniform_(0.1, 0.6)
    x = torch.rand(8, 3)
    nir_graph = to_nir(build_graph(net, x), time_steps=T)
    (node,) = [n for n in nir_graph.nodes.values() if type(n).__name__ == "CubaLIF"]
    d = discretise(node, 1e-4)
    assert np.all(d.alpha == np.float32(near_one)) and np.all(d.beta == np.float32(0.75))
    ref = snn_spikes(net, x)
    got = run_reference(nir_graph, x.numpy(), T).reshape(ref.shape)
    assert ref.mean() > 0.05
    np.testing.assert_array_equal(got, ref)


def test_leaky_mixed_beta_one_refusal_names_the_fix():
    beta = torch.tensor([0.9, 1.02, 0.8, 0.7])            # a learned beta drifted past 1
    net = OneLayer(snn.Leaky(beta=beta, learn_beta=True, reset_mechanism="zero")).eval()
    graph = build_graph(net, torch.rand(2, 3))
    found = nir_export.blockers(graph, T)
    assert len(found) == 1 and "1 of 4" in found[0] and "clamp" in found[0]
    with pytest.raises(UnsupportedModelError, match="keep every beta below 1"):
        to_nir(graph, time_steps=T)


# -- finding 4: functional pooling options -----------------------------------------------------

@pytest.mark.parametrize("fn, args, kwargs, module", [
    ("avg_pool2d", (3, 2, 1, False, False), {}, nn.AvgPool2d(3, 2, 1, False, False)),
    ("avg_pool2d", (3,), {"stride": 2, "padding": 1, "count_include_pad": False},
     nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False)),
    ("avg_pool2d", (2, 2, 0, True), {}, nn.AvgPool2d(2, 2, 0, True)),
    ("avg_pool2d", (2,), {"divisor_override": 3}, nn.AvgPool2d(2, divisor_override=3)),
    ("avg_pool2d", (2,), {"count_include_pad": False}, nn.AvgPool2d(2, count_include_pad=False)),
    ("max_pool2d", (2, 2, 0, 2), {}, nn.MaxPool2d(2, 2, 0, 2)),
    ("max_pool2d", (2,), {"dilation": 2, "ceil_mode": True},
     nn.MaxPool2d(2, dilation=2, ceil_mode=True)),
    ("max_pool2d", (3, 1, 1), {}, nn.MaxPool2d(3, 1, 1))])
def test_functional_pool_attrs_match_the_module(fn, args, kwargs, module):
    """A functional pool records what its module twin records, positional or keyword."""
    from dpap_deploy.graph.trace_ops import _pool_attrs, _pool_fn_attrs
    x = torch.zeros(1, 1, 8, 8)
    assert _pool_fn_attrs(fn, (x,) + args, kwargs) == _pool_attrs(module)


class SpikePool(nn.Module):
    """conv -> Leaky -> a functional pool of its spikes -> fc -> Leaky."""

    def __init__(self, pool, pooled: int):
        super().__init__()
        self.pool = pool
        self.conv = nn.Conv2d(1, 2, 3, padding=1)
        self.lif1 = snn.Leaky(beta=0.5, reset_mechanism="zero")
        self.fc = nn.Linear(2 * pooled * pooled, 3)
        self.lif2 = snn.Leaky(beta=0.5, reset_mechanism="zero", threshold=0.5)

    def forward(self, x):
        m1, m2 = self.lif1.reset_mem(), self.lif2.reset_mem()
        rec = []
        for _ in range(T):
            s1, m1 = self.lif1(self.conv(x), m1)
            s2, m2 = self.lif2(self.fc(self.pool(s1).flatten(1)), m2)
            rec.append(s2)
        return torch.stack(rec)


def _spike_pool(pool, pooled):
    torch.manual_seed(7)
    net = SpikePool(pool, pooled).eval()
    with torch.no_grad():
        net.conv.weight.mul_(2)
        net.fc.weight.mul_(4)
        net.fc.bias.fill_(0.3)
    return net


@pytest.mark.parametrize("pool, pooled, what", [
    (lambda s: F.avg_pool2d(s, 3, stride=2, padding=1, count_include_pad=False), 4,
     "count_include_pad"),
    (lambda s: F.avg_pool2d(s, 3, 2, 1, False, False), 4, "count_include_pad"),
    (lambda s: F.max_pool2d(s, 2, dilation=2), 3, "dilation"),
    (lambda s: F.max_pool2d(s, 2, 2, 0, 2), 3, "dilation")])
def test_inexact_functional_pools_are_refused_before_export(pool, pooled, what):
    net = _spike_pool(pool, pooled)
    graph = build_graph(net, torch.rand(2, 1, 8, 8))
    found = nir_export.blockers(graph, T)
    assert len(found) == 1 and what in found[0] and "use " in found[0]
    with pytest.raises(UnsupportedModelError, match=what):
        to_nir(graph, time_steps=T)


@pytest.mark.parametrize("pool, pooled", [
    (lambda s: F.avg_pool2d(s, 3, stride=2, padding=1), 4),          # padding counted: exact
    (lambda s: F.avg_pool2d(s, 2, count_include_pad=False), 4),       # no padding: plain mean
    (lambda s: F.max_pool2d(s, 2, 2, 0, 1), 4)])
def test_exact_functional_pools_export_exactly(pool, pooled):
    net = _spike_pool(pool, pooled)
    x = torch.rand(8, 1, 8, 8) * 2
    assert nir_export.blockers(build_graph(net, x), T) == []
    ref = snn_spikes(net, x)
    got = nir_spikes(net, x).reshape(ref.shape)
    assert 0.05 < ref.mean() < 0.95
    np.testing.assert_array_equal(got, ref)


# -- finding 5: a uniform CubaLIF fed by a biased Linear in Lava --------------------------------

class DeepSynaptic(nn.Module):
    """Three default ``nn.Linear`` (with bias) -> ``snn.Synaptic`` (zero reset, reset_delay=False,
    one alpha / beta per layer) layers in snnTorch's own loop."""

    def __init__(self):
        super().__init__()
        self.fc = nn.ModuleList([nn.Linear(10, 12), nn.Linear(12, 12), nn.Linear(12, 4)])
        self.lif = nn.ModuleList([snn.Synaptic(alpha=0.7, beta=0.8, reset_mechanism="zero",
                                               reset_delay=False) for _ in range(3)])

    def forward(self, x):
        state, rec = [None] * 3, []
        for _ in range(T):
            h = x
            for i in range(3):
                out = self.lif[i](self.fc[i](h)) if state[i] is None else \
                    self.lif[i](self.fc[i](h), *state[i])
                state[i], h = out[1:], out[0]
            rec.append(h)
        return torch.stack(rec)


def _deep_synaptic():
    torch.manual_seed(9)
    net = DeepSynaptic().eval()
    with torch.no_grad():
        for fc in net.fc:
            fc.weight.mul_(3)
            fc.bias.uniform_(-0.3, 0.6)
    return net


def test_uniform_cubalif_after_a_biased_linear_runs_in_lava_exactly():
    from dpap_deploy.exporters import lava_sim
    from dpap_deploy.exporters.nir_to_lava import LavaNetwork
    net = _deep_synaptic()
    x = torch.rand(6, 10) * 3
    graph = build_graph(net, x)
    assert lava_sim.blockers(graph, T) == []
    nir_graph = to_nir(graph, time_steps=T)
    lava = LavaNetwork(nir_graph, T)
    assert all(p["own"] for p in lava.neuron.values())      # the bias goes into the current
    ref = snn_spikes(net, x)
    got = lava.run(x.numpy()).reshape(ref.shape)
    assert ref.mean() > 0.1
    np.testing.assert_array_equal(got, ref)


def test_a_refused_cubalif_bias_is_one_message(monkeypatch):
    """Where Lava's LIFReset still meets a biased CubaLIF, the bias is refused once, not again
    as 'a bias that feeds a node that is not a neuron'."""
    from dpap_deploy.exporters import lava_groups
    from dpap_deploy.exporters.nir_to_lava import blockers as lava_blockers
    monkeypatch.setattr(lava_groups, "_biased_input", lambda top, name: False)
    nir_graph = to_nir(build_graph(_deep_synaptic(), torch.rand(2, 10)), time_steps=T)
    found = lava_blockers(nir_graph, T)
    assert len(found) == 3 and all("receives the bias" in f for f in found), found


# -- finding 7: compacted copies in snnTorch's registry ----------------------------------------

def _hidden_seq():
    return nn.Sequential(nn.Linear(12, 16), snn.Leaky(beta=0.8, init_hidden=True),
                         nn.Linear(16, 4), snn.Leaky(beta=0.8, init_hidden=True, output=True))


@pytest.fixture
def own_registry(monkeypatch):
    """A registry of this test's neurons only: snnTorch's is process-wide, and a neuron another
    test made (a DeltaLeaky keeps mem = None) makes snntorch.utils.reset fail for everyone."""
    monkeypatch.setattr(snn.SpikingNeuron, "instances", [])


def _registered() -> list:
    """The live entries of snnTorch's registry (freed copies leave ``None``)."""
    return [x for x in snn.SpikingNeuron.instances if x is not None]


def test_dropped_compacted_copies_leave_the_registry(own_registry):
    """Five compact() calls whose results are dropped (a baseline's bisection probes) keep
    nothing in snnTorch's registry: 2 neurons each were kept alive forever."""
    import gc
    from dpap_deploy.compaction import compact
    torch.manual_seed(0)
    net, x = _hidden_seq().eval(), torch.rand(3, 12)
    gc.collect()
    before = len(_registered())
    for _ in range(5):
        compact(net, x, time_steps=T)
    gc.collect()
    assert len(_registered()) == before
    from snntorch import utils
    utils.reset(net)                      # freed entries do not trouble snnTorch's reset


def test_held_compacted_copy_is_reset_by_snntorch_and_probe_copies_can_opt_out(own_registry):
    import gc
    from snntorch import utils
    from dpap_deploy.compaction import compact
    from dpap_deploy.graph.state import is_registered
    torch.manual_seed(0)
    net, x = _hidden_seq().eval(), torch.rand(3, 12)
    assert all(is_registered(m) for m in net.modules() if isinstance(m, snn.SpikingNeuron))
    small = compact(net, x, time_steps=T).model
    for _ in range(3):                    # other copies come and go meanwhile
        compact(net, x, time_steps=T)
    gc.collect()
    neurons = [m for m in small.modules() if isinstance(m, snn.SpikingNeuron)]
    assert all(is_registered(m) for m in neurons)
    with torch.no_grad():
        small(x * 5)
    assert any(float(m.mem.abs().sum()) > 0 for m in neurons)
    utils.reset(small)
    assert all(float(m.mem.abs().sum()) == 0 for m in neurons)
    probe = compact(net, x, time_steps=T, register=False).model
    probe_neurons = [m for m in probe.modules() if isinstance(m, snn.SpikingNeuron)]
    assert not any(is_registered(m) for m in probe_neurons)


def test_multistep_executor_pools_with_every_recorded_option():
    """The multi-step executor runs a functional max pool with dilation and an average pool
    that divides by the window's real size at a padded edge as the step loop does (it dropped
    both options: a shape error for the dilation, other values for the average)."""
    import torch.nn.functional as F
    from torch import nn

    from dpap_deploy.executor import MultiStep
    from dpap_deploy.executor.run import outputs
    from dpap_deploy.graph import build_graph

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 4, 3, padding=1)
            self.lif1 = snn.Leaky(beta=0.8, init_hidden=True)
            self.fc = nn.Linear(4 * 3 * 3, 3)
            self.lif2 = snn.Leaky(beta=0.8, init_hidden=True)

        def forward(self, x):
            cur = F.avg_pool2d(self.conv(x), 3, 1, 1, False, False)   # count_include_pad=False
            s = F.max_pool2d(self.lif1(cur), 2, dilation=2)            # 8x8 -> 3x3
            return self.lif2(self.fc(s.flatten(1)))

    torch.manual_seed(0)
    model = Net().eval()
    with torch.no_grad():
        model.conv.weight.mul_(6.0)
        model.conv.bias.fill_(0.3)
        model.fc.weight.mul_(8.0)
    x = torch.rand(6, 1, 8, 8)
    graph = build_graph(model, x)
    assert MultiStep.supports(graph)
    fast = outputs(graph, x, 5)
    slow = outputs(graph, x, 5, multistep=False)
    assert torch.equal(fast, slow) and 0 < int(slow.sum()) < slow.numel()
