"""Structured pruning baselines: whole output units (conv channels, linear neurons), gradual,
with the target set on a deployed cost (``params``, ``synops`` or ``macs`` after compaction).

After epoch ``e`` of the pruning window the goal is ``cost <= (1 - s(e)) * reference``, ``s(e)``
the cubic schedule (:mod:`.schedule`) towards the target fraction and ``reference`` the cost
of the network with every unit kept, measured when the window opens (for ``params``: all
parameters of the model; for SynOps / MACs: counted on ``measure_input``, a fixed set of
training samples). Units are ranked by layer-normalised importance (:mod:`.unit_importance`),
removed units first (they stay removed), and the ranking is cut after the smallest ``n`` whose
cost meets the goal, found by bisection over ``n``: the cut satisfies
``cost(n) <= goal < cost(n - 1)`` (one unit fewer misses the goal), measured on the same
samples. Units removed in earlier epochs stay removed: over a gradual schedule the final cost is
at or below the goal, by more than one unit when SynOps (activity) moved between epochs.
The output layer is never pruned, and every layer keeps at least its best unit.
A removed unit loses its weights, bias and BatchNorm affine parameters (as a DPAP-pruned
neuron), so compaction removes it; masks hold on weights and gradients.
Under data parallelism (``dist``, by default the process's own place) the firing rates and the
SynOps / MACs are measured on each rank's slice of the samples and summed over the ranks, so
every rank takes the same decision (:mod:`.unit_importance`, :mod:`.cost`).
"""
from __future__ import annotations

import torch
from torch import nn

from .. import distributed
from ..errors import ConfigError
from ..graph import build_graph
from ..masks import Masks, apply_masks, check, layer_param_masks, layer_stats
from .cost import KINDS, cost
from .schedule import check_window, cubic_fraction
from .unit_importance import SCORERS, normalized


