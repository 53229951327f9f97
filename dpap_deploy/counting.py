"""Parameters, synaptic operations and MACs, counted by forward hooks over real inputs
(method.md section 7).

- **SynOps** (accumulates): for every synaptic layer that reads spikes and time step, each input
  spike costs its fan-out: the number of synapses it reaches. For a conv this is exact with padding and stride:
  the fan-out of input position ``(c, h, w)`` is ``conv_transpose2d`` of an all-ones output map
  with the kernel's support, as sinabs' ``SynOpCounter`` does. Counted for the layers of an
  SNN that receive spikes (every layer but the first); an ``AvgPool2d`` between a neuron layer
  and the synapse turns ``k*k`` spikes into a value of ``count / k^2``, so its output is
  multiplied back by ``k^2`` (the exact count of the pool-folded graph).
- **MACs**: layers whose input is not spikes (the first layer of an SNN under direct
  encoding, at each of the ``T`` steps; every layer of an ANN) do one multiply-accumulate per
  input element and synapse it reaches.
Every figure is given twice: with all weights of the layer (``*_dense``: what a dense
implementation computes) and with its non-zero weights only. Per sample.
Energy is an **estimate**: 0.9 pJ per accumulate and 4.6 pJ per MAC (45 nm figures commonly
used in SNN papers).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from .executor.run import outputs
from .graph import ModelGraph, batch_len, graph_of
from .graph.model_graph import NEURON, POOL, SYNAPSE

PJ_PER_AC = 0.9
PJ_PER_MAC = 4.6


def fanout(layer: nn.Module, in_shape: tuple[int, ...], nonzero: bool = True) -> torch.Tensor:
    """Synapses reached by each input element, shaped like one input sample."""
    w = layer.weight.detach()
    support = (w != 0).to(torch.float64) if nonzero else torch.ones_like(w, dtype=torch.float64)
    if isinstance(layer, nn.Linear):
        return support.sum(0)
    if isinstance(layer, nn.Conv1d):      # a one-row Conv2d
        conv2 = nn.Conv2d(w.shape[1], w.shape[0], (1, w.shape[2]), stride=(1, layer.stride[0]),
                          padding=(0, layer.padding[0]), dilation=(1, layer.dilation[0]),
                          bias=False, device=w.device, dtype=w.dtype)
        with torch.no_grad():
            conv2.weight.copy_(w.unsqueeze(2))
        return fanout(conv2, (in_shape[0], 1, in_shape[1]), nonzero)[:, 0, :]
    _, h, wd = in_shape
    out_h, out_w = F.conv2d(torch.zeros(1, *in_shape, dtype=torch.float64, device=w.device),
                            support, stride=layer.stride, padding=layer.padding,
                            dilation=layer.dilation).shape[-2:]
    ones = torch.ones(1, w.shape[0], out_h, out_w, dtype=torch.float64, device=w.device)
    # Transposed conv without padding gives the fan-out of every position of the *padded*
    # input; the real input is the window [pad, pad + size). (Passing padding= instead would
    # crop symmetrically and lose the last row when the stride leaves a remainder.)
    full = F.conv_transpose2d(ones, support, stride=layer.stride, dilation=layer.dilation)[0]
    ph, pw = (layer.padding,) * 2 if isinstance(layer.padding, int) else layer.padding
    fo = full[:, ph:ph + h, pw:pw + wd]
    return F.pad(fo, (0, wd - fo.shape[2], 0, h - fo.shape[1]))  # never reached: fan-out 0


@dataclass
class LayerOps:
    name: str
    kind: str                  # "conv" / "linear"
    counts: str                # "synops" or "macs"
    params: int
    synops: float = 0.0
    synops_dense: float = 0.0
    macs: float = 0.0
    macs_dense: float = 0.0


@dataclass
class OpsReport:
    layers: list[LayerOps] = field(default_factory=list)
    samples: int = 0

    def total(self, key: str) -> float:
        return float(sum(getattr(l, key) for l in self.layers))

    @property
    def energy_pj(self) -> float:
        """Energy estimate per sample of the non-zero weights' operations."""
        return PJ_PER_AC * self.total("synops") + PJ_PER_MAC * self.total("macs")

    @property
    def energy_pj_dense(self) -> float:
        """Energy estimate per sample counting every weight (the masked network)."""
        return PJ_PER_AC * self.total("synops_dense") + PJ_PER_MAC * self.total("macs_dense")


