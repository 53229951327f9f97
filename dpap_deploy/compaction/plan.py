"""Which units of a masked network survive compaction (method.md section 6), on the model graph.

Pure boolean tensor logic over the graph: this module knows masks, layer shapes and how each
node moves channels (pooling, BatchNorm, neurons and dropout keep them; ``Flatten`` spreads a
channel over a block of features; ``torch.cat`` stacks them; a residual ``+`` ties them).

A unit is removed when it is pruned (its mask is off), or when it is dead by derivation:
- *input-dead*: no live incoming synapse (from a live input) and a zero constant drive (bias,
  and BatchNorm's shift in evaluation mode), so its input current is always 0;
- *output-dead*: nothing downstream reads it through a live synapse.
Both are applied until nothing changes. The output layer's units are never removed.
Channels tied by a residual sum are removed only together: a channel of a tie group goes only
when it is dead in every member layer (and never when the group reaches the model's input).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import DPAPError
from ..graph import ModelGraph, PrunableLayer
from ..graph.model_graph import (ADD, CAT, ELEMENTWISE, FLATTEN, INPUT, NEURON, NORM, OUTPUT,
                                 PASS, POOL, SYNAPSE)
from ..masks import Masks, recurrent_of


@dataclass
class LayerPlan:
    name: str
    keep_out: torch.Tensor      # long, kept output units (neurons / channels)
    keep_in: torch.Tensor       # long, kept input features (channels for conv, columns for linear)
    pruned_out: int             # removed by their mask
    derived_out: int            # removed by derivation (input- or output-dead)


@dataclass
class CompactionPlan:
    layers: list[LayerPlan]

    def by_name(self) -> dict[str, LayerPlan]:
        return {p.name: p for p in self.layers}


@torch.no_grad()
def constant_drive(layer: PrunableLayer) -> torch.Tensor:
    """Input current of each unit when all its inputs are zero (evaluation mode)."""
    syn = layer.synapse
    b = syn.bias.detach() if syn.bias is not None else torch.zeros(layer.n_out, device=syn.weight.device)
    rec = recurrent_of(layer)
    if rec is not None and rec.bias is not None:     # RLeaky: the recurrent bias drives too
        b = b + rec.bias.detach()
    bn = layer.bn
    if bn is None:
        return b
    w = bn.weight.detach() if bn.weight is not None else torch.ones_like(b)
    shift = bn.bias.detach() if bn.bias is not None else torch.zeros_like(b)
    if bn.running_mean is None:
        return shift
    return w * (b - bn.running_mean) / torch.sqrt(bn.running_var + bn.eps) + shift


def _channels(shape: tuple[int, ...]) -> int:
    return int(shape[0]) if shape else 1


def _block(shape: tuple[int, ...]) -> int:
    n = 1
    for s in shape[1:]:
        n *= int(s)
    return n


class _Flow:
    """Per-node channel liveness, forward (``live``) and backward (``used``)."""

    def __init__(self, graph: ModelGraph, masks: Masks, alive: dict[str, torch.Tensor]):
        self.g = graph
        self.layer_at = {l.node: l for l in graph.layers}
        self.syn = {l.name: masks[l.name][0].cpu() for l in graph.layers}
        self.alive = alive
        self.drive = {l.name: constant_drive(l).cpu() != 0 for l in graph.layers}
        self.in_layer = {i for l in graph.layers for i in l.path}

    def eff(self, layer: PrunableLayer) -> torch.Tensor:
        return self.syn[layer.name] & self.alive[layer.name][:, None]

    def forward(self) -> dict[int, torch.Tensor]:
        live: dict[int, torch.Tensor] = {}
        for n in self.g.nodes:
            ins = [live[i] for i in n.inputs]
            if n.op == INPUT:
                live[n.id] = torch.ones(_channels(n.out_shape), dtype=torch.bool)
            elif n.op == SYNAPSE:
                layer = self.layer_at[n.id]
                li = ins[0]
                has_in = (self.syn[layer.name] & li[None, :]).any(1)
                live[n.id] = self.alive[layer.name] & (has_in | self.drive[layer.name])
            elif n.op == NORM and n.id not in self.in_layer:
                live[n.id] = torch.ones(_channels(n.out_shape), dtype=torch.bool)
            elif n.op == ADD:
                live[n.id] = ins[0] | ins[1]
            elif n.op == CAT:
                live[n.id] = torch.cat(ins) if n.attrs.get("dim") in (1, -len(n.out_shape) - 1) \
                    else torch.ones(_channels(n.out_shape), dtype=torch.bool)
            elif n.op == FLATTEN:
                live[n.id] = ins[0].repeat_interleave(_block(n.in_shape))
            elif n.op in (NORM, NEURON, POOL, PASS, OUTPUT) or \
                    (n.op == ELEMENTWISE and n.attrs.get("act") and n.attrs.get("fn") == "relu"):
                live[n.id] = ins[0]
            else:                          # unknown element-wise op: assume it can create activity
                live[n.id] = torch.ones(_channels(n.out_shape), dtype=torch.bool)
        return live

    def backward(self) -> dict[int, torch.Tensor]:
        used: dict[int, torch.Tensor] = {n.id: torch.zeros(_channels(n.out_shape), dtype=torch.bool)
                                         for n in self.g.nodes}
        for n in reversed(self.g.nodes):
            u = used[n.id]
            if n.op == OUTPUT:
                u = torch.ones_like(u)
            if n.op == SYNAPSE:
                layer = self.layer_at[n.id]
                contrib = [self.eff(layer).any(0)]
            elif n.op == CAT and n.attrs.get("dim") in (1, -len(n.out_shape) - 1):
                sizes = [_channels(self.g.nodes[i].out_shape) for i in n.inputs]
                contrib = list(torch.split(u, sizes))
            elif n.op == CAT:
                contrib = [torch.ones(_channels(self.g.nodes[i].out_shape), dtype=torch.bool)
                           for i in n.inputs]
            elif n.op == FLATTEN:
                contrib = [u.view(_channels(n.in_shape), -1).any(1)]
            else:
                contrib = [u] * len(n.inputs)
            for i, c in zip(n.inputs, contrib):
                if c.shape == used[i].shape:
                    used[i] |= c
                else:                      # a shape change we do not model: keep everything
                    used[i] |= True
        return used


def tie_groups(graph: ModelGraph) -> list[list[PrunableLayer]]:
    """Layers whose output channels are summed together (residual ``+``); a group containing
    ``None`` reaches the model's input or an unknown op and can never lose a channel."""
    space: dict[int, object] = {}
    parent: dict[object, object] = {}

    def find(a):
        while parent.setdefault(a, a) != a:
            a = parent[a]
        return a

    layer_at = {l.node: l for l in graph.layers}
    for n in graph.nodes:
        if n.op == SYNAPSE:
            space[n.id] = layer_at[n.id].name
        elif n.op == ADD:
            a, b = (space[i] for i in n.inputs)
            parent[find(a)] = find(b)
            space[n.id] = b
        elif n.op in (NORM, NEURON, POOL, PASS, OUTPUT) or \
                (n.op == ELEMENTWISE and not n.attrs.get("reshape")):
            space[n.id] = space[n.inputs[0]] if n.inputs else ("input", n.id)
        else:
            space[n.id] = ("other", n.id)
    groups: dict[object, list] = {}
    for key in {find(s) for s in space.values()}:
        groups[key] = []
    for s in set(space.values()):
        groups[find(s)].append(s)
    by_name = {l.name: l for l in graph.layers}
    out = []
    for members in groups.values():
        names = [m for m in members if isinstance(m, str)]
        if not names:
            continue
        layers = [by_name[m] for m in names]
        if len(names) != len(members):
            layers.append(None)
        out.append(layers)
    return out


