"""Average pooling folds into synapses in compaction's deployment network, spike for spike.

A ``k x k`` conv (stride ``S``) followed by a ``p x p`` mean with stride ``s`` is one conv of
kernel ``(p - 1) S + k`` and stride ``S s`` (``compaction.fold_pools``). The folded network sums
the same products in another order, with each composed weight rounded once to float32, so its
currents differ from the unfolded ones by float32 rounding only: here at most ``CUR_RTOL = 1e-5``
of the largest current (measured: ~1e-7), and every neuron's spike train is identical on the
test inputs (checked per hidden layer, with a test that the layers are active). Pools that do
not fold exactly stay in the network, with a one-line reason.
"""
from __future__ import annotations

import pytest
import snntorch as snn
import torch
import torch.nn.functional as F
from torch import nn

from dpap_deploy.compaction import fold_for_deployment
from dpap_deploy.compaction.fold_pools import PoolFold, fold_avgpool
from dpap_deploy.errors import UnsupportedModelError
from dpap_deploy.graph import build_graph
from dpap_deploy.graph.model_graph import POOL

T, N, CUR_RTOL = 4, 48, 1e-5


def _leaky(**kw):
    return snn.Leaky(beta=0.7, **kw)


class Tutorial6(nn.Module):
    """snnTorch tutorial 6's class with average pooling over currents, as functional calls:
    ``lif(F.avg_pool2d(conv(x), 2))``; the second pool is rectangular and overlapping
    (kernel (2, 3), stride (2, 2)) after a padded conv."""

    def __init__(self, pool=F.avg_pool2d, reset="subtract"):
        super().__init__()
        self.pool = pool
        self.conv1, self.lif1 = nn.Conv2d(1, 6, 5), _leaky(reset_mechanism=reset)
        self.conv2, self.lif2 = nn.Conv2d(6, 8, 3, padding=1), _leaky(reset_mechanism=reset)
        self.fc1, self.lif3 = nn.Linear(8 * 3 * 2, 10), _leaky(reset_mechanism=reset)

    def forward(self, x):
        m1, m2, m3 = self.lif1.init_leaky(), self.lif2.init_leaky(), self.lif3.init_leaky()
        out = []
        for _ in range(T):
            s1, m1 = self.lif1(self.pool(self.conv1(x), 2), m1)
            s2, m2 = self.lif2(self.pool(self.conv2(s1), (2, 3), stride=(2, 2)), m2)
            s3, m3 = self.lif3(self.fc1(s2.flatten(1)), m3)
            out.append(s3)
        return torch.stack(out)


def _modules_net(reset="subtract"):
    """Module pools: over currents after a strided, padded conv with BatchNorm (rectangular,
    overlapping), and over spikes into a Linear."""
    return nn.Sequential(
        nn.Conv2d(1, 6, 3, stride=2, padding=2), nn.BatchNorm2d(6), nn.AvgPool2d((2, 3), (2, 1)),
        _leaky(init_hidden=True, reset_mechanism=reset), nn.AvgPool2d(2), nn.Flatten(),
        nn.Linear(6 * 2 * 3, 10), _leaky(init_hidden=True, reset_mechanism=reset))


def _conv1d_net():
    """A ``Conv1d`` and an overlapping ``AvgPool1d`` over its currents."""
    return nn.Sequential(nn.Conv1d(2, 8, 3, padding=1), nn.AvgPool1d(3, 2),
                         _leaky(init_hidden=True), nn.Flatten(), nn.Linear(8 * 13, 10),
                         _leaky(init_hidden=True))


@torch.no_grad()
def _trained_like(model: nn.Module, seed: int) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Linear)):
            m.weight.copy_(torch.randn(m.weight.shape, generator=g) * 1.5 / m.weight[0].numel()
                           ** 0.5)
            m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.2)
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
            m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
    return model.eval()


def _x(shape=(1, 16, 16), seed=0):
    return torch.rand(N, *shape, generator=torch.Generator().manual_seed(seed)) * 2


