"""Average pooling folded into netx weights (the weight arithmetic is ``compaction.fold_pools``'s),
and pools given as 2-D (``netx_plan`` uses them).

Average pooling is linear, so it folds into a synapse exactly (float64 arithmetic):

- *over currents* (between a synapse and its neuron): ``avgpool_{k,s}(conv_{W,S,P}(x))`` is
  one convolution with kernel ``(k - 1) S + K``, stride ``S s``, padding ``P`` and weights
  ``W'[v] = sum_{a < k} W[v - S a] / (k_h k_w)`` (``conv_transpose2d`` of the box filter with
  ``W``), bias unchanged (the window's weights sum to 1); its output size is the pool's,
  ``floor((floor((H + 2P - K) / S) + 1 - k) / s) + 1``;
- *over spikes* (after a neuron, or on the input; stride = kernel ``(k_h, k_w)``, no padding):
  into the synapse it feeds, as ``compaction.fold`` does: a conv ``(K, S, P)`` becomes
  ``(K k, S k, P k)`` with ``W'[v] = W[v // k] / (k_h k_w)`` (a padded conv only when the map
  is a multiple of ``k``); a ``Linear`` after ``Flatten`` gets each pooled column spread over
  its ``k_h x k_w`` source pixels, divided by ``k_h k_w`` (rows and columns the pool drops get
  zero weights).

1-D maps ``(C, L)`` are the 2-D maps ``(C, 1, L)`` and 1-D pools the pools ``(1, k)``.
"""
from __future__ import annotations

from dataclasses import replace

import torch

from ..compaction.fold_pools import pool_after_conv, pool_before_conv, pool_before_dense
from ..graph.model_graph import POOL


def as_2d(shape: tuple[int, ...]) -> tuple[int, ...]:
    """A 1-D map ``(C, L)`` as the 2-D map ``(C, 1, L)`` netx convolves; others unchanged."""
    return (shape[0], 1, shape[1]) if len(shape) == 2 else tuple(shape)


def pool_2d(node):
    """``node`` with a 1-D pool's attributes and shapes as the ``(1, k)`` 2-D pool over
    ``(C, 1, L)`` (the same windows); a 2-D pool unchanged."""
    a = node.attrs
    if a.get("dims") != 1:
        return node
    two = {**a, "dims": 2, "kernel": (1,) + tuple(a["kernel"]),
           "stride": (1,) + tuple(a["stride"]), "padding": (0,) + tuple(a["padding"])}
    return replace(node, attrs=two, in_shapes=[as_2d(node.in_shape)],
                   out_shape=as_2d(node.out_shape))


def describe(node) -> str:
    """``nn.MaxPool2d``'s class name, ``F.max_pool2d`` for a functional pool, else the
    function's name."""
    if node.module is not None:
        return type(node.module).__name__
    a = node.attrs
    if node.op == POOL:
        return f"F.{a.get('pool', 'max')}_pool{a.get('dims', 2)}d"
    return str(a.get("fn", node.op))


def pool_shape_reason(node, need_tiling: bool) -> str | None:
    a, what = node.attrs, describe(node)
    k, s, p = a["kernel"], a["stride"], a["padding"]
    if tuple(p) != (0, 0) or a.get("ceil_mode") or not a.get("exact", True):
        return (f"average pooling '{node.name}' ({what}, padding {tuple(p)}, ceil_mode="
                f"{a.get('ceil_mode')}) is not a plain window mean: use padding=0, "
                "ceil_mode=False and the default divisor to fold it into netx weights")
    if need_tiling and tuple(k) != tuple(s):
        return (f"average pooling '{node.name}' (kernel {tuple(k)}, stride {tuple(s)}) after a "
                "neuron folds into the next synapse only with stride = kernel")
    return None


@torch.no_grad()
def compose_after(syn, node, weights: bool = True) -> str | None:
    """Average pooling over currents: fold it into the pending synapse (module docstring).
    ``weights=False``: shapes and strides only (the weights are left as they are)."""
    reason = pool_shape_reason(node, need_tiling=False)
    if reason:
        return reason
    if syn.kind != "conv" or syn.dilation != (1, 1):
        return (f"average pooling '{node.name}' follows '{syn.name}', which is not an undilated "
                "Conv2d: only a convolution composes with a pool into one netx conv layer")
    sh, sw = node.attrs["stride"]
    if weights:
        syn.weight = pool_after_conv(syn.weight, syn.stride, node.attrs["kernel"])
    syn.stride = (syn.stride[0] * sh, syn.stride[1] * sw)
    syn.out_shape = as_2d(node.out_shape)
    syn.pooled.append(node.name)
    return None


@torch.no_grad()
def fold_before(syn, pool, flattened: bool, weights: bool = True) -> str | None:
    """Average pooling over spikes: fold it into the synapse it feeds (module docstring).
    ``weights=False``: shapes, strides and padding only (the weights are left as they are)."""
    kh, kw = pool.attrs["kernel"]
    c, h, w = pool.in_shape
    if syn.kind == "conv" and not flattened:
        if syn.dilation != (1, 1) or syn.groups != 1:
            return (f"average pooling '{pool.name}' feeds the dilated or grouped conv "
                    f"'{syn.name}', into which it does not fold")
        if syn.padding != (0, 0) and (h % kh or w % kw):
            return (f"average pooling '{pool.name}' feeds the padded conv '{syn.name}' and its "
                    f"{h}x{w} map is not a multiple of the pool size {kh}x{kw}, so it does not "
                    "fold")
        if weights:
            syn.weight = pool_before_conv(syn.weight, (kh, kw))
        syn.stride = (syn.stride[0] * kh, syn.stride[1] * kw)
        syn.padding = (syn.padding[0] * kh, syn.padding[1] * kw)
    elif syn.kind == "dense" and flattened:
        if weights:
            syn.weight = pool_before_dense(syn.weight, (c, h, w), (kh, kw))
    else:
        return f"average pooling '{pool.name}' feeds '{syn.name}' in a way that does not fold"
    syn.in_shape = (c * h * w,) if flattened else tuple(pool.in_shape)
    syn.pooled.append(pool.name)
    return None
