"""Parameters, synaptic operations and MACs, counted by forward hooks over real inputs
(method.md section 7).

- **SynOps** (accumulates): for every synaptic layer and time step, each input spike costs its
  fan-out: the number of synapses it reaches. For a conv this is exact with padding and stride:
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

from .compaction.fold import _pair
from .dpap.layers import call_order, find_prunable_layers

PJ_PER_AC = 0.9
PJ_PER_MAC = 4.6


def fanout(layer: nn.Module, in_shape: tuple[int, ...], nonzero: bool = True) -> torch.Tensor:
    """Synapses reached by each input element, shaped like one input sample."""
    w = layer.weight.detach()
    support = (w != 0).to(torch.float64) if nonzero else torch.ones_like(w, dtype=torch.float64)
    if isinstance(layer, nn.Linear):
        return support.sum(0)
    _, h, wd = in_shape
    out_h, out_w = F.conv2d(torch.zeros(1, *in_shape, dtype=torch.float64, device=w.device),
                            support, stride=layer.stride, padding=layer.padding,
                            dilation=layer.dilation).shape[-2:]
    ones = torch.ones(1, w.shape[0], out_h, out_w, dtype=torch.float64, device=w.device)
    # Transposed conv without padding gives the fan-out of every position of the *padded*
    # input; the real input is the window [pad, pad + size). (Passing padding= instead would
    # crop symmetrically and lose the last row when the stride leaves a remainder.)
    full = F.conv_transpose2d(ones, support, stride=layer.stride, dilation=layer.dilation)[0]
    ph, pw = _pair(layer.padding)
    fo = full[:, ph:ph + h, pw:pw + wd]
    return F.pad(fo, (0, wd - fo.shape[2], 0, h - fo.shape[1]))  # never reached: fan-out 0


@dataclass
class LayerOps:
    name: str
    kind: str                  # "conv" / "linear"
    counts: str                # "synops" or "macs"
    params: int
    params_nonzero: int
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
        return PJ_PER_AC * self.total("synops") + PJ_PER_MAC * self.total("macs")


def _spike_multiplicity(calls, layers) -> dict[str, float]:
    """``k^2`` per AvgPool2d between a layer's neuron and the next synapse."""
    pos = {c.name: i for i, c in enumerate(calls)}
    mult = {}
    for prev, cur in zip(layers, layers[1:]):
        start = pos[prev.neuron_name or prev.bn_name or prev.name]
        m = 1.0
        for c in calls[start + 1:pos[cur.name]]:
            if isinstance(c.module, nn.AvgPool2d):
                k = c.module.kernel_size
                m *= float(k * k if isinstance(k, int) else k[0] * k[1])
        mult[cur.name] = m
    return mult


@torch.no_grad()
def count_ops(model: nn.Module, x: torch.Tensor, time_steps: int = 8,
              batch_size: int = 256) -> OpsReport:
    """Run ``model`` (evaluation mode) on ``x`` and count per sample."""
    from .compaction.compact import outputs
    kind, layers = find_prunable_layers(model, x[:2])
    mult = _spike_multiplicity(call_order(model, x[:2]), layers)
    report = OpsReport(samples=len(x))
    rows = {}
    cache: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}
    hooks = []
    for i, layer in enumerate(layers):
        syn = layer.synapse
        params = sum(p.numel() for p in syn.parameters())
        nz = sum(int(p.count_nonzero()) for p in syn.parameters())
        spikes = kind == "snn" and i > 0
        row = LayerOps(layer.name, layer.kind, "synops" if spikes else "macs", params, nz)
        rows[layer.name] = row
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
        for s in range(0, len(x), batch_size):
            outputs(model, x[s:s + batch_size], kind, time_steps)
    finally:
        for h in hooks:
            h.remove()
    n = max(len(x), 1)
    for row in report.layers:
        for k in ("synops", "synops_dense", "macs", "macs_dense"):
            setattr(row, k, getattr(row, k) / n)
    return report


def param_counts(model: nn.Module) -> tuple[int, int]:
    """``(all parameters, non-zero parameters)``."""
    ps = list(model.parameters())
    return sum(p.numel() for p in ps), sum(int(p.count_nonzero()) for p in ps)
