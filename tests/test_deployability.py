"""Deployability known before training: one check (``check_deployable``) behind the DPAP
warning, the ``train-and-export`` refusal and ``dpap-deploy check``; readout models attach."""
from __future__ import annotations

import time
import warnings

import pytest
import snntorch as snn
import torch
from torch import nn

from dpap_deploy import DeployabilityWarning, NotDeployableError, check_deployable, cli, pipeline
from dpap_deploy import exporters, zoo
from dpap_deploy.dpap import DPAP, DPAPConfig
from dpap_deploy.neurons import lif
from dpap_deploy.serialize import save_model
from dpap_deploy.train_config import TrainConfig

SNN_TARGETS = ("loihi-sim", "netx", "nir")
X = torch.rand(2, 1, 8, 8)


def _bad(in_shape=(1, 8, 8), n_classes=10) -> nn.Sequential:
    """Three blockers at once, as snnTorch users write them: max pooling over currents (before
    the neuron, tutorial 6), snnTorch's default subtract reset, a per-neuron beta."""
    return nn.Sequential(
        nn.Conv2d(in_shape[0], 4, 3, padding=1), nn.MaxPool2d(2),
        snn.Leaky(beta=0.9, init_hidden=True), nn.Flatten(),
        nn.Linear(4 * (in_shape[1] // 2) * (in_shape[2] // 2), 16),
        snn.Leaky(beta=torch.linspace(0.5, 0.9, 16), init_hidden=True),
        nn.Linear(16, n_classes), snn.Leaky(beta=0.9, init_hidden=True))


def _has(lines: list[str], *words: str) -> bool:
    return any(all(w in line.lower() for w in words) for line in lines)


def _check_bad_blockers(blockers: dict[str, list[str]]) -> None:
    """Every SNN target names the max pooling over currents (module '1': no exact form); netx
    (one decay per layer, CUBA neurons reset to zero) also the subtract reset and the
    per-neuron beta: all of them, at once."""
    assert set(blockers) == set(SNN_TARGETS)
    for target in SNN_TARGETS:
        assert _has(blockers[target], "'1'", "max"), (target, blockers[target])
    assert _has(blockers["netx"], "subtract"), blockers["netx"]
    assert _has(blockers["netx"], "per-neuron"), blockers["netx"]


def test_check_deployable_lists_every_blocker_of_every_target():
    result = check_deployable(_bad(), X)
    _check_bad_blockers(result.blockers)
    assert not result.ok
    text = str(result).splitlines()
    for target, line in result.pairs():            # one line per blocker, grouped by target
        assert f"  - {line}" in text
        assert "\n" not in line
    assert [t for t in text if not t.startswith("  - ")] == \
        [f"{t}: {len(b)} blocker{'' if len(b) == 1 else 's'}" for t, b in result.blockers.items()]


def test_dpap_warns_once_with_every_blocker_and_can_be_silenced():
    result = check_deployable(_bad(), X)
    with warnings.catch_warnings(record=True) as got:
        warnings.simplefilter("always")
        dp = DPAP(_bad(), X)
    ours = [w for w in got if issubclass(w.category, DeployabilityWarning)]
    assert len(ours) == 1 and ours[0].filename == __file__     # points at the user's line
    for target, line in result.pairs():
        assert f"[{target}] {line}" in str(ours[0].message)
    assert dp.deployability.blockers == result.blockers
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeployabilityWarning)
        DPAP(_bad(), X, check_deploy=False)                      # silenced: nothing
    with warnings.catch_warnings(record=True) as got:
        warnings.simplefilter("always")
        DPAP(_bad(), X, check_deploy=["nir"])                    # by target
    msg = "\n".join(str(w.message) for w in got if issubclass(w.category, DeployabilityWarning))
    assert "[nir]" in msg and "[netx]" not in msg and "[loihi-sim]" not in msg


def _zoo_cases():
    shapes = {"snn-cifar10": (3, 32, 32), "ann-vgg16-bn": (3, 32, 32), "snn-digits": (1, 8, 8),
              "ann-digits": (1, 8, 8)}
    return [(name, shapes.get(name, (1, 28, 28))) for name in zoo.ZOO]


@pytest.mark.parametrize("name,shape", _zoo_cases())
def test_zoo_models_give_no_warning(name, shape):
    torch.manual_seed(0)
    model, _ = zoo.build_model(name, shape, 10)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeployabilityWarning)
        dp = DPAP(model, torch.rand(2, *shape))
    assert dp.deployability.ok and dp.deployability.targets == \
        (["onnx"] if name.startswith("ann") else list(SNN_TARGETS))


