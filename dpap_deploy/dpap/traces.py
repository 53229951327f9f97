"""Activity traces (paper Eq 5, 6 for SNNs; Eq 18, 19 for ANNs).

A trace is kept per sample and per neuron (per channel for conv populations):

    S[t+1] = tau * S[t] + o[t+1],   S[0] = 0                     (Eq 5)
    S_c[t+1] = tau * S_c[t] + sum_{h,w} o_c[t+1]                  (Eq 6, conv channel c)

For an ANN there is no time axis: one forward pass is one step from ``S = 0``, so the trace is
the ReLU output itself, summed over positions for conv channels (Eq 18, 19).
"""
from __future__ import annotations

import torch


def population_activity(x: torch.Tensor) -> torch.Tensor:
    """Per-sample, per-population activity: ``[B, C, *spatial] -> [B, C]`` (sum over positions,
    Eq 6 / 19); ``[B, F]`` is returned as is."""
    if x.dim() > 2:
        return x.flatten(2).sum(2)
    if x.dim() == 2:
        return x
    raise ValueError(f"expected a batched activation [B, C, ...], got shape {tuple(x.shape)}")


def update_trace(trace: torch.Tensor | None, activity: torch.Tensor, tau: float) -> torch.Tensor:
    """One step of Eq 5/6: ``tau * S + o`` (``S = 0`` when ``trace`` is None)."""
    if trace is None:
        return activity.clone()
    return trace.mul_(tau).add_(activity)
