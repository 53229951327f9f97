"""Max pooling -> average pooling, for ``make_deployable`` (``convert.py``).

Max pooling over *currents* (``F.max_pool2d(self.conv1(x), 2)`` before a neuron, snnTorch's
tutorial 6) has no exact form on any neuromorphic target: a target sums weighted inputs, and
``max`` is not a sum. Its nearest deployable form is average pooling with the same window:

    max:  y[c, i, j] = max_{(u, v) in W(i, j)} x[c, u, v]
    avg:  y[c, i, j] = 1/(kh kw) sum_{(u, v) in W(i, j)} x[c, u, v]

(same kernel ``(kh, kw)``, stride, padding and ``ceil_mode``; padded taps count as zeros, as
``nn.AvgPool2d``'s default ``count_include_pad=True`` and NIR's ``AvgPool2d`` do). Average
pooling is linear, so the targets fold it into the next synapse or hold it as a pool stage.

- A module (``nn.MaxPool1d`` / ``nn.MaxPool2d``) is swapped for ``nn.AvgPool1d`` /
  ``nn.AvgPool2d`` in the model.
- A functional call in the user's ``forward`` cannot be edited: the model is wrapped in
  :class:`PoolSwapped`, whose ``forward`` runs the user's model inside :class:`AvgForMaxPool`,
  a ``torch.overrides.TorchFunctionMode`` that computes the chosen ``max_pool`` calls as
  ``avg_pool``. The package's tracer (``graph/trace.py``, a mode entered before the model is
  called) sits below it on the mode stack, so it records the ``avg_pool`` call that was made.
  Calls are told apart by their order within one time step (the graph's order); the calls a
  kept ``nn.MaxPool`` module makes from its ``forward`` are not counted.
"""
from __future__ import annotations

import sys

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from .errors import UnsupportedModelError

MAX_FNS = {"max_pool1d": 1, "max_pool2d": 2, "max_pool1d_with_indices": 1,
           "max_pool2d_with_indices": 2}
_ARGS = ("input", "kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices")


def _bind(args, kwargs) -> dict:
    vals = dict(zip(_ARGS, args))
    vals.update({k: v for k, v in kwargs.items() if k in _ARGS})
    return vals


def _ones(v) -> bool:
    return all(int(e) == 1 for e in v) if isinstance(v, (tuple, list)) else int(v) == 1


def avg_pool_for(name: str, args, kwargs) -> torch.Tensor:
    """``F.avg_poolNd`` with the window of the ``max_poolNd`` call ``name(*args, **kwargs)``."""
    v = _bind(args, kwargs)
    if v.get("return_indices") or name.endswith("with_indices"):
        raise UnsupportedModelError(f"{name} with return_indices=True has no average-pooling "
                                    "form (indices of a maximum); pool without indices")
    if not _ones(v.get("dilation", 1)):
        raise UnsupportedModelError(f"{name} with dilation={v['dilation']}: average pooling has "
                                    "no dilation; use dilation=1")
    fn = F.avg_pool1d if MAX_FNS[name] == 1 else F.avg_pool2d
    stride = v.get("stride")
    return fn(v["input"], v["kernel_size"], stride if stride not in (None, [], ()) else None,
              v.get("padding", 0), bool(v.get("ceil_mode", False)))


_MODULE_FORWARDS = {nn.MaxPool1d.forward.__code__, nn.MaxPool2d.forward.__code__}


def _inside_pool_module(depth: int = 8) -> bool:
    """Whether the call comes from an ``nn.MaxPool1d/2d`` module's ``forward`` (a module the
    model keeps: it is not one of the functional calls counted here)."""
    frame = sys._getframe(2)
    for _ in range(depth):
        if frame is None:
            return False
        if frame.f_code in _MODULE_FORWARDS:
            return True
        frame = frame.f_back
    return False


class AvgForMaxPool(TorchFunctionMode):
    """Computes the chosen functional max poolings as average poolings.

    ``replace[i]``: whether the ``i``-th functional max pooling of a time step is replaced
    (calls are counted modulo ``len(replace)``: a model running its own time loop repeats the
    step's calls in the same order)."""

    def __init__(self, replace: tuple[bool, ...]) -> None:
        super().__init__()
        self.replace = tuple(replace)
        self.calls = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        if name in MAX_FNS and self.replace and not _inside_pool_module():
            i = self.calls % len(self.replace)
            self.calls += 1
            if self.replace[i]:
                return avg_pool_for(name, args, kwargs)
        return func(*args, **kwargs)


class PoolSwapped(nn.Module):
    """The user's model (``net``) with its functional max poolings chosen by ``replace``
    computed as average poolings (:class:`AvgForMaxPool`); everything else is the model's own
    ``forward``. Its modules are the model's, under the prefix ``net.``."""

    def __init__(self, net: nn.Module, replace: tuple[bool, ...]) -> None:
        super().__init__()
        self.net = net
        self.replace = tuple(bool(r) for r in replace)

    def forward(self, *args, **kwargs):
        with AvgForMaxPool(self.replace):
            return self.net(*args, **kwargs)


def avg_module(m: nn.Module) -> nn.Module:
    """``nn.AvgPoolNd`` with the window of the max-pooling module ``m``."""
    if getattr(m, "return_indices", False):
        raise UnsupportedModelError(f"{type(m).__name__} with return_indices=True has no "
                                    "average-pooling form; pool without indices")
    if not _ones(m.dilation):
        raise UnsupportedModelError(f"{type(m).__name__} with dilation={m.dilation}: average "
                                    "pooling has no dilation; use dilation=1")
    cls = nn.AvgPool1d if isinstance(m, nn.MaxPool1d) else nn.AvgPool2d
    return cls(m.kernel_size, m.stride, m.padding, ceil_mode=m.ceil_mode)


def set_module(model: nn.Module, name: str, new: nn.Module) -> None:
    """Replace the submodule at dotted path ``name``."""
    parent, _, leaf = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, leaf, new)
