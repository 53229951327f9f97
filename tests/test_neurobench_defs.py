"""NeuroBench's definitions next to ours: by hand on a tiny layer, and against the neurobench
package itself when it is importable (``pip install --no-deps neurobench==2.3.0``)."""
import pytest
import snntorch as snn
import torch
from torch import nn

from dpap_deploy.neurobench_defs import footprint_bytes, neurobench_metrics

T = 4


def test_by_hand_on_one_linear_layer():
    lin = nn.Linear(3, 2)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[1.0, 0.0, 2.0], [0.0, 0.0, 3.0]]))
    model = nn.Sequential(lin)
    x = torch.tensor([[1.0, 5.0, 0.5], [0.0, 0.0, 1.0]])
    m = neurobench_metrics(model, x)
    # non-zero fan-out of the inputs: [1, 0, 2]; sample 0 has all three inputs non-zero
    # (1 + 0 + 2 = 3), sample 1 only the third (2): (3 + 2) / 2 MACs per sample, no ACs
    assert m["effective_macs"] == 2.5 and m["effective_acs"] == 0.0
    assert m["dense_ops"] == 6.0                       # 3 inputs x 2 outputs, all ones
    assert m["connection_sparsity"] == 3 / 6
    assert m["footprint_bytes"] == (6 + 2) * 4
    assert m["activation_sparsity"] == 0.0             # no activation layer: nothing counted


def _snn():
    torch.manual_seed(0)
    lif = lambda **k: snn.Leaky(beta=0.2, threshold=0.5, init_hidden=True, **k)  # noqa: E731
    net = nn.Sequential(nn.Conv2d(1, 6, 3, padding=1), lif(), nn.AvgPool2d(2),
                        nn.Conv2d(6, 8, 3, padding=1), lif(), nn.Flatten(),
                        nn.Linear(8 * 4 * 4, 20), lif(), nn.Linear(20, 3), lif(output=True))
    with torch.no_grad():
        net[6].weight[:, :40] = 0                      # connection sparsity to find
    return net


def _ann():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 6, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                         nn.Linear(6 * 3 * 3, 12), nn.ReLU(), nn.Linear(12, 3))


def _x(n=16):
    x = torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(1)) * 2
    x[:, :, :2] = 0                                    # zero pixels: skipped by NeuroBench
    return x


def _neurobench(model, data, spiking):
    """NeuroBench's own metrics of ``model``, freshly built (as a benchmark script runs it; a
    deep copy would escape the reset of snnTorch's neuron registry)."""
    Benchmark = pytest.importorskip("neurobench.benchmarks").Benchmark
    from neurobench.metrics.static import ConnectionSparsity, Footprint
    from neurobench.metrics.workload import (ActivationSparsity, ClassificationAccuracy,
                                             SynapticOperations)
    from neurobench.models import SNNTorchModel, TorchModel
    from neurobench.processors.postprocessors import ChooseMaxCount
    wrapped = SNNTorchModel(model) if spiking else TorchModel(model)
    loader = torch.utils.data.DataLoader(data, batch_size=8)
    post = [ChooseMaxCount()] if spiking else [lambda logits: logits.argmax(1)]
    bench = Benchmark(wrapped, loader, [], post, [[Footprint, ConnectionSparsity],
                                                  [SynapticOperations, ActivationSparsity,
                                                   ClassificationAccuracy]])
    return bench.run(quiet=True)


def _fresh_footprint(model) -> int:
    """NeuroBench's ``Footprint`` of ``model`` rebuilt from its state (nothing run yet)."""
    from neurobench.metrics.static import Footprint
    from neurobench.models import SNNTorchModel
    return Footprint()(SNNTorchModel(model))


def _labels(n=16):
    return torch.arange(n) % 3


