"""The netx layers of a model graph, or every reason it has none (``plan``).

A netx file is a chain of ``conv`` / ``dense`` layers, each a synapse and a CUBA neuron
(``netx_neurons``), and ``flatten`` steps. The graph's operations map to it as follows (the
float arithmetic is exact; the writer then quantises each layer):

- a ``Conv2d`` / ``Linear`` and its ``snn.Leaky`` or ``snn.Synaptic``: one layer,
  ``I = W x + b``;
- **average pooling**, module or functional (``F.avg_pool2d``), is linear and folds into a
  synapse (``netx_pools``): over currents into the conv before it, over spikes (or the input)
  into the synapse after it;
- a ``Conv1d`` is the ``Conv2d`` with kernel ``(1, k)`` over the map ``(C, 1, L)``;
- **max pooling over spikes** (its input is a neuron's binary spikes, through flatten / dropout
  only): a depthwise ``conv`` layer with unit weights over the pool window (the window's
  spike count ``n >= 0``, an integer) and a neuron without memory (``beta = 0``) of threshold
  ``1/2``: it spikes iff ``n >= 1``, i.e. iff the window's maximum is 1, at the same step as
  the pool (every netx layer adds the same one-step delay, which the reader already offsets);
- BatchNorm between a synapse and its neuron is folded before (``compaction.fold``).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import snntorch as snn
import torch
from torch import nn

from ..graph import ModelGraph
from ..graph.model_graph import FLATTEN, INPUT, NEURON, NORM, OUTPUT, PASS, POOL, SYNAPSE
from ..graph.trace_ops import pair
from .netx_neurons import ELSEWHERE, neuron_reasons, neuron_values
from .netx_pools import (as_2d, compose_after, describe, fold_before, pool_2d,
                         pool_shape_reason)

HOLDS = ("a netx file holds a chain of conv and dense layers, each ending in a spiking CUBA "
         "neuron, and flatten steps")


@dataclass
class NetxLayer:
    """One netx layer in float64 (rows of ``W`` and ``b`` already divided by the neurons'
    thresholds, see ``netx_neurons``): ``u[t] = alpha u[t-1] + W x[t]``,
    ``v[t] = beta (1 - s[t-1]) v[t-1] + u[t] + b``, ``s[t] = v[t] > threshold``. ``kind``
    ``flatten`` carries shapes only."""

    kind: str                                   # "conv", "dense", "flatten"
    name: str
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...] = ()
    weight: torch.Tensor | None = None          # conv [Co, Ci/groups, kh, kw]; dense [O, I]
    bias: torch.Tensor | None = None            # [Co]
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    dilation: tuple[int, int] = (1, 1)
    groups: int = 1
    alpha: float = 0.0                          # current decay (snn.Synaptic), 0: none
    beta: float = 0.0
    threshold: float = 1.0
    neuron: nn.Module | None = None             # the neuron whose input current is measured
    row_scale: np.ndarray | None = None         # 1 / per-row threshold applied to W and b
    raw_bias: torch.Tensor | None = None        # b before the row scale (measuring currents)
    peak: float | None = None                   # largest |W x|, known without measuring
    pooled: list[str] = field(default_factory=list)   # average pools folded into it


def _conv_reason(node) -> str | None:
    m = node.module
    if m.padding_mode != "zeros" or isinstance(m.padding, str) and m.padding != "valid":
        return (f"{type(m).__name__} '{node.name}' pads with padding={m.padding!r}, "
                f"padding_mode={m.padding_mode!r}; netx's conv layer pads with zeros by a "
                "given number of pixels: use padding=<int> and padding_mode='zeros'")
    return None


def _synapse(node, weights: bool = True) -> NetxLayer:
    """The layer of a ``Conv2d``, ``Conv1d`` (a ``Conv2d`` with kernel ``(1, k)`` over the map
    ``(C, 1, L)``: the same sums) or ``Linear``; ``weights=False``: the module's own weight
    tensor, not copied (a structure-only pass)."""
    m = node.module
    w = m.weight.detach()
    w = w.cpu().double() if weights else w
    b = (m.bias.detach().cpu().double() if m.bias is not None
         else torch.zeros(w.shape[0], dtype=torch.float64))
    if isinstance(m, nn.Linear):
        return NetxLayer("dense", node.name, tuple(node.in_shape), tuple(node.out_shape), w, b)
    pad = (0,) * w.dim() if m.padding == "valid" else m.padding
    if isinstance(m, nn.Conv1d):
        return NetxLayer("conv", node.name, as_2d(node.in_shape), as_2d(node.out_shape),
                         w.unsqueeze(2), b, (1, m.stride[0]), (0, pad[0]), (1, m.dilation[0]),
                         int(m.groups))
    return NetxLayer("conv", node.name, tuple(node.in_shape), tuple(node.out_shape), w, b,
                     pair(m.stride), pair(pad), pair(m.dilation), int(m.groups))


def _maxpool_layer(node) -> tuple[NetxLayer | None, str | None]:
    """Max pooling over binary spikes as a depthwise unit-weight conv layer, threshold 1/2."""
    a = node.attrs
    if a.get("ceil_mode") or a.get("dilation", 1) not in (1, (1, 1)):
        return None, (f"max pooling '{node.name}' (ceil_mode={a.get('ceil_mode')}, dilation "
                      f"{a.get('dilation', 1)}) has no netx form; a pool with ceil_mode=False "
                      "and no dilation over spikes becomes a netx conv layer")
    c = node.in_shape[0]
    kh, kw = a["kernel"]
    return NetxLayer("conv", node.name, tuple(node.in_shape), tuple(node.out_shape),
                     torch.ones(c, 1, kh, kw, dtype=torch.float64),
                     torch.zeros(c, dtype=torch.float64), pair(a["stride"]),
                     pair(a["padding"]), (1, 1), c, beta=0.0, threshold=0.5,
                     peak=float(kh * kw)), None


def _fed_by_spikes(graph: ModelGraph, node_id: int) -> bool:
    method = getattr(graph, "fed_by_spikes", None)
    if method is not None:
        return bool(method(node_id))
    node = graph.nodes[node_id]                       # graphs from before fed_by_spikes
    while len(node.inputs) == 1:
        node = graph.nodes[node.inputs[0]]
        if node.op == NEURON:
            return node.adapter is not None and node.adapter.kind == "snn"
        if node.op not in (FLATTEN, PASS):
            return False
    return False


class _Walk:
    """State of one pass over the graph's nodes in order."""

    def __init__(self, graph: ModelGraph, folded: bool, weights: bool = True):
        self.graph, self.folded, self.weights = graph, folded, weights
        self.layers: list[NetxLayer] = []
        self.reasons: list[str] = []
        self.syn: NetxLayer | None = None       # synapse waiting for its neuron
        self.norm = False                       # a BatchNorm (folded later) in its layer
        self.broken = False                     # the pending synapse was refused already
        self.pool = None                        # average pool over spikes waiting for a synapse
        self.flattened = False

    def refuse(self, reason: str) -> None:
        if reason not in self.reasons:
            self.reasons.append(reason)

    def synapse(self, n) -> None:
        if self.syn is not None:
            self.refuse(f"'{self.syn.name}' feeds '{n.name}' with no spiking neuron between; "
                        f"{HOLDS}")
        self.syn, self.broken, self.norm = None, False, False
        reason = _conv_reason(n) if isinstance(n.module, (nn.Conv1d, nn.Conv2d)) else None
        if reason:
            self.broken = True
            self.refuse(reason)
            return
        self.syn = _synapse(n, self.weights)
        if self.pool is not None:
            reason = fold_before(self.syn, self.pool, self.flattened, self.weights)
            if reason:
                self.refuse(reason)
            self.pool, self.flattened = None, False

    def pooling(self, n) -> None:
        n = pool_2d(n)
        if n.attrs.get("pool") == "avg":
            if self.syn is not None:
                reason = compose_after(self.syn, n, self.weights)
            elif self.pool is not None:
                reason = (f"average pooling '{n.name}' follows the pooling '{self.pool.name}' "
                          "with no synapse between; fold them into one pool")
            else:
                reason = pool_shape_reason(n, need_tiling=True)
                self.pool = n if reason is None else None
            if reason:
                self.refuse(reason)
            return
        if _fed_by_spikes(self.graph, n.id):
            layer, reason = _maxpool_layer(n)
            if layer is not None:
                self.layers.append(layer)
        else:
            src = "the synapse's graded current" if self.syn is not None else "graded values"
            reason = (f"max pooling '{n.name}' ({describe(n)}) takes the maximum of {src}, "
                      "not of spikes, and no netx layer computes a maximum (a layer sums "
                      "weighted inputs); max pooling over a neuron's spikes is exact: move the "
                      "pool after the neuron, or let make_deployable replace it by average "
                      "pooling and fine-tune")
            self.syn, self.broken = None, True
        if reason:
            self.refuse(reason)

    def neuron(self, n) -> None:
        syn, self.syn, norm = self.syn, None, self.norm
        self.norm = False
        if n.adapter is not None and n.adapter.kind != "snn" and n.op == NEURON:
            self.refuse(f"activation '{n.name}' ({describe(n)}) is not a spiking neuron; "
                        f"{HOLDS}")
            return
        reasons = neuron_reasons(n.module, n.name, tuple(n.out_shape),
                                 conv=syn is not None and syn.kind == "conv")
        for r in reasons:
            self.refuse(r)
        if syn is None:
            if not self.broken:
                self.refuse(f"neuron '{n.name}' does not follow a Conv2d or Linear; {HOLDS}")
            self.broken = False
            return
        if reasons:
            return
        if isinstance(n.module, snn.Synaptic) and (norm or bool(syn.bias.abs().max() > 0)):
            self.refuse(f"Synaptic '{n.name}' follows '{syn.name}', which has a bias: snnTorch "
                        "adds it to the synaptic current, where it accumulates, netx adds a "
                        "layer's bias to the membrane: use bias=False (and no BatchNorm) in "
                        "the synapse")
            return
        syn.out_shape = as_2d(n.out_shape) if syn.kind == "conv" else tuple(n.out_shape)
        if not self.weights:                    # structure only: the layer is not written
            self.layers.append(syn)
            return
        alpha, beta, thr = neuron_values(n.module, tuple(n.out_shape))
        syn.raw_bias, syn.row_scale, syn.alpha = syn.bias, 1.0 / thr, alpha
        scale = torch.as_tensor(syn.row_scale)
        syn.weight = syn.weight * scale.view(-1, *([1] * (syn.weight.dim() - 1)))
        syn.bias = syn.bias * scale
        syn.beta, syn.threshold, syn.neuron = beta, 1.0, n.module
        self.layers.append(syn)

    def flatten(self, n) -> None:
        if self.syn is not None:
            self.refuse(f"'{n.name}' flattens the current of '{self.syn.name}' before its "
                        f"neuron; {HOLDS}")
        elif self.pool is not None:             # the pool folds into the next Linear, which
            self.flattened = True               # then reads the unpooled map, flattened
            shape = tuple(self.pool.in_shape)
            self.layers.append(NetxLayer("flatten", n.name, shape, (int(np.prod(shape)),)))
        else:
            self.layers.append(NetxLayer("flatten", n.name, tuple(n.in_shape),
                                         tuple(n.out_shape)))

    def finish(self) -> None:
        g = self.graph
        out = g.nodes[g.output]
        if self.syn is not None:
            what = "Linear" if self.syn.kind == "dense" else "Conv2d"
            where = ("the model's output" if out.op == SYNAPSE and out.name == self.syn.name
                     else "it ends the model")
            self.refuse(f"'{self.syn.name}' is a {what} readout with no spiking neuron ({where}: "
                        "graded values W s + b per step); every netx layer ends in a spiking "
                        "CUBA neuron and a netx network outputs spikes only (a dense layer "
                        "without a neuron is an integrator whose membrane is no output of the "
                        "network): end the model with snn.Leaky(reset_mechanism='zero') and "
                        f"count its spikes, or export with {ELSEWHERE}")
        if getattr(g, "readout", None) == "membrane":
            self.refuse(f"the model returns the membrane of '{out.name}' (a leaky-integrator "
                        "readout); a netx network outputs its last layer's spikes only: return "
                        f"the spikes, or export with {ELSEWHERE}")
        if self.pool is not None:
            self.refuse(f"average pooling '{self.pool.name}' feeds no synapse to fold into; "
                        f"{HOLDS}")


