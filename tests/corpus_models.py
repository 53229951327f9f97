"""Model styles users write, as snnTorch's tutorials and common code write them.

Each entry: a builder, an input shape, the user's own way to get output spikes ``[T, B, C]``
(or logits), and what each export target is expected to do (``ok``, ``ok-or-refused`` or the
words of the one-line refusal): issue 23's demand, exact wherever the arithmetic allows (subtract
reset, ``reset_delay``, per-neuron parameters in Lava); max pooling over currents has no exact
form. ``corpus_tutorials.py`` has the styles written exactly as snnTorch's tutorials write them.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import snntorch as snn
import torch
import torch.nn.functional as F
from torch import nn

from dpap_deploy.neurons import rectangle

T = 4
BETA = 0.8


def _leaky(**kw):
    kw.setdefault("beta", BETA)
    kw.setdefault("spike_grad", rectangle(1.0))
    return snn.Leaky(**kw)


# ---------------------------------------------------------------- tutorial 5: own time loop
class TutorialFC(nn.Module):
    """snnTorch tutorial 5: explicit membranes, ``init_leaky()``, the loop in ``forward``."""

    def __init__(self, reset="subtract"):
        super().__init__()
        self.fc1 = nn.Linear(64, 48)
        self.lif1 = _leaky(reset_mechanism=reset)
        self.fc2 = nn.Linear(48, 10)
        self.lif2 = _leaky(reset_mechanism=reset)

    def forward(self, x):
        mem1 = self.lif1.init_leaky()
        mem2 = self.lif2.init_leaky()
        spk2_rec, mem2_rec = [], []
        for _ in range(T):
            cur1 = self.fc1(x.flatten(1))
            spk1, mem1 = self.lif1(cur1, mem1)
            cur2 = self.fc2(spk1)
            spk2, mem2 = self.lif2(cur2, mem2)
            spk2_rec.append(spk2)
            mem2_rec.append(mem2)
        return torch.stack(spk2_rec, dim=0), torch.stack(mem2_rec, dim=0)


class TutorialCSNN(nn.Module):
    """snnTorch tutorial 6 style: conv, functional max-pool before the neuron, own loop."""

    def __init__(self, pool="max", reset="subtract"):
        super().__init__()
        self.pool = F.max_pool2d if pool == "max" else F.avg_pool2d
        self.conv1 = nn.Conv2d(1, 8, 3, padding=1)
        self.lif1 = _leaky(reset_mechanism=reset)
        self.fc1 = nn.Linear(8 * 4 * 4, 10)
        self.lif2 = _leaky(reset_mechanism=reset)

    def forward(self, x):
        mem1, mem2 = self.lif1.init_leaky(), self.lif2.init_leaky()
        rec = []
        for _ in range(T):
            cur1 = self.pool(self.conv1(x), 2)
            spk1, mem1 = self.lif1(cur1, mem1)
            cur2 = self.fc1(spk1.view(spk1.size(0), -1))
            spk2, mem2 = self.lif2(cur2, mem2)
            rec.append(spk2)
        return torch.stack(rec)


class SynapticNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(64, 40, bias=False)    # Lava's CUBA bias goes to v, not the current
        self.syn1 = snn.Synaptic(alpha=0.6, beta=BETA, spike_grad=rectangle(1.0),
                                 reset_mechanism="zero", reset_delay=False)
        self.fc2 = nn.Linear(40, 10, bias=False)
        self.syn2 = snn.Synaptic(alpha=0.6, beta=BETA, spike_grad=rectangle(1.0),
                                 reset_mechanism="zero", reset_delay=False)

    def forward(self, x):
        syn1, mem1 = self.syn1.reset_mem()
        syn2, mem2 = self.syn2.reset_mem()
        rec = []
        for _ in range(T):
            spk1, syn1, mem1 = self.syn1(self.fc1(x.flatten(1)), syn1, mem1)
            spk2, syn2, mem2 = self.syn2(self.fc2(spk1), syn2, mem2)
            rec.append(spk2)
        return torch.stack(rec)


class SynapticDelayed(SynapticNet):
    """snnTorch's default reset_delay=True: refused at export, with the reason."""

    def __init__(self):
        super().__init__()
        self.syn1.reset_delay = self.syn2.reset_delay = True


class RecurrentNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(64, 32)
        self.rlif = snn.RLeaky(beta=BETA, linear_features=32, spike_grad=rectangle(1.0),
                               reset_mechanism="zero", reset_delay=False)
        self.fc2 = nn.Linear(32, 10)
        self.lif2 = _leaky(reset_mechanism="zero")

    def forward(self, x):
        spk1, mem1 = self.rlif.init_rleaky()
        mem2 = self.lif2.init_leaky()
        rec = []
        for _ in range(T):
            spk1, mem1 = self.rlif(self.fc1(x.flatten(1)), spk1, mem1)
            spk2, mem2 = self.lif2(self.fc2(spk1), mem2)
            rec.append(spk2)
        return torch.stack(rec)