def plan_compaction(graph: ModelGraph, masks: Masks) -> CompactionPlan:
    """``masks``: every layer's, as :func:`dpap_deploy.masks.check` completes them."""
    layers = graph.layers
    alive = {l.name: masks[l.name][1].cpu().clone() for l in layers}
    for l in layers:
        if l.is_output:
            alive[l.name][:] = True
    pruned = {l.name: int((~masks[l.name][1].cpu()).sum()) if not l.is_output else 0
              for l in layers}
    flow = _Flow(graph, masks, alive)
    while True:
        live, used = flow.forward(), flow.backward()
        changed = False
        for l in layers:
            if l.is_output:
                continue
            new = alive[l.name] & live[l.node] & used[l.node]
            if not torch.equal(new, alive[l.name]):
                alive[l.name] = new
                changed = True
        if not changed:
            break
    for l in layers:
        if not alive[l.name].any():
            raise DPAPError(f"layer '{l.name}' has no unit left after pruning: the network's "
                            "output no longer depends on its input, so there is nothing to compact")
    keep = {l.name: alive[l.name].clone() for l in layers}
    for group in tie_groups(graph):
        if len(group) == 1 and group[0] is not None:
            continue
        together = torch.zeros_like(keep[next(l for l in group if l is not None).name]) \
            if None not in group else None
        for l in group:
            if l is not None and together is not None:
                together |= keep[l.name]
        for l in group:
            if l is not None:
                keep[l.name] = together.clone() if together is not None else \
                    torch.ones_like(keep[l.name])
    return CompactionPlan([_layer_plan(graph, l, keep, pruned[l.name]) for l in layers])


def _layer_plan(graph: ModelGraph, layer: PrunableLayer, keep: dict[str, torch.Tensor],
                pruned: int) -> LayerPlan:
    kept = keep[layer.name]
    keep_in = kept_inputs(graph, layer, keep)
    return LayerPlan(layer.name, kept.nonzero().flatten(), keep_in.nonzero().flatten(),
                     min(pruned, layer.n_out - int(kept.sum())),
                     max(0, layer.n_out - pruned - int(kept.sum())))


def kept_inputs(graph: ModelGraph, layer: PrunableLayer, keep: dict[str, torch.Tensor]) -> torch.Tensor:
    """Which input features of ``layer`` remain after every producer loses its removed units."""
    kept: dict[int, torch.Tensor] = {}
    layer_at = {l.node: l for l in graph.layers}
    for n in graph.nodes:
        if n.id == layer.node:
            return kept[n.inputs[0]]
        ins = [kept[i] for i in n.inputs]
        if n.op == SYNAPSE:
            kept[n.id] = keep[layer_at[n.id].name]
        elif n.op == CAT and n.attrs.get("dim") in (1, -len(n.out_shape) - 1):
            kept[n.id] = torch.cat(ins)
        elif n.op == FLATTEN:
            kept[n.id] = ins[0].repeat_interleave(_block(n.in_shape))
        elif n.op in (NORM, NEURON, POOL, PASS, ADD, ELEMENTWISE) and ins and \
                ins[0].numel() == _channels(n.out_shape):
            kept[n.id] = ins[0]
        else:
            kept[n.id] = torch.ones(_channels(n.out_shape), dtype=torch.bool)
    raise KeyError(layer.name)
