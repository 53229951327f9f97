"""Neuron state: clearing it between input windows, and before a model is copied."""
from __future__ import annotations

import weakref

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
    """Enter every snnTorch neuron of ``model`` (a deep copy) in snnTorch's instance registry,
    by weak reference: the copy is registered while something else holds it.

    ``snntorch.utils.reset(net)`` zeroes hidden states through the classes' registry
    (``Leaky.reset_hidden()`` walks ``Leaky.instances``, filled by ``SpikingNeuron.__init__``);
    ``copy.deepcopy`` runs no ``__init__``, so a copy would keep its membrane across the user's
    windows. Each copy is entered once in every registry list on its class's MRO (a subclass
    may hold its own list after ``_clear_instances``); its state is cleared first, so nothing
    of the model it was copied from carries over.

    The entry is a ``weakref.proxy``: snnTorch's loops (``for i in range(len(cls.instances)):
    if isinstance(cls.instances[i], Leaky): cls.instances[i].mem = ...``) see the neuron
    itself (``isinstance`` reads the proxy's ``__class__``, attributes are set on the neuron),
    and a copy nobody holds any more (a probe, a verification copy) is freed instead of being
    kept alive by the registry forever. When it is freed, its entry becomes ``None`` in place
    (the list keeps its length while snnTorch may be walking it; ``isinstance(None, ...)`` is
    false), and the ``None`` entries are dropped at the next registration."""
    try:
        from snntorch import SpikingNeuron
    except ImportError:          # pragma: no cover - snnTorch is a dependency
        return
    reset_states(model)
    for m in model.modules():
        if not isinstance(m, SpikingNeuron):
            continue
        mine = _ENTRIES.setdefault(m, [])
        for cls in type(m).__mro__:
            reg = cls.__dict__.get("instances")
            if not isinstance(reg, list):
                continue
            if None in reg:
                reg[:] = [x for x in reg if x is not None]
            if any(x is m for x in reg) or any(x is e for x in reg for e in mine):
                continue
            entry = weakref.proxy(m, _clear_entry(reg))
            mine.append(entry)
            reg.append(entry)


def is_registered(module: nn.Module) -> bool:
    """Whether ``snntorch.utils.reset`` reaches ``module``: it is in its class's registry, itself
    (snnTorch's own ``__init__``) or as a live entry of ``register_copies``."""
    reg = getattr(type(module), "instances", None)
    if not isinstance(reg, list):
        return False
    mine = _ENTRIES.get(module, ())
    return any(x is module for x in reg) or any(x is e for x in reg for e in mine)


# neuron -> its registry entries (weakly keyed: dropping the neuron drops them)
_ENTRIES: "weakref.WeakKeyDictionary[nn.Module, list]" = weakref.WeakKeyDictionary()


def _clear_entry(reg: list):
    def clear(entry) -> None:
        for i, x in enumerate(reg):
            if x is entry:
                reg[i] = None
    return clear
