"""Pruning baselines a user would pick instead of DPAP. Each trains through the same loop as
DPAP (``step()`` after every optimizer step, ``end_epoch()`` after every epoch) with the same
gradual schedule (:mod:`.schedule`):

| ``--baseline`` | removes | importance | module |
|---|---|---|---|
| ``magnitude`` | single weights | ``|w|`` (global) | ``unstructured.py`` |
| ``random`` | single weights | uniform | ``unstructured.py`` |
| ``l1-structured`` | whole units | filter L1 norm | ``structured.py`` + ``unit_importance.py`` |
| ``rate-structured`` | whole units | firing rate (SNN) / mean activation (ANN) | idem |
| ``random-structured`` | whole units | uniform | idem |

The unstructured baselines target a fraction of parameters; the structured ones a fraction of
a deployed cost, ``target_kind`` ``params``, ``synops`` or ``macs`` (:mod:`.cost`).
A new baseline is one scorer in ``unit_importance.SCORERS`` plus a line in ``METHODS``.
"""
from __future__ import annotations

import torch
from torch import nn

from ..errors import ConfigError
from .cost import KINDS as TARGET_KINDS
from .structured import StructuredPruner
from .unstructured import GradualPruner

MEASURE_SAMPLES = 256      # training samples on which rates, SynOps and MACs are measured

# --baseline name -> (pruner class, unit scorer or None)
METHODS = {"magnitude": (GradualPruner, None), "random": (GradualPruner, None),
           "l1-structured": (StructuredPruner, "l1"), "rate-structured": (StructuredPruner, "rate"),
           "random-structured": (StructuredPruner, "random")}


def make_baseline(method: str, model: nn.Module, example_input: torch.Tensor, target: float,
                  start_epoch: int, end_epoch: int, seed: int = 0, target_kind: str = "params",
                  measure_input: torch.Tensor | None = None, time_steps: int | None = None):
    """The pruner for ``--baseline method``."""
    if method not in METHODS:
        raise ConfigError(f"unknown pruning baseline {method!r}; choose one of {', '.join(METHODS)}")
    cls, scorer = METHODS[method]
    if scorer is None:
        if target_kind != "params":
            raise ConfigError(f"--baseline {method} prunes single weights, which compaction "
                              f"cannot remove; its target is a fraction of parameters "
                              f"(--prune-target-kind params), not {target_kind}")
        return GradualPruner(model, example_input, method, target, start_epoch, end_epoch, seed)
    return StructuredPruner(model, example_input, scorer, target, start_epoch, end_epoch, seed,
                            target_kind, measure_input, time_steps, method=method)


__all__ = ["GradualPruner", "METHODS", "StructuredPruner", "TARGET_KINDS", "make_baseline"]
