"""Our NIR files read back by other readers, and the two neuron encodings of the writer.

- ``encoding="unit-r"`` (``r = 1``, input weights scaled by ``1 / g``) gives the same output
  spikes as the default ``"gain"`` encoding in our own readers (torch reference and Lava), on
  the zoo's digits SNN trained and compacted, and on a tutorial-style class.
- snnTorch's ``import_from_nir`` and nirtorch (``nir_to_torch`` with a hand-written node map)
  read our files and give exactly our output spikes. Their pitfalls (platform notes): snnTorch
  maps ``Flatten(start_dim=0)`` to ``nn.Flatten(0, -1)`` and keeps the membranes inside its
  modules, so it runs one sample at a time with the membranes cleared between samples;
  nirtorch 2.6's default ``Affine`` map leaves a random bias, so the map gives its own.
"""
from __future__ import annotations

import nir
import numpy as np
import pytest
import torch
from torch import nn

from corpus_models import STYLES, T as CORPUS_T, ResidualBlock, TutorialFC
from dpap_deploy.compaction import fold_for_deployment
from dpap_deploy.data import load_dataset
from dpap_deploy.errors import ConfigError, UnsupportedModelError
from dpap_deploy.exporters import ExportJob, export
from dpap_deploy.exporters._compare import torch_spikes
from dpap_deploy.exporters.nir_graph import DT, to_nir
from dpap_deploy.exporters.nir_torch import run_reference
from dpap_deploy.graph.nir_neurons import discretise
from dpap_deploy.pipeline import compact
from dpap_deploy.serialize import load_model
from dpap_deploy.training import TrainConfig, train

N_READ = 40      # samples the foreign readers run (one at a time for snnTorch)


@pytest.fixture(scope="module")
def compacted(tmp_path_factory):
    """The zoo's digits SNN, trained 3 epochs with DPAP (nothing pruned yet) and compacted:
    ``(compacted model, x_test, y_test, T)``."""
    out = tmp_path_factory.mktemp("digits")
    torch.manual_seed(0)
    train(TrainConfig(epochs=3), out, progress=False)
    compact(out, out)
    model, _, meta = load_model(out / "compact.pt")
    d = load_dataset("digits")
    return model, d.x_test, d.y_test, meta["time_steps"]


@pytest.fixture(scope="module")
def digits(compacted):
    """The compacted digits SNN with BatchNorm folded, pooling kept (what ``--target nir``
    writes): ``(model graph, test inputs, T)``."""
    model, x, _, T = compacted
    _, folded = fold_for_deployment(model, x[:64], time_steps=T, fold_pools=False)
    return folded, x, T


@pytest.fixture(scope="module")
def tutorial():
    """snnTorch tutorial 5's class (own time loop, reset to zero), weights doubled so that
    both layers spike on the digits inputs."""
    torch.manual_seed(1)
    net = TutorialFC("zero").eval()
    with torch.no_grad():
        for fc in (net.fc1, net.fc2):
            fc.weight.mul_(2.0)
    return net, load_dataset("digits").x_test[:200], 4


def _written(model, x, T, encoding, tmp_path) -> nir.NIRGraph:
    """The graph as a reader sees it: written with nir.write, read with nir.read."""
    path = tmp_path / f"{encoding}.nir"
    nir.write(str(path), to_nir(model, x[:2], T, encoding=encoding))
    return nir.read(str(path))


def _ours(graph, x, T) -> np.ndarray:
    out = run_reference(graph, x.numpy(), T)
    return out.reshape(len(x), T, -1)


@pytest.mark.parametrize("which", ["digits", "tutorial"])
def test_unit_r_gives_the_same_spikes_as_gain(which, request, tmp_path):
    model, x, T = request.getfixturevalue(which)
    gain = _ours(_written(model, x, T, "gain", tmp_path), x, T)
    unit = _ours(_written(model, x, T, "unit-r", tmp_path), x, T)
    assert gain.sum() > 100                      # the outputs really spike
    assert np.array_equal(gain, unit)
    if which == "digits":                        # and both are the model's own spikes
        assert np.array_equal(gain, torch_spikes(model, x, T))


