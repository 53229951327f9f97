"""The NIR forms of snnTorch neurons that NIR's LIF / CubaLIF cannot state: reset by
subtraction and no reset (``/docs/nir-compat.md``, "Leaky integrators").

A population ``P`` becomes a group of nodes (``role: node``):

- ``"syn"``   (Synaptic only): ``nir.LI(tau_syn, r_syn, 0)``: ``syn[t] = alpha syn[t-1] + x[t]``;
- ``"gain"``, ``"gain2"``, ... (Lapicque only): a chain of ``nir.Scale`` nodes before ``mem``,
  the factors of the neuron's own input gain in the order snnTorch multiplies them (each a
  float32 rounding of its own; an LI's ``r`` would scale the reset input too);
- ``"mem"``   : ``nir.LI(tau, r = tau / dt, 0)``: ``U[t] = beta U[t-1] + (its inputs summed)``;
- ``"spike"`` : ``nir.Threshold(thr)``: ``S[t] = U[t] > thr``;
- ``"reset"`` (subtract only): ``nir.Scale(-thr)`` from ``spike`` back into ``mem`` on a cycle,
  so it delivers ``-thr S[t-1]``: ``U[t] = beta U[t-1] + I[t] - thr S[t-1]``, snnTorch's
  ``reset_delay=True`` subtraction (``R[t] = S[t-1]``).

Each LI is checked to read back (``graph.nir_neurons.discretise``, the readers' float32 constants)
to the very decay the neuron multiplies by (and an input gain of exactly 1): ``tau`` is float32
where that reads back to the decay, else float64 (below 0.5 several float32 decays share one
float32 ``tau``); a decay that survives neither is refused in one line.
"""
from __future__ import annotations

import nir
import numpy as np

from ...errors import UnsupportedModelError

F32 = np.float32


def li(decay: np.ndarray, dt: float, what: str = "beta", unit: bool = False) -> nir.LI:
    """``nir.LI`` whose discrete step is ``v[t] = decay v[t-1] + x[t]`` exactly (``r = tau/dt``:
    gain 1, which the readers take as exactly 1); ``unit``: ``r = 1`` (gain ``1 - decay``, the
    ``"unit-r"`` encoding: the writer scales the inputs by its inverse)."""
    from ..nir_neurons import discretise
    decay = np.asarray(decay, np.float64)
    for dtype in (F32, np.float64):          # float64 where float32 tau is ambiguous (< 0.5)
        tau = (dt / (1.0 - decay)).astype(dtype)
        r = np.ones(decay.shape, dtype) if unit else (tau.astype(np.float64) / dt).astype(dtype)
        node = nir.LI(tau=tau, r=r, v_leak=np.zeros(decay.shape, F32))
        d = discretise(node, dt)
        back = np.broadcast_to(d.beta, decay.shape)
        if np.array_equal(back, decay.astype(F32)):
            break
    if not np.array_equal(back, decay.astype(F32)) or (d.gain is not None and not unit):
        bad = decay.astype(F32)[back != decay.astype(F32)].reshape(-1)
        raise UnsupportedModelError(
            f"{what}={float(bad[0]) if bad.size else float(decay.reshape(-1)[0]):.9g} does not "
            f"survive NIR's tau = dt/(1-{what}) (it reads back as another float32); use "
            f"reset_mechanism='zero' (NIR's LIF) or another {what}")
    return node


def inverse_gain(node: nir.LI, dt: float) -> np.ndarray:
    """``1 / g`` of an LI as the readers compute ``g`` (float64; 1 for gain 1)."""
    from ..nir_neurons import discretise
    g = discretise(node, dt).gain
    return np.ones(1) if g is None else 1.0 / np.asarray(g, np.float64)


def group(form: str, shape: tuple[int, ...], dt: float, beta: np.ndarray, thr: np.ndarray,
          alpha: np.ndarray | None = None, gain: list[np.ndarray] | None = None,
          encoding: str = "gain") -> dict:
    """The group of nodes (module docstring) of a population of ``shape``. ``encoding=
    "unit-r"``: the LIs have ``r = 1`` and the reset is ``Scale(-thr / g)`` (``g = 1 - beta``
    as the readers compute it), so ``g (-thr / g) S = -thr S`` to float32 rounding; the writer
    scales the feeding weights by ``1 / (g g_syn)`` (``nir_graph``'s unit-r)."""
    unit = encoding == "unit-r"
    nodes: dict = {}
    for i, g in enumerate(gain or []):
        nodes["gain" + ("" if i == 0 else str(i + 1))] = \
            nir.Scale(scale=np.broadcast_to(np.asarray(g, F32), shape).copy())
    if alpha is not None:
        nodes["syn"] = li(alpha, dt, what="alpha", unit=unit)
    nodes["mem"] = li(beta, dt, unit=unit)
    thr = np.broadcast_to(np.asarray(thr, F32), shape).copy()
    nodes["spike"] = nir.Threshold(threshold=thr)
    if form == "subtract":
        s = np.broadcast_to(inverse_gain(nodes["mem"], dt), shape) if unit else 1.0
        nodes["reset"] = nir.Scale(scale=(-thr.astype(np.float64) * s).astype(F32))
    return nodes