def test_snn_against_neurobench():
    pytest.importorskip("neurobench")
    model, x, y = _snn(), _x(), _labels()
    frames = x.unsqueeze(1).expand(-1, T, -1, -1, -1)     # NeuroBench: [batch, time, ...]
    nb = _neurobench(_snn(), torch.utils.data.TensorDataset(frames, y), True)
    ours = neurobench_metrics(model, x, T, y=y)
    ops = nb["SynapticOperations"]
    assert ours["effective_acs"] == pytest.approx(ops["Effective_ACs"], rel=1e-9)
    assert ours["effective_macs"] == pytest.approx(ops["Effective_MACs"], rel=1e-9)
    assert ours["dense_ops"] == pytest.approx(ops["Dense"], rel=1e-9)
    assert ours["effective_macs"] > 0 and ours["effective_acs"] > 0
    assert ours["connection_sparsity"] == pytest.approx(nb["ConnectionSparsity"], abs=5e-5)
    assert ours["activation_sparsity"] == pytest.approx(nb["ActivationSparsity"], rel=1e-12)
    assert ours["footprint_bytes"] == nb["Footprint"] == 4 * sum(
        p.numel() for p in model.parameters()) + 4 * (3 * 4 + 8)  # 4 LIF: 3 float32, 1 int64 each
    assert ours["accuracy"] == pytest.approx(nb["ClassificationAccuracy"], abs=1e-7)


def test_ann_against_neurobench():
    pytest.importorskip("neurobench")
    model, x, y = _ann(), _x(), _labels()
    nb = _neurobench(_ann(), torch.utils.data.TensorDataset(x, y), False)
    ours = neurobench_metrics(model, x, y=y)
    ops = nb["SynapticOperations"]
    assert ours["effective_macs"] == pytest.approx(ops["Effective_MACs"], rel=1e-9)
    assert ours["effective_acs"] == ops["Effective_ACs"] == 0
    assert ours["activation_sparsity"] == pytest.approx(nb["ActivationSparsity"], rel=1e-12)
    assert ours["footprint_bytes"] == nb["Footprint"]
    assert ours["accuracy"] == pytest.approx(nb["ClassificationAccuracy"], abs=1e-7)


def test_footprint_does_not_depend_on_the_last_batch():
    """snnTorch keeps each neuron's state of the last batch in buffers ([batch, *shape]):
    NeuroBench, on a fresh model, does not see them, and neither does the footprint."""
    pytest.importorskip("neurobench")
    model = _snn()
    fresh = _fresh_footprint(_snn())
    small = neurobench_metrics(model, _x(2), T)["footprint_bytes"]
    big = neurobench_metrics(model, _x(300), T)["footprint_bytes"]
    state = sum(b.numel() * 4 for n, b in model.named_buffers() if n.endswith("mem"))
    assert small == big == fresh == footprint_bytes(model)
    assert state > 300 * 20 and fresh + state == sum(
        t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])


def test_tie_goes_to_the_lowest_class_in_neurobench_accuracy():
    """A silent SNN: every sample is a tie. NeuroBench's ChooseMaxCount answers class 0 (the
    label of 6 of 16 samples); ours answers nothing."""
    model = _snn()
    with torch.no_grad():
        model[8].weight.zero_()
        model[8].bias.fill_(-1.0)                          # the output layer never fires
    m = neurobench_metrics(model, _x(), T, y=_labels())
    assert m["accuracy"] == 6 / 16 and m["accuracy_ties_wrong"] == 0.0


def test_default_runs_compacted_model_against_neurobench(tmp_path):
    """The default run's network (snn-digits on the digits, 397 test samples) compacted: its
    footprint is NeuroBench's ``Footprint`` of compact.pt loaded fresh, not the 397-sample
    membrane buffers the compacted model holds after it was measured."""
    pytest.importorskip("neurobench")
    from dpap_deploy.compaction.measure import compact_and_measure
    from dpap_deploy.data import load_dataset
    from dpap_deploy.serialize import load_model, save_model
    from dpap_deploy.zoo import build_model
    data = load_dataset("digits")
    torch.manual_seed(0)
    model, kind = build_model("snn-digits", tuple(data.x_test.shape[1:]), data.n_classes)
    m = compact_and_measure(model, kind, None, data.x_test, data.y_test, 8)
    fp = m.neurobench["compact"]["footprint_bytes"]
    loaded, _, _ = load_model(save_model(tmp_path / "compact.pt", m.result.model, kind))
    held = sum(t.numel() * t.element_size() for t in m.result.model.buffers())
    assert fp == _fresh_footprint(loaded) == 4 * sum(p.numel() for p in loaded.parameters()) \
        + sum(b.numel() * b.element_size() for b in loaded.buffers())
    assert held > 397 * 1000 * 4 > fp                      # what was counted before
