"""Survival functions (paper Eq 12-17). Pure tensor functions: nothing here knows of layers.

    delta = 2 * Normalized(x) - epsilon                        (Eq 12, 13)
    dF    = delta + C  if delta >= 0  else  delta              (Eq 14, 15)
    F     = gamma * F + exp(-(epoch - warmup) / eta) * dF      (Eq 16, 17; epoch >= warmup)

``epoch`` counts from 0; epochs ``0 .. warmup-1`` are the warm-up (no update), so the first
update has factor ``exp(0) = 1``. The exponential is smooth; ``decay = "staircase"`` floors
the exponent as the authors' code does, ``exp(-floor((epoch - warmup) / eta))``. An element
whose ``F < 0`` is pruned.
"""
from __future__ import annotations

import math

import torch

from .config import SurvivalParams


def survival_delta(normalized: torch.Tensor, epsilon: float) -> torch.Tensor:
    return 2.0 * normalized - epsilon


def survival_increment(delta: torch.Tensor, C: float) -> torch.Tensor:
    return torch.where(delta >= 0, delta + C, delta)


def decay_factor(epoch: int, warmup: int, eta: float, decay: str = "smooth") -> float:
    """``exp(-(epoch - warmup) / eta)``, or with the exponent floored (``staircase``); only
    meaningful for ``epoch >= warmup``."""
    x = (epoch - warmup) / eta
    return math.exp(-math.floor(x) if decay == "staircase" else -x)


def in_warmup(epoch: int, params: SurvivalParams) -> bool:
    return epoch < params.warmup


def update_survival(F: torch.Tensor, normalized: torch.Tensor, alive: torch.Tensor,
                    params: SurvivalParams, epoch: int) -> torch.Tensor:
    """New survival values; dead elements keep their (negative) value."""
    dF = survival_increment(survival_delta(normalized, params.epsilon), params.C)
    new = params.gamma * F + decay_factor(epoch, params.warmup, params.eta, params.decay) * dF
    return torch.where(alive, new, F)


def prune_decisions(F: torch.Tensor, alive: torch.Tensor) -> torch.Tensor:
    """Elements that die now: alive and ``F < 0``."""
    return alive & (F < 0)