class ResidualBlock(nn.Module):
    """A spiking residual block (one call = one step, init_hidden neurons, residual '+')."""

    def __init__(self):
        super().__init__()
        hid = dict(init_hidden=True, reset_mechanism="zero")
        self.conv1 = nn.Conv2d(1, 8, 3, padding=1)
        self.lif1 = _leaky(**hid)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(8)
        self.lif2 = _leaky(**hid)
        self.conv3 = nn.Conv2d(8, 8, 3, padding=1)
        self.lif3 = _leaky(**hid)
        self.pool = nn.AvgPool2d(2)
        self.fc = nn.Linear(8 * 4 * 4, 10)
        self.lif_out = _leaky(**hid)

    def forward(self, x):
        a = self.lif1(self.conv1(x))
        b = self.lif2(self.bn2(self.conv2(a)))
        c = self.lif3(self.conv3(b) + a)
        return self.lif_out(self.fc(self.pool(c).flatten(1)))


class ConcatNet(nn.Module):
    def __init__(self):
        super().__init__()
        hid = dict(init_hidden=True, reset_mechanism="zero")
        self.c1 = nn.Conv2d(1, 6, 3, padding=1)
        self.l1 = _leaky(**hid)
        self.c2 = nn.Conv2d(6, 6, 3, padding=1)
        self.l2 = _leaky(**hid)
        self.fc = nn.Linear(12 * 4 * 4, 10)
        self.lo = _leaky(**hid)

    def forward(self, x):
        a = self.l1(self.c1(x))
        b = self.l2(self.c2(a))
        y = F.avg_pool2d(torch.cat([a, b], dim=1), 2)
        return self.lo(self.fc(y.view(y.size(0), -1)))


class FunctionalNet(nn.Module):
    """Functional pooling, ``view`` and dropout between modules; one call = one step."""

    def __init__(self):
        super().__init__()
        hid = dict(init_hidden=True, reset_mechanism="zero")
        self.conv = nn.Conv2d(1, 8, 3, padding=1)
        self.lif1 = _leaky(**hid)
        self.drop = nn.Dropout(0.1)
        self.fc1 = nn.Linear(8 * 4 * 4, 32)
        self.lif2 = _leaky(**hid)
        self.fc2 = nn.Linear(32, 10)
        self.lif3 = _leaky(**hid)

    def forward(self, x):
        s = F.avg_pool2d(self.lif1(self.conv(x)), 2)
        s = self.drop(s.view(x.shape[0], -1))
        return self.lif3(self.fc2(self.lif2(self.fc1(s))))


class AnnFunctional(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3, padding=1)
        self.fc1 = nn.Linear(8 * 4 * 4, 32)
        self.fc2 = nn.Linear(32, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv(x)), 2)
        return self.fc2(F.relu(self.fc1(torch.flatten(x, 1))))


def _seq_tutorial(pool=nn.MaxPool2d, reset="subtract"):
    """snnTorch tutorial 7: ``nn.Sequential``, defaults (reset by subtraction), output=True."""
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), pool(2), _leaky(init_hidden=True, reset_mechanism=reset),
        nn.Flatten(), nn.Linear(8 * 4 * 4, 10),
        _leaky(init_hidden=True, output=True, reset_mechanism=reset))


def _seq_learnable():
    """Per-neuron learnable beta and threshold (one value per neuron)."""
    gen = torch.Generator().manual_seed(3)
    return nn.Sequential(
        nn.Flatten(), nn.Linear(64, 32),
        _leaky(beta=0.5 + 0.4 * torch.rand(32, generator=gen), learn_beta=True,
               threshold=0.8 + 0.4 * torch.rand(32, generator=gen), learn_threshold=True,
               init_hidden=True, reset_mechanism="zero"),
        nn.Linear(32, 10), _leaky(init_hidden=True, reset_mechanism="zero"))


def _seq_fixed_per_neuron():
    """Per-neuron beta held in a buffer (not learnable)."""
    return nn.Sequential(
        nn.Flatten(), nn.Linear(64, 32),
        _leaky(beta=torch.linspace(0.5, 0.9, 32), init_hidden=True, reset_mechanism="zero"),
        nn.Linear(32, 10), _leaky(init_hidden=True, reset_mechanism="zero"))


