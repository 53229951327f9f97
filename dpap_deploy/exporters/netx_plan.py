"""The netx layers of a model graph, or every reason it has none (``plan``).

A netx file is a chain of ``conv`` / ``dense`` layers, each a synapse and a CUBA neuron
(``netx_neurons``), and ``flatten`` steps. The graph's operations map to it as follows (the
float arithmetic is exact; the writer then quantises each layer):

- a ``Conv2d`` / ``Linear`` and its ``snn.Leaky`` or ``snn.Synaptic``: one layer,
  ``I = W x + b``;
- **average pooling**, module or functional (``F.avg_pool2d``), is linear and folds into a
  synapse:
  - *over currents* (between a synapse and its neuron): ``avgpool_{k,s}(conv_{W,S,P}(x))`` is
    one convolution with kernel ``(k - 1) S + K``, stride ``S s``, padding ``P`` and weights
    ``W'[v] = sum_{a < k} W[v - S a] / (k_h k_w)`` (``conv_transpose2d`` of the box filter
    with ``W``), bias unchanged (the window's weights sum to 1);
  - *over spikes* (after a neuron, or on the input; square, stride = kernel ``k``, no padding):
    into the synapse it feeds, as ``compaction.fold`` does: a conv ``(K, S, P)`` becomes
    ``(K k, S k, P k)`` with ``W'[v] = W[v // k] / k^2``; a ``Linear`` after ``Flatten`` gets
    each pooled column spread over its ``k x k`` source pixels, divided by ``k^2``;
- **max pooling over spikes** (its input is a neuron's binary spikes, through flatten / dropout
  only): a depthwise ``conv`` layer with unit weights over the pool window (the window's
  spike count ``n >= 0``, an integer) and a neuron without memory (``beta = 0``) of threshold
  ``1/2``: it spikes iff ``n >= 1``, i.e. iff the window's maximum is 1, at the same step as
  the pool (every netx layer adds the same one-step delay, which the reader already offsets);
- BatchNorm between a synapse and its neuron is folded before (``compaction.fold``).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import snntorch as snn
import torch
import torch.nn.functional as F
from torch import nn

from ..graph import ModelGraph
from ..graph.model_graph import FLATTEN, INPUT, NEURON, NORM, OUTPUT, PASS, POOL, SYNAPSE
from .netx_neurons import ELSEWHERE, neuron_reasons, neuron_values

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


def _pair(v) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else tuple(int(x) for x in v)


def _as_2d(shape: tuple[int, ...]) -> tuple[int, ...]:
    """A 1-D map ``(C, L)`` as the 2-D map ``(C, 1, L)`` netx convolves; others unchanged."""
    return (shape[0], 1, shape[1]) if len(shape) == 2 else tuple(shape)


def _conv_reason(node) -> str | None:
    m = node.module
    if m.padding_mode != "zeros" or isinstance(m.padding, str) and m.padding != "valid":
        return (f"{type(m).__name__} '{node.name}' pads with padding={m.padding!r}, "
                f"padding_mode={m.padding_mode!r}; netx's conv layer pads with zeros by a "
                "given number of pixels: use padding=<int> and padding_mode='zeros'")
    return None


def _synapse(node) -> NetxLayer:
    """The layer of a ``Conv2d``, ``Conv1d`` (a ``Conv2d`` with kernel ``(1, k)`` over the map
    ``(C, 1, L)``: the same sums) or ``Linear``."""
    m = node.module
    w = m.weight.detach().cpu().double()
    b = m.bias.detach().cpu().double() if m.bias is not None else torch.zeros(w.shape[0],
                                                                             dtype=torch.float64)
    if isinstance(m, nn.Linear):
        return NetxLayer("dense", node.name, tuple(node.in_shape), tuple(node.out_shape), w, b)
    pad = (0,) * w.dim() if m.padding == "valid" else m.padding
    if isinstance(m, nn.Conv1d):
        return NetxLayer("conv", node.name, _as_2d(node.in_shape), _as_2d(node.out_shape),
                         w.unsqueeze(2), b, (1, m.stride[0]), (0, pad[0]), (1, m.dilation[0]),
                         int(m.groups))
    return NetxLayer("conv", node.name, tuple(node.in_shape), tuple(node.out_shape), w, b,
                     _pair(m.stride), _pair(pad), _pair(m.dilation), int(m.groups))


def _pool_2d(node):
    """``node`` with a 1-D pool's attributes and shapes as the ``(1, k)`` 2-D pool over
    ``(C, 1, L)`` (the same windows); a 2-D pool unchanged."""
    a = node.attrs
    if a.get("dims") != 1:
        return node
    two = {**a, "dims": 2, "kernel": (1,) + tuple(a["kernel"]),
           "stride": (1,) + tuple(a["stride"]), "padding": (0,) + tuple(a["padding"])}
    return replace(node, attrs=two, in_shapes=[_as_2d(node.in_shape)],
                   out_shape=_as_2d(node.out_shape))


def _pool_shape_reason(node, need_tiling: bool) -> str | None:
    a, what = node.attrs, _describe(node)
    k, s, p = a["kernel"], a["stride"], a["padding"]
    if tuple(p) != (0, 0) or a.get("ceil_mode") or not a.get("exact", True):
        return (f"average pooling '{node.name}' ({what}, padding {tuple(p)}, ceil_mode="
                f"{a.get('ceil_mode')}) is not a plain window mean: use padding=0, "
                "ceil_mode=False and the default divisor to fold it into netx weights")
    if need_tiling and tuple(k) != tuple(s):
        return (f"average pooling '{node.name}' (kernel {tuple(k)}, stride {tuple(s)}) after a "
                "neuron folds into the next synapse only with stride = kernel")
    return None


@torch.no_grad()
def _compose_after(syn: NetxLayer, node) -> str | None:
    """Average pooling over currents: fold it into the pending synapse (module docstring)."""
    reason = _pool_shape_reason(node, need_tiling=False)
    if reason:
        return reason
    if syn.kind != "conv" or syn.dilation != (1, 1):
        return (f"average pooling '{node.name}' follows '{syn.name}', which is not an undilated "
                "Conv2d: only a convolution composes with a pool into one netx conv layer")
    (kh, kw), (sh, sw) = node.attrs["kernel"], node.attrs["stride"]
    co, ci, kk_h, kk_w = syn.weight.shape
    box = torch.full((1, 1, kh, kw), 1.0 / (kh * kw), dtype=torch.float64)
    w = F.conv_transpose2d(box, syn.weight.reshape(1, co * ci, kk_h, kk_w), stride=syn.stride)
    syn.weight = w.reshape(co, ci, *w.shape[-2:])
    syn.stride = (syn.stride[0] * sh, syn.stride[1] * sw)
    syn.out_shape = _as_2d(node.out_shape)
    syn.pooled.append(node.name)
    return None


@torch.no_grad()
def _fold_before(syn: NetxLayer, pool, flattened: bool) -> str | None:
    """Average pooling over spikes: fold it into the synapse it feeds (module docstring)."""
    kh, kw = pool.attrs["kernel"]
    c, h, w = pool.in_shape
    if syn.kind == "conv" and not flattened:
        if syn.dilation != (1, 1) or syn.groups != 1:
            return (f"average pooling '{pool.name}' feeds the dilated or grouped conv "
                    f"'{syn.name}', into which it does not fold")
        if syn.padding != (0, 0) and (h % kh or w % kw):
            return (f"average pooling '{pool.name}' feeds the padded conv '{syn.name}' and its "
                    f"{h}x{w} map is not a multiple of the pool size {kh}x{kw}, so it does not "
                    "fold")
        co, ci, fh, fw = syn.weight.shape
        wk = F.conv_transpose2d(syn.weight.reshape(co * ci, 1, fh, fw),
                                torch.full((1, 1, kh, kw), 1.0 / (kh * kw), dtype=torch.float64),
                                stride=(kh, kw))
        syn.weight = wk.reshape(co, ci, *wk.shape[-2:])
        syn.stride = (syn.stride[0] * kh, syn.stride[1] * kw)
        syn.padding = (syn.padding[0] * kh, syn.padding[1] * kw)
    elif syn.kind == "dense" and flattened:
        hp, wp = h // kh, w // kw
        wl = syn.weight.view(syn.weight.shape[0], c, hp, wp)
        spread = wl.repeat_interleave(kh, 2).repeat_interleave(kw, 3) / (kh * kw)
        syn.weight = F.pad(spread, (0, w - wp * kw, 0, h - hp * kh)).reshape(syn.weight.shape[0],
                                                                              -1)
    else:
        return f"average pooling '{pool.name}' feeds '{syn.name}' in a way that does not fold"
    syn.in_shape = (c * h * w,) if flattened else tuple(pool.in_shape)
    syn.pooled.append(pool.name)
    return None


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
                     torch.zeros(c, dtype=torch.float64), _pair(a["stride"]),
                     _pair(a["padding"]), (1, 1), c, beta=0.0, threshold=0.5,
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


def _describe(node) -> str:
    """``nn.MaxPool2d``'s class name, ``F.max_pool2d`` for a functional pool, else the
    function's name."""
    if node.module is not None:
        return type(node.module).__name__
    a = node.attrs
    if node.op == POOL:
        return f"F.{a.get('pool', 'max')}_pool{a.get('dims', 2)}d"
    return str(a.get("fn", node.op))