def plan(graph: ModelGraph, folded: bool = True,
         weights: bool | None = None) -> tuple[list[NetxLayer], list[str]]:
    """The netx layers of ``graph`` and every reason netx refuses it (one line each; the
    layers are meaningful only when there is none). ``folded``: BatchNorm is folded already
    (the deployment graph); otherwise a BatchNorm between a synapse and its neuron is taken
    as folded later. ``weights=False``: a structure-only pass for the reasons (the same ones:
    no reason depends on a folded or scaled weight); its layers have shapes, strides and
    padding but hold the modules' unfolded, unscaled weights, not the file's. ``None`` (the
    default): ``folded`` (the deployment graph is planned for writing, the user's graph, as
    ``netx_export.blockers`` plans it, for its reasons only)."""
    weights = folded if weights is None else weights
    walk, cons = _Walk(graph, folded, weights), graph.consumers()
    for n in graph.nodes:
        if n.op in (INPUT, OUTPUT, PASS):
            continue
        if len(n.inputs) != 1 or len(cons[n.id]) > 1 and n.id != graph.output:
            walk.refuse(f"'{n.name}' branches or joins: {HOLDS}; export branching networks "
                        f"with {ELSEWHERE}")
            continue
        if n.op == SYNAPSE:
            walk.synapse(n)
        elif n.op == POOL:
            walk.pooling(n)
        elif n.op == NEURON or isinstance(n.module, snn.SpikingNeuron):
            walk.neuron(n)
        elif n.op == FLATTEN:
            walk.flatten(n)
        elif n.op == NORM and not folded and walk.syn is not None:
            walk.norm = True
        elif n.op == NORM:
            walk.refuse(f"BatchNorm '{n.name}' does not sit between a synapse and its neuron; "
                        "netx folds only such a BatchNorm into the synapse's weights")
        else:
            walk.refuse(f"layer '{n.name}' ({describe(n)}) has no netx form; {HOLDS} "
                        "(BatchNorm and average pooling fold into the weights, max pooling "
                        "over spikes becomes a layer)")
    walk.finish()
    return walk.layers, walk.reasons