def test_unit_r_file_has_r_one_and_scaled_weights(digits, tmp_path):
    model, x, T = digits
    gain, unit = (_written(model, x, T, e, tmp_path) for e in ("gain", "unit-r"))
    assert gain.metadata["neuron_encoding"] == "gain"
    assert unit.metadata["neuron_encoding"] == "unit-r"
    lifs = [k for k, n in unit.nodes.items() if isinstance(n, nir.LIF)]
    assert len(lifs) == 4
    for k in lifs:
        assert np.all(unit.nodes[k].r == 1.0)
        assert np.allclose(gain.nodes[k].r * DT / gain.nodes[k].tau, 1.0, atol=1e-6)
        assert np.array_equal(unit.nodes[k].v_threshold, gain.nodes[k].v_threshold)
    # the synapse feeding the first LIF: rows multiplied by 1/g = tau/dt = 1/(1 - 0.2) = 1.25
    # (the zoo's LIF: v' = 0.2 v + I)
    feeder = next(s for s, d in unit.edges if d == lifs[0])
    ratio = unit.nodes[feeder].weight / np.where(gain.nodes[feeder].weight == 0, 1,
                                                 gain.nodes[feeder].weight)
    nz = gain.nodes[feeder].weight != 0
    assert np.allclose(ratio[nz], 1.25, rtol=1e-6)
    assert np.allclose(unit.nodes[feeder].bias, 1.25 * gain.nodes[feeder].bias, rtol=1e-6)


def test_unit_r_same_spikes_in_lava(digits, tmp_path):
    pytest.importorskip("lava")
    from dpap_deploy.exporters.nir_to_lava import LavaNetwork
    model, x, T = digits
    xs = x[:N_READ]
    got = LavaNetwork(_written(model, xs, T, "unit-r", tmp_path), T).run(xs.numpy())
    assert np.array_equal(got.reshape(len(xs), T, -1), torch_spikes(model, xs, T))


def test_the_nir_target_writes_the_jobs_encoding(compacted, tmp_path):
    """``ExportJob.nir_encoding = "unit-r"``, ``nir_pooling = "sum"``: the written file holds
    them and passes parity."""
    model, x, y, T = compacted
    job = ExportJob(model, "snn", x, y, T)
    job.nir_encoding, job.nir_pooling = "unit-r", "sum"
    res = export("nir", job, tmp_path)
    assert res.passed and res.parity["identical_spike_trains"] == 1.0
    assert res.details["neuron_encoding"] == "unit-r" and res.details["pooling"] == "sum"
    graph = nir.read(str(tmp_path / "network.nir"))
    assert graph.metadata["neuron_encoding"] == "unit-r"
    assert sum(isinstance(n, nir.SumPool2d) for n in graph.nodes.values()) == 2
    assert all(np.all(n.r == 1.0) for n in graph.nodes.values() if isinstance(n, nir.LIF))


UNIT_R_STYLES = [s for s in STYLES if s.expect.get("nir") == "ok" and s.name != "residual-block"]


@pytest.mark.parametrize("pooling", ["avg", "sum"])
@pytest.mark.parametrize("style", UNIT_R_STYLES, ids=lambda s: s.name)
def test_unit_r_and_sum_pooling_match_gain_on_the_corpus(style, pooling):
    """Every exportable corpus style (IF, CubaLIF, RLeaky's recurrent weight, per-neuron beta,
    Conv1d, a pooling between synapse and neuron, folded BatchNorm) reads back the same."""
    torch.manual_seed(0)
    model = style.build().eval()
    x = torch.rand(64, *style.in_shape) * 3
    run = lambda **kw: run_reference(to_nir(model, x[:2], CORPUS_T, **kw), x.numpy(),  # noqa: E731
                                     CORPUS_T)
    assert np.array_equal(run(), run(encoding="unit-r", pooling=pooling))
    assert np.array_equal(run(), run(pooling=pooling))