def test_attach_check_is_cheap_and_draws_no_random_numbers():
    """The zoo MNIST SNN: the check adds a few tens of ms to the attach, and the random state
    after DPAP(...) is the one without the check (training is reproducible either way)."""
    model, _ = zoo.build_model("snn-mnist", (1, 28, 28), 10)
    x = torch.rand(2, 1, 28, 28)
    DPAP(model, x).detach()                                      # imports, warm caches
    torch.manual_seed(1)
    t0 = time.perf_counter()
    DPAP(model, x, check_deploy=False).detach()
    t1 = time.perf_counter()
    a = torch.rand(3)
    torch.manual_seed(1)
    t2 = time.perf_counter()
    DPAP(model, x).detach()
    t3 = time.perf_counter()
    assert torch.equal(a, torch.rand(3))
    assert (t3 - t2) - (t1 - t0) < 2.0, (t1 - t0, t3 - t2)


# ---------------------------------------------------------------- the dispatcher
class _Target:
    KINDS = ("snn",)

    @staticmethod
    def export(job, out):
        raise AssertionError("a check never exports")


def test_dispatcher_takes_a_targets_own_blockers_or_knows_none(monkeypatch):
    graph = pipeline_graph(_bad())
    own = type("Own", (_Target,), {"blockers": staticmethod(
        lambda graph, time_steps=None: [f"a {time_steps}", "b\n  continued"])})
    monkeypatch.setitem(exporters.TARGETS, "own", own)
    monkeypatch.setitem(exporters.TARGETS, "plain", _Target)
    assert exporters.blockers("own", graph, 5) == ["a 5", "b continued"]   # one line each
    assert exporters.blockers("plain", graph) == []
    assert exporters.blockers("onnx", graph) == [
        "the model is an SNN and 'onnx' takes ANN models: use target nir, loihi-sim or netx"]
    refusing = type("Refusing", (_Target,), {"blockers": staticmethod(
        lambda graph, time_steps=None: (_ for _ in ()).throw(
            exporters.UnsupportedModelError("no\nway")))})
    monkeypatch.setitem(exporters.TARGETS, "refusing", refusing)
    assert exporters.blockers("refusing", graph) == ["no way"]


@pytest.mark.parametrize("target", SNN_TARGETS)
def test_dry_build_fallback_when_a_target_has_no_blockers(monkeypatch, target):
    """Without the module's ``blockers``, its artifact is built dry: the first refusal is the
    one blocker; a BatchNorm SNN with average pooling (both folded for netx) has none."""
    monkeypatch.delattr(exporters.exporter(target), "blockers", raising=False)
    got = exporters.blockers(target, pipeline_graph(_bad()))
    assert len(got) == 1 and "'1'" in got[0] and "max" in got[0].lower(), got
    bn = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), lif(),
                       nn.AvgPool2d(2), nn.Flatten(), nn.Linear(64, 10), lif())
    assert exporters.blockers(target, pipeline_graph(bn)) == []


def pipeline_graph(model):
    from dpap_deploy.graph import build_graph
    return build_graph(model, X)


# ------------------------------------------------------------ pipeline and CLI
@pytest.fixture
def bad_zoo(monkeypatch):
    spec = zoo.ModelSpec("test-bad", "snn", lambda shape, n: _bad(shape, n), "three blockers")
    monkeypatch.setitem(zoo.ZOO, "test-bad", spec)
    return spec


