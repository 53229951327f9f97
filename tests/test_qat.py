"""Quantization-aware fine-tuning (dpap_deploy/qat.py) on a tiny network: it keeps the masks,
lowers the loss, computes what the emulation computes, and the netx export of the fine-tuned
network runs, in Lava, what the emulation of it computes."""
import numpy as np
import pytest
import snntorch as snn
import torch
from torch import nn

from dpap_deploy.errors import ConfigError
from dpap_deploy.exporters import netx_export as NX
from dpap_deploy.fixed_point import emulate as E
from dpap_deploy.graph import build_graph
from dpap_deploy.qat import fine_tune, st_neuron_step

T = 4


def _net():
    torch.manual_seed(1)
    lif = dict(init_hidden=True, reset_mechanism="zero")
    m = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), snn.Leaky(beta=0.83, **lif),
                      nn.MaxPool2d(2), nn.Flatten(), nn.Linear(36, 3),
                      snn.Leaky(beta=0.9, output=True, **lif))
    with torch.no_grad():
        m[0].weight.mul_(4)
        m[0].weight[1, 0, :2] = 0.0               # pruned weights: must stay zero
        m[4].weight.mul_(3)
        m[4].weight[:, :5] = 0.0
    return m.eval()


@pytest.fixture(scope="module")
def tuned():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(24, 1, 6, 6, generator=g)
    y = torch.randint(0, 3, (24,), generator=g)
    model = _net()
    return model, fine_tune(model, (x, y), (x, y), T, epochs=6, lr=2e-3), x, y


def test_masks_are_kept_and_the_user_model_is_untouched(tuned):
    model, r, _, _ = tuned
    before, after = model[0].weight, r.model[0].weight
    assert torch.equal(before, _net()[0].weight)                 # a copy was tuned
    for i in (0, 4):
        zero = _net()[i].weight == 0
        assert (r.model[i].weight[zero] == 0).all() and zero.any()
    assert not torch.equal(before, after)


def test_the_loss_goes_down(tuned):
    losses = tuned[1].loss
    assert len(losses) == 6 and losses[-1] < losses[0]


def test_the_export_computes_what_was_fine_tuned(tuned, tmp_path):
    """The fine-tuned model exported to netx: the same integers the fine-tuning ended with
    (its weights are on the grid), the emulation's accuracy is the one reported, and Lava
    runs the file spike for spike as the emulation does."""
    _, r, x, y = tuned
    graph = build_graph(r.model, x[:2])
    seq = NX.quantise(graph, x, T)
    for q in (q for q in seq if isinstance(q, NX.QuantLayer) and q.layer.neuron is not None):
        s = q.scale / q.in_scale
        assert np.abs(q.layer.weight.numpy() * s - q.weight).max() < 1e-3   # float32 rounding
        assert q.scale == pytest.approx(q.vth, rel=1e-6)    # the threshold is on the grid too
    emu = NX.emulate(seq, x.numpy(), T)
    from dpap_deploy.metrics import accuracy, predictions
    assert accuracy(predictions(torch.as_tensor(emu).sum(1)), y) == r.accuracy_fine_tuned
    quant = NX.write_netx(graph, x, tmp_path / "n.net", T, seq)
    got = NX.run_netx(tmp_path / "n.net", x.reshape(len(x), *quant["input_shape"]).numpy(), T)
    assert np.array_equal(emu, got) and got.sum() > 0


def test_the_straight_through_step_has_the_emulation_values():
    g = torch.Generator().manual_seed(3)
    n = E.Neurons(torch.tensor(3000.0), torch.tensor(700.0), torch.tensor(90.0),
                  torch.randint(-300, 300, (5,), generator=g).double(), torch.tensor(0.0))
    state = [torch.randint(-9000, 9000, (7, 5), generator=g).double() for _ in range(2)]
    state.append(torch.zeros(7, 5, dtype=torch.float64))
    ref, got = list(state), [t.clone().requires_grad_() for t in state]
    for t in range(6):
        a = torch.randint(-200, 200, (7, 5), generator=g).double()
        ref = E.neuron_step(n, *ref, a)
        got = st_neuron_step(n, *got, a)
        assert all(torch.equal(p, q) for p, q in zip(ref, got)), t
    got[2].sum().backward()                     # the surrogate passes a gradient back


@pytest.mark.parametrize("kw", [{"epochs": -1}, {"lr": 0}, {"batch_size": 0}])
def test_bad_options_are_one_line(kw):
    x, y = torch.rand(4, 1, 6, 6), torch.zeros(4, dtype=torch.long)
    with pytest.raises(ConfigError, match="fine-tuning"):
        fine_tune(_net(), (x, y), (x, y), T, **kw)
