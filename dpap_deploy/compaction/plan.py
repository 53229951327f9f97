"""Which units of a masked network survive compaction (method.md section 6).

Pure data and boolean tensor logic: this module knows masks, layer shapes and how one layer's
units reach the next layer's inputs (a ``Link``), and nothing of survival functions.

A unit is removed when it is pruned (its mask is off), or when it is dead by derivation:
- *input-dead*: no live incoming synapse (from a live input) and a zero constant drive (bias,
  and BatchNorm's shift in evaluation mode), so its input current is always 0;
- *output-dead*: every outgoing synapse to a live unit of the next layer is pruned, so nothing
  reads it.
Both are applied until nothing changes. The output layer's units are never removed.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..dpap.layers import Call, PrunableLayer
from ..errors import DPAPError, UnsupportedModelError

Masks = dict[str, tuple[torch.Tensor, torch.Tensor]]   # layer name -> (synapses, neurons)


@dataclass(frozen=True)
class Link:
    """How the units of one layer map onto the input features of the next.

    ``block = 1``: unit ``c`` is input feature ``c`` (conv -> [pool] -> conv, linear -> linear).
    ``block = H*W``: across ``Flatten``, channel ``c`` owns features ``[c*H*W, (c+1)*H*W)``.
    """

    block: int = 1

    def expand(self, units: torch.Tensor) -> torch.Tensor:
        return units.repeat_interleave(self.block) if self.block > 1 else units

    def reduce_any(self, features: torch.Tensor) -> torch.Tensor:
        return features.view(-1, self.block).any(1) if self.block > 1 else features


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


def links_between(layers: list[PrunableLayer], calls: list[Call]) -> list[Link]:
    """``links[l]`` maps layer ``l-1``'s units onto layer ``l``'s inputs (``links[0]`` unused)."""
    pos = {c.name: i for i, c in enumerate(calls)}
    links = [Link()]
    for prev, cur in zip(layers, layers[1:]):
        last = prev.neuron_name or prev.bn_name or prev.name
        between = calls[pos[last] + 1:pos[cur.name]]
        flat = [c for c in between if isinstance(c.module, nn.Flatten)]
        if flat:
            shape = flat[0].in_shape
            if len(shape) != 4 or shape[1] != prev.n_out:
                raise UnsupportedModelError(
                    f"cannot map the channels of '{prev.name}' across Flatten '{flat[0].name}' "
                    f"(input shape {shape[1:]}, {prev.n_out} channels expected)")
            link = Link(block=shape[2] * shape[3])
        else:
            link = Link()
        if cur.n_in != prev.n_out * link.block:
            raise UnsupportedModelError(
                f"'{cur.name}' takes {cur.n_in} inputs but '{prev.name}' provides "
                f"{prev.n_out * link.block}; compaction supports feed-forward chains only")
        links.append(link)
    return links


@torch.no_grad()
def constant_drive(layer: PrunableLayer) -> torch.Tensor:
    """Input current of each unit when all its inputs are zero (evaluation mode)."""
    syn = layer.synapse
    b = syn.bias.detach() if syn.bias is not None else torch.zeros(layer.n_out, device=syn.weight.device)
    bn = layer.bn
    if bn is None:
        return b
    w = bn.weight.detach() if bn.weight is not None else torch.ones_like(b)
    shift = bn.bias.detach() if bn.bias is not None else torch.zeros_like(b)
    if bn.running_mean is None:
        return shift
    return w * (b - bn.running_mean) / torch.sqrt(bn.running_var + bn.eps) + shift


def plan_compaction(layers: list[PrunableLayer], links: list[Link], masks: Masks) -> CompactionPlan:
    syn = [masks[l.name][0].cpu() for l in layers]
    alive = [masks[l.name][1].cpu().clone() for l in layers]
    alive[-1][:] = True
    pruned = [int((~a).sum()) for a in alive]
    drive_zero = [constant_drive(l).cpu() == 0 for l in layers]
    eff = lambda i: syn[i] & alive[i][:, None]   # noqa: E731  synapses of live units
    changed = True
    while changed:
        changed = False
        for i in range(len(layers) - 1):        # input-dead (the output layer is kept whole)
            live_in = torch.ones(layers[i].n_in, dtype=torch.bool) if i == 0 \
                else links[i].expand(alive[i - 1])
            dead = alive[i] & ~(syn[i] & live_in[None, :]).any(1) & drive_zero[i]
            if dead.any():
                alive[i] &= ~dead
                changed = True
        for i in range(len(layers) - 2, -1, -1):  # output-dead
            used = links[i + 1].reduce_any(eff(i + 1).any(0))
            dead = alive[i] & ~used
            if dead.any():
                alive[i] &= ~dead
                changed = True
    for layer, a in zip(layers, alive):
        if not a.any():
            raise DPAPError(f"layer '{layer.name}' has no unit left after pruning: the network's "
                            "output no longer depends on its input, so there is nothing to compact")
    out = []
    for i, layer in enumerate(layers):
        keep_in = torch.arange(layer.n_in) if i == 0 else \
            links[i].expand(alive[i - 1]).nonzero().flatten()
        out.append(LayerPlan(layer.name, alive[i].nonzero().flatten(), keep_in, pruned[i],
                             layer.n_out - pruned[i] - int(alive[i].sum())))
    return CompactionPlan(out)
