"""Dendritic-spine importance (Eq 11) and the normalisation of Eq 12-13.

Normalisation is over a population of a layer's elements: its *still-alive* ones by default,
every one with ``DPAPConfig.population = "all"`` (the authors' code). ``p75`` (default) maps
``x -> clip((x - min) / (p75 - min), 0, 1)``, ``p75`` = 75th percentile of the alive values
(linear interpolation, as ``numpy.quantile``); ``minmax`` maps ``x -> (x - min) / (max - min)``.
When the scale is zero (``p75 == min``, or ``max == min``) the layer has no evidence this epoch:
with ``zero_range="skip"`` (default) :func:`normalize` returns ``None`` and the caller skips that
survival update, and :func:`minmax` gives zeros; with ``"half"`` (the authors' ``unit`` and
``unit_tensor``) both give 0.5 everywhere.
"""
from __future__ import annotations

import torch

_TORCH_QUANTILE_MAX = 16_000_000  # torch.quantile refuses larger inputs


def spine_importance(trace_e: torch.Tensor, plast_e: torch.Tensor) -> torch.Tensor:
    """``D_e[i] = trace_e[i] * sum_j BCM_e[i, j]`` (Eq 11). ``plast_e`` is ``[C_out, C_in]``
    with pruned synapses already zeroed if they should not count."""
    return trace_e * plast_e.sum(1)


def minmax(x: torch.Tensor, population: torch.Tensor, zero_range: str = "skip") -> torch.Tensor:
    """``(x - min) / (max - min)`` with min and max over ``x[population]``; when that range is
    empty or zero (no evidence), zeros (``zero_range="skip"``) or 0.5 (``"half"``)."""
    vals = x[population]
    if vals.numel() and bool(vals.max() > vals.min()):
        lo, hi = vals.min(), vals.max()
        return (x - lo) / (hi - lo)
    return torch.full_like(x, 0.5 if zero_range == "half" else 0.0)


def spine_importance_minmax(trace_e: torch.Tensor, plast_e: torch.Tensor,
                            population: torch.Tensor, zero_range: str = "skip") -> torch.Tensor:
    """The authors' code's importance: ``minmax(sum_j BCM_e[i, j]) * minmax(trace_e[i])``,
    each factor min-max normalised over ``population``."""
    return minmax(plast_e.sum(1), population, zero_range) * minmax(trace_e, population, zero_range)


def _quantile(values: torch.Tensor, q: float) -> torch.Tensor:
    if values.numel() <= _TORCH_QUANTILE_MAX:
        return torch.quantile(values, q)
    # Same linear interpolation as torch.quantile, via two order statistics (no size limit).
    pos = q * (values.numel() - 1)
    lo = int(pos)
    hi = min(lo + 1, values.numel() - 1)
    v_lo = values.kthvalue(lo + 1).values
    v_hi = values.kthvalue(hi + 1).values
    return v_lo + (v_hi - v_lo) * (pos - lo)


def normalize(x: torch.Tensor, alive: torch.Tensor, method: str = "p75",
              zero_range: str = "skip") -> torch.Tensor | None:
    """Linear normalisation of ``x`` over ``x[alive]``; values of dead elements are returned
    too (clipped) but are meaningless. No evidence (zero scale): ``None``, or 0.5 everywhere
    with ``zero_range="half"``."""
    vals = x[alive]
    if vals.numel() == 0:
        return None
    lo = vals.min()
    if method == "p75":
        hi = _quantile(vals, 0.75)
    elif method == "minmax":
        hi = vals.max()
    else:
        raise ValueError(f"unknown normalisation {method!r}; use 'p75' or 'minmax'")
    scale = hi - lo
    if not bool(scale > 0):
        return torch.full_like(x, 0.5) if zero_range == "half" else None
    return ((x - lo) / scale).clamp_(0.0, 1.0)
