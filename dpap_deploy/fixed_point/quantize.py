"""A float layer's integer forms for Lava's fixed-point models (``emulate`` runs them):

- weights: ``weight_grid`` puts ``W r / 2^e`` on the grid Lava's ``Dense`` / ``Sparse`` keep
  unchanged (their ``clip_weights`` + ``truncate_weights`` at 8 bits): excitatory (every weight
  >= 0) ``0..255``, inhibitory ``-255..0``, mixed sign even values in ``[-256, 254]``;
  ``weights`` picks the exponent ``e`` (``-8..7``; 0 for a ``Conv``, which Lava runs without
  one) and counts the weights clipped at the grid's ends;
- decays: ``decay`` ``round(d 4096)`` on 12 bits (4096: full decay);
- threshold: ``threshold`` ``floor(F vth)``, a 17-bit mantissa (compared as ``<< 6``: an
  integer drive ``v`` exceeds ``F vth`` exactly when it exceeds its floor);
- biases: ``bias`` ``round(64 F b)`` as ``mant << exp`` (13-bit signed mantissa, ``exp``
  0..7), the mantissa rounded at the smallest exponent that holds it.

``F`` is a population's scale: an integer ``v`` is ``64 F`` times the float one. A value that
cannot be held at all is refused in one line (:func:`refuse`): which layer, which value, what
to change.
"""
from __future__ import annotations

import numpy as np

from ..errors import UnsupportedModelError

EXP_RANGE = (-8, 7)             # Dense / Sparse weight_exp
VTH_MAX = 2 ** 17 - 1           # 17-bit threshold mantissa
BIAS_MANT_MAX = 2 ** 12 - 1     # 13-bit signed bias mantissa
BIAS_EXP_MAX = 7                # 3-bit bias exponent
ACT = 64                        # a_in, u, v and vth are MSB-aligned by 6 bits


def refuse(layer: str, why: str, fix: str):
    raise UnsupportedModelError(f"fixed point: layer {layer!r} {why}; {fix}")


def grid_limits(w: np.ndarray) -> tuple[int, int, int]:
    """``(low, high, step)`` of the integer weights Lava keeps for ``w``'s signs."""
    if np.all(w >= 0):
        return 0, 255, 1
    if np.all(w <= 0):
        return -255, 0, 1
    return -256, 254, 2


def weight_grid(x: np.ndarray, sign_of: np.ndarray | None = None) -> tuple[np.ndarray, int]:
    """``x`` rounded (half to even) onto Lava's weight grid for the signs of ``sign_of``
    (default ``x``); returns ``(integers, how many were clipped)``."""
    lo, hi, step = grid_limits(x if sign_of is None else sign_of)
    r = step * np.round(np.asarray(x, np.float64) / step)
    return np.clip(r, lo, hi), int(((r < lo) | (r > hi)).sum())


def weights(layer: str, w: np.ndarray, r: float, conv: bool) -> tuple[np.ndarray, int, int]:
    """Integers ``m`` and exponent ``e`` with ``m 2^e ~ r w`` (``r``: output per input unit),
    as fine as the 8-bit mantissa allows; returns ``(m, e, clipped)``. Refused when every
    weight rounds to zero."""
    w = np.asarray(w, np.float64)
    top = float(np.abs(w).max()) if w.size else 0.0
    if top == 0.0:
        return np.zeros_like(w), 0, 0
    hi = grid_limits(w)[1] or 255
    e = int(np.ceil(np.log2(r * top / hi))) if r * top > 0 else 0
    e = 0 if conv else min(max(e, EXP_RANGE[0]), EXP_RANGE[1])
    m, clipped = weight_grid(w * r / 2.0 ** e, w)
    if not np.any(m):
        refuse(layer, f"rounds every weight to 0 (largest |w| = {top:.3g} at the scale "
               f"{r:.3g} its neurons need)", "lower the neurons' threshold or raise the "
               "weights (or give the layer fewer, larger weights)")
    return m, e, clipped


def decay(layer: str, what: str, d: np.ndarray) -> np.ndarray:
    """A decay ``d`` (``1 - alpha`` or ``1 - beta``) on 12 bits."""
    d = np.asarray(d, np.float64)
    if np.any(d < 0) or np.any(d > 1):
        refuse(layer, f"has {what} = {float(d.min()):.4g}..{float(d.max()):.4g}", "a decay "
               "is between 0 and 1 (0 < beta, alpha <= 1)")
    return np.round(d * 4096)


def threshold(layer: str, vth: np.ndarray, scale: float) -> np.ndarray:
    """``floor(F vth)`` (an infinite threshold: ``emulate.VTH_NEVER``)."""
    from .emulate import VTH_NEVER
    vth = np.asarray(vth, np.float64)
    q = np.where(np.isinf(vth), VTH_NEVER, np.floor(np.where(np.isinf(vth), 0, vth) * scale))
    finite = q[np.isfinite(vth)]
    if finite.size and (finite.max() > VTH_MAX or finite.min() < 0):
        refuse(layer, f"needs a threshold mantissa {int(finite.max())} at the scale "
               f"{scale:.4g} (17 bits: 0..{VTH_MAX})", "lower the threshold relative to the "
               "weights, or raise the weights")
    return q


def bias(layer: str, b: np.ndarray, scale: float, what: str = "bias") -> tuple[np.ndarray, np.ndarray, int]:
    """``round(64 F b)`` as ``(mant, exp, rounded)``: 13-bit mantissa, exponent 0..7 (the
    smallest that holds each value); ``rounded``: values that lost bits to the exponent."""
    x = np.round(np.asarray(b, np.float64) * ACT * scale)
    need = np.ceil(np.log2(np.maximum(np.abs(x), 1) / BIAS_MANT_MAX))
    exp = np.clip(need, 0, None)
    if np.any(exp > BIAS_EXP_MAX):
        worst = float(np.abs(b).max())
        refuse(layer, f"has a {what} {worst:.4g} that needs {int(exp.max()) + 12} bits at the "
               f"scale {scale:.4g} (13-bit mantissa << 0..7)", "lower the bias relative to "
               "the threshold, or raise the threshold")
    mant = np.round(x / 2.0 ** exp)
    mant = np.clip(mant, -BIAS_MANT_MAX - 1, BIAS_MANT_MAX)
    return mant, exp, int((mant * 2.0 ** exp != x).sum())
