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
from dpap_deploy.exporters.nir_neurons import discretise
from dpap_deploy.exporters.nir_torch import run_reference
from dpap_deploy.pipeline import compact
from dpap_deploy.serialize import load_model
from dpap_deploy.training import TrainConfig, train

N_READ = 40      # samples the foreign readers run (one at a time for snnTorch)


@pytest.fixture(scope="module")
def compacted(tmp_path_factory):
    """The zoo's digits SNN, trained 3 epochs, DPAP-pruned and compacted:
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
