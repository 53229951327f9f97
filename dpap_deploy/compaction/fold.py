"""Deployment folding: a BatchNorm-free, AvgPool-free graph for targets without those layers.

- BatchNorm (evaluation statistics) folds into the preceding conv / linear:
  ``W' = W * g``, ``b' = (b - mean) * g + beta`` with ``g = gamma / sqrt(var + eps)``.
- ``AvgPool2d(k, stride=k)`` is linear, so it folds into the conv or Linear it feeds:
  a conv ``(K, stride S, padding P)`` after the pool becomes a conv on the unpooled map with
  kernel ``(K-1)*k + k``, stride ``S*k``, padding ``P*k`` and weights
  ``conv_transpose(W, ones(k, k) / k^2, stride=k)``; a Linear after ``Flatten`` gets each
  pooled column spread over its ``k x k`` source pixels, divided by ``k^2``. Exact when the
  pool has no padding and, for a padded conv, the map size is a multiple of ``k``.
Folded modules become ``nn.Identity`` so module names stay those of the compacted model.
MaxPool is not linear and stays; targets that cannot run it say so.
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from ..dpap.layers import Call, Forward, call_order, default_forward, find_prunable_layers
from ..errors import UnsupportedModelError
from .surgery import replace_module, strip_hooks

_PASS_THROUGH = (nn.Flatten, nn.Dropout, nn.Identity)


def _pair(v) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else tuple(v)


@torch.no_grad()
def fold_batchnorm(model: nn.Module, example_input: torch.Tensor,
                   forward: Forward = default_forward) -> nn.Module:
    """In place: every BatchNorm after a conv / linear is folded into it."""
    _, layers = find_prunable_layers(model, example_input, forward)
    for layer in layers:
        bn, syn = layer.bn, layer.synapse
        if bn is None:
            continue
        g = (bn.weight if bn.weight is not None else torch.ones_like(bn.running_var)) \
            / torch.sqrt(bn.running_var + bn.eps)
        b = syn.bias if syn.bias is not None else torch.zeros_like(g)
        shift = bn.bias if bn.bias is not None else torch.zeros_like(g)
        if isinstance(syn, nn.Conv2d):
            new = nn.Conv2d(syn.in_channels, syn.out_channels, syn.kernel_size, syn.stride,
                            syn.padding, syn.dilation, 1, True, syn.padding_mode,
                            device=g.device, dtype=syn.weight.dtype)
        else:
            new = nn.Linear(syn.in_features, syn.out_features, True, device=g.device,
                            dtype=syn.weight.dtype)
        new.weight.copy_(syn.weight * g.view(-1, *([1] * (syn.weight.dim() - 1))))
        new.bias.copy_((b - bn.running_mean) * g + shift)
        replace_module(model, layer.name, new)
        replace_module(model, layer.bn_name, nn.Identity())
    return model


def _check_pool(pool: nn.AvgPool2d, name: str) -> int:
    k, s = _pair(pool.kernel_size), _pair(pool.stride or pool.kernel_size)
    if k[0] != k[1] or k != s or _pair(pool.padding) != (0, 0) or pool.ceil_mode \
            or pool.divisor_override is not None:
        raise UnsupportedModelError(
            f"cannot fold AvgPool2d '{name}' (kernel {k}, stride {s}, padding {pool.padding}): "
            "only square, non-overlapping pools without padding (stride = kernel) are linear "
            "maps that fold exactly")
    return k[0]


@torch.no_grad()
def _fold_one(model: nn.Module, calls: list[Call], i: int) -> None:
    pool_call = calls[i]
    k = _check_pool(pool_call.module, pool_call.name)
    j = i + 1
    while j < len(calls) and isinstance(calls[j].module, _PASS_THROUGH):
        j += 1
    if j == len(calls) or not isinstance(calls[j].module, (nn.Conv2d, nn.Linear)):
        after = calls[j].name if j < len(calls) else "the output"
        raise UnsupportedModelError(f"cannot fold AvgPool2d '{pool_call.name}': it feeds "
                                    f"'{after}', not a Conv2d or Linear")
    nxt, name = calls[j].module, calls[j].name
    _, c, h, w = pool_call.in_shape
    flattened = any(isinstance(calls[t].module, nn.Flatten) for t in range(i + 1, j))
    if isinstance(nxt, nn.Conv2d) and not flattened:
        if _pair(nxt.dilation) != (1, 1) or nxt.groups != 1:
            raise UnsupportedModelError(f"cannot fold AvgPool2d into dilated/grouped conv '{name}'")
        pad = _pair(nxt.padding)
        if pad != (0, 0) and (h % k or w % k):
            raise UnsupportedModelError(
                f"cannot fold AvgPool2d '{pool_call.name}' into padded conv '{name}': the "
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
        raise UnsupportedModelError(f"cannot fold AvgPool2d '{pool_call.name}' into "
                                    f"'{name}' ({type(nxt).__name__})")
    if nxt.bias is not None:
        new.bias.copy_(nxt.bias)
    replace_module(model, name, new)
    replace_module(model, pool_call.name, nn.Identity())


def fold_avgpool(model: nn.Module, example_input: torch.Tensor,
                 forward: Forward = default_forward) -> nn.Module:
    """In place: fold every AvgPool2d into the layer it feeds (last pool first)."""
    while True:
        calls = call_order(model, example_input, forward)
        pools = [i for i, c in enumerate(calls) if isinstance(c.module, nn.AvgPool2d)]
        if not pools:
            return model
        _fold_one(model, calls, pools[-1])


def deployment_graph(model: nn.Module, example_input: torch.Tensor,
                     forward: Forward = default_forward, verify: bool = True,
                     time_steps: int = 8) -> nn.Module:
    """A copy of ``model`` with BatchNorm and AvgPool2d folded away (evaluation mode)."""
    from .compact import check_same_function
    folded = copy.deepcopy(model)
    strip_hooks(folded)
    folded.eval()
    fold_batchnorm(folded, example_input, forward)
    fold_avgpool(folded, example_input, forward)
    if verify:
        kind, _ = find_prunable_layers(folded, example_input, forward)
        check_same_function(model, folded, example_input, kind, time_steps)
    return folded
