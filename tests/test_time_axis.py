"""Inputs with a time axis: own-loop models taking ``[B, T, ...]`` (``x[:, t]``) or ``[T, B, ...]``
(snnTorch's ``spikegen`` layout, ``x[t]``), the axis stated or inferred; batches are cut along
the batch axis everywhere, and compaction keeps the masked model's spikes."""
from __future__ import annotations

import logging

import pytest
import snntorch as snn
import torch
from snntorch import spikegen
from torch import nn

from dpap_deploy.compaction import compact
from dpap_deploy.errors import ConfigError
from dpap_deploy.executor.run import outputs
from dpap_deploy.graph import build_graph
from dpap_deploy.graph import time_axis
from dpap_deploy.graph.time_axis import batch_slice

T = 5


class BatchFirst(nn.Module):
    """Own loop over ``x[:, t]`` of an event input ``[B, T, C, H, W]``."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 6, 3, padding=1)
        self.lif1 = snn.Leaky(beta=0.9, reset_mechanism="zero")
        self.fc = nn.Linear(6 * 4 * 4, 4)
        self.lif2 = snn.Leaky(beta=0.9, reset_mechanism="zero")

    def forward(self, x):
        mem1, mem2 = self.lif1.init_leaky(), self.lif2.init_leaky()
        rec = []
        for t in range(x.shape[1]):
            spk1, mem1 = self.lif1(self.conv(x[:, t]), mem1)
            spk2, mem2 = self.lif2(self.fc(spk1.flatten(1)), mem2)
            rec.append(spk2)
        return torch.stack(rec)


class TimeFirst(nn.Module):
    """snnTorch tutorial style over ``spikegen.rate`` data ``[T, B, F]``; returns (spk, mem)."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(16, 12)
        self.lif1 = snn.Leaky(beta=0.9, reset_mechanism="zero")
        self.fc2 = nn.Linear(12, 4)
        self.lif2 = snn.Leaky(beta=0.9, reset_mechanism="zero")

    def forward(self, x):
        mem1, mem2 = self.lif1.init_leaky(), self.lif2.init_leaky()
        spk_rec, mem_rec = [], []
        for step in range(x.size(0)):
            spk1, mem1 = self.lif1(self.fc1(x[step]), mem1)
            spk2, mem2 = self.lif2(self.fc2(spk1), mem2)
            spk_rec.append(spk2)
            mem_rec.append(mem2)
        return torch.stack(spk_rec), torch.stack(mem_rec)


def _scaled(model):
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Linear, nn.Conv2d)):
                m.weight.mul_(4.0)                   # every layer spikes
    return model.eval()


def _batch_first():
    torch.manual_seed(0)
    return _scaled(BatchFirst()), (torch.rand(10, T, 2, 4, 4) < 0.4).float()


def _time_first():
    torch.manual_seed(0)
    return _scaled(TimeFirst()), spikegen.rate(torch.rand(10, 16), num_steps=T)


CASES = {"batch-first": (_batch_first, 1), "time-first": (_time_first, 0)}


def _own(model, x):
    with torch.no_grad():
        out = model(x)
    return out[0] if isinstance(out, tuple) else out


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("stated", [True, False])
def test_graph_takes_the_time_axis(case, stated, caplog):
    make, axis = CASES[case]
    model, x = make()
    time_axis._NOTED.clear()                  # the notice is once per class and process
    with caplog.at_level(logging.WARNING, logger="dpap_deploy"):
        g = build_graph(model, x, time_axis=axis if stated else None)
    assert g.time_axis == axis and g.steps_per_call == T
    assert g.input_shape == tuple(x[0, 0].shape)              # one step, batch excluded
    conv_or_fc = g.layers[0].synapse
    assert g.layers[0].n_in == (conv_or_fc.in_channels if hasattr(conv_or_fc, "in_channels")
                                else conv_or_fc.in_features)
    if not stated:                 # inferred: one line says what, and how to state it
        assert any(f"time_axis={axis}" in r.getMessage() for r in caplog.records)
    want = _own(model, x)                                       # [T, 10, 4]
    assert want.sum() > 0
    for bs in (3, 512):                                          # cut along the batch axis
        assert torch.equal(outputs(g, x, None, batch_size=bs), want)


def test_a_wrong_stated_axis_is_refused():
    model, x = _time_first()
    with pytest.raises(ConfigError, match="pass time_axis=0"):
        build_graph(model, x, time_axis=1)
    with pytest.raises(ConfigError, match="time_axis must be"):
        build_graph(model, x, time_axis=2)


