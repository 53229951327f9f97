"""Lava's fixed-point arithmetic (``Loihi2SimCfg(select_tag="fixed_pt")``) in torch, bit for bit.

Every value is an integer held in a float64 tensor (exact below 2^53: a graded synapse sum of
24-bit inputs and 9-bit weights stays below it for fan-ins under 4 million), so each rounding
step is one small function that a straight-through estimator can wrap. Vectorised over the
batch and the neurons.

**Synapse** (Lava's ``Dense`` / ``Sparse`` bit-accurate models; ``Conv`` fixed): integer
weights ``m`` (8-bit mantissa; mixed-sign matrices keep even values in ``[-256, 254]``,
``quantize.weight_grid``), inputs ``x`` (spikes 0/1, or graded integers):

    a = sum_j m_ij x_j                         (exact integer sum)
    a_out = a << e            (e >= 0)         (Dense/Sparse ``weight_exp``: :func:`shift`)
          = floor(a / 2^-e)   (e < 0)          (numpy's right_shift: toward -inf)
    (graded inputs are summed in int32, and a_out travels as int32: :func:`wrap32` both)
    Conv: a_out = wrap24(a)  (Lava's Conv ignores weight_exp: e = 0; its output wraps at 24 bits)

**Neuron** (Lava's ``LIF`` / ``LIFReset`` bit-accurate model; our ``Population`` fixed model adds
``bias_u``, the reset by subtraction and per-neuron constants), per step:

    u = wrap_current(decay(u, du) + 64 a_in + bias_u)      (24-bit wrap, as Lava does it;
                                                            the sum itself in int32)
    v = clip_voltage(decay(v, dv) + u + bias - 64 vth s_prev)    (subtract mode only)
    s = v > 64 vth                 (vth: 17-bit mantissa, 2^17 = never: v stays below 2^23)
    v = 0 where s                  (reset "zero"; "subtract" keeps v; "none" keeps v)

    decay(x, d) = sign(x) floor(|x| (4096 - d) / 4096)      (12-bit decay, truncated to 0)
    wrap_current(u): u > 2^23 -> u - 2^24; then <= -2^23 -> u + 2^24 (Lava's two steps)
    clip_voltage(v) = clamp(v, -(2^23 - 1), 2^23 - 1)

``du`` here is the *effective* decay (0..4096): Lava's ``LIF`` adds 1 to its ``du`` parameter
(Loihi 1's ``ds_offset``), so its process gets ``du - 1``; our ``Population`` takes it as is.
``bias`` is the effective bias ``bias_mant << bias_exp`` (13-bit mantissa, exponent 0..7).

**Worked example** (one LIF neuron, ``du = 4096`` (no current memory), ``dv = 410``
(``beta = 0.9``: ``410 = round(0.1 * 4096)``), ``vth = 100``, bias 0, reset zero; the synapse
weight ``m = 60``, ``e = 0``, its input spikes so that ``a_in = 60`` at steps 0, 1, 2; in Lava
the ``Dense`` delivers each step's sum one step later, which ``LavaNetwork`` aligns):

    step 0: a_in = 60; u = decay(0, 4096) + 64*60 = 3840; v = decay(0, 410) + 3840 = 3840;
            3840 > 6400? no
    step 1: u = sign(3840) floor(3840*0/4096) + 3840 = 3840;
            v = floor(3840*3686/4096) + 3840 = floor(3455.6) + 3840 = 3455 + 3840 = 7295;
            7295 > 6400: spike, v = 0
    step 2: u = 3840; v = 0 + 3840 = 3840; no spike

In float (``W = 0.6``, ``thr = 1``, the scale ``F = 100``: ``m = 0.6 F``, ``vth = 1 F``) the same
neuron has ``v = 0.6, 1.14 (spike), 0.6``: the integer ``v`` is ``64 F`` times the float one,
up to the truncation of each decay (3455 for 3456).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

UNITY = 4096                    # decays are 12-bit: 4096 = full decay
ACT_SHIFT = 6                   # a_in, vth (and so u, v) are MSB-aligned by 6 bits
STATE_MAX = 2 ** 23             # u and v are 24-bit signed
VTH_NEVER = 2 ** 17             # a threshold no 24-bit voltage exceeds (a graded integrator)


def tensor64(a) -> torch.Tensor:
    """An integer array (numpy or torch) as the float64 tensor the steps below compute on
    (exact for every integer the 24/32-bit arithmetic holds)."""
    return torch.as_tensor(np.ascontiguousarray(a), dtype=torch.float64)


def wrap32(a: torch.Tensor) -> torch.Tensor:
    """numpy's int32 arithmetic: a signed 32-bit wrap (Lava's graded synapse sums, ``a_in << 6``
    and ``u``'s sum are int32; only values far outside 24 bits ever wrap)."""
    return torch.remainder(a + 2.0 ** 31, 2.0 ** 32) - 2.0 ** 31


