"""Inputs with a time axis through export, counting and evaluation: an own-loop model reading
``x[step]`` of snnTorch's ``spikegen`` layout ``[T, B, 1, 8, 8]``, and one reading ``x[:, t]`` of
``[B, T, 1, 8, 8]``, exported with ``ExportJob(time_axis=...)`` to nir and loihi-sim (identical
spike trains on every sample, and Lava's spikes equal to the user's own loop); counting and
``compact_and_measure`` give the figures of the same data laid out batch first; a wrongly
stated axis is refused in one line."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import snntorch as snn
import torch
from snntorch import spikegen
from torch import nn

from dpap_deploy.compaction.measure import compact_and_measure
from dpap_deploy.counting import count_ops
from dpap_deploy.errors import ConfigError
from dpap_deploy.evaluation import evaluate_outputs
from dpap_deploy.exporters import lava_sim, netx_export, nir_export
from dpap_deploy.exporters.base import ExportJob
from dpap_deploy.graph import build_graph
from dpap_deploy.neurobench_defs import neurobench_metrics

T, N = 6, 12


class _Net(nn.Module):
    """conv 1->4 (3x3, padded) + Leaky, Linear 256->3 + Leaky; snnTorch's defaults (subtract
    reset). Subclasses run the user's own time loop in one of the two layouts."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.lif1 = snn.Leaky(beta=0.9)
        self.fc = nn.Linear(4 * 8 * 8, 3)
        self.lif2 = snn.Leaky(beta=0.9)

    def step(self, xt, mem1, mem2):
        spk1, mem1 = self.lif1(self.conv(xt), mem1)
        spk2, mem2 = self.lif2(self.fc(spk1.flatten(1)), mem2)
        return spk2, mem1, mem2


class TimeFirst(_Net):
    """snnTorch's tutorial loop over ``spikegen`` data ``[T, B, 1, 8, 8]``."""

    def forward(self, x):
        mem1, mem2 = self.lif1.init_leaky(), self.lif2.init_leaky()
        spk_rec = []
        for step in range(x.size(0)):
            spk2, mem1, mem2 = self.step(x[step], mem1, mem2)
            spk_rec.append(spk2)
        return torch.stack(spk_rec)


class BatchFirst(_Net):
    """The same network over event frames ``[B, T, 1, 8, 8]``."""

    def forward(self, x):
        mem1, mem2 = self.lif1.init_leaky(), self.lif2.init_leaky()
        spk_rec = []
        for t in range(x.size(1)):
            spk2, mem1, mem2 = self.step(x[:, t], mem1, mem2)
            spk_rec.append(spk2)
        return torch.stack(spk_rec)


@pytest.fixture(scope="module")
def nets():
    """Both models with the same weights (scaled so every layer spikes), the time-first data
    and its batch-first copy, labels."""
    torch.manual_seed(3)
    tf = TimeFirst()
    with torch.no_grad():
        tf.conv.weight.mul_(3.0)
        tf.fc.weight.mul_(3.0)
    tf.eval()
    bf = BatchFirst()
    bf.load_state_dict(tf.state_dict())
    bf.eval()
    x_tf = spikegen.rate(torch.rand(N, 1, 8, 8), num_steps=T)       # [T, N, 1, 8, 8]
    x_bf = x_tf.movedim(0, 1).contiguous()                           # [N, T, 1, 8, 8]
    y = torch.arange(N) % 3
    return tf, bf, x_tf, x_bf, y


def _own_loop(model, x, time_axis):
    """``[N, T, classes]`` spikes of the user's own forward, whatever its layout."""
    with torch.no_grad():
        out = model(x)                                                # [T, N, classes]
    return out.permute(1, 0, 2).numpy()


def test_own_loop_is_active(nets):
    tf, bf, x_tf, x_bf, _ = nets
    a, b = _own_loop(tf, x_tf, 0), _own_loop(bf, x_bf, 1)
    assert np.array_equal(a, b)
    assert 0 < a.mean() < 1                        # spikes, not silence or saturation


@pytest.mark.parametrize("layout", ["time-first", "batch-first"])
def test_nir_and_lava_exports_are_exact(nets, layout, tmp_path):
    tf, bf, x_tf, x_bf, y = nets
    model, x, axis = (tf, x_tf, 0) if layout == "time-first" else (bf, x_bf, 1)
    job = ExportJob(model, "snn", x, y, time_steps=T, time_axis=axis)
    res = nir_export.export(job, tmp_path)
    assert res.passed and res.parity["identical_spike_trains"] == 1.0, res.parity
    assert res.parity["n_samples"] == N
    job = ExportJob(model, "snn", x, y, time_steps=T, time_axis=axis)
    res = lava_sim.export(job, tmp_path)
    assert res.parity["identical_spike_trains"] == 1.0, res.parity
    assert res.parity["n_samples"] == N and res.details["lava_steps"] == N * T
    # Lava's spikes are those of the user's own loop (not only of the package's reference)
    from dpap_deploy.exporters.nir_export import read_nir
    from dpap_deploy.exporters.nir_to_lava import LavaNetwork
    net = LavaNetwork(read_nir(tmp_path / lava_sim.FILE, T), T)
    got = net.run(job.per_sample(x).numpy())
    assert np.array_equal(got.reshape(N, T, -1), _own_loop(model, x, axis))


def test_inferred_axis_and_sample_cut(nets):
    tf, _, x_tf, _, y = nets
    job = ExportJob(tf, "snn", x_tf, y, time_steps=T, max_samples=5)
    xs, ys = job.samples()                       # the axis is inferred before cutting
    assert job.time_axis == 0 and tuple(xs.shape) == (T, 5, 1, 8, 8) and len(ys) == 5


