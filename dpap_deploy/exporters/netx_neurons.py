"""netx's own rules for a neuron population: which snnTorch neurons a netx ``CUBA`` layer
computes exactly, with which decay and threshold, and, for the others, why not and what to do.

The netx loader (``lava.lib.dl.netx.hdf5``) turns every ``conv`` / ``dense`` layer's ``neuron``
group of type ``CUBA`` into Lava's ``LIF``, one ``du``, ``dv`` and ``vth`` per layer:
``u[t] = u[t-1] (4096 - iDecay) / 4096 + a_in[t]``, ``v[t] = v[t-1] (4096 - vDecay) / 4096
+ u[t] + bias``, spike ``s[t] = v[t] > vThMant``, then ``v[t] = 0`` where it spiked. With
``iDecay = (1 - alpha) 4096`` and ``vDecay = (1 - beta) 4096`` a layer is
``u[t] = alpha u[t-1] + W x[t]``, ``v[t] = beta (1 - s[t-1]) v[t-1] + u[t] + b``,
``s[t] = v[t] > V_th``:

- ``snn.Leaky`` with ``reset_mechanism="zero"`` is the case ``alpha = 0`` (it multiplies the old
  membrane by ``1 - s[t-1]`` before adding the input; with ``reset_delay=False`` it zeroes the
  membrane right after the spike instead, and the next step's membrane is the same
  ``beta * 0 + I[t]``, so the spikes are too);
- ``snn.Synaptic`` with ``reset_mechanism="zero"`` and ``reset_delay=False`` is
  ``syn[t] = alpha syn[t-1] + I[t]``, ``mem[t] = beta mem[t-1] + syn[t]``, zeroed right after a
  spike: the same, when its synapse has no bias (snnTorch adds the bias to the current, where
  it accumulates; netx adds it to the membrane). With ``reset_delay=True`` (its default) it
  zeroes the membrane of the step *after* a spike, dropping that step's input: no netx form.

A per-neuron threshold ``V_i > 0`` is exact too: ``v_i > V_i`` iff ``v_i / V_i > 1``, and a
reset to zero stays zero, so the row ``i`` of the weights and bias is divided by ``V_i`` and the
layer's threshold is 1 (a convolution shares its weights over positions: its threshold may vary
per channel only). A per-neuron decay has no such form (one ``vDecay`` per layer).
"""
from __future__ import annotations

import numpy as np
import snntorch as snn
import torch
from torch import nn

DEPLOYABLE = "make_deployable"
ELSEWHERE = "--target nir or loihi-sim"
ZERO_RESET = ("netx's CUBA neuron resets its membrane to zero after a spike (v = 0), which "
              "snnTorch computes with reset_mechanism='zero'")


def _population(module: nn.Module, attr: str, shape: tuple[int, ...]) -> np.ndarray | None:
    """``module.attr`` broadcast to the population ``shape`` as snnTorch broadcasts it against
    the membrane ``[B, *shape]`` (trailing dimensions), float64; ``None`` if it does not."""
    t = torch.as_tensor(getattr(module, attr)).detach().cpu().double()
    try:
        return np.broadcast_to(t.numpy(), shape).copy()
    except ValueError:
        return None


def computes_leaky(module: nn.Module) -> bool:
    """Whether ``module`` computes exactly ``snn.Leaky``'s step: ``snn.Leaky`` itself, the
    replacements ``make_deployable`` puts in (``convert_neurons.LeakyForSynaptic``,
    ``LeakyForAlpha``, ``LeakyForLapicque``: ``snn.Leaky`` subclasses that only change the call
    signature and return ``snn.Leaky.forward``'s values), or an ``snn.Leaky`` subclass whose
    class sets ``leaky_dynamics = True``. Other subclasses (``snn.DeltaLeaky``) compute
    something else and are not taken."""
    cls = type(module)
    if cls is snn.Leaky:
        return True
    if not isinstance(module, snn.Leaky):
        return False
    from ..convert_neurons import LeakyForAlpha, LeakyForLapicque, LeakyForSynaptic
    return cls in (LeakyForSynaptic, LeakyForAlpha, LeakyForLapicque) or \
        getattr(cls, "leaky_dynamics", False) is True


def _reset_reason(label: str, module: nn.Module) -> str | None:
    mech = getattr(module, "reset_mechanism", "subtract")
    if mech == "subtract":
        return (f"{label} uses reset_mechanism='subtract' (snnTorch's default: U -= threshold "
                f"after a spike); {ZERO_RESET}: train with reset_mechanism='zero', or let "
                f"{DEPLOYABLE} convert it (it switches the reset and fine-tunes)")
    if mech == "none":
        return (f"{label} uses reset_mechanism='none' (a membrane that never resets); every "
                f"netx layer ends in a spiking CUBA neuron that resets to zero: use "
                f"reset_mechanism='zero', or export with {ELSEWHERE}")
    return None


def _common_reasons(label: str, module: nn.Module) -> list[str]:
    out = []
    g = torch.as_tensor(getattr(module, "graded_spikes_factor", 1.0))
    if g.numel() != 1 or float(g) != 1.0:
        out.append(f"{label} has graded_spikes_factor={g.tolist()}; netx layers send binary "
                   "spikes to the next layer: use graded_spikes_factor=1.0")
    if getattr(module, "inhibition", False):
        out.append(f"{label} uses inhibition=True (only the neuron with the largest membrane "
                   "may spike), which no netx neuron computes: train with inhibition=False")
    if getattr(module, "state_quant", False):
        out.append(f"{label} quantises its membrane (state_quant), which netx's CUBA neuron "
                   "does not: train with state_quant=False")
    return out


