"""Compacted ``init_hidden`` models behave as snnTorch models: ``snntorch.utils.reset`` resets
them, and the user's own one-call-per-step loop gives the masked model's spikes window after
window (two windows, different inputs, reset between)."""
from __future__ import annotations

import pytest
import snntorch as snn
import torch
from snntorch import utils
from torch import nn

from dpap_deploy.compaction import compact, fold_for_deployment
from dpap_deploy.graph import build_graph
from dpap_deploy.masks import apply_to_model

T = 6


def _leaky_seq():
    return nn.Sequential(nn.Linear(12, 16), snn.Leaky(beta=0.8, init_hidden=True),
                         nn.Linear(16, 10), snn.Leaky(beta=0.8, init_hidden=True),
                         nn.Linear(10, 4), snn.Leaky(beta=0.8, init_hidden=True, output=True))


def _conv_seq():      # tutorial 7 style (avg pool: max pool is not exact for every target)
    return nn.Sequential(nn.Conv2d(1, 6, 3, padding=1), nn.AvgPool2d(2),
                         snn.Leaky(beta=0.7, init_hidden=True), nn.Flatten(),
                         nn.Linear(6 * 3 * 3, 4), snn.Leaky(beta=0.7, init_hidden=True,
                                                            output=True))


def _synaptic_seq():
    return nn.Sequential(nn.Linear(12, 16), snn.Synaptic(alpha=0.6, beta=0.8, init_hidden=True),
                         nn.Linear(16, 4), snn.Synaptic(alpha=0.6, beta=0.8, init_hidden=True,
                                                        output=True))


class HiddenClass(nn.Module):
    """A class whose forward is one step, neurons with hidden state."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(12, 16)
        self.lif1 = snn.Leaky(beta=0.9, init_hidden=True)
        self.fc2 = nn.Linear(16, 4)
        self.lif2 = snn.Leaky(beta=0.9, init_hidden=True)

    def forward(self, x):
        return self.lif2(self.fc2(self.lif1(self.fc1(x))))


STYLES = {"leaky-seq": (_leaky_seq, (12,)), "conv-seq": (_conv_seq, (1, 6, 6)),
          "synaptic-seq": (_synaptic_seq, (12,)), "hidden-class": (HiddenClass, (12,))}


def _user_windows(net, windows):
    """The user's own loop: ``utils.reset(net)``, then one call per step, per window."""
    out = []
    with torch.no_grad():
        for x in windows:
            utils.reset(net)
            rec = []
            for _ in range(T):
                o = net(x)
                rec.append(o[0] if isinstance(o, tuple) else o)
            out.append(torch.stack(rec))
    return out


def _masked(style):
    torch.manual_seed(3)
    build, shape = STYLES[style]
    model = build().eval()
    with torch.no_grad():
        for layer in model.modules():
            if isinstance(layer, (nn.Linear, nn.Conv2d)):
                layer.weight.mul_(6.0)               # every layer spikes
    x = torch.rand((8,) + shape) * 3
    g = build_graph(model, x)
    gen = torch.Generator().manual_seed(5)
    masks = {l.name: (torch.rand(l.n_out, l.n_in, generator=gen) < 0.8,
                      torch.rand(l.n_out, generator=gen) < (1.0 if l.is_output else 0.6))
             for l in g.layers}
    apply_to_model(model, None, masks, graph=g)      # the user's model, masked in place
    return model, x, masks


@pytest.mark.parametrize("style", sorted(STYLES))
def test_compacted_model_resets_like_the_masked_one(style):
    model, x, masks = _masked(style)
    small = compact(model, x, masks, time_steps=T).model
    assert sum(p.numel() for p in small.parameters()) < sum(p.numel() for p in model.parameters())
    windows = [x, torch.rand_like(x) * 3]
    want = _user_windows(model, windows)
    got = _user_windows(small, windows)
    assert want[0].sum() > 0 and want[1].sum() > 0           # the comparison sees spikes
    for a, b in zip(want, got):
        assert torch.equal(a, b)


def test_folded_deployment_network_resets_too():
    model, x, masks = _masked("conv-seq")
    small = compact(model, x, masks, time_steps=T)
    deploy, _ = fold_for_deployment(small.model, x, time_steps=T, graph=small.graph,
                                    fold_pools=False)
    windows = [x, torch.rand_like(x) * 3]
    for a, b in zip(_user_windows(model, windows), _user_windows(deploy, windows)):
        assert torch.equal(a, b)


def test_copies_do_not_carry_the_originals_state():
    from dpap_deploy.graph.state import is_registered
    model, x, masks = _masked("leaky-seq")
    with torch.no_grad():
        for _ in range(3):
            model(x)                                  # the original holds a membrane now
    small = compact(model, x, masks, time_steps=T).model
    for m in small.modules():
        if isinstance(m, snn.SpikingNeuron):
            assert is_registered(m)
            assert not m.mem.any()
