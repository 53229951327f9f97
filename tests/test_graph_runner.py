"""One time loop (``executor.run``) and one reset (``graph.state.reset_states``), whatever the
model's style: a tutorial class running its own loop and returning ``(spk, mem)`` records goes
through the compaction API and measures like a one-step-per-call model."""
from __future__ import annotations

import pytest
import snntorch as snn
import torch
from torch import nn

from dpap_deploy.executor.run import outputs, run_window
from dpap_deploy.graph import build_graph, graph_of, reset_states

T = 5


class Tutorial5(nn.Module):
    """snnTorch tutorial 5: the forward loops over ``num_steps`` on a static input and returns
    ``torch.stack(spk_rec), torch.stack(mem_rec)``; ``time_first``: it reads ``x[step]``
    (tutorial 7's ``[T, B, ...]`` input) instead."""

    def __init__(self, time_first: bool = False):
        super().__init__()
        self.time_first = time_first
        self.fc1 = nn.Linear(12, 10)
        self.lif1 = snn.Leaky(beta=0.9)
        self.fc2 = nn.Linear(10, 4)
        self.lif2 = snn.Leaky(beta=0.9)

    def forward(self, x):
        mem1 = self.lif1.init_leaky()
        mem2 = self.lif2.init_leaky()
        spk2_rec, mem2_rec = [], []
        for step in range(x.size(0) if self.time_first else T):
            cur1 = self.fc1(x[step] if self.time_first else x)
            spk1, mem1 = self.lif1(cur1, mem1)
            cur2 = self.fc2(spk1)
            spk2, mem2 = self.lif2(cur2, mem2)
            spk2_rec.append(spk2)
            mem2_rec.append(mem2)
        return torch.stack(spk2_rec, dim=0), torch.stack(mem2_rec, dim=0)


def _tutorial(time_first: bool = False):
    torch.manual_seed(0)
    model = Tutorial5(time_first).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(3.0)                        # every layer spikes
    x = torch.rand(T, 16, 12) if time_first else torch.rand(16, 12)
    return model, x


@pytest.mark.parametrize("time_first", [False, True])
def test_tutorial_class_compacts_and_measures(time_first):
    """``compact`` and ``compact_and_measure`` (what ``dpap-deploy compact`` calls) run the
    tutorial class through the one loop: the accuracies are the user's own reading of its
    ``(spk, mem)`` records, and units pruned away are gone from the compacted copy."""
    from dpap_deploy.compaction import compact
    from dpap_deploy.masks import apply_to_model
    from dpap_deploy.compaction.measure import compact_and_measure
    from dpap_deploy.metrics import correct, predictions
    model, x = _tutorial(time_first)
    axis = 0 if time_first else None
    n = 16
    y = torch.randint(0, 4, (n,), generator=torch.Generator().manual_seed(1))
    g = build_graph(model, x, time_axis=axis)
    assert g.steps_per_call == T and g.output_membrane is False
    keep = torch.tensor([True, False] * 5)
    masks = {"fc1": (torch.ones(10, 12, dtype=torch.bool), keep),
             "fc2": (torch.ones(4, 10, dtype=torch.bool), torch.ones(4, dtype=torch.bool))}
    apply_to_model(model, None, masks, graph=g)            # the masked model, as after DPAP
    small = compact(model, x, masks, time_steps=T, time_axis=axis)
    assert small.model.fc1.out_features == 5
    r = compact_and_measure(model, "snn", masks, x, y, T, time_axis=axis)
    with torch.no_grad():
        spk, mem = model(x)
    assert spk.shape == mem.shape == (T, n, 4)
    want = correct(predictions(spk.mean(0)), y) / n
    assert r.accuracy_masked == r.accuracy_compact == want
    assert r.verified_on == n and r.result.model.fc1.out_features == 5


def test_one_loop_for_both_styles_and_the_old_name():
    """The same network written one step per call runs through ``run_window`` / ``outputs``
    to the very spikes the own-loop class records."""
    model, x = _tutorial()
    step = nn.Sequential(model.fc1, snn.Leaky(beta=0.9, init_hidden=True),
                         model.fc2, snn.Leaky(beta=0.9, init_hidden=True, output=True))
    with torch.no_grad():
        spk, _ = model(x)
        g_own, g_step = build_graph(model, x), build_graph(step, x)
        for got in (run_window(g_own, x, None), outputs(g_own, x, None, batch_size=5),
                    run_window(g_step, x, T), outputs(g_step, x, T, batch_size=5),
                    outputs(g_step, x, T, multistep=False)):
            assert torch.equal(got, spk)


def test_one_reset_clears_every_neuron_type():
    """``graph.state.reset_states`` (the package's one reset) zeroes hidden states of any
    adapter type, so a second window equals the first."""
    net = nn.Sequential(nn.Linear(12, 6), snn.Synaptic(alpha=0.8, beta=0.9, init_hidden=True),
                        nn.Linear(6, 4), snn.Leaky(beta=0.9, init_hidden=True, output=True))
    x = torch.rand(3, 12) * 4
    g = build_graph(net, x)
    with torch.no_grad():
        first = run_window(g, x, T)
        net(x)                                   # state left over from a stray call
        assert torch.equal(run_window(g, x, T), first)
        reset_states(net)
        assert float(net[1].syn.abs().sum()) == 0 and float(net[3].mem.abs().sum()) == 0


def test_graph_of_takes_a_graph_or_builds_one():
    model, x = _tutorial()
    g = graph_of(model, x)
    assert graph_of(g, None) is g and g.model is model and g.steps_per_call == T

    class Frames:                  # streamed event frames: indexable, not a tensor
        def __init__(self, t):
            self.t = t

        def __getitem__(self, key):
            return self.t[key]
    net = nn.Sequential(nn.Linear(12, 4), snn.Leaky(beta=0.9, init_hidden=True))
    gf = graph_of(net, Frames(torch.rand(3, T, 12)), time_axis=1)
    assert gf.time_axis == 1 and gf.input_shape == (12,) and gf.model is net
