"""Unstructured pruning baselines (single weights), behind DPAP's ``step`` / ``end_epoch``
interface so they train through the same loop:

- ``magnitude``: global unstructured L1 pruning, gradual: after epoch ``e`` the smallest
  ``|w|`` over all prunable weights (every Conv2d / Linear but the output layer, as DPAP) are
  masked until the sparsity reaches ``s(e) = s_f (1 - (1 - p)^3)``, ``p`` the fraction of the
  pruning window ``[start, end]`` elapsed (the cubic schedule of Zhu & Gupta, 2017);
- ``random``: the same schedule, weights chosen uniformly at random among those still alive.

``target`` is the fraction of *all* model parameters to remove, so a baseline can be matched
to a DPAP run's ``params_removed_fraction``. Masks are re-applied after every optimizer step
and to gradients, like DPAP's.
"""
from __future__ import annotations

import torch
from torch import nn

from ..errors import ConfigError
from ..graph import build_graph
from ..masks import layer_stats
from .schedule import check_window, cubic_fraction

METHODS = ("magnitude", "random")   # the single-weight baselines


class GradualPruner:
    def __init__(self, model: nn.Module, example_input: torch.Tensor, method: str, target: float,
                 start_epoch: int, end_epoch: int, seed: int = 0) -> None:
        if method not in METHODS:
            raise ConfigError(f"unknown pruning baseline {method!r}; choose one of {', '.join(METHODS)}")
        if not 0.0 <= target < 1.0:
            raise ConfigError(f"invalid prune target {target!r}: a fraction in [0, 1)")
        check_window(start_epoch, end_epoch)
        self.model, self.method = model, method
        graph = build_graph(model, example_input)
        self.kind, self.layers = graph.kind, [l for l in graph.layers if not l.is_output]
        self.params = [l.synapse.weight for l in self.layers]
        total = sum(p.numel() for p in model.parameters())
        pool = sum(p.numel() for p in self.params)
        self.final_sparsity = min(target * total / pool, 1.0)
        self.start, self.end = start_epoch, end_epoch
        self.epoch = 0
        self.masks = [torch.ones_like(p, dtype=torch.bool) for p in self.params]
        self._gen = torch.Generator().manual_seed(seed)
        self._scores = [torch.rand(p.shape, generator=self._gen).to(p.device) for p in self.params] \
            if method == "random" else None
        self._hooks = [p.register_hook(lambda g, i=i: g * self.masks[i].to(g.dtype))
                       for i, p in enumerate(self.params)]

    def sparsity_at(self, epoch: int) -> float:
        return cubic_fraction(epoch, self.start, self.end, self.final_sparsity)

    @torch.no_grad()
    def step(self) -> None:
        for p, m in zip(self.params, self.masks):
            p.mul_(m)

    @torch.no_grad()
    def end_epoch(self) -> dict:
        goal = self.sparsity_at(self.epoch)
        n_total = sum(m.numel() for m in self.masks)
        n_prune = int(round(goal * n_total))
        scores = [p.abs() for p in self.params] if self._scores is None else self._scores
        flat = torch.cat([s.flatten() for s in scores])
        alive = torch.cat([m.flatten() for m in self.masks])
        flat = torch.where(alive, flat, torch.full_like(flat, -1.0))   # dead first, stay dead
        if n_prune > 0:
            cut = torch.topk(flat, n_prune, largest=False).indices
            keep = torch.ones_like(alive)
            keep[cut] = False
            new = alive & keep
            offset = 0
            for i, m in enumerate(self.masks):
                self.masks[i] = new[offset:offset + m.numel()].view_as(m)
                offset += m.numel()
        self.step()
        self.epoch += 1
        return {"sparsity": goal}

    def layer_stats(self) -> list[dict]:
        out = []
        for layer, m in zip(self.layers, self.masks):
            s = layer_stats(layer)
            kept = int(m.sum())
            s["params_kept"] = kept + (layer.n_out if layer.synapse.bias is not None else 0)
            # a conv synapse is a kernel [C_out, C_in] (kept if any of its weights is)
            s["synapses_kept"] = int(m.flatten(2).any(2).sum()) if m.dim() > 2 else kept
            out.append(s)
        return out

    def state_dict(self) -> dict:
        return {"format": "gradual-pruner", "method": self.method, "epoch": self.epoch,
                "masks": list(self.masks), "final_sparsity": self.final_sparsity,
                "generator": self._gen.get_state()}

    def load_state_dict(self, sd: dict) -> None:
        self.epoch = int(sd["epoch"])
        self.masks = [m.to(p.device) for m, p in zip(sd["masks"], self.params)]
        self._gen.set_state(sd["generator"])
        self.step()
