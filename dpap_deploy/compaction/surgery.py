"""Rebuild layers with fewer units: one small function per layer type (index_select slicing).
Everything is copied; the sliced module has the original's hyperparameters, dtype and device."""
from __future__ import annotations

import torch
from torch import nn

from ..errors import UnsupportedModelError


def _copy_(dst: torch.Tensor, src: torch.Tensor) -> None:
    with torch.no_grad():
        dst.copy_(src)


def slice_conv(conv: nn.Conv2d, keep_out: torch.Tensor, keep_in: torch.Tensor) -> nn.Conv2d:
    w = conv.weight.detach().index_select(0, keep_out.to(conv.weight.device))
    w = w.index_select(1, keep_in.to(conv.weight.device))
    new = nn.Conv2d(len(keep_in), len(keep_out), conv.kernel_size, stride=conv.stride,
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
    if isinstance(mod, nn.Conv2d):
        return slice_conv(mod, keep_out, keep_in)
    if isinstance(mod, nn.Linear):
        return slice_linear(mod, keep_out, keep_in)
    raise UnsupportedModelError(f"cannot compact a layer of type '{type(mod).__name__}'")


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