class _Walk:
    """State of one pass over the graph's nodes in order."""

    def __init__(self, graph: ModelGraph, folded: bool):
        self.graph, self.folded = graph, folded
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
        self.syn = _synapse(n)
        if self.pool is not None:
            reason = _fold_before(self.syn, self.pool, self.flattened)
            if reason:
                self.refuse(reason)
            self.pool, self.flattened = None, False

    def pooling(self, n) -> None:
        n = _pool_2d(n)
        if n.attrs.get("pool") == "avg":
            if self.syn is not None:
                reason = _compose_after(self.syn, n)
            elif self.pool is not None:
                reason = (f"average pooling '{n.name}' follows the pooling '{self.pool.name}' "
                          "with no synapse between; fold them into one pool")
            else:
                reason = _pool_shape_reason(n, need_tiling=True)
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
            reason = (f"max pooling '{n.name}' ({_describe(n)}) takes the maximum of {src}, "
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
            self.refuse(f"activation '{n.name}' ({_describe(n)}) is not a spiking neuron; "
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
        alpha, beta, thr = neuron_values(n.module, tuple(n.out_shape))
        syn.raw_bias, syn.row_scale, syn.alpha = syn.bias, 1.0 / thr, alpha
        scale = torch.as_tensor(syn.row_scale)
        syn.weight = syn.weight * scale.view(-1, *([1] * (syn.weight.dim() - 1)))
        syn.bias = syn.bias * scale
        syn.beta, syn.threshold, syn.neuron = beta, 1.0, n.module
        syn.out_shape = _as_2d(n.out_shape) if syn.kind == "conv" else tuple(n.out_shape)
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


def plan(graph: ModelGraph, folded: bool = True) -> tuple[list[NetxLayer], list[str]]:
    """The netx layers of ``graph`` and every reason netx refuses it (one line each; the
    layers are meaningful only when there is none). ``folded``: BatchNorm is folded already
    (the deployment graph); otherwise a BatchNorm between a synapse and its neuron is taken
    as folded later."""
    walk, cons = _Walk(graph, folded), graph.consumers()
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
            walk.refuse(f"layer '{n.name}' ({_describe(n)}) has no netx form; {HOLDS} "
                        "(BatchNorm and average pooling fold into the weights, max pooling "
                        "over spikes becomes a layer)")
    walk.finish()
    return walk.layers, walk.reasons
