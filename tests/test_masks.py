"""``dpap_deploy.masks`` on hand-built tiny networks whose every masked parameter is known:
derive (a DPAP state, zero weights), check (a state against its model, masks against a graph),
apply (weights, bias, BatchNorm, a recurrent weight), stats and the digest ranks compare."""
from __future__ import annotations

import pytest
import snntorch as snn
import torch
from torch import nn

from dpap_deploy import masks as mk
from dpap_deploy.errors import DPAPError
from dpap_deploy.graph import build_graph

X = torch.rand(2, 1, 4, 4, generator=torch.Generator().manual_seed(0))


def _net() -> nn.Sequential:
    """conv 1 -> 2 (3x3), BatchNorm, Leaky, Flatten (2 x 2 x 2 = 8), Linear 8 -> 3, Leaky:
    every parameter non-zero."""
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2),
                        snn.Leaky(beta=0.9, init_hidden=True), nn.Flatten(), nn.Linear(8, 3),
                        snn.Leaky(beta=0.9, init_hidden=True, output=True))
    with torch.no_grad():
        for i, p in enumerate(net.parameters()):
            p.copy_(torch.arange(1, p.numel() + 1, dtype=p.dtype).view_as(p) / 10 + i)
    return net.eval()


@pytest.fixture(scope="module")
def graph():
    return build_graph(_net(), X)


def _masks():
    """Conv neuron 1 removed; linear synapse (row 1, column 0) removed."""
    lin = torch.ones(3, 8, dtype=torch.bool)
    lin[1, 0] = False
    return {"0": (torch.ones(2, 1, dtype=torch.bool), torch.tensor([True, False])),
            "4": (lin, torch.ones(3, dtype=torch.bool))}


def test_apply_zeroes_exactly_the_removed_parameters():
    net, ref = _net(), _net()
    assert mk.apply_to_model(net, X, _masks()) is net
    conv, bn, lin = net[0], net[1], net[4]
    for p in (conv.weight, conv.bias, bn.weight, bn.bias):   # neuron 1: its kernel, bias, BN
        assert not p[1].any()
    for p, q in ((conv.weight, ref[0].weight), (conv.bias, ref[0].bias),
                 (bn.weight, ref[1].weight), (bn.bias, ref[1].bias)):
        assert torch.equal(p[0], q[0])                       # neuron 0 untouched
    assert lin.weight[1, 0] == 0 and int(lin.weight.count_nonzero()) == 3 * 8 - 1
    assert torch.equal(lin.weight.flatten()[torch.arange(24) != 8],
                       ref[4].weight.flatten()[torch.arange(24) != 8])
    assert torch.equal(lin.bias, ref[4].bias)


def test_a_recurrent_weight_loses_the_rows_and_columns_of_removed_neurons():
    net = nn.Sequential(nn.Linear(3, 4), snn.RLeaky(beta=0.9, linear_features=4, init_hidden=True,
                                                    reset_delay=False),
                        nn.Linear(4, 2), snn.Leaky(beta=0.9, init_hidden=True, output=True))
    g = build_graph(net, torch.rand(2, 3))
    rec = mk.recurrent_of(g.layers[0])
    assert rec is net[1].recurrent
    with torch.no_grad():
        rec.weight.fill_(1.0)
        rec.bias.fill_(1.0)
    mk.apply_to_model(net, None, {"0": (torch.ones(4, 3, dtype=torch.bool),
                                        torch.tensor([True, False, True, True]))}, graph=g)
    want = torch.ones(4, 4)
    want[1, :] = want[:, 1] = 0
    assert torch.equal(rec.weight.detach(), want)
    assert torch.equal(rec.bias.detach(), torch.tensor([1.0, 0.0, 1.0, 1.0]))


def test_layer_stats_and_removed_fraction_count_by_hand(graph):
    m = mk.check(graph, _masks())
    conv, lin = (mk.layer_stats(l, *m[l.name]) for l in graph.layers)
    # conv: 18 weights + 2 biases + 2 + 2 BatchNorm; neuron 1 takes 9 + 1 + 1 + 1
    assert conv == {"name": "0", "kind": "conv", "neurons_total": 2, "neurons_kept": 1,
                    "synapses_total": 2, "synapses_kept": 1, "params_total": 24, "params_kept": 12}
    assert lin == {"name": "4", "kind": "linear", "neurons_total": 3, "neurons_kept": 3,
                   "synapses_total": 24, "synapses_kept": 23, "params_total": 27,
                   "params_kept": 26}
    total = sum(p.numel() for p in graph.model.parameters())
    assert total == 51 and mk.removed_fraction([conv, lin], total) == 13 / 51
    assert mk.layer_stats(graph.layers[0])["params_kept"] == 24     # no masks: all kept


