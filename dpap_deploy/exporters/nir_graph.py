"""The compacted SNN as a ``nir.NIRGraph``, and back into torch.

Nodes: ``Input``, ``Conv2d``, ``Affine`` (``Linear`` when there is no bias), ``LIF``,
``AvgPool2d``, ``Flatten``, ``Output``, in a chain. BatchNorm is folded into the preceding
layer first (NIR has no BatchNorm); MaxPool has no NIR node and is refused.

**LIF mapping.** NIR's LIF is continuous, ``tau dv/dt = (v_leak - v) + r I``, spike when
``v > v_threshold``, then ``v = v_reset``. Discretised with a forward-Euler step ``dt``:
``v[t+1] = (1 - dt/tau) v[t] + (dt/tau) r I[t+1]``. The paper's neuron is
``u[t+1] = lambda u[t] + I[t+1]`` (reset to zero), so ``tau = dt / (1 - lambda)``,
``r = tau / dt = 1 / (1 - lambda)``, ``v_leak = 0``, ``v_reset = 0``, ``v_threshold = V_th``.
We use snnTorch's ``dt = 1e-4`` (its importer assumes it) and store ``dt`` in the graph's
metadata. Shapes exclude the batch; ``Flatten`` flattens every non-batch dimension
(``start_dim = 0``, NIR's convention for shapes without batch).
"""
from __future__ import annotations

import copy

import nir
import numpy as np
import snntorch as snn
import torch
from torch import nn

from ..compaction.fold import fold_batchnorm
from ..compaction.surgery import strip_hooks
from ..dpap.layers import call_order
from ..errors import UnsupportedModelError
from ..neurons import lif

DT = 1e-4


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy().astype(np.float32)


def _lif_node(m: snn.Leaky, shape: tuple[int, ...]) -> nir.LIF:
    lam = float(m.beta)
    tau = DT / (1.0 - lam)
    full = lambda v: np.full(shape, v, dtype=np.float32)  # noqa: E731
    return nir.LIF(tau=full(tau), r=full(tau / DT), v_leak=full(0.0),
                   v_threshold=full(float(m.threshold)), v_reset=full(0.0))


def _pair(v) -> np.ndarray:
    return np.array((v, v) if isinstance(v, int) else tuple(v))


def to_nir(model: nn.Module, example_input: torch.Tensor, time_steps: int) -> nir.NIRGraph:
    """Chain graph of an snnTorch ``nn.Sequential``-like model (evaluation semantics)."""
    model = copy.deepcopy(model).eval()
    strip_hooks(model)
    fold_batchnorm(model, example_input)
    nodes: dict[str, nir.NIRNode] = {"input": nir.Input(input_type=np.array(example_input.shape[1:]))}
    order = ["input"]
    for c in call_order(model, example_input):
        m, name = c.module, c.name.replace(".", "_")
        if isinstance(m, (nn.Identity, nn.Dropout)):
            continue
        if isinstance(m, nn.Conv2d):
            bias = m.bias if m.bias is not None else torch.zeros(m.out_channels)
            node = nir.Conv2d(input_shape=tuple(c.in_shape[2:]), weight=_np(m.weight),
                              stride=_pair(m.stride), padding=_pair(m.padding),
                              dilation=_pair(m.dilation), groups=m.groups, bias=_np(bias))
        elif isinstance(m, nn.Linear):
            node = nir.Affine(weight=_np(m.weight), bias=_np(m.bias)) if m.bias is not None \
                else nir.Linear(weight=_np(m.weight))
        elif isinstance(m, snn.Leaky):
            node = _lif_node(m, c.out_shape[1:])
        elif isinstance(m, nn.AvgPool2d):
            node = nir.AvgPool2d(kernel_size=_pair(m.kernel_size),
                                 stride=_pair(m.stride or m.kernel_size), padding=_pair(m.padding))
        elif isinstance(m, nn.Flatten):
            node = nir.Flatten(input_type={"input": np.array(c.in_shape[1:])}, start_dim=0,
                               end_dim=-1)
        else:
            raise UnsupportedModelError(
                f"layer '{c.name}' ({type(m).__name__}) has no NIR node; NIR export takes Conv2d, "
                "Linear, snntorch.Leaky, AvgPool2d, Flatten (BatchNorm is folded). Replace "
                "MaxPool2d by AvgPool2d to export")
        nodes[name] = node
        order.append(name)
    out_shape = c.out_shape[1:]
    nodes["output"] = nir.Output(output_type=np.array(out_shape))
    order.append("output")
    meta = {"producer": "dpap-deploy", "dt": DT, "time_steps": int(time_steps),
            "encoding": "direct (input current repeated every step)"}
    return nir.NIRGraph(nodes=nodes, edges=list(zip(order, order[1:])), metadata=meta)


