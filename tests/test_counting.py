"""SynOps and MACs from the hooks against explicit loops over tiny layers with known spikes."""
import itertools

import pytest
import torch
from torch import nn

from dpap_deploy.counting import count_ops, fanout
from dpap_deploy.neurons import lif


def brute_conv_fanout(w, c, h, wd, H, W, stride, pad):
    """Synapses with a non-zero weight that input (c, h, wd) reaches, by explicit loops."""
    co, _, kh, kw = w.shape
    ho, wo = (H + 2 * pad - kh) // stride + 1, (W + 2 * pad - kw) // stride + 1
    n = 0
    for o, y, x in itertools.product(range(co), range(ho), range(wo)):
        u, v = h + pad - y * stride, wd + pad - x * stride
        if 0 <= u < kh and 0 <= v < kw and w[o, c, u, v] != 0:
            n += 1
    return n


def _snn(conv2_pruned_channel=True):
    """conv1 (1x1, weight 1) + LIF passes binary inputs through as spikes at every step, so
    conv2 sees known spikes; conv2 has padding 1, stride 2, zero weights and (optionally) a
    fully pruned input channel."""
    torch.manual_seed(0)
    conv1 = nn.Conv2d(3, 3, 1, bias=False)
    conv2 = nn.Conv2d(3, 4, 3, stride=2, padding=1)
    lin = nn.Linear(4 * 3 * 3, 5)
    with torch.no_grad():
        conv1.weight.copy_(torch.eye(3).view(3, 3, 1, 1))
        conv2.weight.mul_(4)
        conv2.weight[conv2.weight.abs() < 0.3] = 0
        if conv2_pruned_channel:
            conv2.weight[:, 1] = 0
        lin.weight[lin.weight.abs() < 0.05] = 0
        lin.weight.mul_(5)
    return nn.Sequential(conv1, lif(), conv2, lif(), nn.Flatten(), lin, lif()), conv2, lin


def test_conv_fanout_matches_loops_with_padding_and_stride():
    _, conv2, _ = _snn()
    fo = fanout(conv2, (3, 5, 5))
    for c, h, w in itertools.product(range(3), range(5), range(5)):
        assert fo[c, h, w] == brute_conv_fanout(conv2.weight, c, h, w, 5, 5, 2, 1)
    assert fo[1].sum() == 0                   # fully pruned input channel reaches nothing


def test_synops_and_macs_equal_brute_force():
    model, conv2, lin = _snn()
    x = (torch.rand(4, 3, 5, 5, generator=torch.Generator().manual_seed(1)) > 0.5).float()
    T = 3
    seen = []
    lin.register_forward_pre_hook(lambda m, i: seen.append(i[0].detach().clone()))
    rep = count_ops(model, x, time_steps=T)
    r = {l.name: l for l in rep.layers}
    # conv2 receives x itself as spikes at every step (conv1 = identity, V_th 0.5, input 1)
    want = sum(brute_conv_fanout(conv2.weight, c, h, w, 5, 5, 2, 1)
               for n in range(4) for c, h, w in itertools.product(range(3), range(5), range(5))
               if x[n, c, h, w] == 1) * T / 4
    assert r["2"].counts == "synops" and r["2"].synops == pytest.approx(want)
    # dense count: every weight of conv2 counts, zeros included
    dense = sum(1 for n in range(4) for c, h, w in itertools.product(range(3), range(5), range(5))
                if x[n, c, h, w] == 1 for o, y, xx in itertools.product(range(4), range(3), range(3))
                if 0 <= h + 1 - 2 * y < 3 and 0 <= w + 1 - 2 * xx < 3) * T / 4
    assert r["2"].synops_dense == pytest.approx(dense)
    # linear: spikes it saw (conv2's spikes, flattened) times non-zero column counts
    spikes = torch.stack([s for s in seen if len(s) == 4])   # [T, B, 36] (not the probes)
    assert set(spikes.unique().tolist()) <= {0.0, 1.0} and spikes.sum() > 0
    want_lin = sum(int((lin.weight[:, j] != 0).sum()) for t, n, j in
                   itertools.product(range(T), range(4), range(36)) if spikes[t, n, j] == 1) / 4
    assert r["5"].synops == pytest.approx(want_lin)
    # the first layer gets the input current (direct encoding): MACs, every step
    assert r["0"].counts == "macs" and r["0"].macs == pytest.approx(3 * 25 * T)


def test_pruned_input_channel_contributes_nothing():
    model, conv2, _ = _snn()
    x = (torch.rand(2, 3, 5, 5, generator=torch.Generator().manual_seed(2)) > 0.5).float()
    base = {l.name: l.synops for l in count_ops(model, x, 2).layers}["2"]
    x2 = x.clone()
    x2[:, 1] = 1.0                                # many more spikes, all in the pruned channel
    more = {l.name: l.synops for l in count_ops(model, x2, 2).layers}["2"]
    assert more == base


def test_ann_macs_equal_loops_and_avgpool_multiplicity():
    torch.manual_seed(0)
    conv = nn.Conv2d(2, 3, 3, stride=2, padding=1)
    with torch.no_grad():
        conv.weight[conv.weight.abs() < 0.15] = 0
    model = nn.Sequential(conv, nn.ReLU(), nn.Flatten(), nn.Linear(3 * 3 * 3, 2))
    rep = count_ops(model, torch.rand(5, 2, 6, 6))
    want = sum(brute_conv_fanout(conv.weight, c, h, w, 6, 6, 2, 1)
               for c, h, w in itertools.product(range(2), range(6), range(6)))
    assert rep.layers[0].macs == pytest.approx(want)
    ones = torch.ones_like(conv.weight)
    assert rep.layers[0].macs_dense == pytest.approx(sum(
        brute_conv_fanout(ones, c, h, w, 6, 6, 2, 1)
        for c, h, w in itertools.product(range(2), range(6), range(6))))
    assert rep.layers[1].macs == pytest.approx(int((model[3].weight != 0).sum()))
    # SNN with AvgPool2d(2) before a Linear: a pooled value v stands for 4v spikes
    snn_model = nn.Sequential(nn.Conv2d(1, 1, 1, bias=False), lif(), nn.AvgPool2d(2), nn.Flatten(),
                              nn.Linear(4, 2), lif())
    with torch.no_grad():
        snn_model[0].weight.fill_(1.0)
        snn_model[4].weight.fill_(1.0)
    x = torch.zeros(1, 1, 4, 4)
    x[0, 0, :2, :2] = 1.0                         # 4 input spikes in one pooling window
    rep = count_ops(snn_model, x, time_steps=1)
    assert rep.layers[1].synops == pytest.approx(4 * 2)   # 4 spikes x fan-out 2
