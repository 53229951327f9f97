"""The paper's spiking neuron (Eq 1-4) as ordinary snnTorch.

    u[t+1] = lambda * u[t] * (1 - o[t]) + sum_j w_ij o_j[t+1] + b_i        (Eq 1)
    o[t+1] = 1 if u[t+1] > V_th else 0                                      (Eq 2)
    H(u)   = (1/a) * 1[|u - V_th| < a/2]   (rectangle surrogate gradient, Eq 4)

``snn.Leaky(beta=lambda, threshold=V_th, reset_mechanism="zero")`` computes exactly Eq 1 in
snnTorch 1.0 (``mem = beta * (1 - reset) * mem + input``). Decision: a spike needs
``u > V_th`` (strictly), the convention of snnTorch, Lava and NIR; the paper writes ``>=``.
The two differ only when ``u`` equals ``V_th`` exactly.
"""
from __future__ import annotations

import snntorch as snn
import torch


LAMBDA = 0.2
V_TH = 0.5
SURROGATE_WIDTH = 1.0


class _Rectangle(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, width: float) -> torch.Tensor:
        ctx.save_for_backward(x)
        ctx.width = width
        return (x > 0).to(x.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (x,) = ctx.saved_tensors
        return grad * (x.abs() < ctx.width / 2).to(grad.dtype) / ctx.width, None


def rectangle(width: float = SURROGATE_WIDTH):
    """Heaviside forward, rectangle surrogate backward (Eq 4); ``x = u - V_th``."""
    def spike_fn(x: torch.Tensor) -> torch.Tensor:
        return _Rectangle.apply(x, width)
    spike_fn.__name__ = f"rectangle_a{width:g}"
    spike_fn.width = width
    return spike_fn


def lif(beta: float = LAMBDA, threshold: float = V_TH, width: float = SURROGATE_WIDTH) -> snn.Leaky:
    """The paper's LIF population as an ``snn.Leaky`` with hidden state (``init_hidden``)."""
    return snn.Leaky(beta=beta, threshold=threshold, spike_grad=rectangle(width),
                     reset_mechanism="zero", init_hidden=True)
