"""make_deployable behaves as an snnTorch model and leaves nothing half done: the converted
model is reset by ``snntorch.utils.reset`` and the user's model keeps its state; the
make-deployable command writes its --out whole or not at all; inputs with a time axis
(``[T, B, ...]``, ``[B, T, ...]``) are cut along their batch axis, never along time."""
from __future__ import annotations

import argparse

import pytest
import snntorch as snn
import torch
import torch.nn.functional as F
from snntorch import utils as snn_utils
from torch import nn

from dpap_deploy.convert import make_deployable
from dpap_deploy.errors import DPAPError, UnsupportedModelError
from dpap_deploy.executor.run import run_window
from dpap_deploy.graph import build_graph

T = 4


def _net():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.MaxPool2d(2),
                        snn.Leaky(beta=0.5, init_hidden=True), nn.Flatten(),
                        nn.Linear(4 * 3 * 3, 3), snn.Leaky(beta=0.5, init_hidden=True,
                                                           output=True))
    with torch.no_grad():
        net[0].weight.abs_().mul_(2)
        net[4].bias.fill_(0.3)
    return net


def _window(model, x):
    out = []
    for _ in range(T):
        o = model(x)
        out.append((o[0] if isinstance(o, tuple) else o).clone())
    return torch.stack(out)


@torch.no_grad()
def test_converted_model_is_reset_by_snntorch_and_the_users_model_keeps_its_state():
    net = _net()
    x, y = torch.rand(16, 1, 8, 8) * 2, torch.randint(0, 3, (16,))
    _window(net, x[:3])                            # the user's model holds a membrane
    before = {n: m.mem for n, m in net.named_modules() if isinstance(m, snn.Leaky)}
    assert all(float(v.abs().sum()) > 0 for v in before.values())
    res = make_deployable(net, x[:2], (x, y), targets=("nir",), epochs=0, time_steps=T,
                          max_samples=4)
    for name, m in net.named_modules():            # the same tensors, untouched
        if isinstance(m, snn.Leaky):
            assert m.mem is before[name] and float(m.mem.abs().sum()) > 0
    neurons = [m for m in res.model.modules() if isinstance(m, snn.SpikingNeuron)]
    assert len(neurons) == 2
    _window(res.model, x[:4])
    for m in neurons:
        m.mem = m.mem + 5.0                         # a membrane left from a previous window
    snn_utils.reset(res.model)
    assert all(float(m.mem.abs().max()) == 0 for m in neurons)
    graph = build_graph(res.model, x[:2])
    ref = run_window(graph, x[:4], T)               # from zero states (the package's loop)
    a = _window(res.model, x[:4])                   # the user's loop, window after window
    snn_utils.reset(res.model)
    b = _window(res.model, x[:4])
    assert float(a.sum()) > 0 and torch.equal(a, ref) and torch.equal(b, ref)


# ---- the make-deployable command -----------------------------------------------------------

@pytest.fixture(scope="module")
def run_folder(tmp_path_factory):
    from dpap_deploy import TrainConfig, pipeline
    run = tmp_path_factory.mktemp("src") / "run"
    pipeline.train(TrainConfig(model="snn-digits", dataset="digits", epochs=1, time_steps=4),
                   run, progress=False)
    return run


def _args(run, out, target="nir"):
    from dpap_deploy.convert_run import add_parser
    parser = argparse.ArgumentParser(prog="dpap-deploy")
    add_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(["make-deployable", str(run), "--target", target, "--out",
                              str(out), "--epochs", "1", "--max-samples", "8"])


def _tree(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) \
        if folder.exists() else None


@pytest.mark.parametrize("out_state", ["absent", "empty", "other files"])
def test_a_failure_after_fine_tuning_leaves_out_as_it_was(run_folder, tmp_path, monkeypatch,
                                                          out_state):
    from dpap_deploy import convert_tune, report
    from dpap_deploy.convert_run import run_command
    out = tmp_path / "deep" / "new" if out_state == "absent" else tmp_path / "new"
    if out_state != "absent":
        out.mkdir()
    if out_state == "other files":
        (out / "notes.txt").write_text("mine")
    before = _tree(out)
    tuned = []
    real_tune = convert_tune.fine_tune
    monkeypatch.setattr(convert_tune, "fine_tune",
                        lambda *a, **k: tuned.append(1) or real_tune(*a, **k))

    def broken(*_a, **_k):
        raise OSError("injected: the report could not be written")
    monkeypatch.setattr(report, "save_report", broken)   # the run's last file, after exports
    with pytest.raises(OSError, match="injected"):
        run_command(_args(run_folder, out))
    assert tuned, "the failure was injected after the fine-tuning"
    assert _tree(out) == before
    if out_state == "absent":            # the parent made for the staging folder is gone too
        assert not (tmp_path / "deep").exists()
    else:                                # no staging folder is left beside --out
        assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_the_run_is_moved_in_whole_beside_other_files(run_folder, tmp_path, capsys):
    from dpap_deploy.convert_run import run_command
    from dpap_deploy.trained import load_trained
    out = tmp_path / "new"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    run_command(_args(run_folder, out))
    assert "new run:" in capsys.readouterr().out
    assert {"notes.txt", "run.json", "checkpoint.pt", "report.json", "parity"} <= \
        {p.name for p in out.iterdir()}
    assert (out / "parity" / "nir" / "network.nir").is_file()
    assert (out / "notes.txt").read_text() == "mine"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    load_trained(out)


