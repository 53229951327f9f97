"""loihi-sim in fixed point: every model style that reaches Lava (the zoo, the corpus, snnTorch's
default neurons in our Population process, graded readouts, max pooling over spikes, a residual
'+') run in Lava's fixed_pt models equals the torch emulation (dpap_deploy.fixed_point) bit for
bit on every sample. Weights are scaled up so that every output is active (silence would make
any parity trivial)."""
import numpy as np
import pytest
import snntorch as snn
import torch
from torch import nn

from corpus_models import STYLES, T as CT
from dpap_deploy.errors import UnsupportedModelError
from dpap_deploy.exporters.nir_graph import to_nir
from dpap_deploy.exporters.nir_to_lava import LavaNetwork
from dpap_deploy.exporters.nir_torch import run_reference
from dpap_deploy.graph import build_graph
from test_lava_forms import MAKERS, T as FT, OwnLoop, PoolLoop, _seed_input

N = 8
# every corpus style that reaches Lava, less those whose Lava processes another one already has
SAME_PROCESSES = {"sequential-avgpool-zero", "fixed-per-neuron-beta", "functional-ops"}
LAVA_STYLES = [s for s in STYLES if s.expect.get("loihi-sim") == "ok"
               and s.name not in SAME_PROCESSES]


def _louder(model, factor=3.0):
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d)):
                m.weight.mul_(factor)
    return model.eval()


def _parity(model, x, T, active=True, **kw):
    """Lava fixed point against the emulation on ``x``; returns (plan, emulated, float ref)."""
    g = to_nir(build_graph(model, x[:2]), time_steps=T, **kw)
    net = LavaNetwork(g, T)
    fx = net.fixed_point(x.numpy())
    emulated = fx.run(x.numpy())
    got = net.run_fixed(x.numpy())
    assert got.shape == emulated.shape
    if active:
        assert np.any(emulated != 0), "test too weak: silent output"
    n_diff = int((got != emulated).sum())
    assert n_diff == 0, f"{n_diff} of {got.size} output values differ"
    return fx, emulated, run_reference(g, x.numpy(), T)


@pytest.mark.parametrize("style", LAVA_STYLES, ids=[s.name for s in LAVA_STYLES])
def test_corpus_model_in_lava_fixed_point_equals_emulation(style):
    torch.manual_seed(0)
    model = _louder(style.build())
    x = torch.rand(N, *style.in_shape) * 2
    fx, emulated, ref = _parity(model, x, CT)
    # the integers compute the float network: most output values agree
    assert (fx.to_float(emulated).reshape(ref.shape) == ref).mean() > 0.75


def test_paper_mnist_snn_on_event_counts_in_lava_fixed_point_equals_emulation():
    """The zoo's other SNN that reaches Lava (the paper's MNIST / N-MNIST network), sized for
    two polarity channels of 8x8 event counts: integer inputs, so no fraction bits."""
    from dpap_deploy.zoo import build_model
    torch.manual_seed(0)
    model = _louder(build_model("snn-mnist", (2, 8, 8), 10)[0])
    x = torch.poisson(torch.full((N, 2, 8, 8), 0.7))
    fx, _, _ = _parity(model, x, CT)
    assert fx.input_bits == 0


FORMS = {
    "no-reset": dict(make=MAKERS["leaky"](reset_mechanism="none")),
    "rsynaptic": dict(make=MAKERS["rsynaptic"]()),
    "lapicque": dict(make=MAKERS["lapicque"](), factor=8.0),
    "li-readout": dict(make=MAKERS["leaky"](), record="mem",
                       last=lambda n: snn.Leaky(beta=0.8, reset_mechanism="none")),
    "linear-readout": dict(make=MAKERS["leaky"](), readout="linear"),
    "membrane-readout": dict(make=MAKERS["leaky"](), record="mem"),
}


@pytest.mark.parametrize("form", list(FORMS))
def test_population_forms_in_lava_fixed_point_equal_emulation(form):
    kw = dict(FORMS[form])
    factor = kw.pop("factor", 3.0)
    torch.manual_seed(20)
    net = _louder(OwnLoop(kw.pop("make"), **kw), factor)
    _parity(net, _seed_input(10)[:N], FT)


@pytest.mark.parametrize("encoding,mech", [("gain", "subtract"), ("unit-r", "zero")])
def test_max_pool_over_spikes_in_lava_fixed_point_equals_emulation(encoding, mech):
    torch.manual_seed(22)
    net = _louder(PoolLoop(mech), 2.0)
    torch.manual_seed(23)
    x = torch.rand(N, 1, 8, 8) * 2
    fx, emulated, ref = _parity(net, x, FT, encoding=encoding)
    assert (fx.to_float(emulated).reshape(ref.shape) == ref).mean() > 0.9


