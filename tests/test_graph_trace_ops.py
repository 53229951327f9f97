"""The tracer knows torch's functions by the function objects themselves (``trace_ops.OPS``):
each known kind still becomes its node, and a function it does not know is refused at trace
time, named, with the line of the forward that calls it and what to write instead."""
from __future__ import annotations

import pytest
import snntorch as snn
import torch
import torch.nn.functional as F
from torch import nn

from dpap_deploy.errors import UnsupportedModelError
from dpap_deploy.graph import build_graph
from dpap_deploy.graph.model_graph import ADD, CAT, ELEMENTWISE, FLATTEN, PASS, POOL
from dpap_deploy.graph.trace_ops import pair


class Net(nn.Module):
    """A conv SNN whose forward calls ``fn(spikes)`` between its two layers."""

    def __init__(self, fn=None):
        super().__init__()
        self.fn = fn
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.lif1 = snn.Leaky(beta=0.9, init_hidden=True)
        self.fc = nn.Linear(4 * 4 * 4, 3)
        self.lif2 = snn.Leaky(beta=0.9, init_hidden=True)

    def forward(self, x):
        s = self.lif1(self.conv(x))
        s = self.fn(s) if self.fn is not None else F.avg_pool2d(s, 2)
        return self.lif2(self.fc(s.flatten(1)))


class EveryKind(Net):
    """One function of each kind the table knows, as users write them."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8 * 4 * 4, 3)

    def forward(self, x):
        x = x[:, 0].float().detach().unsqueeze(1)             # index the input, same, shape
        cur = self.conv(x)
        s = self.lif1(cur + 0)                                # a running sum's first 0
        s = F.dropout(torch.relu(s * 2 - 1), 0.1, self.training)   # element-wise, act, dropout
        _ = torch.zeros_like(s)                               # ignored: no data of the step
        s = torch.cat([F.max_pool2d(s, 2), F.avg_pool2d(s, 2)], 1)   # pools, cat
        s = s.view(len(s), 8, 16).flatten(1)                 # view (reshape), flatten
        y = self.fc(s + s * 0.5)                              # '+' of two traced tensors
        return self.lif2(y)


def test_every_known_kind_traces_to_its_node():
    g = build_graph(EveryKind(), torch.rand(2, 2, 8, 8))
    ops = [n.op for n in g.nodes]
    for op in (ADD, CAT, FLATTEN, PASS, POOL):
        assert op in ops, op
    acts = [n.attrs["fn"] for n in g.nodes if n.op == ELEMENTWISE]
    assert {"relu", "mul", "sub"} <= set(acts)
    pools = {n.attrs["pool"] for n in g.nodes if n.op == POOL}
    assert pools == {"max", "avg"} and [l.name for l in g.layers] == ["conv", "fc"]


@pytest.mark.parametrize("fn, name, hint", [
    (lambda s: F.avg_pool2d(torch.cumsum(s, 1), 2), "torch.cumsum", "nn.Module of its own"),
    (lambda s: F.adaptive_avg_pool2d(s, 4), "adaptive_avg_pool2d", "nn.AvgPool2d"),
    (lambda s: s.sum(1, keepdim=True).expand(-1, 4, -1, -1)[..., ::2, ::2], "torch.Tensor.sum",
     "operations the graph knows"),
    (lambda s: s[:, :4, ::2, ::2], "torch.Tensor.__getitem__", "index only the model's input"),
    (lambda s: torch.softmax(F.avg_pool2d(s, 2), 1), "torch.softmax", "outside the model"),
])
def test_an_unknown_function_is_refused_where_it_is_called(fn, name, hint):
    """Each was made a shape-keeping element-wise node (or, ``*pool*`` by its name, a pool of
    the wrong size) before: compaction then cut channels it mixes."""
    with pytest.raises(UnsupportedModelError) as e:
        build_graph(Net(fn), torch.rand(2, 1, 8, 8))
    msg = str(e.value)
    assert name in msg and hint in msg and "\n" not in msg
    assert "test_graph_trace_ops.py:" in msg and "Net.forward (applied to '" in msg


def test_a_function_is_known_by_itself_not_by_its_name():
    """``F.lp_pool2d`` is a pool by its name, not one the graph computes: refused, where the
    name-keyed table made it a max or average pool of the wrong kind."""
    with pytest.raises(UnsupportedModelError, match="lp_pool2d"):
        build_graph(Net(lambda s: F.lp_pool2d(s, 2, 2)), torch.rand(2, 1, 8, 8))


def test_a_softmax_is_taken_as_the_last_operation_only():
    """An ANN returning ``F.log_softmax(logits, 1)`` (the classic MNIST example) traces as
    before: the largest output is the same; compaction keeps every class."""
    from dpap_deploy.compaction import compact
    class Ann(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = nn.Sequential(nn.Flatten(), nn.Linear(64, 8), nn.ReLU(), nn.Linear(8, 3))

        def forward(self, x):
            return F.log_softmax(self.net(x), dim=1)
    model, x = Ann(), torch.rand(4, 1, 8, 8)
    g = build_graph(model, x)
    assert g.kind == "ann" and g.nodes[g.output].attrs["fn"] == "log_softmax"
    masks = {"net.1": (torch.ones(8, 64, dtype=torch.bool), torch.arange(8) < 5)}
    small = compact(model, x, masks)
    assert small.model.net[1].out_features == 5


def test_an_activation_keeps_its_parameters():
    """``F.hardtanh(s, 0.0, 0.5)`` is not ``F.hardtanh(s)``: the node's name says so, and the
    multi-step path (which applies activations by name) gives the step loop's output."""
    from dpap_deploy.executor.run import outputs
    torch.manual_seed(0)
    model = Net(lambda s: F.avg_pool2d(F.hardtanh(s, 0.0, 0.5), 2))
    x = torch.rand(3, 1, 8, 8) * 4
    g = build_graph(model, x)
    assert "hardtanh(min_val=0.0, max_val=0.5)" in [n.attrs.get("fn") for n in g.nodes]
    assert torch.equal(outputs(g, x, 6), outputs(g, x, 6, multistep=False))


def test_pair():
    assert pair(3) == (3, 3) and pair([2, 1]) == (2, 1) and pair(4, 1) == (4,)
