"""2x2 average pooling (stride 2, no padding): the same numbers as ``F.avg_pool2d(x, 2)``,
faster on CPU: one pass of the compiled kernel (``csrc/pool.cpp``, built by a training step:
``native.py``) each way, else four strided slices.

``F.avg_pool2d`` on a ``[T*B, C, H, W]`` window of spikes spends its time in a generic
window loop; four strided views summed in aten's order, ``((x00 + x01) + x10) + x11``, then
divided by 4 (a power of two: ``* 0.25`` is the same rounding), give bit-identical outputs
(measured on [800, 15, 28, 28]: 6.7 ms, slices 3.5 ms). The gradient, ``dL/dy / 4`` spread over
each window, is written with four strided copies (12.0 -> 2.8 ms). Odd rows or columns, as in
``floor`` mode, get no output and a zero gradient.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def _native(x: torch.Tensor, build: bool):
    """The compiled kernel (built now only if ``build``: a training step), else ``None``: the
    torch path, also CUDA's."""
    if x.device.type != "cpu" or x.dtype != torch.float32:
        return None
    from . import native
    return native.kernel(build)


class AvgPool2x2(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, out_channels_last: bool = False) -> torch.Tensor:
        ctx.in_shape = x.shape
        k = _native(x, ctx.needs_input_grad[0])
        ctx.native, ctx.in_cl = k is not None, _channels_last(x)
        if k is not None:
            if x.dim() == 4:
                return k.avg_pool2x2_forward_4d(x, ctx.in_cl, out_channels_last)
            y = k.avg_pool2x2_forward_4d(x.reshape((-1, 1) + x.shape[-2:]), False, False)
            return y.reshape(x.shape[:-2] + y.shape[-2:])
        H, W = x.shape[-2] // 2 * 2, x.shape[-1] // 2 * 2
        s = x[..., 0:H:2, 0:W:2] + x[..., 0:H:2, 1:W:2]
        s = s + x[..., 1:H:2, 0:W:2]
        s = s + x[..., 1:H:2, 1:W:2]
        return s * 0.25

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        h, w = g.shape[-2:]
        H, W = ctx.in_shape[-2:]
        if ctx.native:
            k = _native(g, False)
            if g.dim() == 4:
                return k.avg_pool2x2_backward_4d(g, H, W, ctx.in_cl), None
            gx = k.avg_pool2x2_backward_4d(g.reshape((-1, 1) + g.shape[-2:]), H, W, False)
            return gx.reshape(ctx.in_shape), None
        even = (2 * h, 2 * w) == (H, W)
        out = g.new_empty(ctx.in_shape) if even else g.new_zeros(ctx.in_shape)
        q = g * 0.25
        for i in (0, 1):        # four strided writes (faster than an expand + copy)
            for j in (0, 1):
                out[..., i:2 * h:2, j:2 * w:2] = q
        return out, None


def _channels_last(x: torch.Tensor) -> bool:
    """A 4-D map stored channels-last (what a convolution on a channels-last input makes)."""
    return x.dim() == 4 and not x.is_contiguous() and x.permute(0, 2, 3, 1).is_contiguous()


def is_2x2(attrs: dict) -> bool:
    """A pool node ``avg_pool2d(kernel 2, stride 2, padding 0, floor)`` with the plain mean."""
    return (attrs.get("pool") == "avg" and attrs.get("dims") == 2
            and tuple(attrs["kernel"]) == (2, 2) and tuple(attrs["stride"]) == (2, 2)
            and tuple(attrs["padding"]) == (0, 0) and not attrs["ceil_mode"]
            and attrs.get("exact", True))


SMALL = 1 << 20      # below this many elements aten's pool is as fast (measured on snn-digits)


def avg_pool_2x2(x: torch.Tensor, channels_last: bool = False) -> torch.Tensor:
    """``F.avg_pool2d(x, 2)``; ``channels_last``: the result is wanted in that layout (its next
    layer is a channels-last convolution), which the compiled kernel writes directly."""
    if x.numel() < SMALL:
        return F.avg_pool2d(x, 2)
    return AvgPool2x2.apply(x, channels_last)
