"""Neuron adapters: one module per neuron type, each registering one :class:`NeuronAdapter`.

An adapter says, for its neuron type, everything the rest of the package needs and nothing
else: which output is the spike tensor (what DPAP reads), which tensors hold one value per
neuron (what compaction must slice), which synapse the neuron owns (the recurrent weight of
``RLeaky``), how to clear its state, and how it maps to NIR (and from there to Lava and netx).

**Adding a neuron type touches one file**: create ``graph/neurons/<name>.py`` with a subclass of
:class:`NeuronAdapter` decorated with :func:`register`. Every module in this package is imported
when the package is, so nothing else changes. Checklist for the new file:

1. ``types``: the module classes it handles (most specific first; lookup is by ``isinstance``).
2. ``spikes(output)``: the spike tensor from what the module's ``forward`` returns.
3. ``per_neuron(module)``: ``{attribute: tensor}`` of every parameter or buffer with one entry
   per neuron along dim 0 (scalars are not listed); compaction slices them.
4. ``recurrent(module)``: the ``nn.Linear`` / ``nn.Conv2d`` the neuron owns, or ``None``.
5. ``clear_state(module)``: drop the membrane (and other state) so that a deep copy works
   right after a training step and the next window starts from zero.
6. ``to_nir(module, shape, dt, encoding)``: the NIR node (``encoding="unit-r"``: with
   ``r = 1``, the writer scales its input weights), or raise ``UnsupportedModelError`` with the
   reason and the fix (e.g. NIR and Lava reset to zero; reset-by-subtraction has no node).
7. A row in the corpus test (``tests/test_model_corpus.py``) with a model using it.
"""
from __future__ import annotations

import importlib
import pkgutil

import torch
from torch import nn

from ...errors import UnsupportedModelError

_ADAPTERS: list["NeuronAdapter"] = []


class NeuronAdapter:
    """Base adapter: a stateless element-wise activation (ANN). Subclasses override."""

    types: tuple[type, ...] = ()
    kind = "ann"            # "snn" for spiking neurons
    label = "activation"

    def spikes(self, output):
        return output[0] if isinstance(output, tuple) else output

    def per_neuron(self, module: nn.Module) -> dict[str, torch.Tensor]:
        return {}

    def recurrent(self, module: nn.Module) -> nn.Module | None:
        return None

    def clear_state(self, module: nn.Module) -> None:
        return None

    def to_nir(self, module: nn.Module, shape: tuple[int, ...], dt: float, encoding: str = "gain"):
        raise UnsupportedModelError(f"{type(module).__name__} has no NIR node")


def register(cls: type[NeuronAdapter]) -> type[NeuronAdapter]:
    _ADAPTERS.append(cls())
    return cls


def adapter_for(module: nn.Module) -> NeuronAdapter | None:
    """The adapter of ``module``'s type, or ``None`` if it is not a neuron / activation."""
    for a in _ADAPTERS:
        if isinstance(module, a.types):
            return a
    return None


def supported_names() -> str:
    return ", ".join(a.label for a in _ADAPTERS)


def per_neuron_tensor(module: nn.Module, attr: str) -> dict[str, torch.Tensor]:
    """``{attr: tensor}`` when ``module.attr`` is a tensor with more than one element."""
    t = getattr(module, attr, None)
    if isinstance(t, torch.Tensor) and t.dim() >= 1 and t.numel() > 1:
        return {attr: t}
    return {}


def _load_all() -> None:
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
        importlib.import_module(f"{__name__}.{info.name}")


_load_all()