def test_sum_pooling_moves_the_average_into_the_next_weights(digits, tmp_path):
    """The digits file with SumPool2d: the synapses after the two 2x2 pools hold 1/4 of the
    weights, biases unchanged, and the spikes are the model's."""
    model, x, T = digits
    avg = to_nir(model, x[:2], T)
    path = tmp_path / "sum.nir"
    nir.write(str(path), to_nir(model, x[:2], T, pooling="sum"))
    summed = nir.read(str(path))
    kinds = [type(n).__name__ for n in summed.nodes.values()]
    assert kinds.count("SumPool2d") == 2 and "AvgPool2d" not in kinds
    after = [d for s, d in summed.edges if isinstance(summed.nodes[s], nir.SumPool2d)]
    after = [d if not isinstance(summed.nodes[d], nir.Flatten) else
             next(d2 for s2, d2 in summed.edges if s2 == d) for d in after]
    for name in after:
        assert np.array_equal(summed.nodes[name].weight, avg.nodes[name].weight / 4)
        assert np.array_equal(summed.nodes[name].bias, avg.nodes[name].bias)
    assert np.array_equal(_ours(summed, x, T), torch_spikes(model, x, T))


def test_unit_r_refuses_an_input_it_cannot_scale(tmp_path):
    """A residual sum feeds a neuron straight from another neuron: no weight to scale."""
    model = ResidualBlock().eval()
    x = torch.rand(2, 1, 8, 8)
    to_nir(model, x, 4, encoding="gain")                       # the default still exports
    with pytest.raises(UnsupportedModelError, match="encoding='gain'"):
        to_nir(model, x, 4, encoding="unit-r")
    with pytest.raises(ConfigError, match="gain, unit-r"):
        to_nir(model, x, 4, encoding="r1")
    with pytest.raises(ConfigError, match="avg, sum"):
        to_nir(model, x, 4, pooling="max")


def _snntorch_spikes(graph: nir.NIRGraph, x: torch.Tensor, T: int) -> np.ndarray:
    """snnTorch's ``import_from_nir``, one sample at a time, membranes cleared between them."""
    from snntorch.import_nir import import_from_nir
    net = import_from_nir(graph)
    out = []
    for sample in x:
        for m in net.modules():
            if hasattr(m, "reset_hidden"):
                m.reset_hidden()
        steps = []
        for _ in range(T):
            y = net(sample)
            y = y[0] if isinstance(y, tuple) else y
            steps.append(y.detach().reshape(-1).numpy())
        out.append(np.stack(steps))
    return np.stack(out)


@pytest.mark.parametrize("encoding", ["gain", "unit-r"])
def test_snntorch_import_from_nir_reads_our_file_exactly(digits, encoding, tmp_path):
    model, x, T = digits
    xs = x[:N_READ]
    graph = _written(model, xs, T, encoding, tmp_path)
    ours = _ours(graph, xs, T)
    assert ours.sum() > 100
    assert np.array_equal(_snntorch_spikes(graph, xs, T), ours)


class _NIRLIF(nn.Module):
    """NIR's LIF / IF node, ``v[t] = beta v[t-1] + g I[t]``, spike when ``v > v_th``, then
    ``v = v_reset`` (the constants of ``nir_neurons.discretise``); nirtorch passes the state."""

    def __init__(self, node: nir.NIRNode):
        super().__init__()
        d = discretise(node, DT)
        self.beta = torch.as_tensor(d.beta)
        self.gain = None if d.gain is None else torch.as_tensor(d.gain)
        self.vth = torch.as_tensor(d.v_threshold)
        self.vreset = torch.as_tensor(d.v_reset)

    def forward(self, x, state=None):
        v = torch.zeros_like(x) if state is None else state
        v = self.beta * v + (x if self.gain is None else self.gain * x)
        spk = (v > self.vth).float()
        return spk, torch.where(spk > 0, self.vreset, v)


def _affine(node: nir.Affine) -> nn.Linear:
    lin = nn.Linear(node.weight.shape[1], node.weight.shape[0])
    lin.weight.data, lin.bias.data = torch.from_numpy(node.weight), torch.from_numpy(node.bias)
    return lin


