"""A fused ``snn.Leaky`` window and the 2x2 average pool that is its only reader, as one
autograd operation: the compiled kernel (``csrc/leaky_pool.cpp``, via ``native.py``) pools each
step's spikes while they are in cache, and its backward pass spreads the pool's gradient
inside the Leaky loop. The ``[T, B, C, H, W]`` spikes are written only when DPAP's observer
asks for them, and their gradient is never written: on snn-mnist's two conv populations that
is most of the memory traffic of the Leaky windows and pools.

The Leaky window's float32 operations are ``lif.LeakyWindow``'s, in the same order, and the
pool's partial sums of binary spikes are small integers, exact in any order: pooled outputs,
spikes and gradients are bit-identical to the window followed by ``pool.AvgPool2x2`` (tests).
Covered: the common case of the byte-code backward (``lif.py``: the rectangle surrogate, beta
and threshold not learned, binary spikes), float32 on the CPU, 4-D maps with even H and W in
the default or channels-last layout, at least ``pool.SMALL`` spikes a window (where the
compiled pool is used); anything else runs the two operations one after the other.
"""
from __future__ import annotations

import torch

from . import pool
from .lif import (RESETS, _current_grad, _from_memory_order, _memory_order, _native,
                  _rectangle_width)

FUSE = True        # False: the Leaky window and the pool run one after the other (A/B, tests)


class LeakyPool2x2(torch.autograd.Function):
    @staticmethod
    def forward(ctx, current, beta, threshold, width, reset, steps, layout, out_cl, spikes):
        from . import native
        k = native.kernel()
        static = steps is not None
        T = steps if static else current.shape[0]
        perm, in_cl = layout
        B, C, H, W = current.shape[-4:]
        flat = current.permute(perm) if perm else current
        save = 1 if ctx.needs_input_grad[0] else 0
        b = float(beta.clamp(0, 1))
        pooled, S, code = k.leaky_pool_forward(
            flat.reshape(-1) if static else flat.reshape(T, -1), T, b, float(threshold), reset,
            static, save, width, B, C, H, W, in_cl, out_cl, spikes)
        ctx.geom = (B, C, H, W, in_cl)
        ctx.static, ctx.perm, ctx.width, ctx.reset, ctx.b = static, perm, width, reset, b
        ctx.shape = tuple(current.shape if static else current.shape[1:])
        ctx.save_for_backward(code)
        pooled = pooled.view((T, B) + pooled.shape[1:])
        if spikes:
            S = _from_memory_order(S, T, flat.shape, perm, static)
        ctx.mark_non_differentiable(S)
        # the spikes are DPAP's to read, never differentiated: without this, autograd hands
        # backward a zero-filled [T, B, C, H, W] gradient for them every batch (~10 ms of a
        # 110 ms training step of the paper's MNIST SNN)
        ctx.set_materialize_grads(False)
        return pooled, S

    @staticmethod
    def backward(ctx, grad_pooled, _grad_spikes):
        if grad_pooled is None:                          # the pooled output was not used
            return (None,) * 9
        (code,) = ctx.saved_tensors
        T = code.shape[0]
        g = grad_pooled.reshape((-1,) + grad_pooled.shape[2:])
        if g.stride(-1) == 0 or g.stride(-2) == 0:      # an expanded gradient: made dense
            g = g.contiguous()
        from . import native
        G = native.kernel().leaky_pool_backward_coded(
            g, code, ctx.b, ctx.reset, ctx.static, ctx.width, *ctx.geom)
        return _current_grad(G, ctx, T), None, None, None, None, None, None, None, None


def _layout(current: torch.Tensor, static: bool):
    """``(perm, channels_last)`` of a 4-D map per step that the kernel reads in memory order,
    else ``None``."""
    if current.is_contiguous():
        return None, False
    perm = _memory_order(current, static)
    cl = [0, 2, 3, 1] if static else [0, 1, 3, 4, 2]
    return (perm, True) if perm == cl else None


def leaky_pool(neuron, current: torch.Tensor, steps: int | None, out_channels_last: bool,
               spikes: bool):
    """``(pooled [T, B, C, H/2, W/2], spikes [T, B, C, H, W] or None)`` of ``snn.Leaky``
    ``neuron`` (``lif.fusable``) followed by a 2x2 average pool, or ``None`` where the fused
    kernel does not cover the case (the caller then runs the two operations)."""
    static = steps is not None
    if not FUSE or current.dim() != (4 if static else 5):
        return None
    H, W = current.shape[-2:]
    T = steps if static else current.shape[0]
    width = _rectangle_width(neuron.spike_grad)
    beta, thr = neuron.beta, neuron.threshold
    if not isinstance(beta, torch.Tensor):
        beta = torch.tensor(float(beta))
    if (H % 2 or W % 2 or width is None or current.numel() * (T if static else 1) < pool.SMALL
            or beta.numel() != 1 or thr.numel() != 1 or beta.requires_grad or thr.requires_grad
            or _native(current, beta, thr, neuron.graded_spikes_factor,
                       torch.is_grad_enabled() and current.requires_grad) is None):
        return None
    layout = _layout(current, static)
    if layout is None:
        return None
    pooled, S = LeakyPool2x2.apply(current, beta.to(current.dtype), thr.to(current.dtype),
                                   width, RESETS[neuron.reset_mechanism], steps, layout,
                                   out_channels_last, spikes)
    return pooled, (S if spikes else None)
