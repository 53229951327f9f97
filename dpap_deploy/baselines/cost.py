"""The deployed cost of a set of kept units, as compaction would leave it.

- ``params``: the parameters of the compacted network, from the compaction plan (derived deaths
  included): a layer keeps ``|keep_out| * |keep_in| * kernel`` weights, a bias and BatchNorm
  affine per kept unit; every parameter outside the prunable layers stays.
- ``synops`` / ``macs``: the network is compacted (:func:`dpap_deploy.compaction.compact`,
  unverified: the masks are whole units) and counted by :func:`dpap_deploy.counting.count_ops`
  over a few training samples. Counting the masked network instead would be right for SynOps
  (a removed unit never spikes) but not for MACs: the columns that read a removed unit still
  count one MAC per input element.
  Under data parallelism each rank counts its slice of the samples and the per-sample figure is
  ``sum_ranks (n_r * ops_r) / sum_ranks n_r``, the same on every rank.
"""
from __future__ import annotations

import math

import torch

from ..compaction.compact import compact
from ..compaction.plan import plan_compaction
from ..counting import count_ops
from ..distributed import Dist, shard, sum_over_ranks
from ..graph import ModelGraph, batch_slice
from ..masks import Masks

KINDS = ("params", "synops", "macs")


def compacted_params(graph: ModelGraph, masks: Masks) -> int:
    plan = plan_compaction(graph, masks)
    total = sum(p.numel() for p in graph.model.parameters())
    for layer, lp in zip(graph.layers, plan.layers):
        syn, kept_out, kept_in = layer.synapse, len(lp.keep_out), len(lp.keep_in)
        dense = sum(p.numel() for p in syn.parameters())
        kernel = math.prod(syn.weight.shape[2:])
        kept = kept_out * kept_in * kernel + (kept_out if syn.bias is not None else 0)
        if layer.bn is not None:
            bn = sum(p.numel() for p in layer.bn.parameters())
            dense, kept = dense + bn, kept + bn // layer.n_out * kept_out
        total += kept - dense
    return total


@torch.no_grad()
def measured_ops(graph: ModelGraph, masks: Masks, x: torch.Tensor, time_steps: int,
                 kind: str, dist: Dist = Dist()) -> float:
    """Per-sample SynOps or MACs of the compacted network on ``x`` (non-zero weights)."""
    small = compact(graph.model, batch_slice(x, graph.time_axis, 0, 2), masks, verify=False, time_steps=time_steps, graph=graph)
    mine = shard(x, dist)
    ops = count_ops(small.model, mine, time_steps, graph=small.graph).total(kind) \
        if len(mine) else 0.0
    if not dist.active:
        return ops
    total, n = sum_over_ranks([torch.tensor([ops * len(mine), float(len(mine))],
                                            dtype=torch.float64)], dist)[0].tolist()
    return total / n


def cost(kind: str, graph: ModelGraph, masks: Masks, x: torch.Tensor, time_steps: int,
         dist: Dist = Dist()) -> float:
    if kind == "params":
        return float(compacted_params(graph, masks))
    return measured_ops(graph, masks, x, time_steps, kind, dist)