def test_train_and_export_refuses_before_training(bad_zoo, tmp_path, capsys):
    out = tmp_path / "run"
    expected = check_deployable(_bad(), X, "netx").blockers["netx"]
    t0 = time.perf_counter()
    with pytest.raises(NotDeployableError) as err:
        pipeline.train_and_export(TrainConfig(model="test-bad", epochs=3), "netx", out)
    assert time.perf_counter() - t0 < 20                         # no training happened
    assert not out.exists()                                      # nothing written
    assert [b for _, b in err.value.blockers] == expected and len(expected) >= 3
    code = cli.main(["train-and-export", "--model", "test-bad", "--epochs", "3", "--target",
                     "loihi-sim", "--out", str(out), "--quiet"])
    err_text = capsys.readouterr().err.splitlines()
    assert code == 2 and not out.exists()
    assert err_text[0].startswith("dpap-deploy: error: the model cannot go to loihi-sim")
    assert "was not trained" in err_text[0]
    lines = check_deployable(_bad(), X, "loihi-sim").blockers["loihi-sim"]
    assert err_text[1:] == [f"  [loihi-sim] {b}" for b in lines]


def test_cli_check_on_a_run_and_on_model_files(bad_zoo, tmp_path, capsys):
    run = tmp_path / "run"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeployabilityWarning)
        pipeline.train(TrainConfig(model="test-bad", epochs=1, dpap=False), run, progress=False)
    capsys.readouterr()
    assert cli.main(["check", str(run)]) == 1
    out = capsys.readouterr().out.splitlines()
    _check_bad_blockers(_parse(out))
    assert cli.main(["check", str(run / "checkpoint.pt"), "--target", "nir"]) == 1
    assert [o.split(":")[0] for o in capsys.readouterr().out.splitlines()
            if not o.startswith(" ")][:1] == ["nir"]
    good, _ = zoo.build_model("snn-digits", (1, 8, 8), 10)
    save_model(tmp_path / "good.pt", good, "snn", {"input_shape": [1, 8, 8], "time_steps": 8})
    assert cli.main(["check", str(tmp_path / "good.pt")]) == 0
    assert capsys.readouterr().out.splitlines() == [f"{t}: ok" for t in SNN_TARGETS] + \
        [f"deployable to {', '.join(SNN_TARGETS)}"]
    pooled = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.MaxPool2d(2), lif(), nn.Flatten(),
                           nn.Linear(64, 10), lif())
    save_model(tmp_path / "pooled.pt", pooled, "snn", {"input_shape": [1, 8, 8]})
    assert cli.main(["check", str(tmp_path / "pooled.pt"), "--target", "netx"]) == 1
    text = capsys.readouterr().out
    assert text.startswith("netx: 1 blocker") and "max" in text.lower()
    assert cli.main(["check", str(tmp_path / "none")]) == 2          # an input error: one line
    assert capsys.readouterr().err.count("\n") == 1


