"""The time axis of a model's input: where it is, and cutting batches without cutting time.

An input either has no time axis (a static sample ``[B, ...]``, fed at every step), or holds
one frame per step along ``time_axis``:

- ``time_axis=1``: batch first, ``[B, T, ...]`` (event frames; an own loop reading ``x[:, t]``);
- ``time_axis=0``: time first, ``[T, B, ...]`` (snnTorch's ``spikegen`` layout; an own loop
  reading ``x[t]``, e.g. ``for step in range(x.size(0))``).

The batch axis is then ``1`` for ``time_axis=0`` and ``0`` otherwise: every cut of a batch
(``batch_slice``) goes along it. The user states the axis (``time_axis=`` on ``build_graph``,
``DPAP``, ``compact`` and the export job) or it is inferred from how the model's forward
indexes its input during the trace, and a one-line notice says what was inferred and how to
state it.
"""
from __future__ import annotations

import torch

from ..errors import ConfigError

_LAYOUT = {0: "[T, B, ...] (time first: the forward reads x[t])",
           1: "[B, T, ...] (batch first: the forward reads x[:, t])"}
_NOTED: set[tuple[str, int]] = set()


def check_axis(time_axis) -> int | None:
    """``time_axis`` as given by a user: ``None``, ``0`` or ``1``."""
    if time_axis is None or (isinstance(time_axis, int) and not isinstance(time_axis, bool)
                             and time_axis in (0, 1)):
        return time_axis
    raise ConfigError(f"time_axis must be 0 ([T, B, ...], time first), 1 ([B, T, ...], batch "
                      f"first) or None (no time axis, or inferred), got {time_axis!r}")


def batch_axis(time_axis: int | None) -> int:
    return 1 if time_axis == 0 else 0


def batch_len(x: torch.Tensor, time_axis: int | None) -> int:
    """Number of samples in ``x``."""
    return int(x.shape[batch_axis(time_axis)])


def batch_slice(x: torch.Tensor, time_axis: int | None, start: int | None = None,
                stop: int | None = None) -> torch.Tensor:
    """Samples ``start:stop`` of ``x``, cut along its batch axis (never along time)."""
    return x[:, start:stop] if time_axis == 0 else x[start:stop]


def frame(x: torch.Tensor, time_axis: int | None, t: int) -> torch.Tensor:
    """Step ``t``'s input ``[B, ...]``."""
    return x[t] if time_axis == 0 else x[:, t]


def index_axis(key) -> int | None:
    """The time axis an indexing of the input reads: ``x[t]``, ``x[t, :]``, ``x[t, ...]`` -> 0;
    ``x[:, t]``, ``x[:, t, :]``, ``x[:, t, ...]`` -> 1; else ``None`` (an integer index selects
    one step; a slice keeps the axis; an index that also cuts another axis is no time step)."""
    def is_int(k) -> bool:
        return (isinstance(k, int) and not isinstance(k, bool)) or \
            (isinstance(k, torch.Tensor) and k.dim() == 0 and not k.is_floating_point()
             and k.dtype != torch.bool)
    def is_full(k) -> bool:
        return k is Ellipsis or k == slice(None)
    if is_int(key):
        return 0
    if not isinstance(key, tuple) or not key:
        return None
    if is_int(key[0]) and all(is_full(k) for k in key[1:]):
        return 0
    if len(key) >= 2 and key[0] == slice(None) and is_int(key[1]) \
            and all(is_full(k) for k in key[2:]):
        return 1
    return None


def has_frames(graph, x: torch.Tensor) -> bool:
    """``x`` holds one frame per step (along ``graph.time_axis``; batch first when the graph
    has none) for a model taking one step per call; a static input has one axis less."""
    return graph.steps_per_call == 1 and x.dim() == len(graph.input_shape) + 2


def window_steps(graph, x: torch.Tensor, time_steps: int | None) -> int:
    """Steps in one window of ``graph`` (a ``ModelGraph``) on ``x``: the model's own loop, the
    input's frames, or ``time_steps`` (the run's T: required for a static input, which has no
    length of its own)."""
    if graph.steps_per_call > 1:
        return graph.steps_per_call
    if has_frames(graph, x):
        return int(x.shape[0 if graph.time_axis == 0 else 1])
    if not isinstance(time_steps, int) or isinstance(time_steps, bool) or time_steps < 1:
        raise ConfigError(f"a static input runs over time_steps steps, got {time_steps!r}; "
                          "pass time_steps=<the T the network runs with>")
    return time_steps


def note_inferred(model_name: str, axis: int) -> None:
    """One line, once per model class and axis: what was inferred, and how to state it."""
    if (model_name, axis) in _NOTED:
        return
    _NOTED.add((model_name, axis))
    from ..notices import warn
    warn(f"{model_name}'s input was taken as {_LAYOUT[axis]}, inferred from its forward; "
         f"pass time_axis={axis} to state it (or the other axis if that is wrong)")


def conflict(axis: int, seen: int) -> ConfigError:
    return ConfigError(f"time_axis={axis} was given, but the model's forward reads its input "
                       f"as {_LAYOUT[seen]}; pass time_axis={seen}")


__all__ = ["check_axis", "batch_axis", "batch_len", "batch_slice", "frame", "index_axis",
           "has_frames", "window_steps"]