def test_check_completes_converts_and_refuses_in_one_line(graph):
    full = mk.check(graph, None)
    assert list(full) == ["0", "4"] and all(t.dtype == torch.bool and t.all()
                                            for pair in full.values() for t in pair)
    part = mk.check(graph, {"0": (torch.ones(2, 1), torch.tensor([1.0, 0.0]))})   # 0 / 1 floats
    assert torch.equal(part["0"][1], torch.tensor([True, False])) and part["4"][0].all()
    neu = torch.tensor([0.5, 1.0])
    cases = [([1, 2], "got list"),
             ({"0": (1, 2)}, "(synapses, neurons)"),
             ({"9": _masks()["0"]}, "name layer(s) 9 that the model does not have"),
             ({"0": (torch.ones(2, 2, dtype=torch.bool), torch.ones(2, dtype=torch.bool))},
              "has shapes (2, 2) / (2,)"),
             ({"0": (torch.ones(2, 1), neu)}, "neuron mask of layer '0' holds 1 value(s) other "
                                              "than 0 and 1 (e.g. 0.5)"),
             ({"0": (torch.full((2, 1), float("nan")), neu)}, "synapse mask of layer '0' holds 2")]
    for bad, msg in cases:
        with pytest.raises(DPAPError) as e:
            mk.check(graph, bad)
        assert msg in str(e.value) and "\n" not in str(e.value), str(e.value)


def test_from_dpap_state_and_check_state(graph):
    state = {"format": "dpap-state", "layers": [
        {"name": n, "kind": "x", "syn_alive": s, "neu_alive": u, "F_syn": None}
        for n, (s, u) in mk.check(graph, _masks()).items()]}
    got = mk.from_dpap_state(state)
    assert list(got) == ["0", "4"]
    assert all(torch.equal(a, b) for n in got for a, b in zip(got[n], _masks()[n]))
    mk.check_state(state, graph.layers, "ck.pt")
    for bad, msg in ((None, "got NoneType"), ({"layers": [{"name": "0"}]}, "'layers' list")):
        with pytest.raises(DPAPError, match=msg):
            mk.from_dpap_state(bad)
    layer0, layer1 = state["layers"]
    for bad, msg in (({"layers": None}, "no layer list"),
                     ({"layers": [layer0]}, "masks for 1 layers, the model has 2"),
                     ({"layers": [{**layer0, "neu_alive": torch.ones(2)}, layer1]},
                      "layer 0 neu_alive mask is (2,) torch.float32"),
                     ({"layers": [{**layer0, "syn_alive": torch.ones(1, 2, dtype=torch.bool)},
                                  layer1]}, "layer 0 syn_alive mask is (1, 2)"),
                     ({"layers": [layer0, {**layer1, "neu_alive": None}]},
                      "layer 4 neu_alive mask is NoneType")):
        with pytest.raises(DPAPError) as e:
            mk.check_state(bad, graph.layers, "ck.pt")
        assert str(e.value).startswith("ck.pt: ") and msg in str(e.value), str(e.value)


def test_from_weights_reads_zero_kernels(graph):
    net = _net()
    g = build_graph(net, X)
    with torch.no_grad():
        net[0].weight[0, 0].zero_()          # conv unit 0's only kernel
        net[4].weight[2].zero_()             # linear unit 2: every synapse
        net[4].weight[0, 3] = 0.0
    got = mk.from_weights(g.layers)
    assert torch.equal(got["0"][0], torch.tensor([[False], [True]]))
    want = torch.ones(3, 8, dtype=torch.bool)
    want[2], want[0, 3] = False, False
    assert torch.equal(got["4"][0], want) and got["4"][1].all() and got["0"][1].all()
    units = mk.from_weights(g.layers, units=True)
    assert torch.equal(units["0"][1], torch.tensor([False, True]))
    assert torch.equal(units["4"][1], torch.tensor([True, True, False]))


def test_digest_is_the_stored_hash_of_shapes_and_values():
    a = [torch.tensor([[True, False, True], [False, True, True]]), torch.tensor([True, False])]
    # the value every rank computed before the masks module existed: runs stay comparable
    assert mk.digest(a) == 4931678298608412958
    assert mk.digest([a[0].reshape(3, 2), a[1]]) == 9116642491319052397   # same bytes, shape
    assert mk.digest({"0": (a[0], a[1])}) == mk.digest(a)
    flipped = a[0].clone()
    flipped[1, 2] = False
    assert mk.digest([flipped, a[1]]) != mk.digest(a)
