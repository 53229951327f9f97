"""NIR's continuous neurons as discrete steps (forward Euler, step ``dt``), shared by the torch
reference and the Lava mapping so that both use the very same float32 constants.

- ``LIF``: ``tau dv/dt = (v_leak - v) + r I``
  -> ``v[t] = beta v[t-1] + g I[t] + c`` with ``beta = 1 - dt/tau``, ``g = r dt/tau``,
  ``c = v_leak dt/tau``.
- ``CubaLIF``: ``tau_syn dI/dt = -I + w_in x``, ``tau_mem dv/dt = (v_leak - v) + r I``
  -> ``I[t] = alpha I[t-1] + g_syn x[t]`` (``alpha = 1 - dt/tau_syn``, ``g_syn = w_in dt/tau_syn``),
  ``v[t] = beta v[t-1] + g I[t] + c`` as for ``LIF`` with ``tau = tau_mem``.
- ``IF``: ``dv/dt = r I`` -> ``v[t] = v[t-1] + g I[t]``, ``g = r dt`` (``beta = 1``).
- ``LI``: ``tau dv/dt = (v_leak - v) + r I`` -> ``v[t] = beta v[t-1] + g I[t] + c`` as for
  ``LIF``; its output is ``v`` itself (graded: no threshold, no reset).

Every spiking neuron (``LIF``, ``CubaLIF``, ``IF``) spikes when ``v > v_threshold`` and then
sets ``v = v_reset``.

**Valid steps.** A decay ``1 - dt/tau`` must lie in ``[0, 1]``: ``dt > tau`` makes it negative
(a Norse LIF with ``tau = 1e-5`` under ``dt = 1e-4`` gave ``beta = -9``, a membrane that flips
sign every step), which no writer means; :func:`decay` refuses it in one line naming the node,
the time constant and the step, with the fix (the step the file was written for: ``--dt``).
``beta = 0`` (``tau = dt``, snnTorch's ``beta = 0``) is a neuron without memory and is kept.

**Float32 choice** (``tau`` stored in float32; a float64 ``tau`` is read directly). snnTorch
computes ``mem = beta * mem + input`` in float32 with the float32
``beta`` its user gave. A writer stores ``tau = dt / (1 - beta)`` in float32, and for
``beta < 0.5`` several float32 ``beta`` give the same float32 ``tau``: ``1 - dt/tau`` then
comes back within a few units in the last place, not exactly (measured: exact for about 2 of 3
values). So :func:`decay` takes, among the float32 values next to ``1 - dt/tau``, one that the
writers' own formula maps back to the stored ``tau`` (ours: ``float32(dt / (1 - beta))`` in
float64; snnTorch's: the same in float32), preferring the shortest decimal (``0.9``, what
people write), then the nearest. Gains within 1e-6 of 1 (``r = tau/dt`` stored in float32)
are exactly 1, so ``g I`` is ``I`` and the spikes of a model run through NIR are snnTorch's own.
"""
from __future__ import annotations

from dataclasses import dataclass

import nir
import numpy as np

from ..errors import UnsupportedModelError

UNIT_GAIN_TOLERANCE = 1e-6   # float32 storage of r = tau/dt and tau rounds the gain by ~1e-7


def _f32(v) -> np.ndarray:
    return np.asarray(v, dtype=np.float32)


def _candidates(tau32: float, dt: float) -> float:
    est = 1.0 - dt / float(tau32)
    c = np.float32(est)
    cands = [c]
    lo = hi = c
    for _ in range(4):
        lo, hi = np.nextafter(lo, np.float32(-1)), np.nextafter(hi, np.float32(2))
        cands += [lo, hi]
    ours = lambda b: np.float32(dt / (1.0 - float(b))) == tau32  # noqa: E731
    theirs = lambda b: np.float32(np.float32(dt) / (np.float32(1) - b)) == tau32  # noqa: E731
    cands += [np.float32(0.0)]                        # tau == dt: beta = 0 exactly
    cands = [b for b in cands if b < 1]               # a decay of 1 has no finite tau
    ok = [b for b in cands if ours(b) or theirs(b)] or [c]
    return min(ok, key=lambda b: (len(np.format_float_positional(b, unique=True)), abs(float(b) - est)))


