"""The prunable layers of a model, read from its model graph (``dpap_deploy.graph``).

A prunable layer is a synapse (``Conv1d``, ``Conv2d``, ``Linear``) with its optional BatchNorm
and its neuron population (any neuron type with an adapter in ``graph/neurons``: snnTorch's
``Leaky``, ``Synaptic``, ``RLeaky``, ``RSynaptic``; an element-wise activation in an ANN).
DPAP itself needs only spikes: what a deployment target cannot represent is refused at export.
"""
from __future__ import annotations

import snntorch as snn
import torch
from torch import nn

from ..graph import ModelGraph, PrunableLayer, graph_of


def model_kind(model: nn.Module) -> str:
    """``snn`` if the model contains snnTorch neurons, else ``ann``."""
    return "snn" if any(isinstance(m, snn.SpikingNeuron) for m in model.modules()) else "ann"


def find_prunable_layers(model: nn.Module, example_input: torch.Tensor | None = None,
                         graph: ModelGraph | None = None) -> tuple[str, list[PrunableLayer]]:
    """Return ``(kind, layers)`` in forward order; the output layer has ``is_output``."""
    graph = graph_of(graph or model, example_input)
    return graph.kind, graph.layers


__all__ = ["PrunableLayer", "find_prunable_layers", "model_kind"]