def _parse(lines: list[str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in lines:
        if line.startswith("  - "):
            out[target].append(line[4:])
        elif ": " in line and line.split(":")[0] in exporters.TARGETS:
            target = line.split(":")[0]
            out[target] = []
    return out


# ---------------------------------------------------------------- readouts attach
class _LinearReadout(nn.Module):
    """A spiking hidden layer, a plain Linear readout summed over time (its own loop)."""

    def __init__(self):
        super().__init__()
        self.fc1, self.lif1, self.fc2 = nn.Linear(6, 8), snn.Leaky(beta=0.8), nn.Linear(8, 3)

    def forward(self, x):
        mem, out = self.lif1.init_leaky(), []
        for _ in range(4):
            spk, mem = self.lif1(self.fc1(x), mem)
            out.append(self.fc2(spk))
        return torch.stack(out).sum(0)


class _LeakyReadout(nn.Module):
    """A leaky-integrator readout: Leaky(reset_mechanism='none') whose membrane is returned."""

    def __init__(self):
        super().__init__()
        self.fc1, self.lif1 = nn.Linear(6, 8), snn.Leaky(beta=0.8)
        self.fc2, self.out = nn.Linear(8, 3), snn.Leaky(beta=0.9, reset_mechanism="none")

    def forward(self, x):
        m1, m2, rec = self.lif1.init_leaky(), self.out.init_leaky(), []
        for _ in range(4):
            s1, m1 = self.lif1(self.fc1(x), m1)
            _, m2 = self.out(self.fc2(s1), m2)
            rec.append(m2)
        return torch.stack(rec)


@pytest.mark.parametrize("cls,readout", [(_LinearReadout, "current"),
                                         (_LeakyReadout, "membrane")])
def test_readout_models_attach_and_trace_their_graded_output(cls, readout):
    """DPAP attaches; the readout (output layer) keeps every neuron; with
    prune_output_synapses its post trace is sum_t tau^(T-1-t) ReLU(y[t]) of the graded value
    it returns (the current W s + b, or the membrane), computed here by hand."""
    torch.manual_seed(0)
    model, x = cls(), torch.rand(5, 6) * 2
    cfg = DPAPConfig(prune_output_synapses=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeployabilityWarning)
        dp = DPAP(model, x, cfg)
    assert dp.graph.readout == readout
    out_layer = [layer for layer in dp.layers if layer.is_output]
    assert len(out_layer) == 1 and out_layer[0].synapse is model.fc2
    i = dp.layers.index(out_layer[0])
    model.train()
    y = model(x)
    steps = (y if readout == "membrane" else _currents(model, x)).detach()
    want = torch.zeros(5, 3)
    for t in range(steps.shape[0]):
        want = cfg.tau * want + torch.relu(steps[t])
    assert torch.allclose(dp._rec[i].s_post, want, rtol=1e-6, atol=1e-6)
    dp.step()
    for _ in range(3):
        model(x)
        dp.step()
        dp.end_epoch()
    assert bool(dp.states[i].neu_alive.all())                    # readout neurons never removed


def _currents(model: _LinearReadout, x: torch.Tensor) -> torch.Tensor:
    mem, out = model.lif1.init_leaky(), []
    with torch.no_grad():
        for _ in range(4):
            spk, mem = model.lif1(model.fc1(x), mem)
            out.append(model.fc2(spk))
    return torch.stack(out)


class _TimeFirst(nn.Module):
    """snnTorch tutorial 5 on spikegen's [T, B, ...] input, defaults untouched."""

    def __init__(self):
        super().__init__()
        self.fc1, self.lif1 = nn.Linear(6, 8), snn.Leaky(beta=0.9)
        self.fc2, self.lif2 = nn.Linear(8, 3), snn.Leaky(beta=0.9)

    def forward(self, x):
        m1, m2, rec = self.lif1.init_leaky(), self.lif2.init_leaky(), []
        for step in range(x.size(0)):
            s1, m1 = self.lif1(self.fc1(x[step]), m1)
            s2, m2 = self.lif2(self.fc2(s1), m2)
            rec.append(s2)
        return torch.stack(rec)


def test_time_axis_is_passed_on():
    """A [T, B] input with its axis stated: the check and DPAP trace one step of a batch (not
    the first two time steps); netx names the subtract reset of both neurons."""
    x = (torch.rand(5, 4, 6) > 0.5).float()
    result = check_deployable(_TimeFirst(), x, targets="netx", time_axis=0)
    assert [line.split("'")[1] for line in result.blockers["netx"]
            if "subtract" in line] == ["lif1", "lif2"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeployabilityWarning)
        dp = DPAP(_TimeFirst(), x, time_axis=0)
    assert dp.graph.steps_per_call == 5 and dp.graph.input_shape == (6,)