def _seq_if():
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 32),
                         _leaky(beta=1.0, init_hidden=True, reset_mechanism="zero"),
                         nn.Linear(32, 10), _leaky(beta=1.0, init_hidden=True,
                                                   reset_mechanism="zero"))


def _seq_conv1d():
    return nn.Sequential(nn.Conv1d(2, 8, 3, padding=1),
                         _leaky(init_hidden=True, reset_mechanism="zero"),
                         nn.Flatten(), nn.Linear(8 * 16, 10),
                         _leaky(init_hidden=True, reset_mechanism="zero"))


def _seq_bn():
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8),
                         _leaky(init_hidden=True, reset_mechanism="zero"), nn.AvgPool2d(2),
                         nn.Flatten(), nn.Linear(8 * 4 * 4, 24), nn.BatchNorm1d(24),
                         _leaky(init_hidden=True, reset_mechanism="zero"),
                         nn.Linear(24, 10), _leaky(init_hidden=True, reset_mechanism="zero"))


def _zoo():
    from dpap_deploy.zoo import build_model
    return build_model("snn-digits", (1, 8, 8), 10)[0]


def _stepwise(model, x):
    """The user's loop for one-call-one-step models: call T times, stack the spikes."""
    from dpap_deploy.graph import reset_states
    reset_states(model)
    out = []
    for _ in range(T):
        o = model(x)
        out.append(o[0] if isinstance(o, tuple) else o)
    return torch.stack(out)


def _looped(model, x):
    o = model(x)
    return o[0] if isinstance(o, tuple) else o


@dataclass
class Style:
    name: str
    build: Callable[[], nn.Module]
    in_shape: tuple
    run: Callable = _stepwise
    kind: str = "snn"
    expect: dict = field(default_factory=dict)    # target -> "ok", "ok-or-refused" (exact or
    #                                               a one-line refusal) or words of the refusal


IMG = (1, 8, 8)
STYLES = [
    Style("zoo-sequential", _zoo, IMG, expect={"nir": "ok", "loihi-sim": "ok", "netx": "ok"}),
    Style("tutorial5-class-subtract", TutorialFC, IMG, _looped,
          expect={"nir": "ok", "loihi-sim": "ok"}),
    Style("tutorial5-class-zero", lambda: TutorialFC("zero"), IMG, _looped,
          expect={"nir": "ok", "loihi-sim": "ok", "netx": "ok"}),
    Style("tutorial6-csnn-maxpool", TutorialCSNN, IMG, _looped, expect={"nir": "max pool"}),
    Style("tutorial6-csnn-avgpool-zero", lambda: TutorialCSNN("avg", "zero"), IMG, _looped,
          expect={"nir": "ok", "loihi-sim": "ok"}),
    Style("tutorial7-sequential-output", _seq_tutorial, IMG, expect={"nir": "max pool"}),
    Style("sequential-avgpool-zero", lambda: _seq_tutorial(nn.AvgPool2d, "zero"), IMG,
          expect={"nir": "ok", "loihi-sim": "ok"}),
    Style("learnable-per-neuron-beta", _seq_learnable, IMG,
          expect={"nir": "ok", "loihi-sim": "ok"}),
    Style("fixed-per-neuron-beta", _seq_fixed_per_neuron, IMG,
          expect={"nir": "ok", "loihi-sim": "ok"}),
    Style("integrate-and-fire", _seq_if, IMG, expect={"nir": "ok", "loihi-sim": "ok"}),
    Style("synaptic-cuba", SynapticNet, IMG, _looped, expect={"nir": "ok", "loihi-sim": "ok"}),
    Style("synaptic-delayed-reset", SynapticDelayed, IMG, _looped,
          expect={"nir": "ok-or-refused", "loihi-sim": "ok-or-refused"}),
    Style("rleaky-recurrent", RecurrentNet, IMG, _looped,
          expect={"nir": "ok", "loihi-sim": "ok"}),
    Style("conv1d", _seq_conv1d, (2, 16), expect={"nir": "ok", "loihi-sim": "ok"}),
    Style("residual-block", ResidualBlock, IMG, expect={"nir": "ok", "loihi-sim": "ok",
                                                         "netx": "branches or joins"}),
    Style("concatenation", ConcatNet, IMG, expect={"nir": "torch.cat"}),
    Style("functional-ops", FunctionalNet, IMG, expect={"nir": "ok", "loihi-sim": "ok"}),
    Style("batchnorm", _seq_bn, IMG, expect={"nir": "ok", "loihi-sim": "ok"}),
    Style("ann-functional", AnnFunctional, IMG, lambda m, x: m(x), kind="ann",
          expect={"onnx": "ok"}),
]