def neuron_reasons(module: nn.Module, name: str, shape: tuple[int, ...], conv: bool) -> list[str]:
    """Every reason the population ``name`` (a neuron module of population ``shape``, fed by a
    convolution if ``conv``) cannot be a netx CUBA neuron; ``[]`` if it can."""
    label = f"{type(module).__name__} '{name}'"
    if isinstance(module, snn.Alpha):
        return [f"snn.Alpha '{name}' has no netx equivalent (its membrane is the difference of "
                "two exponentially decaying synaptic currents; a netx CUBA neuron holds one "
                "current and one membrane): use snn.Leaky(reset_mechanism='zero'), or let "
                f"{DEPLOYABLE} convert it"]
    if isinstance(module, snn.Lapicque):
        how = ("snn.Leaky(beta=1 - dt/(R C), reset_mechanism='zero') with the input gain dt/C "
               f"in the weights, and retrain, or let {DEPLOYABLE} convert it")
        mech = getattr(module, "reset_mechanism", "subtract")
        if mech == "zero":
            return [f"snn.Lapicque '{name}' with reset_mechanism='zero' sets the membrane of "
                    "the step after a spike to 0, dropping that step's input (U = (1 - S[t-1]) "
                    "((1 - dt/(R C)) U + dt/C I)); netx's CUBA neuron keeps it (v = I[t] then): "
                    "use " + how]
        what = ("reset_mechanism='subtract' (snnTorch's default: U -= threshold after a spike)"
                if mech == "subtract" else "reset_mechanism='none' (it never resets)")
        return [f"snn.Lapicque '{name}' uses {what}; {ZERO_RESET} (Lapicque's own zero reset "
                "also drops the input of the step after a spike): use " + how]
    if isinstance(module, (snn.RLeaky, snn.RSynaptic)):
        out = [f"{label} feeds its spikes back through its recurrent weight V; netx's one "
               "recurrent layer ('dense_rec', dense only) run by the netx loader in Lava on "
               "samples in a row delivers the last step's spikes of a sample into the first "
               "step of the next (its reset clears the neuron, not the recurrent synapse), so "
               f"it is not written: export with {ELSEWHERE}"]
        return out + _reset_and_delay(label, module)
    if isinstance(module, snn.Synaptic):
        return _reset_and_delay(label, module) + _values_reasons(label, module, shape, conv,
                                                                 ("alpha", "beta"))
    if not computes_leaky(module):
        return [f"{label} is not a neuron netx computes: netx layers end in a CUBA neuron, "
                "which this exporter takes from snn.Leaky and snn.Synaptic with "
                f"reset_mechanism='zero'; export with {ELSEWHERE}"]
    out = [r for r in [_reset_reason(label, module)] if r] + _common_reasons(label, module)
    return out + _values_reasons(label, module, shape, conv, ("beta",))


def _values_reasons(label: str, module: nn.Module, shape: tuple[int, ...], conv: bool,
                    decays: tuple[str, ...]) -> list[str]:
    """Per-neuron decays (one per layer in netx) and thresholds (positive, per channel in a
    conv layer)."""
    out = []
    values = {a: _population(module, a, shape) for a in decays + ("threshold",)}
    bad = [a for a, v in values.items() if v is None]
    if bad:
        return [f"{label}: {', '.join(bad)} of shape "
                f"{[tuple(torch.as_tensor(getattr(module, a)).shape) for a in bad]} does not "
                f"broadcast to its population {shape}"]
    for a in decays:
        if np.ptp(np.clip(values[a], 0.0, 1.0)) > 0:
            reg = "current decay (iDecay)" if a == "alpha" else "membrane decay (vDecay)"
            out.append(f"{label} has a per-neuron {a} ({len(np.unique(values[a]))} values); a "
                       f"netx layer holds one {reg}: use one {a} per layer, or export with "
                       f"{ELSEWHERE}")
    thr = values["threshold"]
    if thr.min() <= 0:
        out.append(f"{label} has threshold {thr.min():g} <= 0; netx's neuron needs a positive "
                   "threshold (vThMant > 0)")
    elif conv and len(shape) > 1 and np.ptp(thr.reshape(shape[0], -1), axis=1).max() > 0:
        out.append(f"{label} has a threshold that varies within a channel; a netx conv layer "
                   "shares its weights over positions, so its threshold can vary per channel "
                   "only (folded into the weights): use one threshold per channel")
    return out


def _reset_and_delay(label: str, module: nn.Module) -> list[str]:
    out = [r for r in [_reset_reason(label, module)] if r]
    if getattr(module, "reset_mechanism", "") == "zero" and getattr(module, "reset_delay", False):
        out.append(f"{label} uses reset_delay=True (its default), which zeroes the membrane of "
                   "the step after a spike and drops that step's input; netx's CUBA neuron "
                   "zeroes it right after the spike: train with reset_delay=False")
    return out + _common_reasons(label, module)


def neuron_values(module: nn.Module, shape: tuple[int, ...]) -> tuple[float, float, np.ndarray]:
    """``(alpha, beta, threshold)`` of an accepted ``snn.Leaky`` (``alpha = 0``) or
    ``snn.Synaptic``: the layer's one current and membrane decay (clipped to ``[0, 1]`` as
    snnTorch clips them) and the threshold per output row (channel of a conv, neuron of a
    dense layer), float64."""
    def one(attr: str) -> float:
        return float(np.clip(_population(module, attr, shape), 0.0, 1.0).flat[0])
    alpha = one("alpha") if isinstance(module, snn.Synaptic) else 0.0
    thr = _population(module, "threshold", shape)
    return alpha, one("beta"), thr.reshape(shape[0], -1)[:, 0]
