"""Refusing neuron types no adapter describes, before anything is traced.

A spiking neuron (any ``snntorch.SpikingNeuron`` subclass) or any other module that keeps a
membrane / synaptic state (``mem``, ``syn``) and has no adapter (``graph/neurons``) would
otherwise look like an element-wise activation to the tracer, and DPAP, compaction and the
exporters would compute something else than the model. Such a model is refused in one line
naming the class(es), the supported types, and how to add an adapter.
"""
from __future__ import annotations

import torch
from torch import nn

from ..errors import UnsupportedModelError
from .neurons import adapter_for, supported_names

STATE_ATTRS = ("mem", "syn")


def _is_neuron(m: nn.Module) -> bool:
    try:
        from snntorch import SpikingNeuron
    except ImportError:          # pragma: no cover - snnTorch is a dependency
        SpikingNeuron = ()
    if SpikingNeuron and isinstance(m, SpikingNeuron):
        return True
    return any(isinstance(getattr(m, a, None), torch.Tensor) for a in STATE_ATTRS)


def refuse_unknown_neurons(model: nn.Module) -> None:
    """Raise ``UnsupportedModelError`` when ``model`` holds a neuron without an adapter."""
    unknown: dict[str, list[str]] = {}
    for name, m in model.named_modules():
        if adapter_for(m) is None and _is_neuron(m):
            unknown.setdefault(type(m).__name__, []).append(name or "(the model)")
    if not unknown:
        return
    found = "; ".join(f"{cls} at '{', '.join(names)}'" for cls, names in unknown.items())
    raise UnsupportedModelError(
        f"unsupported neuron type {found}: no neuron adapter describes it (supported: "
        f"{supported_names()}); use a supported neuron, or add an adapter: a NeuronAdapter "
        "subclass decorated with @register in a new file dpap_deploy/graph/neurons/<name>.py "
        "(the checklist is in dpap_deploy/graph/neurons/__init__.py)")