NIRTORCH_MAP = {nir.Affine: _affine, nir.LIF: _NIRLIF, nir.IF: _NIRLIF,
                nir.Flatten: lambda n: nn.Flatten(1)}    # our files' start_dim=0 excludes the batch


@pytest.mark.parametrize("encoding", ["gain", "unit-r"])
def test_nirtorch_reads_our_file_exactly(digits, encoding, tmp_path):
    nirtorch = pytest.importorskip("nirtorch")
    model, x, T = digits
    xs = x[:N_READ * 5]
    graph = _written(model, xs, T, encoding, tmp_path)
    net = nirtorch.nir_to_torch(graph, NIRTORCH_MAP)
    state, steps = None, []
    for _ in range(T):
        y, state = net(xs) if state is None else net(xs, state)
        steps.append(y.detach().reshape(len(xs), -1).numpy())
    got = np.stack(steps, axis=1)
    assert np.array_equal(got, _ours(graph, xs, T))
    assert np.array_equal(got, torch_spikes(model, xs, T))


# ------------------------------------------- factors moved through a pool: fan-out, recurrence
def _hid():
    import snntorch as snn
    from dpap_deploy.neurons import rectangle
    return snn.Leaky(beta=0.8, spike_grad=rectangle(1.0), init_hidden=True,
                     reset_mechanism="zero")


class _PoolFeedsTwo(nn.Module):
    """A neuron follows the pool, and the pool also feeds a synapse (``fc2``)."""

    def __init__(self):
        super().__init__()
        self.conv, self.pool, self.lif1 = nn.Conv2d(1, 4, 3, padding=1), nn.AvgPool2d(2), _hid()
        self.fc1, self.fc2, self.lif2 = nn.Linear(64, 10), nn.Linear(64, 10), _hid()

    def forward(self, x):
        p = self.pool(self.conv(x))
        return self.lif2(self.fc1(self.lif1(p).flatten(1)) + self.fc2(p.flatten(1)))


class _ConvFeedsTwo(nn.Module):
    """A neuron follows the pool, and the synapse before the pool also feeds another neuron."""

    def __init__(self):
        super().__init__()
        self.conv, self.pool = nn.Conv2d(1, 4, 3, padding=1), nn.AvgPool2d(2)
        self.lif1, self.lif_b = _hid(), _hid()
        self.fc1, self.fc2, self.lif2 = nn.Linear(64, 10), nn.Linear(256, 10), _hid()

    def forward(self, x):
        c = self.conv(x)
        a, b = self.lif1(self.pool(c)), self.lif_b(c)
        return self.lif2(self.fc1(a.flatten(1)) + self.fc2(b.flatten(1)))


class _LinearFeedsTwo(nn.Module):
    """No pool: ``fc`` feeds a neuron and another synapse (``fc3``)."""

    def __init__(self):
        super().__init__()
        self.fc, self.lif1 = nn.Linear(64, 32), _hid()
        self.fc2, self.fc3, self.lif2 = nn.Linear(32, 10), nn.Linear(32, 10), _hid()

    def forward(self, x):
        h = self.fc(x.flatten(1))
        return self.lif2(self.fc2(self.lif1(h)) + self.fc3(h))


def _unchecked_graph(model, x, monkeypatch):
    """The traced graph of ``model`` without the prunable-layer pairing, which refuses a synapse
    whose way to its neuron branches: to_nir takes such a hand-made ``ModelGraph`` as it is."""
    from dpap_deploy.graph import build_graph
    monkeypatch.setattr("dpap_deploy.graph.trace.find_layers", lambda graph: [])
    return build_graph(model, x[:2])