def decay(tau, dt: float, where: str = "NIR neuron: tau") -> np.ndarray:
    """float32 ``1 - dt/tau`` as the writer meant it (module docstring), element-wise; refused
    outside ``[0, 1]`` (``where`` names the node and parameter in the message). A float64
    ``tau`` (what a writer stores when float32 cannot tell its decay apart, below 0.5) gives
    ``float32(1 - dt/tau)`` directly."""
    tau_raw, tau = tau, _f32(tau)
    if np.any(~np.isfinite(tau)) or np.any(tau <= 0):
        raise UnsupportedModelError(f"{where} must be positive and finite, got {tau.min()}; "
                                    "export the network again with positive time constants")
    if np.asarray(tau_raw).dtype == np.float64:     # float64 tau: no ambiguity
        uniq, inv = np.unique(np.asarray(tau_raw, np.float64), return_inverse=True)
        vals = (1.0 - dt / uniq).astype(np.float32)
    else:
        uniq, inv = np.unique(tau, return_inverse=True)
        vals = np.array([_candidates(t, dt) for t in uniq], dtype=np.float32)
    if vals.min() < 0:
        t = float(uniq[int(vals.argmin())])
        raise UnsupportedModelError(
            f"{where} = {t:.4g} is shorter than the step dt = {dt:.4g}: the decay 1 - dt/tau "
            f"would be {1 - dt / t:.4g}, outside [0, 1]; pass the dt the file was written for "
            "(--dt)")
    return vals[inv].reshape(tau.shape)


def _gain(g: np.ndarray) -> np.ndarray | None:
    """``None`` when the gain is 1 (multiplying by it would only add rounding)."""
    g = np.asarray(g, dtype=np.float64)
    return None if np.all(np.abs(g - 1.0) <= UNIT_GAIN_TOLERANCE) else g.astype(np.float32)


@dataclass
class Discrete:
    """One neuron population's discrete constants (float32 arrays or scalars)."""
    kind: str                      # "LIF", "CubaLIF", "IF", "LI"
    beta: np.ndarray               # membrane decay (1 for IF)
    gain: np.ndarray | None        # input gain g (None: 1)
    leak: np.ndarray | None        # constant drive c (None: 0)
    v_threshold: np.ndarray
    v_reset: np.ndarray
    alpha: np.ndarray | None = None       # synaptic decay (CubaLIF)
    syn_gain: np.ndarray | None = None    # g_syn (CubaLIF; None: 1)


def discretise(node: nir.NIRNode, dt: float, name: str = "?") -> Discrete:
    """The node's discrete constants with step ``dt`` (``name``: for refusals)."""
    where = f"NIR {type(node).__name__} node {name!r}: "
    if isinstance(node, nir.LIF):
        k = dt / np.asarray(node.tau, np.float64)
        return Discrete("LIF", decay(node.tau, dt, where + "tau"), _gain(np.asarray(node.r) * k),
                        _leak(node.v_leak, k), _f32(node.v_threshold), _f32(node.v_reset))
    if isinstance(node, nir.CubaLIF):
        k = dt / np.asarray(node.tau_mem, np.float64)
        ks = dt / np.asarray(node.tau_syn, np.float64)
        return Discrete("CubaLIF", decay(node.tau_mem, dt, where + "tau_mem"),
                        _gain(np.asarray(node.r) * k), _leak(node.v_leak, k),
                        _f32(node.v_threshold), _f32(node.v_reset),
                        alpha=decay(node.tau_syn, dt, where + "tau_syn"), syn_gain=_gain(np.asarray(node.w_in) * ks))
    if isinstance(node, nir.LI):
        k = dt / np.asarray(node.tau, np.float64)
        inf = np.float32(np.inf)
        return Discrete("LI", decay(node.tau, dt, where + "tau"), _gain(np.asarray(node.r) * k),
                        _leak(node.v_leak, k), inf, np.float32(0.0))
    if isinstance(node, nir.IF):
        return Discrete("IF", np.float32(1.0), _gain(np.asarray(node.r, np.float64) * dt), None,
                        _f32(node.v_threshold), _f32(node.v_reset))
    raise TypeError(type(node).__name__)


def _leak(v_leak, k) -> np.ndarray | None:
    c = np.asarray(v_leak, np.float64) * k
    return None if not np.any(c) else c.astype(np.float32)


NEURONS = (nir.LIF, nir.CubaLIF, nir.IF)      # spiking
STATEFUL = NEURONS + (nir.LI,)                 # every node with a state (LI: graded output)
