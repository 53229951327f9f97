"""Deployment folding: a BatchNorm-free (and, for netx, AvgPool-free) copy of a network.

- BatchNorm (evaluation statistics) folds into the synapse of its layer:
  ``W' = W * g``, ``b' = (b - mean) * g + beta`` with ``g = gamma / sqrt(var + eps)``.
- ``AvgPool2d(k, stride=k)`` is linear, so it folds into the conv or Linear it feeds:
  a conv ``(K, stride S, padding P)`` after the pool becomes a conv on the unpooled map with
  kernel ``(K-1)*k + k``, stride ``S*k``, padding ``P*k`` and weights
  ``conv_transpose(W, ones(k, k) / k^2, stride=k)``; a Linear after ``Flatten`` gets each
  pooled column spread over its ``k x k`` source pixels, divided by ``k^2``. Exact when the
  pool has no padding and, for a padded conv, the map size is a multiple of ``k``. This copies
  each weight over the window (a deployed network then holds up to ``k^2`` times more
  synapses), so only targets without pooling (netx) ask for it; Lava keeps pooling as a stage.
Folded modules become ``nn.Identity`` so module names stay those of the compacted model.
MaxPool is not linear and stays; targets that cannot run it say so.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UnsupportedModelError
from ..graph import ModelGraph, build_graph
from ..graph.model_graph import FLATTEN, PASS, POOL, SYNAPSE
from ..graph.state import register_copies
from .surgery import replace_module


def _pair(v) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else tuple(v)


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


def _check_pool(node) -> int:
    a = node.attrs
    k, s = a["kernel"], a["stride"]
    if node.module is None:
        raise UnsupportedModelError(
            f"cannot fold the functional average pooling '{node.name}' into weights: use an "
            "nn.AvgPool2d module for targets without pooling (netx)")
    if a.get("dims") != 2 or k[0] != k[1] or k != s or a["padding"] != (0, 0) \
            or a["ceil_mode"] or not a["exact"]:
        raise UnsupportedModelError(
            f"cannot fold AvgPool2d '{node.name}' (kernel {k}, stride {s}, padding "
            f"{a['padding']}): only square, non-overlapping pools without padding (stride = "
            "kernel) are linear maps that fold exactly")
    return k[0]


@torch.no_grad()
def _fold_one(model: nn.Module, graph: ModelGraph, pool) -> None:
    k = _check_pool(pool)
    cons = graph.consumers()
    cur, flattened = pool, False
    while True:
        nxt = cons[cur.id]
        if len(nxt) != 1:
            raise UnsupportedModelError(f"cannot fold AvgPool2d '{pool.name}': its output "
                                        "feeds several layers")
        cur = graph.nodes[nxt[0]]
        if cur.op == FLATTEN:
            flattened = True
        elif cur.op != PASS:
            break
    if cur.op != SYNAPSE:
        raise UnsupportedModelError(f"cannot fold AvgPool2d '{pool.name}': it feeds "
                                    f"'{cur.name}', not a Conv2d or Linear")
    nxt, name = cur.module, cur.name
    c, h, w = pool.in_shape
    if isinstance(nxt, nn.Conv2d) and not flattened:
        if _pair(nxt.dilation) != (1, 1) or nxt.groups != 1:
            raise UnsupportedModelError(f"cannot fold AvgPool2d into dilated/grouped conv '{name}'")
        pad = _pair(nxt.padding)
        if pad != (0, 0) and (h % k or w % k):
            raise UnsupportedModelError(
                f"cannot fold AvgPool2d '{pool.name}' into padded conv '{name}': the "
                f"{h}x{w} map is not a multiple of the pool size {k}")
        co, ci, kh, kw = nxt.weight.shape
        wk = F.conv_transpose2d(nxt.weight.reshape(co * ci, 1, kh, kw),
                                torch.full((1, 1, k, k), 1.0 / (k * k), dtype=nxt.weight.dtype,
                                           device=nxt.weight.device), stride=k)
        stride = _pair(nxt.stride)
        new = nn.Conv2d(ci, co, tuple(wk.shape[-2:]), stride=(stride[0] * k, stride[1] * k),
                        padding=(pad[0] * k, pad[1] * k), bias=nxt.bias is not None,
                        device=wk.device, dtype=wk.dtype)
        new.weight.copy_(wk.reshape(co, ci, *wk.shape[-2:]))
    elif isinstance(nxt, nn.Linear) and flattened:
        hp, wp = h // k, w // k
        wl = nxt.weight.view(nxt.out_features, c, hp, wp)
        spread = wl.repeat_interleave(k, 2).repeat_interleave(k, 3) / (k * k)
        spread = F.pad(spread, (0, w - wp * k, 0, h - hp * k))
        new = nn.Linear(c * h * w, nxt.out_features, bias=nxt.bias is not None,
                        device=wl.device, dtype=wl.dtype)
        new.weight.copy_(spread.reshape(nxt.out_features, -1))
    else:
        raise UnsupportedModelError(f"cannot fold AvgPool2d '{pool.name}' into "
                                    f"'{name}' ({type(nxt).__name__})")
    if nxt.bias is not None:
        new.bias.copy_(nxt.bias)
    replace_module(model, name, new)
    replace_module(model, pool.name, nn.Identity())


def fold_avgpool(model: nn.Module, graph: ModelGraph, example_input: torch.Tensor) -> ModelGraph:
    """In place: fold every average pool into the layer it feeds (last pool first); returns the
    graph of the folded model."""
    while True:
        pools = [n for n in graph.nodes if n.op == POOL and n.attrs.get("pool") == "avg"]
        if not pools:
            return graph
        _fold_one(model, graph, pools[-1])
        graph = build_graph(model, example_input, time_axis=graph.time_axis)


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
    graph = graph or build_graph(model, example_input, time_axis=time_axis)
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
