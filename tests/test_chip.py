"""Loihi 2 resource estimate (dpap_deploy/chip.py) against hand-computed tiny networks."""
import pytest
import snntorch as snn
import torch
from torch import nn

from dpap_deploy.chip import Loihi2Limits, estimate, resources
from dpap_deploy.compaction import compact
from dpap_deploy.errors import ConfigError
from dpap_deploy.graph import build_graph


def _net(pool, ch=2):
    torch.manual_seed(0)
    lif = dict(beta=0.5, init_hidden=True, reset_mechanism="zero")
    return nn.Sequential(nn.Conv2d(1, ch, 3, padding=1), snn.Leaky(**lif), pool(2), nn.Flatten(),
                         nn.Linear(ch * 4, 3), snn.Leaky(output=True, **lif)).eval()


@pytest.fixture(scope="module")
def graphs():
    x = torch.rand(2, 1, 4, 4)
    return {p.__name__: build_graph(_net(p), x) for p in (nn.AvgPool2d, nn.MaxPool2d)}, x


def test_hand_computed_layers(graphs):
    g = graphs[0]["AvgPool2d"]
    # conv: 2 x 4 x 4 neurons, kernel 2 x 1 x 3 x 3 = 18 weights, 32 x 9 connections;
    # the pool folds into the weights (no row); linear: 3 neurons, 3 x 8 weights
    small = Loihi2Limits(neurons_per_core=10, memory_bytes_per_core=20, cores_per_chip=4)
    e = estimate(g, small)
    rows = [(r.kind, r.neurons, r.weights, r.synapses, r.memory_bytes, r.cores, r.bound)
            for r in e.layers]
    assert rows == [("conv", 32, 18, 288, 18, 4, "neurons"),       # ceil(32/10) > ceil(18/20)
                    ("linear", 3, 24, 24, 24, 2, "memory")]         # ceil(24/20) > ceil(3/10)
    assert (e.neurons, e.memory_bytes, e.cores, e.chips) == (35, 42, 6, 2)
    default = estimate(g)
    assert (default.cores, default.chips) == (2, 1)


def test_max_pool_over_spikes_is_a_layer(graphs):
    e = estimate(graphs[0]["MaxPool2d"])
    # depthwise unit weights: 2 kernels of 2 x 2, 8 neurons (2 x 2 x 2), 4 connections each
    assert [(r.kind, r.neurons, r.weights, r.synapses) for r in e.layers] == [
        ("conv", 32, 18, 288), ("maxpool", 8, 8, 32), ("linear", 3, 24, 24)]
    assert e.cores == 3


def test_compaction_saving(graphs):
    g, x = graphs[0]["AvgPool2d"], graphs[1]
    keep = torch.tensor([True, False])          # one of the two conv channels pruned
    small = compact(g.model, x, {"0": (torch.ones(2, 1, dtype=torch.bool), keep)},
                    time_steps=4).graph
    r = resources(g, small, Loihi2Limits(neurons_per_core=16, memory_bytes_per_core=1024))
    assert [l["neurons"] for l in r["compacted"]["layers"]] == [16, 3]
    assert [l["weights"] for l in r["compacted"]["layers"]] == [9, 12]
    assert r["dense"]["cores"] == 3 and r["compacted"]["cores"] == 2
    assert r["saving"] == {"cores": 1, "memory_bytes": 21, "neurons": 16}
    assert "not a measurement" in r["note"]


@pytest.mark.parametrize("bad", [0, -1, 2.5, True])
def test_bad_limits(bad):
    with pytest.raises(ConfigError, match="neurons_per_core is"):
        Loihi2Limits(neurons_per_core=bad)
