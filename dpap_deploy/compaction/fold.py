"""Deployment folding: a BatchNorm-free, average-pool-free copy of a network.

- BatchNorm (evaluation statistics) folds into the synapse of its layer:
  ``W' = W * g``, ``b' = (b - mean) * g + beta`` with ``g = gamma / sqrt(var + eps)``.
- Average pooling is linear and folds into a synapse (``fold_pools``): over currents into the
  conv before it (``conv_{W,S,P} -> avgpool_{k,s}`` is one conv of kernel ``(k - 1) S + K``,
  stride ``S s``), over spikes into the synapse after it. A pool that does not fold exactly
  (padding, ``divisor_override``, ``ceil_mode``'s partial window, nothing to fold into) stays
  in the deployment network; the targets take it as a pooling stage or refuse it themselves.
Folded modules become ``nn.Identity`` so module names stay those of the compacted model.
MaxPool is not linear and stays; targets that cannot run it say so.
"""
from __future__ import annotations

import torch
from torch import nn

from ..graph import ModelGraph, build_graph, graph_of
from ..graph.state import register_copies
from .fold_pools import PoolFold, fold_avgpool
from .surgery import replace_module

__all__ = ["PoolFold", "deployment_graph", "fold_avgpool", "fold_batchnorm", "fold_bn_into",
           "fold_for_deployment"]


@torch.no_grad()
def fold_bn_into(syn: nn.Module, bn: nn.Module) -> nn.Module:
    """A new synapse computing ``bn(syn(x))`` (evaluation statistics)."""
    g = (bn.weight if bn.weight is not None else torch.ones_like(bn.running_var)) \
        / torch.sqrt(bn.running_var + bn.eps)
    b = syn.bias if syn.bias is not None else torch.zeros_like(g)
    shift = bn.bias if bn.bias is not None else torch.zeros_like(g)
    if isinstance(syn, (nn.Conv1d, nn.Conv2d)):
        new = type(syn)(syn.in_channels, syn.out_channels, syn.kernel_size, syn.stride,
                        syn.padding, syn.dilation, syn.groups, True, syn.padding_mode,
                        device=g.device, dtype=syn.weight.dtype)
    else:
        new = nn.Linear(syn.in_features, syn.out_features, True, device=g.device,
                        dtype=syn.weight.dtype)
    new.weight.copy_(syn.weight * g.view(-1, *([1] * (syn.weight.dim() - 1))))
    new.bias.copy_((b - bn.running_mean) * g + shift)
    return new


@torch.no_grad()
def fold_batchnorm(model: nn.Module, graph: ModelGraph) -> nn.Module:
    """In place: every BatchNorm of a prunable layer is folded into its synapse."""
    for layer in graph.layers:
        if layer.bn is not None:
            replace_module(model, layer.name, fold_bn_into(layer.synapse, layer.bn))
            replace_module(model, layer.bn_name, nn.Identity())
    return model


def deployment_graph(model: nn.Module, example_input: torch.Tensor, verify: bool = True,
                     time_steps: int | None = None, graph: ModelGraph | None = None,
                     fold_pools: bool = True, time_axis: int | None = None) -> nn.Module:
    """A copy of ``model`` with BatchNorm (and, with ``fold_pools``, AvgPool) folded away,
    in evaluation mode; see :func:`fold_for_deployment` for the graph as well."""
    return fold_for_deployment(model, example_input, verify, time_steps, graph, fold_pools,
                               time_axis)[0]


def fold_for_deployment(model: nn.Module, example_input: torch.Tensor, verify: bool = True,
                        time_steps: int | None = None, graph: ModelGraph | None = None,
                        fold_pools: bool = True,
                        time_axis: int | None = None) -> tuple[nn.Module, ModelGraph]:
    """``time_axis``: the input's time axis, as for ``build_graph`` (unused when ``graph`` is
    given: the graph knows it)."""
    from .compact import check_same_function, copy_with_graph
    graph = graph_of(graph or model, example_input, time_axis=time_axis)
    folded, fgraph = copy_with_graph(model, graph)
    folded.eval()
    register_copies(folded)              # snntorch.utils.reset(folded) resets it
    fold_batchnorm(folded, fgraph)
    fgraph = build_graph(folded, example_input, time_axis=graph.time_axis)
    if fold_pools:
        fgraph = fold_avgpool(folded, fgraph, example_input)
    if verify:
        check_same_function(graph, fgraph, example_input, time_steps,
                            what="the folded deployment network", than="the compacted one")
    return folded, fgraph