@torch.no_grad()
def _record(model: nn.Module, x: torch.Tensor, steps_per_call: bool):
    """Every neuron's spikes per step and every neuron's input current, by module name."""
    spikes, currents, hooks = {}, {}, []
    for name, m in model.named_modules():
        if isinstance(m, snn.SpikingNeuron):
            def hook(mod, inp, out, name=name):
                spikes.setdefault(name, []).append((out[0] if isinstance(out, tuple)
                                                    else out).clone())
                currents.setdefault(name, []).append(inp[0].clone())
            hooks.append(m.register_forward_hook(hook))
    try:
        if steps_per_call:
            model(x)
        else:
            from snntorch import utils
            utils.reset(model)
            for _ in range(T):
                model(x)
    finally:
        for h in hooks:
            h.remove()
    return ({k: torch.stack(v) for k, v in spikes.items()},
            {k: torch.stack(v) for k, v in currents.items()})


def _same_spikes_and_close_currents(model, folded, x, own_loop: bool, neurons: int):
    s0, c0 = _record(model, x, own_loop)
    s1, c1 = _record(folded, x, own_loop)
    assert s0.keys() == s1.keys() and len(s0) == neurons
    for name in s0:
        rate = float(s0[name].mean())
        assert 0.02 < rate < 0.9, f"{name} fires at {rate:.3f}: the check would be empty"
        assert torch.equal(s0[name], s1[name]), \
            f"{name}: {int((s0[name] != s1[name]).sum())} of {s0[name].numel()} spikes differ"
        scale = float(c0[name].abs().max())
        assert float((c0[name] - c1[name]).abs().max()) <= CUR_RTOL * scale, name


def _pools(graph):
    return [n for n in graph.nodes if n.op == POOL]


def test_functional_pools_over_currents_fold_spike_for_spike():
    model, x = _trained_like(Tutorial6(), 1), _x()
    folded, fgraph = fold_for_deployment(model, x, time_steps=T)   # checks the output spikes
    assert _pools(fgraph) == []
    assert folded.conv1.kernel_size == (6, 6) and folded.conv1.stride == (2, 2)
    assert folded.conv2.kernel_size == (4, 5) and folded.conv2.stride == (2, 2)
    assert folded.conv2.padding == (1, 1)
    assert torch.equal(folded.conv1.bias, model.conv1.bias)
    _same_spikes_and_close_currents(model, folded, x, own_loop=True, neurons=3)
    # the user's own model is untouched: its forward still pools
    assert len(_pools(build_graph(model, x[:2]))) == 2 and type(model) is Tutorial6
    # the folded copy is still the user's class, runs again, deep-copies
    import copy
    assert isinstance(folded, Tutorial6)
    again = copy.deepcopy(folded)
    assert torch.equal(again(x), folded(x))


@pytest.mark.parametrize("build,shape,folded_into,kernel,stride", [
    (_modules_net, (1, 16, 16), {"2": "0", "4": "6"}, (5, 7), (4, 2)),
    (_conv1d_net, (2, 28), {"1": "0"}, (5,), (2,)),
], ids=["2d-strided-bn-rectangular-and-over-spikes", "conv1d"])
def test_module_pools_fold_spike_for_spike(build, shape, folded_into, kernel, stride):
    from dpap_deploy.compaction.compact import copy_with_graph
    from dpap_deploy.compaction.fold import fold_batchnorm
    model, x = _trained_like(build(), 2), _x(shape)
    folded, fgraph = copy_with_graph(model, build_graph(model, x[:2]))
    fold_batchnorm(folded, fgraph)
    record = PoolFold()
    fgraph = fold_avgpool(folded, build_graph(folded, x[:2]), x[:2], record)
    assert _pools(fgraph) == [] and record.kept == {} and record.folded == folded_into
    assert folded[0].kernel_size == kernel and folded[0].stride == stride
    _same_spikes_and_close_currents(model, folded, x, own_loop=False, neurons=2)
    fold_for_deployment(model, x, time_steps=T)          # the package's own output check


