"""The gradual schedule every baseline shares (Zhu & Gupta, 2017):

    s(e) = s_f (1 - (1 - p)^3),   p = clip((e + 1 - start) / (end - start), 0, 1)

``e`` is the epoch that just ended (from 0), ``s_f`` the final amount to remove (a fraction of
weights, or of a cost), reached at the end of epoch ``end - 1``.
"""
from __future__ import annotations

from ..errors import ConfigError


def check_window(start: int, end: int) -> None:
    if end <= start:
        raise ConfigError(f"pruning window [{start}, {end}] is empty; give an end epoch after "
                          "the start")


def cubic_fraction(epoch: int, start: int, end: int, final: float) -> float:
    p = min(max((epoch + 1 - start) / (end - start), 0.0), 1.0)
    return final * (1 - (1 - p) ** 3)