def _random_masks(g, seed=1):
    gen = torch.Generator().manual_seed(seed)
    return {l.name: (torch.rand(l.n_out, l.n_in, generator=gen) < 0.8,
                     torch.rand(l.n_out, generator=gen) < (1.0 if l.is_output else 0.5))
            for l in g.layers}


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("stated", [True, False])
def test_compaction_with_a_time_axis(case, stated):
    make, axis = CASES[case]
    model, x = make()
    g = build_graph(model, x, time_axis=axis)
    masks = _random_masks(g)
    result = compact(model, x, masks, time_axis=axis if stated else None)   # verifies itself
    assert result.graph.time_axis == axis
    first = result.model.lif1 if hasattr(result.model, "lif1") else None
    assert first is not None
    n_small = sum(p.numel() for p in result.model.parameters())
    assert n_small < sum(p.numel() for p in model.parameters())
    # the user's own forward on the whole input: the compacted model gives the masked spikes
    from dpap_deploy.masks import apply_to_model
    from dpap_deploy.compaction.compact import copy_with_graph
    masked, mg = copy_with_graph(model, g)
    apply_to_model(masked, None, masks, graph=mg)
    want, got = _own(masked, x), _own(result.model, x)
    assert want.sum() > 0 and torch.equal(want, got)
    # and on a batch cut the way the package cuts it
    part = batch_slice(x, axis, 2, 7)
    assert torch.equal(_own(masked, part), _own(result.model, part))


class OneStepPerCall(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(16, 12)
        self.lif1 = snn.Leaky(beta=0.8, init_hidden=True)
        self.fc2 = nn.Linear(12, 4)
        self.lif2 = snn.Leaky(beta=0.8, init_hidden=True)

    def forward(self, x):
        return self.lif2(self.fc2(self.lif1(self.fc1(x))))


def test_one_step_per_call_with_time_first_frames():
    torch.manual_seed(0)
    model = _scaled(OneStepPerCall())
    x = spikegen.rate(torch.rand(6, 16), num_steps=T)                 # [T, B, 16]
    g = build_graph(model, x, time_axis=0)
    assert g.steps_per_call == 1 and g.time_axis == 0 and g.input_shape == (16,)
    from snntorch import utils
    utils.reset(model)
    with torch.no_grad():
        want = torch.stack([model(x[t]) for t in range(T)])
    assert want.sum() > 0
    assert torch.equal(outputs(g, x, None, batch_size=4), want)


def test_static_input_error_names_the_api_argument():
    model = _scaled(OneStepPerCall())
    g = build_graph(model, torch.rand(2, 16))
    with pytest.raises(ConfigError, match="time_steps=") as err:
        outputs(g, torch.rand(2, 16), None)
    assert "--" not in str(err.value)


NUM_STEPS = T


class FixedSteps(nn.Module):
    """The tutorial's ``for step in range(num_steps): x[step]`` with a global step count: a
    trace on two samples of axis 0 would index past its end."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(16, 8)
        self.lif1 = snn.Leaky(beta=0.9, reset_mechanism="zero")

    def forward(self, x):
        mem = self.lif1.init_leaky()
        rec = []
        for step in range(NUM_STEPS):
            spk, mem = self.lif1(self.fc1(x[step]), mem)
            rec.append(spk)
        return torch.stack(rec)


def test_a_fixed_step_count_loop_is_inferred_time_first():
    torch.manual_seed(0)
    model = _scaled(FixedSteps())
    x = spikegen.rate(torch.rand(7, 16), num_steps=T)
    g = build_graph(model, x)
    assert g.time_axis == 0 and g.steps_per_call == T and g.input_shape == (16,)
    assert torch.equal(outputs(g, x, None, batch_size=3), _own(model, x))


class PicksAChannel(nn.Module):
    """One call per step, indexing its input for another reason than time."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(16, 4)
        self.lif = snn.Leaky(beta=0.9, init_hidden=True)

    def forward(self, x):
        return self.lif(self.fc(x[:, 0]))


def test_indexing_in_a_one_step_model_is_not_a_time_axis():
    model = _scaled(PicksAChannel())
    x = torch.rand(6, 2, 16)
    g = build_graph(model, x)
    assert g.time_axis is None and g.steps_per_call == 1 and g.input_shape == (2, 16)
    from snntorch import utils
    utils.reset(model)
    with torch.no_grad():
        want = torch.stack([model(x) for _ in range(3)])
    assert torch.equal(outputs(g, x, 3), want)