@pytest.mark.parametrize("cls, node", [(_PoolFeedsTwo, "pool"), (_ConvFeedsTwo, "conv")])
def test_sum_pooling_refuses_a_moved_factor_that_would_reach_another_consumer(cls, node,
                                                                               monkeypatch):
    """Moving a sum pool's 1/(kh kw) into the synapse before it is exact only when that synapse
    and the pool feed nothing but the neuron; otherwise the other consumer would get it too."""
    torch.manual_seed(0)
    model = cls().eval()
    x = torch.rand(16, 1, 8, 8) * 3
    graph = _unchecked_graph(model, x, monkeypatch)
    avg = _ours(to_nir(graph, x[:2], 4), x, 4)                 # the average still exports
    assert avg.sum() > 0 and np.array_equal(avg, torch_spikes(graph, x, 4))
    with pytest.raises(UnsupportedModelError, match=rf"^'{node}' feeds .*pooling='avg'$"):
        to_nir(graph, x[:2], 4, pooling="sum")


def test_unit_r_refuses_a_scaled_synapse_that_feeds_another_node(monkeypatch):
    torch.manual_seed(0)
    model = _LinearFeedsTwo().eval()
    x = torch.rand(16, 1, 8, 8) * 3
    graph = _unchecked_graph(model, x, monkeypatch)
    gain = _ours(to_nir(graph, x[:2], 4), x, 4)
    assert gain.sum() > 0 and np.array_equal(gain, torch_spikes(graph, x, 4))
    with pytest.raises(UnsupportedModelError, match=r"^'fc' feeds 'fc3'.*encoding='gain'$"):
        to_nir(graph, x[:2], 4, encoding="unit-r")


class _PoolThenRecurrent(nn.Module):
    """Conv, 2x2 average pool, a one-to-one RLeaky (recurrent weight V = 0.5 per neuron)."""

    def __init__(self):
        super().__init__()
        import snntorch as snn
        from dpap_deploy.neurons import rectangle
        self.conv, self.pool = nn.Conv2d(1, 4, 3, padding=1), nn.AvgPool2d(2)
        self.rlif = snn.RLeaky(beta=0.8, V=0.5, all_to_all=False, init_hidden=True,
                               reset_mechanism="zero", reset_delay=False,
                               spike_grad=rectangle(1.0))
        self.fc, self.lif = nn.Linear(64, 10), _hid()

    def forward(self, x):
        return self.lif(self.fc(self.rlif(self.pool(self.conv(x))).flatten(1)))


def test_sum_pooling_leaves_the_recurrent_weight_of_a_neuron_after_the_pool(monkeypatch):
    """A recurrent neuron right after a pool: the pool's 1/4 goes into the conv before the pool,
    not into the recurrent weight, whose input (the neuron's own spikes) passes no pool. NIR's
    type check refuses this graph first (our one-to-one recurrent weight is a Linear over the
    flattened neurons, the pooled neurons are [C, H, W]), so the check is turned off here to
    reach the writer's scaling."""
    torch.manual_seed(0)
    model = _PoolThenRecurrent().eval()
    x = torch.rand(2, 1, 8, 8)
    with pytest.raises(UnsupportedModelError, match="type mismatch"):
        to_nir(model, x, 4)
    real = nir.NIRGraph
    monkeypatch.setattr(nir, "NIRGraph", lambda **kw: real(**kw, type_check=False))
    avg = to_nir(model, x, 4)
    eye = np.diag(np.full(64, 0.5, np.float32))
    assert np.array_equal(avg.nodes["rlif_rec"].weight, eye)
    summed = to_nir(model, x, 4, pooling="sum")
    assert isinstance(summed.nodes["pool"], nir.SumPool2d)
    assert np.array_equal(summed.nodes["conv"].weight, avg.nodes["conv"].weight / 4)
    assert np.array_equal(summed.nodes["conv"].bias, avg.nodes["conv"].bias / 4)
    assert np.array_equal(summed.nodes["rlif_rec"].weight, eye)
    # unit-r with the sum: the conv gets s / 4, the recurrent weight s alone
    unit = to_nir(model, x, 4, encoding="unit-r", pooling="sum")
    s = np.float32(1 / (1 - 0.8))
    assert np.allclose(unit.nodes["rlif_rec"].weight, eye * s, rtol=1e-6)
    assert np.allclose(unit.nodes["conv"].weight, avg.nodes["conv"].weight * s / 4, rtol=1e-6)