def test_a_changed_rounding_step_breaks_the_parity(monkeypatch):
    """The check can fail: the emulation with decays rounded to nearest instead of truncated
    toward zero no longer equals Lava on the same network (its membrane read out)."""
    from dpap_deploy.fixed_point import emulate as E
    torch.manual_seed(20)
    net = _louder(OwnLoop(MAKERS["synaptic"](), record="mem"))
    x = _seed_input(10)[:N]
    g = to_nir(build_graph(net, x[:2]), time_steps=FT)
    lava = LavaNetwork(g, FT)
    fx = lava.fixed_point(x.numpy())
    got = lava.run_fixed(x.numpy())
    assert np.array_equal(fx.run(x.numpy()), got)
    monkeypatch.setattr(E, "decay", lambda v, d: torch.round(v * (E.UNITY - d) / E.UNITY))
    assert not np.array_equal(fx.run(x.numpy()), got)


def test_a_layer_that_cannot_fit_is_refused_in_one_line():
    torch.manual_seed(20)
    net = OwnLoop(MAKERS["leaky"]()).eval()
    with torch.no_grad():
        net.fc1.bias.fill_(4000.0)          # a bias thousands of thresholds large
    x = _seed_input(10)[:N]
    lava = LavaNetwork(to_nir(build_graph(net, x[:2]), time_steps=FT), FT)
    with pytest.raises(UnsupportedModelError) as exc:
        lava.fixed_point(x.numpy())
    msg = str(exc.value)
    assert "fixed point: layer" in msg and "\n" not in msg, msg


TUTORIAL = ["t5-fcn-spikegen-time-first", "linear-readout-summed"]


@pytest.mark.parametrize("name", TUTORIAL)
def test_loihi_sim_fixed_point_export_of_tutorial_styles(name, tmp_path):
    """The target itself in fixed point (``export(job, out, fixed_point=True)``): spike frames
    handed time first, a summed Linear readout; Lava equal to the
    emulation on every sample, the float network's decisions reported beside it."""
    from corpus_stages import _job, user_data
    from corpus_tutorials import STYLES as USER
    from corpus_user import num_steps
    from dpap_deploy.exporters import lava_sim
    style = next(s for s in USER if s.name == name)
    torch.manual_seed(0)
    model = _louder(style.build())
    x = user_data(style, torch.round(torch.rand(N, 1, 8, 8) * 16) / 16, 0)
    job = _job(style, model, "snn", x, torch.randint(0, 10, (N,)), num_steps, None, N)
    r = lava_sim.export(job, tmp_path, fixed_point=True)
    assert r.passed and r.parity["fixed_identical"] == 1.0 and r.parity["n_samples"] == N
    assert r.parity["agreement_float"] >= 0.75
    assert r.details["lava_config"] == "Loihi2SimCfg(select_tag='fixed_pt')"
    assert r.details["fixed_point"]["input_bits"] in (0, 4)     # spikes, sixteenths


def test_a_silent_output_fails_in_fixed_point_too(tmp_path):
    """Lava and the emulation agree on a network whose output never spikes, which proves
    nothing: the export fails with the float path's reason."""
    from dpap_deploy.exporters import lava_sim
    from dpap_deploy.exporters.base import ExportJob
    torch.manual_seed(20)
    net = OwnLoop(MAKERS["leaky"]()).eval()
    with torch.no_grad():
        net.fc2.weight.zero_()
        net.fc2.bias.fill_(-1.0)
    x = _seed_input(10)[:N]
    r = lava_sim.export(ExportJob(net, "snn", x, torch.zeros(N, dtype=torch.long), FT),
                        tmp_path, fixed_point=True)
    assert r.parity["fixed_identical"] == 1.0
    assert not r.passed and r.parity["failure"].startswith("silent output"), r.parity


def test_saturation_on_test_samples_is_counted_and_warned(tmp_path, monkeypatch):
    """Calibrated on quiet samples, a network meets louder ones: the 24-bit wraps and clips are
    counted per layer and warned about, and Lava still equals the emulation (which wraps and
    clips as Lava does)."""
    from dpap_deploy.exporters import lava_sim
    from dpap_deploy.exporters.base import ExportJob
    monkeypatch.setattr(lava_sim, "CALIBRATION_SAMPLES", 2)
    torch.manual_seed(20)
    net = _louder(OwnLoop(MAKERS["leaky"]()))
    x = _seed_input(10)[:N]
    x[2:] *= -400.0                          # inhibition far below what calibration saw
    r = lava_sim.export(ExportJob(net, "snn", x, torch.zeros(N, dtype=torch.long), FT),
                        tmp_path, fixed_point=True)
    fp = r.details["fixed_point"]
    assert r.parity["fixed_identical"] == 1.0
    assert fp["saturated_layers"] and sum(fp["saturation"][k]["v_clipped"]
                                          for k in fp["saturated_layers"]) > 0
    assert any("saturates" in w and "\n" not in w for w in r.details["warnings"])