def _spike_multiplicity(graph: ModelGraph) -> dict[str, float]:
    """``k^2`` per average pool between a neuron population and the next synapse: a pooled
    value ``count / k^2`` stands for ``count`` spikes."""
    mult = {}
    for layer in graph.layers:
        m, cur = 1.0, graph.nodes[graph.nodes[layer.node].inputs[0]]
        while cur.op not in (NEURON, SYNAPSE) and cur.inputs:
            if cur.op == POOL and cur.attrs.get("pool") == "avg":
                for k in cur.attrs["kernel"]:
                    m *= float(k)
            cur = graph.nodes[cur.inputs[0]]
        mult[layer.name] = m
    return mult


@torch.no_grad()
def count_ops(model: nn.Module, x: torch.Tensor, time_steps: int | None = None,
              batch_size: int = 256, graph: ModelGraph | None = None) -> OpsReport:
    """Run ``model`` (evaluation mode) on ``x`` and count per sample."""
    graph = graph_of(graph or model, x)     # checks the model and the input
    kind, layers = graph.kind, graph.layers
    mult = _spike_multiplicity(graph)
    spiking_input = _spiking_inputs(graph)
    samples = batch_len(x, graph.time_axis)       # along the batch axis, never time
    report = OpsReport(samples=samples)
    cache: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}
    hooks = []
    for layer in layers:
        syn = layer.synapse
        params = sum(p.numel() for p in syn.parameters())
        spikes = kind == "snn" and spiking_input[layer.name]
        row = LayerOps(layer.name, layer.kind, "synops" if spikes else "macs", params)
        report.layers.append(row)

        def hook(mod, inputs, row=row, spikes=spikes, m=mult.get(layer.name, 1.0)):
            inp = inputs[0].detach().to(torch.float64)
            key = (row.name, tuple(inp.shape[1:]))
            if key not in cache:
                cache[key] = (fanout(mod, inp.shape[1:], True), fanout(mod, inp.shape[1:], False))
            fo_nz, fo_dense = cache[key]
            if spikes:
                events = inp * m
                row.synops += float((events * fo_nz).sum())
                row.synops_dense += float((events * fo_dense).sum())
            else:
                row.macs += float(fo_nz.sum()) * inp.shape[0]
                row.macs_dense += float(fo_dense.sum()) * inp.shape[0]
        hooks.append(syn.register_forward_hook(lambda mod, inp, out, h=hook: h(mod, inp)))
    try:
        outputs(graph, x, time_steps, batch_size, multistep=False)   # one call per step
    finally:
        for h in hooks:
            h.remove()
    n = max(samples, 1)
    for row in report.layers:
        for k in ("synops", "synops_dense", "macs", "macs_dense"):
            setattr(row, k, getattr(row, k) / n)
    return report


def _spiking_inputs(graph: ModelGraph) -> dict[str, bool]:
    """Whether each synapse reads spikes (a neuron upstream) or the raw input (MACs)."""
    def from_neuron(i: int) -> bool:
        n = graph.nodes[i]
        if n.op == NEURON:
            return n.adapter.kind == "snn"
        if n.op in ("input", SYNAPSE):
            return False
        return bool(n.inputs) and all(from_neuron(j) for j in n.inputs)
    return {l.name: from_neuron(graph.nodes[l.node].inputs[0]) for l in graph.layers}


def param_counts(model: nn.Module) -> tuple[int, int]:
    """``(all parameters, non-zero parameters)``."""
    ps = list(model.parameters())
    return sum(p.numel() for p in ps), sum(int(p.count_nonzero()) for p in ps)