@pytest.mark.parametrize("pool,side,kept", [
    (nn.AvgPool2d(2, ceil_mode=True), 7, "ceil_mode=True on the 13x13 map"),
    (nn.AvgPool2d(2, padding=1), 7, "padding (1, 1)"),
    (nn.AvgPool2d(2, divisor_override=3), 6, "divisor_override=3"),
], ids=["ceil-partial-window", "padding", "divisor"])
def test_a_pool_that_does_not_fold_exactly_stays_with_a_one_line_reason(pool, side, kept):
    model = _trained_like(nn.Sequential(nn.Conv2d(1, 4, 4), pool, _leaky(init_hidden=True),
                                        nn.Flatten(), nn.Linear(4 * side * side, 10),
                                        _leaky(init_hidden=True)), 3)
    x = _x()
    folded, fgraph = fold_for_deployment(model, x, time_steps=T)   # compaction goes on
    assert isinstance(folded[1], nn.AvgPool2d) and len(_pools(fgraph)) == 1
    record = PoolFold()
    fold_avgpool(folded, fgraph, x[:2], record)
    (reason,) = record.kept.values()
    assert kept in reason and "\n" not in reason and "to fold it into the synapse" in reason
    with pytest.raises(UnsupportedModelError, match="cannot fold AvgPool2d '1'"):
        fold_avgpool(folded, fgraph, x[:2], strict=True)


def test_ceil_mode_folds_where_the_windows_tile_the_map():
    model = _trained_like(nn.Sequential(nn.Conv2d(1, 4, 3), nn.AvgPool2d(2, ceil_mode=True),
                                        _leaky(init_hidden=True), nn.Flatten(),
                                        nn.Linear(4 * 7 * 7, 10), _leaky(init_hidden=True)), 4)
    folded, fgraph = fold_for_deployment(model, _x(), time_steps=T)
    assert _pools(fgraph) == [] and folded[0].stride == (2, 2)


# ------------------------------------------------------------------ netx
def test_netx_blockers_are_a_structure_only_pass_with_the_same_reasons():
    from dpap_deploy.exporters.netx_plan import plan
    spikes_into_padded_conv = nn.Sequential(
        nn.Conv2d(1, 4, 3), _leaky(init_hidden=True, reset_mechanism="zero"), nn.AvgPool2d(2),
        nn.Conv2d(4, 4, 3, padding=1), _leaky(init_hidden=True, reset_mechanism="zero"),
        nn.Flatten(), nn.Linear(4 * 7 * 7, 10), _leaky(init_hidden=True, reset_mechanism="zero"))
    zero = [(Tutorial6(reset="zero"), _x()), (_modules_net("zero"), _x()),     # netx takes
            (spikes_into_padded_conv, _x())]
    models = zero + [(Tutorial6(F.max_pool2d), _x()), (_modules_net(), _x()),
              (nn.Sequential(nn.Conv2d(1, 4, 3), nn.AvgPool2d(2, padding=1), snn.Leaky(
                  beta=0.5, init_hidden=True), nn.Flatten(), nn.Linear(4 * 8 * 8, 3)), _x())]
    for model, x in models:
        graph = build_graph(model.eval(), x[:2])
        full = plan(graph, folded=False, weights=True)
        fast = plan(graph, folded=False)
        assert fast[1] == full[1]
        assert [(la.kind, la.in_shape, la.out_shape, la.stride, la.padding) for la in fast[0]] \
            == [(la.kind, la.in_shape, la.out_shape, la.stride, la.padding) for la in full[0]]
        assert all(la.weight is None or la.weight.dtype == torch.float32 for la in fast[0])
        if (model, x) in zero:
            assert full[1] == [] and [la.kind for la in full[0]] in (
                ["conv", "conv", "flatten", "dense"], ["conv", "flatten", "dense"])
            assert any(la.padding != (0, 0) for la in full[0]) or (model, x) != zero[2]