def test_wrong_axis_is_refused_in_one_line(nets, tmp_path):
    tf, bf, x_tf, x_bf, y = nets
    for model, x, wrong in ((tf, x_tf, 1), (bf, x_bf, 0)):
        with pytest.raises(ConfigError) as err:
            job = ExportJob(model, "snn", x, y[:x.shape[1 - wrong]], time_steps=x.shape[wrong],
                            time_axis=wrong)
            nir_export.export(job, tmp_path)
        assert "\n" not in str(err.value) and f"time_axis={1 - wrong}" in str(err.value)
    with pytest.raises(ConfigError) as err:           # labels counted along the time axis
        ExportJob(tf, "snn", x_tf, y, time_steps=T, time_axis=1)
    assert "\n" not in str(err.value)
    with pytest.raises(ConfigError) as err:           # the frames' T is not the run's
        ExportJob(tf, "snn", x_tf, y, time_steps=T + 1, time_axis=0)
    assert "\n" not in str(err.value) and f"{T} steps" in str(err.value)


def _rows(report):
    return [(r.name, r.synops, r.synops_dense, r.macs, r.macs_dense) for r in report.layers]


def test_counting_matches_batch_first(nets):
    tf, bf, x_tf, x_bf, y = nets
    a = count_ops(tf, x_tf, T, batch_size=5, graph=build_graph(tf, x_tf, time_axis=0))
    b = count_ops(bf, x_bf, T, batch_size=5)
    assert a.samples == b.samples == N
    assert _rows(a) == _rows(b)
    assert any(r[1] > 0 for r in _rows(a))       # spikes counted
    nb_a = neurobench_metrics(tf, x_tf, T, y=y)
    nb_b = neurobench_metrics(bf, x_bf, T, y=y)
    assert nb_a == nb_b and nb_a["measured_on"] == f"{N} test samples"
    dev = torch.device("cpu")
    assert evaluate_outputs(tf, x_tf, y, "snn", T, dev, batch_size=5, time_axis=0) == \
        evaluate_outputs(bf, x_bf, y, "snn", T, dev, batch_size=5, time_axis=1)


def test_compact_and_measure_matches_batch_first(nets):
    tf, bf, x_tf, x_bf, y = nets
    keep = torch.tensor([True, False, True, True])         # conv channel 1 pruned (masked)
    masks = {"conv": (keep[:, None].clone(), keep)}
    masked = []
    for model in (tf, bf):
        m = copy.deepcopy(model)
        with torch.no_grad():
            m.conv.weight[~keep] = 0.0
            m.conv.bias[~keep] = 0.0
            m.fc.weight.view(3, 4, 64)[:, ~keep] = 0.0
        masked.append(m)
    a = compact_and_measure(masked[0], "snn", masks, x_tf, y, T, time_axis=0)
    b = compact_and_measure(masked[1], "snn", masks, x_bf, y, T, time_axis=1)
    assert a.graph.time_axis == 0 and b.graph.time_axis == 1
    assert (a.accuracy_masked, a.accuracy_compact) == (b.accuracy_masked, b.accuracy_compact)
    assert _rows(a.masked_ops) == _rows(b.masked_ops)
    assert _rows(a.compact_ops) == _rows(b.compact_ops)
    assert a.params_compact == b.params_compact and a.params_compact[0] < a.params_dense[0]
    assert a.neurobench == b.neurobench and a.verified_on == N


def test_netx_export_of_a_time_first_input(nets, tmp_path):
    """netx (Loihi's CUBA neuron resets to zero): the same own loop with zero reset. netx
    runs 8-bit weights in fixed point, so a spike may move where a membrane sits within a
    quantisation step of the threshold: nearly all trains are identical, not all."""
    tf, _, x_tf, _, y = nets
    model = copy.deepcopy(tf)
    model.lif1 = snn.Leaky(beta=0.9, reset_mechanism="zero")
    model.lif2 = snn.Leaky(beta=0.9, reset_mechanism="zero")
    res = netx_export.export(ExportJob(model.eval(), "snn", x_tf, y, time_steps=T, time_axis=0),
                             tmp_path)
    assert res.passed and res.parity["identical_spike_trains"] >= 10 / 12, res.parity
    assert res.parity["agreement"] >= 10 / 12 and res.parity["n_samples"] == N


def test_netx_runs_flat_frames_one_per_step(tmp_path):
    """Frames of a flat input ``[N, T, F]`` for a one-step-per-call model: netx feeds frame
    ``t`` at step ``t`` (the schedule reads the input port's rank; a rank-3 input was taken as
    static samples of shape [T, F] before)."""
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(10, 12, bias=False), snn.Leaky(beta=0.9, init_hidden=True,
                                                                   reset_mechanism="zero"),
                          nn.Linear(12, 3, bias=False), snn.Leaky(beta=0.9, init_hidden=True,
                                                                  reset_mechanism="zero"))
    with torch.no_grad():
        model[0].weight.mul_(3.0)
        model[2].weight.mul_(3.0)
    x = spikegen.rate(torch.rand(N, 10), num_steps=T).transpose(0, 1).contiguous()  # [N, T, F]
    y = torch.arange(N) % 3
    res = netx_export.export(ExportJob(model.eval(), "snn", x, y, time_steps=T, time_axis=1),
                             tmp_path)
    assert res.passed and res.parity["identical_spike_trains"] >= 10 / 12, res.parity
    assert res.parity["output"]["silent_fraction"] < 1.0