class StructuredPruner:
    def __init__(self, model: nn.Module, example_input: torch.Tensor, scorer: str, target: float,
                 start_epoch: int, end_epoch: int, seed: int = 0, target_kind: str = "params",
                 measure_input: torch.Tensor | None = None, time_steps: int | None = None,
                 method: str | None = None, dist: distributed.Dist | None = None) -> None:
        if scorer not in SCORERS:
            raise ConfigError(f"unknown unit importance {scorer!r}; choose one of "
                              f"{', '.join(SCORERS)}")
        if target_kind not in KINDS:
            raise ConfigError(f"invalid prune target kind {target_kind!r}; choose one of "
                              f"{', '.join(KINDS)}")
        if not 0.0 <= target < 1.0:
            raise ConfigError(f"invalid prune target {target!r}: a fraction in [0, 1) of the "
                              f"{target_kind} to remove")
        check_window(start_epoch, end_epoch)
        self.model, self.method = model, method or f"{scorer}-structured"
        self.graph = build_graph(model, example_input)
        if target_kind == "synops" and self.graph.kind != "snn":
            raise ConfigError("--prune-target-kind synops needs a spiking model; an ANN's cost "
                              "is its MACs (use macs)")
        self.scorer, self.target, self.target_kind = scorer, target, target_kind
        self.layers = [l for l in self.graph.layers if not l.is_output]
        self.x = example_input if measure_input is None else measure_input
        self.time_steps = time_steps
        self.dist = distributed.current() if dist is None else dist
        self.start, self.end, self.epoch = start_epoch, end_epoch, 0
        self.reference: float | None = None
        self.last: dict = {}
        self.alive = [torch.ones(l.n_out, dtype=torch.bool) for l in self.layers]
        self._gen = torch.Generator().manual_seed(seed)
        self._random = [torch.rand(l.n_out, generator=self._gen, dtype=torch.float64)
                        for l in self.layers]
        self._pairs: list[list] = []
        self._refresh()
        self._hooks = [p.register_hook(lambda g, i=i, j=j: g * self._pairs[i][j][1].to(g.dtype))
                       for i, pairs in enumerate(self._pairs) for j, (p, _) in enumerate(pairs)]

    # ---------------------------------------------------------------- masks
    def _refresh(self) -> None:
        self._pairs = [layer_param_masks(l, torch.ones(l.n_out, l.n_in, dtype=torch.bool,
                                                       device=l.synapse.weight.device),
                                         a.to(l.synapse.weight.device))
                       for l, a in zip(self.layers, self.alive)]

    def masks(self, alive: list[torch.Tensor] | None = None) -> Masks:
        """Every layer's masks: whole units (``alive``, by default the current ones)."""
        alive = self.alive if alive is None else alive
        return check(self.graph, {l.name: (torch.ones(l.n_out, l.n_in, dtype=torch.bool), a)
                                  for l, a in zip(self.layers, alive)})

    @torch.no_grad()
    def step(self) -> None:
        for pairs in self._pairs:
            apply_masks(pairs)

    # ---------------------------------------------------------------- the schedule
    def cost(self, alive: list[torch.Tensor] | None = None) -> float:
        return cost(self.target_kind, self.graph, self.masks(alive), self.x, self.time_steps,
                    self.dist)

    def ranking(self) -> tuple[torch.Tensor, torch.Tensor, int, int]:
        """``(layer index, unit index)`` of every unit in removal order, the number already
        removed, and how many may go at most (each layer keeps its best unit)."""
        scores = normalized(SCORERS[self.scorer](self.layers, graph=self.graph, x=self.x,
                                                 time_steps=self.time_steps, fixed=self._random,
                                                 dist=self.dist))
        li, ui, key = [], [], []
        for i, (s, a) in enumerate(zip(scores, self.alive)):
            s = torch.where(a, s.double(), torch.full_like(s, -1.0, dtype=torch.float64))
            s[int(torch.argmax(s))] = float("inf")          # the layer's best unit stays
            li.append(torch.full_like(a, i, dtype=torch.long))
            ui.append(torch.arange(len(a)))
            key.append(s)
        key_all = torch.cat(key)
        order = torch.argsort(key_all, stable=True)
        n_dead = sum(int((~a).sum()) for a in self.alive)
        return torch.cat(li)[order], torch.cat(ui)[order], n_dead, len(order) - len(self.alive)

    def _alive_after(self, li: torch.Tensor, ui: torch.Tensor, n: int) -> list[torch.Tensor]:
        alive = [torch.ones_like(a) for a in self.alive]
        for l, u in zip(li[:n].tolist(), ui[:n].tolist()):
            alive[l][u] = False
        return alive

    @torch.no_grad()
    def end_epoch(self) -> dict:
        frac = cubic_fraction(self.epoch, self.start, self.end, self.target)
        if frac > 0:
            if self.reference is None:
                self.reference = self.cost()
            goal = (1 - frac) * self.reference
            li, ui, lo, hi = self.ranking()
            c = {lo: self.cost(self._alive_after(li, ui, lo))}
            if c[lo] > goal:
                c[hi] = self.cost(self._alive_after(li, ui, hi))
                if c[hi] <= goal:                  # cost(lo) > goal >= cost(hi): bisect
                    while hi - lo > 1:
                        mid = (lo + hi) // 2
                        c[mid] = self.cost(self._alive_after(li, ui, mid))
                        lo, hi = (lo, mid) if c[mid] <= goal else (mid, hi)
                n = hi
            else:
                n = lo
            self.alive = self._alive_after(li, ui, n)
            self._refresh()
            self.last = {"goal": goal, "cost": c[n], "units_removed": n,
                         "reached": c[n] <= goal}
        self.step()
        self.epoch += 1
        return dict(self.last, fraction=frac)

    # ---------------------------------------------------------------- reports, state
    def layer_stats(self) -> list[dict]:
        alive = dict(zip((l.name for l in self.layers), self.alive))
        return [layer_stats(l, None, alive.get(l.name, torch.ones(l.n_out, dtype=torch.bool))
                            .to(l.synapse.weight.device)) for l in self.graph.layers]

    def state_dict(self) -> dict:
        return {"format": "structured-pruner", "method": self.method, "epoch": self.epoch,
                "target_kind": self.target_kind, "reference": self.reference, "last": self.last,
                "layers": [{"name": n, "syn_alive": s, "neu_alive": a}
                           for n, (s, a) in self.masks().items()]}

    def load_state_dict(self, sd: dict) -> None:
        self.epoch, self.reference = int(sd["epoch"]), sd["reference"]
        self.last = dict(sd.get("last", {}))
        by_name = {d["name"]: d["neu_alive"].bool().cpu() for d in sd["layers"]}
        self.alive = [by_name[l.name] for l in self.layers]
        self._refresh()
        self.step()
