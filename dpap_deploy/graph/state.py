"""Neuron state: clearing it between input windows, and before a model is copied."""
from __future__ import annotations

from torch import nn

from .neurons import adapter_for


def reset_states(model: nn.Module) -> None:
    """Zero (and detach) the state of every neuron: the start of a new input window. A deep copy
    of a model whose neurons still hold the last training batch's autograd graph fails; after
    this it works."""
    for m in model.modules():
        a = adapter_for(m)
        if a is not None:
            a.clear_state(m)


def neuron_membrane(adapter, module: nn.Module, out):
    """The membrane a neuron call produced: the adapter's ``membrane(out)`` where it has one,
    else the last element of a tuple output (snnTorch returns ``(spk, ..., mem)``), else the
    state a hidden-state neuron keeps (``module.mem``)."""
    fn = getattr(adapter, "membrane", None)
    if fn is not None:
        mem = fn(out)              # None: the call returned spikes only (init_hidden)
        if mem is not None:
            return mem
    elif isinstance(out, tuple) and len(out) > 1:
        return out[-1]
    return getattr(module, "mem", None)


def register_copies(model: nn.Module) -> None:
    """Enter every snnTorch neuron of ``model`` (a deep copy) in snnTorch's instance registry.

    ``snntorch.utils.reset(net)`` zeroes hidden states through the classes' registry
    (``Leaky.reset_hidden()`` walks ``Leaky.instances``, filled by ``SpikingNeuron.__init__``);
    ``copy.deepcopy`` runs no ``__init__``, so a copy would keep its membrane across the user's
    windows. Each copy is entered once in every registry list on its class's MRO (a subclass
    may hold its own list after ``_clear_instances``); its state is cleared first, so nothing
    of the model it was copied from carries over."""
    try:
        from snntorch import SpikingNeuron
    except ImportError:          # pragma: no cover - snnTorch is a dependency
        return
    reset_states(model)
    for m in model.modules():
        if not isinstance(m, SpikingNeuron):
            continue
        for cls in type(m).__mro__:
            reg = cls.__dict__.get("instances")
            if isinstance(reg, list) and not any(x is m for x in reg):
                reg.append(m)