def shift(a: torch.Tensor, exp: int) -> torch.Tensor:
    """A Dense / Sparse synapse's ``weight_exp``: ``a << exp`` or numpy's ``a >> -exp``."""
    return a * float(2 ** exp) if exp >= 0 else torch.floor(a / float(2 ** -exp))


def wrap24(a: torch.Tensor) -> torch.Tensor:
    """Lava's ``Conv`` output clamp: a signed 24-bit wrap, ``(a + 2^23) mod 2^24 - 2^23``."""
    return torch.remainder(a + STATE_MAX, 2 * STATE_MAX) - STATE_MAX


def decay(x: torch.Tensor, d) -> torch.Tensor:
    """``sign(x) (|x| (4096 - d) >> 12)``: the product truncated toward zero."""
    p = x * (UNITY - d)
    return torch.sign(p) * torch.floor(p.abs() / UNITY)


def wrap_current(u: torch.Tensor) -> torch.Tensor:
    """Lava's 24-bit handling of ``u`` (two steps, the second reading the unwrapped value)."""
    w = torch.where(u > STATE_MAX, u - 2 * STATE_MAX, u)
    return torch.where(w <= -STATE_MAX, u + 2 * STATE_MAX, w)


def clip_voltage(v: torch.Tensor) -> torch.Tensor:
    return v.clamp(-(STATE_MAX - 1), STATE_MAX - 1)


def activation(a_in: torch.Tensor) -> torch.Tensor:
    """The synaptic input MSB-aligned: ``a_in << 6``."""
    return a_in * float(2 ** ACT_SHIFT)


@dataclass
class Neurons:
    """One population's integer constants (tensors broadcastable to its shape, torch layout):
    effective decays ``du``, ``dv`` (0..4096), threshold mantissa ``vth`` (compared as
    ``vth << 6``; ``VTH_NEVER``: never), effective biases ``bias`` (into ``v``) and ``bias_u``
    (into ``u``); ``reset``: "zero", "subtract" or "none"; ``out``: "s" spikes or "v" voltage."""
    du: torch.Tensor
    dv: torch.Tensor
    vth: torch.Tensor
    bias: torch.Tensor
    bias_u: torch.Tensor
    reset: str = "zero"
    out: str = "s"


def neuron_step(n: Neurons, u, v, s, a_in, stats: dict | None = None):
    """One step of the population from state ``(u, v, s)`` (``s``: the previous spikes);
    returns the new ``(u, v, s)``. ``stats`` (optional) counts ``u_wrapped`` and ``v_clipped``."""
    u_sum = wrap32(wrap32(decay(u, n.du) + wrap32(activation(a_in))) + n.bias_u)
    u = wrap_current(u_sum)
    v_sum = decay(v, n.dv) + u + n.bias
    vth = n.vth * float(2 ** ACT_SHIFT)
    if n.reset == "subtract":
        v_sum = v_sum - vth * s
    v = clip_voltage(v_sum)
    if stats is not None:
        stats["u_wrapped"] = stats.get("u_wrapped", 0) + int((u != u_sum).sum())
        stats["v_clipped"] = stats.get("v_clipped", 0) + int((v != v_sum).sum())
    s = (v > vth).to(v.dtype)
    if n.reset == "zero":
        v = torch.where(s > 0, torch.zeros_like(v), v)
    return u, v, s


@dataclass
class Synapse:
    """One synapse stage's integers (torch layout): ``kind`` "dense" (Affine / Linear: ``m``
    ``(out, in)``, ``exp`` its weight_exp), "conv" (``m`` as torch's, ``args`` of
    ``F.conv1d`` / ``F.conv2d``) or "pool" (a sum over the window: ``args`` of
    ``F.avg_pool2d``)."""
    kind: str
    m: torch.Tensor | None
    exp: int = 0
    args: dict | None = None
    conv1d: bool = False


def synapse(syn: Synapse, x: torch.Tensor) -> torch.Tensor:
    """The synapse's integer output for the integer input ``x`` ``[B, ...]``."""
    if syn.kind == "dense":
        return wrap32(shift(wrap32(x.flatten(1) @ syn.m.T), syn.exp))
    if syn.kind == "pool":
        return wrap24(F.avg_pool2d(x, divisor_override=1, **syn.args))
    conv = F.conv1d if syn.conv1d else F.conv2d
    return wrap24(conv(x, syn.m, **syn.args))
