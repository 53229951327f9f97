"""Moved: running a graph over a window is ``dpap_deploy.executor.run`` (``run_window``,
``outputs``); the steps of a window are ``graph.time_axis.window_steps``. These names stay
importable from here until their last callers import them from there."""
from __future__ import annotations

from .time_axis import window_steps


def __getattr__(name: str):
    if name in ("run_window", "outputs"):
        from ..executor import run            # transitional alias (tests/test_graph_imports.py)
        return getattr(run, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["window_steps"]