def test_a_model_a_run_cannot_record_is_refused_before_fine_tuning(tmp_path, monkeypatch):
    from dpap_deploy import TrainConfig, convert_tune, pipeline, zoo
    from dpap_deploy.convert_run import run_command
    from dpap_deploy.neurons import lif

    class FunctionalPool(nn.Module):
        def __init__(self, in_shape, n_classes):
            super().__init__()
            self.conv = nn.Conv2d(in_shape[0], 4, 3, padding=1)
            self.lif1 = lif()
            self.fc = nn.Linear(4 * 4 * 4, n_classes)
            self.lif2 = lif()

        def forward(self, x):
            s = self.lif1(F.max_pool2d(self.conv(x), 2))
            return self.lif2(self.fc(s.flatten(1)))
    monkeypatch.setitem(zoo.ZOO, "snn-fnpool-test",
                        zoo.ModelSpec("snn-fnpool-test", "snn", FunctionalPool, "F.max_pool2d"))
    run, out = tmp_path / "run", tmp_path / "new"
    pipeline.train(TrainConfig(model="snn-fnpool-test", dataset="digits", epochs=1,
                               time_steps=4), run, progress=False)

    def no_tuning(*_a, **_k):
        raise AssertionError("fine-tuned a model whose run folder would be refused")
    monkeypatch.setattr(convert_tune, "fine_tune", no_tuning)
    with pytest.raises(UnsupportedModelError, match="cannot record"):
        run_command(_args(run, out))
    assert not out.exists()


def test_check_reloaded_compares_reset_delay(tmp_path):
    from dpap_deploy.convert_run import check_reloaded
    a = nn.Sequential(nn.Linear(3, 2), snn.Synaptic(alpha=0.5, beta=0.5, reset_delay=True))
    b = nn.Sequential(nn.Linear(3, 2), snn.Synaptic(alpha=0.5, beta=0.5, reset_delay=False))
    check_reloaded(a, a, tmp_path)
    with pytest.raises(DPAPError, match="conversion of 1"):
        check_reloaded(a, b, tmp_path)


# ---- inputs with a time axis ---------------------------------------------------------------

class OwnLoop(nn.Module):
    """An own time loop reading ``x[step]`` (time first, snnTorch's ``spikegen`` layout) or
    ``x[:, step]`` (batch first), with a max pooling over currents (converted)."""

    def __init__(self, time_first: bool):
        super().__init__()
        self.time_first = time_first
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.lif1 = snn.Leaky(beta=0.9)
        self.fc = nn.Linear(4 * 3 * 3, 3)
        self.lif2 = snn.Leaky(beta=0.9)

    def forward(self, x):
        m1, m2 = self.lif1.init_leaky(), self.lif2.init_leaky()
        rec = []
        for step in range(x.size(0) if self.time_first else x.size(1)):
            xt = x[step] if self.time_first else x[:, step]
            s1, m1 = self.lif1(F.max_pool2d(self.conv(xt), 2), m1)
            s2, m2 = self.lif2(self.fc(s1.flatten(1)), m2)
            rec.append(s2)
        return torch.stack(rec)


@pytest.mark.parametrize("time_axis,stated", [(0, True), (0, False), (1, True)])
def test_own_loop_model_with_a_time_axis_converts(time_axis, stated):
    steps, n = 5, 24                     # steps != any sample count cut: a cut along time shows
    torch.manual_seed(0)
    net = OwnLoop(time_first=time_axis == 0)
    with torch.no_grad():
        net.conv.weight.abs_().mul_(2)
        net.fc.weight.mul_(3)
        net.fc.bias.fill_(0.3)
    x = (torch.rand(steps, n, 1, 6, 6) < 0.6).float()
    if time_axis == 1:
        x = x.transpose(0, 1).contiguous()
    y = torch.randint(0, 3, (n,))
    example = x[:, :2] if time_axis == 0 else x[:2]
    res = make_deployable(net, example, (x, y), targets=("nir",), epochs=1,
                          time_axis=time_axis if stated else None, test_data=(x, y),
                          max_samples=8, batch_size=10)
    assert res.time_steps == steps
    assert any("max_pool2d" in c for c in res.changes)
    assert len(res.losses) == 1 and res.accuracy_after is not None
    p = res.parity["nir"]
    assert p["passed"] and p["n_samples"] == 8 and p["identical_spike_trains"] == 1.0, p
    out = res.model(x)                   # the converted model runs the user's layout as given
    assert out.shape[:2] == (steps, n)
