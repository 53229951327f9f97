"""Cutting removed units out of a network, layer by layer, from the plan's kept indices.

The plan (``plan.py``, on the model graph) gives each layer its kept output units and its kept
input features, with ``Flatten`` blocks, ``torch.cat`` offsets and residual ties already
resolved; cutting is then one ``index_select`` per dimension: synapse rows and columns, bias,
BatchNorm entries, the neuron's per-neuron parameters *and buffers* (a fixed or learnable
``beta`` / ``threshold`` / ``alpha`` per neuron), and both dimensions of a recurrent weight the
neuron owns (``RLeaky``).

Why not Torch-Pruning's ``DependencyGraph`` for the cut: on the zoo's chains it cuts exactly
what this does (bit-identical parameters; ``tests/test_compaction.py`` checks it), but measured
on a residual block whose tied channels also reach a ``torch.cat`` twice
(``cat([lif3(conv3(b) + a), a])``), its group removes the linear layer's columns for one half
of the concatenation only (208 columns left where 160 are right), and it cannot see per-neuron
values held in buffers nor the input side of ``RLeaky``'s recurrent weight (fed by the previous
step's spikes, not on the traced graph of one step). The graph here already knows all three.
"""
from __future__ import annotations

import torch
from torch import nn

from ..errors import UnsupportedModelError
from ..graph import ModelGraph
from ..graph.state import reset_states
from .plan import CompactionPlan

# a synapse's size attributes: (input side, output side)
SIZES = {nn.Linear: ("in_features", "out_features"), nn.Conv1d: ("in_channels", "out_channels"),
         nn.Conv2d: ("in_channels", "out_channels")}


@torch.no_grad()
def index_(module: nn.Module, attr: str, dim: int, keep: torch.Tensor) -> None:
    """In place: ``module.attr = module.attr.index_select(dim, keep)`` for a parameter or a
    buffer (dotted ``attr`` ok); left as it is when it is ``None`` or has ``len(keep)`` already."""
    owner_name, _, leaf = attr.rpartition(".")
    owner = module.get_submodule(owner_name) if owner_name else module
    old = getattr(owner, leaf)
    if old is None or old.shape[dim] == len(keep):
        return
    new = old.detach().index_select(dim, keep.to(old.device)).clone()
    if isinstance(old, nn.Parameter):
        setattr(owner, leaf, nn.Parameter(new, requires_grad=old.requires_grad))
    elif leaf in owner._buffers:
        owner._buffers[leaf] = new
    else:
        setattr(owner, leaf, new)


def slice_synapse(mod: nn.Module, keep_out: torch.Tensor, keep_in: torch.Tensor) -> None:
    """In place: a ``Linear`` / ``Conv1d`` / ``Conv2d`` keeps rows ``keep_out`` and columns
    (input channels) ``keep_in``."""
    sizes = next((v for k, v in SIZES.items() if isinstance(mod, k)), None)
    if sizes is None:
        raise UnsupportedModelError(f"cannot compact a layer of type '{type(mod).__name__}'")
    index_(mod, "weight", 0, keep_out)
    index_(mod, "weight", 1, keep_in)
    index_(mod, "bias", 0, keep_out)
    setattr(mod, sizes[0], mod.weight.shape[1])
    setattr(mod, sizes[1], mod.weight.shape[0])


def cut(model: nn.Module, graph: ModelGraph, plan: CompactionPlan) -> nn.Module:
    """In place: give every layer of ``model`` (whose graph is ``graph``) only the units and
    inputs the plan keeps. Returns ``model``."""
    by_name = plan.by_name()
    for layer in graph.layers:
        keep = by_name[layer.name].keep_out
        slice_synapse(layer.synapse, keep, by_name[layer.name].keep_in)
        if layer.bn is not None:
            for attr in ("weight", "bias", "running_mean", "running_var"):
                index_(layer.bn, attr, 0, keep)
            layer.bn.num_features = len(keep)
        if layer.neuron is None or layer.neuron_node < 0:
            continue
        adapter = graph.nodes[layer.neuron_node].adapter
        for attr in adapter.per_neuron(layer.neuron):       # a per-neuron beta, threshold, ...
            index_(layer.neuron, attr, 0, keep)
        rec = adapter.recurrent(layer.neuron)                # RLeaky: both sides
        if rec is not None:
            slice_synapse(rec, keep, keep)
    reset_states(model)
    return model


def replace_module(model: nn.Module, name: str, new: nn.Module) -> None:
    """Put ``new`` where the submodule called ``name`` (dotted path) was."""
    parent_name, _, attr = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    old = getattr(parent, attr)
    new.train(old.training)
    setattr(parent, attr, new)


def strip_hooks(model: nn.Module) -> None:
    """Drop forward hooks a deep copy carried over (e.g. DPAP's trace hooks)."""
    for m in model.modules():
        m._forward_hooks.clear()
        m._forward_pre_hooks.clear()
