"""Importance of whole units (a conv output channel, a linear neuron) for the structured
baselines; one scorer per baseline kind, in a registry. A scorer returns one score per output
unit of each layer; low scores are removed first. Scores are then divided by their layer's
mean (Torch-Pruning's ``normalizer="mean"``) so that one global ranking spans layers of
different sizes.

- ``l1``: ``I_i = sum |W[i, ...]| + |b_i|``, the L1 norm of the unit's filter (Li et al., 2016;
  Torch-Pruning's magnitude importance with ``p = 1``, restricted to the layer's own weights).
- ``rate``: the unit's mean activity on training samples: for an SNN the firing rate of the
  population (spikes averaged over samples, time steps and, for a channel, positions); for an
  ANN the mean activation (the analogue of paper Eq 19). Under data parallelism each rank
  measures its slice of the samples and the sums and counts are added over the ranks, so every
  rank ranks the units alike (weights are equal on every rank, activity is measured).
- ``random``: a uniform score drawn once per unit from the run's seed (fixed over epochs).
"""
from __future__ import annotations

from typing import Callable

import torch

from ..distributed import Dist, shard, sum_over_ranks
from ..executor.run import outputs
from ..graph import ModelGraph, PrunableLayer, adapter_for

Scorer = Callable[..., list[torch.Tensor]]


@torch.no_grad()
def l1_scores(layers: list[PrunableLayer], **_) -> list[torch.Tensor]:
    out = []
    for l in layers:
        w = l.synapse.weight.detach().abs().flatten(1).sum(1).double()
        b = l.synapse.bias
        out.append((w + (b.detach().abs().double() if b is not None else 0.0)).cpu())
    return out


@torch.no_grad()
def rate_scores(layers: list[PrunableLayer], graph: ModelGraph, x: torch.Tensor,
                time_steps: int, dist: Dist = Dist(), **_) -> list[torch.Tensor]:
    """Mean activity per unit over ``x``, read with forward hooks on the neuron modules:
    ``rate_i = sum_ranks sum_(samples, steps, positions) s_i / sum_ranks count``."""
    chan = 2 if graph.steps_per_call > 1 else 1     # [T, B, C, ...] when the model loops itself
    sums = [torch.zeros(l.n_out, dtype=torch.float64) for l in layers]
    counts = [0] * len(layers)
    hooks = []
    for i, l in enumerate(layers):
        if l.neuron is None:
            continue
        adapter = adapter_for(l.neuron)

        def hook(_m, _inp, out, i=i, adapter=adapter):
            s = adapter.spikes(out) if adapter is not None else out
            s = s.detach().double().movedim(chan, 0).flatten(1)
            sums[i] += s.sum(1).cpu()
            counts[i] += s.shape[1]
        hooks.append(l.neuron.register_forward_hook(hook))
    mine = shard(x, dist)
    try:
        if len(mine):
            outputs(graph, mine, time_steps, multistep=False)   # hooks count one call per step
    finally:
        for h in hooks:
            h.remove()
    *sums, total = sum_over_ranks(sums + [torch.tensor(counts, dtype=torch.float64)], dist)
    return [s / max(float(c), 1.0) for s, c in zip(sums, total)]


def random_scores(layers: list[PrunableLayer], fixed: list[torch.Tensor], **_) -> list[torch.Tensor]:
    return fixed


SCORERS: dict[str, Scorer] = {"l1": l1_scores, "rate": rate_scores, "random": random_scores}


def normalized(scores: list[torch.Tensor]) -> list[torch.Tensor]:
    """Each layer's scores over their mean (a layer of zeros stays zero)."""
    return [s / s.mean() if float(s.mean()) > 0 else s for s in scores]