@pytest.mark.parametrize("cls", ["LeakyForSynaptic", "LeakyForAlpha", "LeakyForLapicque"])
def test_netx_takes_make_deployables_leaky_replacements(cls, monkeypatch):
    # snnTorch registers every neuron for good, and a DeltaLeaky keeps mem = None, which makes
    # snntorch.utils.reset fail for every later Leaky network: this test's neurons stay apart
    monkeypatch.setattr(snn.SpikingNeuron, "instances", list(snn.SpikingNeuron.instances))
    from dpap_deploy import convert_neurons
    from dpap_deploy.exporters.netx_neurons import neuron_reasons
    m = getattr(convert_neurons, cls)(beta=0.5, reset_mechanism="zero")
    assert neuron_reasons(m, "lif", (4,), conv=False) == []
    assert neuron_reasons(snn.Leaky(beta=0.5, reset_mechanism="zero"), "lif", (4,), False) == []
    delta = snn.DeltaLeaky(beta=0.5, reset_mechanism="zero")
    assert "is not a neuron netx computes" in neuron_reasons(delta, "lif", (4,), False)[0]


def test_netx_runs_the_folded_deploy_network_with_a_leaky_replacement_spike_for_spike(tmp_path):
    """End to end in the netx loader in Lava: tutorial 6's functional pool over currents folded
    by compaction (a ``PooledConv2d`` in the deploy copy), a ``LeakyForLapicque`` neuron."""
    from test_netx_forms import CurrentPool, T as NETX_T, _input

    from dpap_deploy.compaction.fold_pools import PooledConv2d
    from dpap_deploy.convert_neurons import LeakyForLapicque
    from dpap_deploy.exporters import ExportJob, export
    model, x = CurrentPool("avg-fn"), _input(16)
    model.lif1 = LeakyForLapicque(beta=0.5, reset_mechanism="zero")
    model = model.eval()
    folded, fgraph = fold_for_deployment(model, x, time_steps=NETX_T)
    assert isinstance(folded.conv1, PooledConv2d) and _pools(fgraph) == []
    job = ExportJob(model, "snn", x, torch.zeros(len(x), dtype=torch.long), NETX_T,
                    deploy=folded)
    res = export("netx", job, tmp_path)
    assert res.parity["identical_spike_trains"] == 1.0 and res.parity["n_samples"] == 16
    s, _ = _record(model, x, steps_per_call=True)
    assert 0.05 < float(s["lif1"].mean()) < 0.9 and float(s["lif2"].mean()) > 0


def test_functional_pools_fold_or_stay_one_by_one():
    """``F.avg_pool2d(..., ceil_mode=True)``: the first pool's windows tile its 12x12 map and
    it folds; the second's (kernel (2, 3), stride (2, 2) on 6x6) leave a partial column and it
    stays a call of the forward, with its reason, the network unchanged in function."""
    from functools import partial
    model, x = _trained_like(Tutorial6(partial(F.avg_pool2d, ceil_mode=True)), 1), _x()
    model.fc1 = _trained_like(nn.Linear(8 * 3 * 3, 10), 6)
    graph = build_graph(model, x[:2])
    from dpap_deploy.compaction.compact import copy_with_graph
    folded, fgraph = copy_with_graph(model, graph)
    record = PoolFold()
    fgraph = fold_avgpool(folded, fgraph, x[:2], record)
    assert list(record.folded.values()) == ["conv1"] and len(record.kept) == 1
    (reason,) = record.kept.values()
    assert "F.avg_pool2d" in reason and "ceil_mode=True on the 6x6 map" in reason
    assert [n.attrs["kernel"] for n in _pools(fgraph)] == [(2, 3)]
    _same_spikes_and_close_currents(model, folded, x, own_loop=True, neurons=3)