def chain(graph: nir.NIRGraph) -> list[tuple[str, nir.NIRNode]]:
    """The nodes of a chain graph, input to output."""
    nxt = dict(graph.edges)
    if len(nxt) != len(graph.edges):
        raise UnsupportedModelError("the NIR graph is not a chain (a node has two successors)")
    starts = set(nxt) - set(nxt.values())
    if len(starts) != 1:
        raise UnsupportedModelError("the NIR graph has no single input node")
    name, out = starts.pop(), []
    while name is not None:
        out.append((name, graph.nodes[name]))
        name = nxt.get(name)
    return out


class _FlattenNonBatch(nn.Module):
    def forward(self, x):
        return x.flatten(1)


def from_nir(graph: nir.NIRGraph) -> nn.Sequential:
    """An snnTorch ``nn.Sequential`` (one call per time step) that runs a chain NIR graph.

    Ours rather than ``snntorch.import_nir``: that importer turns NIR's ``Flatten`` into
    ``torch.nn.Flatten(start_dim, end_dim)`` with the batch dimension counted, so a graph
    whose shapes exclude the batch (NIR's convention, and ours) flattens the batch away.
    """
    dt = float(graph.metadata.get("dt", DT)) if isinstance(graph.metadata, dict) else DT
    mods: list[nn.Module] = []
    for name, node in chain(graph):
        if isinstance(node, (nir.Input, nir.Output)):
            continue
        if isinstance(node, nir.Conv2d):
            w = torch.from_numpy(np.asarray(node.weight))
            m = nn.Conv2d(w.shape[1] * int(node.groups), w.shape[0], tuple(w.shape[2:]),
                          stride=tuple(int(s) for s in node.stride),
                          padding=tuple(int(p) for p in node.padding),
                          dilation=tuple(int(d) for d in node.dilation), groups=int(node.groups))
            with torch.no_grad():
                m.weight.copy_(w)
                m.bias.copy_(torch.from_numpy(np.asarray(node.bias)))
        elif isinstance(node, (nir.Affine, nir.Linear)):
            w = torch.from_numpy(np.asarray(node.weight))
            has_bias = isinstance(node, nir.Affine)
            m = nn.Linear(w.shape[1], w.shape[0], bias=has_bias)
            with torch.no_grad():
                m.weight.copy_(w)
                if has_bias:
                    m.bias.copy_(torch.from_numpy(np.asarray(node.bias)))
        elif isinstance(node, nir.LIF):
            tau, r = np.asarray(node.tau), np.asarray(node.r)
            if not (np.allclose(node.v_leak, 0) and np.allclose(node.v_reset, 0)
                    and np.ptp(tau) == 0 and np.ptp(node.v_threshold) == 0
                    and np.allclose(r * dt / tau, 1.0)):
                raise UnsupportedModelError(f"NIR LIF node '{name}' is not a uniform leaky "
                                            "neuron with unit input gain and zero reset")
            m = lif(beta=float(1.0 - dt / tau.flat[0]), threshold=float(np.asarray(node.v_threshold).flat[0]))
        elif isinstance(node, nir.AvgPool2d):
            m = nn.AvgPool2d(tuple(int(k) for k in node.kernel_size),
                             tuple(int(s) for s in node.stride),
                             tuple(int(p) for p in node.padding))
        elif isinstance(node, nir.Flatten):
            m = _FlattenNonBatch()
        else:
            raise UnsupportedModelError(f"NIR node '{name}' of type {type(node).__name__} is "
                                        "not supported by this reader")
        mods.append(m)
    return nn.Sequential(*mods).eval()
