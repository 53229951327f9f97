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

from ..graph import ModelGraph
from ..graph.state import reset_states
from .plan import CompactionPlan


def _copy_(dst: torch.Tensor, src: torch.Tensor) -> None:
    with torch.no_grad():
        dst.copy_(src)


def slice_conv(conv: nn.Module, keep_out: torch.Tensor, keep_in: torch.Tensor) -> nn.Module:
    w = conv.weight.detach().index_select(0, keep_out.to(conv.weight.device))
    w = w.index_select(1, keep_in.to(conv.weight.device))
    new = type(conv)(len(keep_in), len(keep_out), conv.kernel_size, stride=conv.stride,
                     padding=conv.padding, dilation=conv.dilation, groups=1,
                     bias=conv.bias is not None, padding_mode=conv.padding_mode,
                     device=w.device, dtype=w.dtype)
    _copy_(new.weight, w)
    if conv.bias is not None:
        _copy_(new.bias, conv.bias.detach().index_select(0, keep_out.to(w.device)))
    return new


def slice_linear(lin: nn.Linear, keep_out: torch.Tensor, keep_in: torch.Tensor) -> nn.Linear:
    dev = lin.weight.device
    w = lin.weight.detach().index_select(0, keep_out.to(dev)).index_select(1, keep_in.to(dev))
    new = nn.Linear(len(keep_in), len(keep_out), bias=lin.bias is not None, device=dev, dtype=w.dtype)
    _copy_(new.weight, w)
    if lin.bias is not None:
        _copy_(new.bias, lin.bias.detach().index_select(0, keep_out.to(dev)))
    return new


def slice_batchnorm(bn: nn.modules.batchnorm._BatchNorm, keep: torch.Tensor) -> nn.Module:
    new = type(bn)(len(keep), eps=bn.eps, momentum=bn.momentum, affine=bn.affine,
                   track_running_stats=bn.track_running_stats)
    new.to(device=keep.device if bn.weight is None else bn.weight.device)
    idx = keep.to(new.running_mean.device if new.running_mean is not None else keep.device)
    for name in ("weight", "bias", "running_mean", "running_var"):
        src = getattr(bn, name)
        if src is not None:
            _copy_(getattr(new, name), src.detach().index_select(0, idx))
    if bn.num_batches_tracked is not None:
        new.num_batches_tracked.copy_(bn.num_batches_tracked)
    new.train(bn.training)
    return new


def slice_synapse(mod: nn.Module, keep_out: torch.Tensor, keep_in: torch.Tensor) -> nn.Module:
    if isinstance(mod, (nn.Conv1d, nn.Conv2d)):
        return slice_conv(mod, keep_out, keep_in)
    if isinstance(mod, nn.Linear):
        return slice_linear(mod, keep_out, keep_in)
    from ..errors import UnsupportedModelError
    raise UnsupportedModelError(f"cannot compact a layer of type '{type(mod).__name__}'")


def _per_neuron(graph: ModelGraph):
    """``[(neuron module, attribute, tensor, layer)]`` for every per-neuron tensor."""
    out = []
    for layer in graph.layers:
        if layer.neuron is None or layer.neuron_node < 0:
            continue
        adapter = graph.nodes[layer.neuron_node].adapter
        for attr, t in adapter.per_neuron(layer.neuron).items():
            out.append((layer.neuron, attr, t, layer))
    return out


def _index_tensor(module: nn.Module, attr: str, keep: torch.Tensor) -> None:
    """``module.attr = module.attr[keep]`` for a parameter or a buffer (dotted ``attr`` ok)."""
    owner_name, _, leaf = attr.rpartition(".")
    owner = module.get_submodule(owner_name) if owner_name else module
    old = getattr(owner, leaf)
    new = old.detach().index_select(0, keep.to(old.device)).clone()
    if isinstance(old, nn.Parameter):
        setattr(owner, leaf, nn.Parameter(new, requires_grad=old.requires_grad))
    elif leaf in owner._buffers:
        owner._buffers[leaf] = new
    else:
        setattr(owner, leaf, new)


@torch.no_grad()
def _fix_recurrent(graph: ModelGraph, plan: CompactionPlan) -> None:
    by_name = plan.by_name()
    for layer in graph.layers:
        if layer.neuron is None or layer.neuron_node < 0:
            continue
        rec = graph.nodes[layer.neuron_node].adapter.recurrent(layer.neuron)
        if rec is None:
            continue
        keep = by_name[layer.name].keep_out.to(rec.weight.device)
        w = rec.weight.detach()
        if w.shape[0] != len(keep):
            w = w.index_select(0, keep)
            if rec.bias is not None:
                rec.bias = nn.Parameter(rec.bias.detach().index_select(0, keep).clone())
        if w.shape[1] != len(keep):
            w = w.index_select(1, keep)
        rec.weight = nn.Parameter(w.clone())
        if isinstance(rec, nn.Linear):
            rec.in_features, rec.out_features = w.shape[1], w.shape[0]
        else:
            rec.in_channels, rec.out_channels = w.shape[1], w.shape[0]


def cut(model: nn.Module, graph: ModelGraph, plan: CompactionPlan) -> nn.Module:
    """In place: give every layer of ``model`` (whose graph is ``graph``) only the units and
    inputs the plan keeps. Returns ``model``."""
    by_name = plan.by_name()
    per_neuron = _per_neuron(graph)
    for layer in graph.layers:
        lp = by_name[layer.name]
        replace_module(model, layer.name, slice_synapse(layer.synapse, lp.keep_out, lp.keep_in))
        if layer.bn is not None:
            replace_module(model, layer.bn_name, slice_batchnorm(layer.bn, lp.keep_out))
    for neuron, attr, t, layer in per_neuron:
        keep = by_name[layer.name].keep_out
        if _get(neuron, attr).shape[0] != len(keep):
            _index_tensor(neuron, attr, keep)
    _fix_recurrent(graph, plan)
    reset_states(model)
    return model


def _get(module: nn.Module, attr: str) -> torch.Tensor:
    owner_name, _, leaf = attr.rpartition(".")
    owner = module.get_submodule(owner_name) if owner_name else module
    return getattr(owner, leaf)


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
