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
