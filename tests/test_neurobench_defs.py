"""NeuroBench's definitions next to ours: by hand on a tiny layer, and against the neurobench
package itself when it is importable (``pip install --no-deps neurobench==2.3.0``)."""
import pytest
import snntorch as snn
import torch
from torch import nn

from dpap_deploy.neurobench_defs import neurobench_metrics

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
    Benchmark = pytest.importorskip("neurobench.benchmarks").Benchmark
    from neurobench.metrics.static import ConnectionSparsity, Footprint
    from neurobench.metrics.workload import ActivationSparsity, SynapticOperations
    from neurobench.models import SNNTorchModel, TorchModel
    wrapped = SNNTorchModel(model) if spiking else TorchModel(model)
    loader = torch.utils.data.DataLoader(data, batch_size=8)
    bench = Benchmark(wrapped, loader, [], [], [[Footprint, ConnectionSparsity],
                                                [SynapticOperations, ActivationSparsity]])
    return bench.run(quiet=True)


def test_snn_against_neurobench():
    pytest.importorskip("neurobench")
    model, x = _snn(), _x()
    ours = neurobench_metrics(model, x, T)
    frames = x.unsqueeze(1).expand(-1, T, -1, -1, -1)     # NeuroBench: [batch, time, ...]
    nb = _neurobench(model, torch.utils.data.TensorDataset(frames, torch.zeros(len(x))), True)
    ops = nb["SynapticOperations"]
    assert ours["effective_acs"] == pytest.approx(ops["Effective_ACs"], rel=1e-9)
    assert ours["effective_macs"] == pytest.approx(ops["Effective_MACs"], rel=1e-9)
    assert ours["dense_ops"] == pytest.approx(ops["Dense"], rel=1e-9)
    assert ours["effective_macs"] > 0 and ours["effective_acs"] > 0
    assert ours["connection_sparsity"] == pytest.approx(nb["ConnectionSparsity"], abs=5e-5)
    assert ours["activation_sparsity"] == pytest.approx(nb["ActivationSparsity"], rel=1e-12)
    assert ours["footprint_bytes"] == nb["Footprint"]


def test_ann_against_neurobench():
    pytest.importorskip("neurobench")
    model, x = _ann(), _x()
    ours = neurobench_metrics(model, x)
    nb = _neurobench(model, torch.utils.data.TensorDataset(x, torch.zeros(len(x))), False)
    ops = nb["SynapticOperations"]
    assert ours["effective_macs"] == pytest.approx(ops["Effective_MACs"], rel=1e-9)
    assert ours["effective_acs"] == ops["Effective_ACs"] == 0
    assert ours["activation_sparsity"] == pytest.approx(nb["ActivationSparsity"], rel=1e-12)
    assert ours["footprint_bytes"] == nb["Footprint"]
