"""Torch tensors in Lava's layout, and the samples as a Lava input stream.

Lava keeps a map as ``(X, Y, C) = (W, H, C)`` where torch has ``(C, H, W)``: all axes reversed.
A one-dimensional map ``(C, L)`` (Conv1d) becomes the one-row image ``(L, 1, C)``. A flattened
map keeps Lava's order: ``perm[j_lava] = j_torch`` says which torch element sits at each Lava
position, so the columns of a following dense weight are permuted by it.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import UnsupportedModelError


@dataclass
class Layout:
    torch_shape: tuple[int, ...]
    perm: np.ndarray | None = None      # only for flat (1-D) ports; None: torch order

    @property
    def shape(self) -> tuple[int, ...]:
        s = self.torch_shape
        if len(s) == 3:
            return s[::-1]
        if len(s) == 2:
            return (s[1], 1, s[0])
        if len(s) == 1:
            return s
        raise UnsupportedModelError(f"a tensor of shape {s} has no Lava layout here (1, 2 or 3 "
                                    "dimensions without the batch)")

    def to_lava(self, a: np.ndarray) -> np.ndarray:
        """An array of ``torch_shape`` (or broadcastable to it) in Lava's layout."""
        a = np.broadcast_to(np.asarray(a), self.torch_shape)
        if len(self.torch_shape) == 3:
            return a.transpose(2, 1, 0)
        if len(self.torch_shape) == 2:
            return a.T[:, None, :]
        return a if self.perm is None else a[self.perm]

    def flattened(self) -> "Layout":
        n = int(np.prod(self.torch_shape))
        perm = self.to_lava(np.arange(n).reshape(self.torch_shape)).reshape(-1)
        return Layout((n,), None if np.array_equal(perm, np.arange(n)) else perm)

    def from_lava(self, data: np.ndarray) -> np.ndarray:
        """Sink data ``(*shape, steps)`` as ``(steps, *torch_shape)``."""
        steps = np.moveaxis(data, -1, 0)
        if len(self.torch_shape) == 3:
            return steps.transpose(0, 3, 2, 1)
        if len(self.torch_shape) == 2:
            return steps[:, :, 0, :].transpose(0, 2, 1)
        if self.perm is None:
            return steps
        out = np.empty_like(steps)
        out[:, self.perm] = steps
        return out


def stream(layout: Layout, x: np.ndarray, time_steps: int, extra_steps: int) -> np.ndarray:
    """RingBuffer data ``(*layout.shape, N*T + extra)``: sample after sample, ``T`` steps each
    (static inputs ``[N, ...]`` repeat every step, frames ``[N, T, ...]`` give one per step),
    then ``extra_steps`` zeros for the pipeline to drain."""
    x = np.asarray(x, dtype=np.float64)
    nd = len(layout.torch_shape)
    if x.ndim == nd + 2:
        if x.shape[1] != time_steps:
            raise UnsupportedModelError(f"inputs have {x.shape[1]} frames, the run {time_steps} steps")
        seq = x
    else:
        seq = np.repeat(x[:, None], time_steps, axis=1)
    if tuple(seq.shape[2:]) != tuple(layout.torch_shape):
        raise UnsupportedModelError(f"inputs of shape {x.shape} do not fit the graph's input "
                                    f"{layout.torch_shape}")
    n = len(x)
    flat = seq.reshape((n * time_steps,) + seq.shape[2:])
    lava = np.stack([layout.to_lava(s) for s in flat], axis=-1) if nd != 1 or layout.perm is not None \
        else np.moveaxis(flat, 0, -1)
    data = np.zeros(layout.shape + (n * time_steps + extra_steps,))
    data[..., :n * time_steps] = lava
    return data
