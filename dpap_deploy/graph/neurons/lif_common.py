"""What snnTorch's LIF-family neurons share: state clearing, per-neuron tensors, the membrane
readers, and the checks every export of them needs (``blockers``).

**snnTorch 1.0.0's discrete equations** (read from its source, checked against it by
``tests/test_snntorch_semantics.py``; step ``t = 1..T``, state 0 before step 1, ``thr`` the
threshold, ``R[t] = (U[t-1] > thr)`` the reset flag computed from the *stored* membrane of the
previous step, ``S[t] = (U'[t] > thr)`` where ``U'[t]`` is the membrane before a
``reset_delay=False`` correction, ``X[t]`` the neuron's update without reset (per adapter)):

- ``subtract``, ``reset_delay=True``: ``U[t] = X[t] - thr R[t]``; ``R[t] = S[t-1]``.
- ``subtract``, ``reset_delay=False`` (Leaky / Synaptic / RLeaky):
  ``U'[t] = X[t] - thr R[t]``, ``U[t] = U'[t] - thr (S[t] - R[t])``: a step with ``R = 1``
  and no spike *adds* ``thr`` back (snnTorch issue #341's quirk), and ``R[t]`` is 1 whenever
  the stored membrane stayed above ``thr`` (input above ``2 thr``).
- ``zero``, Leaky: ``U[t] = beta ((1 - R[t]) U[t-1]) + I[t]`` (the old membrane is cleared:
  NIR's reset to zero); other neurons: ``U[t] = X[t] - R[t] X[t]`` (the step after a spike is
  zero, its input is lost: a refractory step NIR has no node for).
- ``zero``, ``reset_delay=False`` (Leaky / Synaptic / RLeaky): then
  ``U[t] = U'[t] - (S[t] - R[t]) U'[t]``; with ``thr >= 0`` ``R`` is always 0, so
  ``U[t] = 0`` after a spike and ``X[t]`` otherwise: NIR's reset to zero.
- ``none``: ``U[t] = X[t]`` (``reset_delay`` has no effect).
- ``RSynaptic`` ignores ``reset_delay=False``: its correction assigns the *arguments*
  ``mem`` / ``spk`` (locals), not the state (issue #364's family of reset bugs), so it computes
  the ``reset_delay=True`` equations; with ``init_hidden=True`` the call fails
  (``None / float``).
- ``Lapicque`` and ``Alpha`` have no ``reset_delay``: always the ``True`` equations.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ...errors import UnsupportedModelError
from . import NeuronAdapter, per_neuron_tensor

STATE_ATTRS = ("mem", "syn", "spk", "reset", "syn_exc", "syn_inh")
RESET_NIR = "reset_mechanism='zero'"


class LIFFamily(NeuronAdapter):
    kind = "snn"
    per_neuron_attrs: tuple[str, ...] = ("beta", "threshold")
    synaptic = False                  # has a synaptic current (Synaptic, RSynaptic)
    # How snnTorch's reset to zero maps to NIR (module docstring): "leaky" = NIR's reset for
    # both reset_delay values (Leaky); "delay-false" = only with reset_delay=False (Synaptic,
    # RLeaky); "never" (RSynaptic, Lapicque: the refractory step, whatever reset_delay says).
    zero_reset = "leaky"
    has_reset_delay = True

    def per_neuron(self, module: nn.Module) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        for attr in self.per_neuron_attrs:
            out.update(per_neuron_tensor(module, attr))
        return out

    def membrane(self, output):
        """The membrane from the forward output (its last element: snnTorch returns
        ``(spk, [syn, ...], mem)``); ``None`` when the call returned spikes only
        (``init_hidden=True`` without ``output=True``: the membrane is ``module.mem``)."""
        return output[-1] if isinstance(output, tuple) and len(output) > 1 else None

    def clear_state(self, module: nn.Module) -> None:
        """Detach and zero every state tensor (a deep copy of a tensor that still belongs to the
        last batch's autograd graph fails; the next input window starts from zero anyway)."""
        for attr in STATE_ATTRS:
            t = getattr(module, attr, None)
            if isinstance(t, torch.Tensor):
                setattr(module, attr, torch.zeros_like(t.detach()))

    @staticmethod
    def values(module: nn.Module, attr: str, shape: tuple[int, ...]) -> np.ndarray:
        """``module.attr`` broadcast to the population ``shape`` (no batch), float64."""
        t = getattr(module, attr)
        t = t.detach().cpu().double() if isinstance(t, torch.Tensor) else torch.tensor(float(t))
        try:
            return np.broadcast_to(t.numpy().reshape(_align(t.shape, shape)), shape).copy()
        except ValueError:
            raise UnsupportedModelError(
                f"{type(module).__name__}.{attr} of shape {tuple(t.shape)} does not broadcast to "
                f"its population of shape {shape}") from None

    # ------------------------------------------------------------------ export checks
    def form(self, module: nn.Module) -> str:
        """The NIR form of the module's reset: ``"zero"`` (a LIF / IF / CubaLIF node),
        ``"subtract"`` (LI + Threshold + Scale(-thr) on a cycle), ``"none"`` (LI +
        Threshold), or ``""`` when no exact form exists (``reset_blocker`` says why)."""
        mech = getattr(module, "reset_mechanism", "zero")
        if _bound_mechanism(module) not in (None, mech):
            return ""
        delay = bool(getattr(module, "reset_delay", True)) or not self.has_reset_delay
        if mech == "none":
            return "none"
        if mech == "subtract":
            return "subtract" if delay or self.zero_reset == "never" else ""
        if self.zero_reset == "leaky" or (self.zero_reset == "delay-false" and not delay):
            return "zero"
        return ""

    def reset_blocker(self, module: nn.Module, where: str) -> str | None:
        if self.form(module):
            return None
        cls = f"snn.{type(module).__name__}{where}"
        bound = _bound_mechanism(module)
        if bound not in (None, getattr(module, "reset_mechanism", "zero")):
            return (f"{cls} has reset_mechanism='{module.reset_mechanism}' set after it was "
                    f"built: snnTorch keeps computing the constructor's '{bound}' update (its "
                    "state_function), so the two disagree; pass reset_mechanism to the "
                    "constructor to export")
        if getattr(module, "reset_mechanism", "zero") == "subtract":
            return (f"{cls} uses reset_mechanism='subtract' with reset_delay=False: snnTorch "
                    "then adds the threshold back on a step that does not fire after one whose "
                    "stored membrane stayed above it, which no NIR node states; use "
                    "reset_delay=True (the default) to export")
        if self.zero_reset == "never":
            return (f"{cls} uses reset_mechanism='zero': snnTorch zeroes the membrane on the "
                    "step after a spike and drops that step's input, which no NIR node states; "
                    "use reset_mechanism='subtract' (the default) to export")
        return (f"{cls} uses reset_mechanism='zero' with reset_delay=True: snnTorch zeroes the "
                "membrane on the step after a spike and drops that step's input, which no NIR "
                "node states; use reset_delay=False or reset_mechanism='subtract' to export")

    def blockers(self, module: nn.Module, name: str = "") -> list[str]:
        """Every reason (one line each, all at once) why the neuron cannot be exported
        exactly; empty when it can."""
        where = f" '{name}'" if name else ""
        cls = f"snn.{type(module).__name__}{where}"
        out = [b for b in (self.reset_blocker(module, where),) if b]
        g = torch.as_tensor(getattr(module, "graded_spikes_factor", 1.0)).detach()
        if g.numel() != 1 or float(g.float().reshape(-1)[0]) != 1.0:
            out.append(f"{cls} has graded_spikes_factor={_short(g)}; exported neurons emit "
                       "binary spikes: use graded_spikes_factor=1.0")
        if getattr(module, "inhibition", False):
            out.append(f"{cls} uses inhibition=True, which no NIR node states: use "
                       "inhibition=False")
        if getattr(module, "state_quant", False):
            out.append(f"{cls} quantizes its state (state_quant), which no NIR node states: "
                       "use state_quant=False")
        thr = torch.as_tensor(getattr(module, "threshold", 1.0)).detach()
        if self.form(module) == "zero" and bool((thr < 0).any()):
            out.append(f"{cls} has a negative threshold ({_short(thr)}) with reset to zero: "
                       "snnTorch's reset flag is then set at rest; use a threshold >= 0")
        out += self.decay_blockers(module, cls)
        return out

    def decay_blockers(self, module: nn.Module, cls: str) -> list[str]:
        """Decays (snnTorch clamps them to ``[0, 1]``) that NIR cannot hold:

        - ``beta = 1`` (or ``alpha = 1``) without reset to zero: NIR's LI needs
          ``tau = dt / (1 - beta)`` finite (zero reset with ``beta = 1`` is NIR's ``IF``);
        - reset to zero, synaptic (``CubaLIF``): ``alpha = 1`` or ``beta = 1`` (both time
          constants must be finite; NIR has no current-based integrate-and-fire);
        - reset to zero, Leaky / RLeaky: ``beta = 1`` for some neurons and ``< 1`` for others
          (``IF`` and ``LIF`` in one population, which no single NIR node holds)."""
        form = self.form(module)
        mech = getattr(module, "reset_mechanism", "zero")
        names = ("alpha", "beta") if self.synaptic else ("beta",)
        learned = ("a learned decay drifts to 1 unless kept below it: clamp it after each "
                   "optimizer step, e.g. lif.{a}.data.clamp_(max=0.999)")
        for attr in names:
            v = torch.as_tensor(getattr(module, attr)).detach().clamp(0, 1)
            ones = v == 1
            if not bool(ones.any()):
                continue
            if form in ("subtract", "none"):
                return [f"{cls} has {attr}=1 with reset_mechanism='{mech}': NIR's leaky "
                        "integrator (LI) needs a decay below 1 and NIR has no integrator "
                        f"without reset; use {attr} < 1 or reset_mechanism='zero' to export "
                        f"({learned.format(a=attr)})"]
            if form == "zero" and self.synaptic:
                return [f"{cls} has {attr}=1 with reset_mechanism='zero': NIR's CubaLIF needs "
                        f"decays below 1 (tau = dt / (1 - {attr}) finite) and NIR has no "
                        f"current-based integrate-and-fire; use {attr} < 1 to export "
                        f"({learned.format(a=attr)})"]
            if form == "zero" and not bool(ones.all()):
                return [f"{cls} has beta=1 (IF) for {int(ones.sum())} of {ones.numel()} "
                        "neurons and beta < 1 (LIF) for the others, which no single NIR node "
                        "holds; keep every beta below 1 or set beta=1 for all to export "
                        f"({learned.format(a=attr)})"]
        return []

    def check_nir(self, module: nn.Module, name: str = "") -> None:
        """Refuse (one line, every blocker) a neuron with no exact NIR form."""
        b = self.blockers(module, name)
        if b:
            raise UnsupportedModelError("; ".join(b))

    def check_exportable(self, module: nn.Module, name: str = "") -> None:
        """Refuse a neuron that does not reset to zero or has any other blocker (the targets
        whose neurons reset to zero only: netx)."""
        b = self.blockers(module, name)
        mech = getattr(module, "reset_mechanism", "zero")
        if not b and self.form(module) != "zero":
            b = [f"snn.{type(module).__name__}{f' {name!r}' if name else ''} uses "
                 f"reset_mechanism='{mech}'; this target's neurons reset to zero: train with "
                 "reset_mechanism='zero' to export"]
        if b:
            raise UnsupportedModelError("; ".join(b))

_STATE_FUNCTIONS = {"_base_sub": "subtract", "_base_zero": "zero", "_base_int": "none"}


def _bound_mechanism(module: nn.Module) -> str | None:
    """The reset snnTorch really computes: the ``state_function`` its constructor bound
    (assigning ``reset_mechanism`` later changes only the flag, not this update)."""
    fn = getattr(module, "state_function", None)
    return _STATE_FUNCTIONS.get(getattr(fn, "__name__", ""))


def _short(t: torch.Tensor) -> str:
    t = t.reshape(-1)
    return f"{float(t[0]):g}" if t.numel() == 1 else f"[{float(t.min()):g} .. {float(t.max()):g}]"


def _align(tshape: torch.Size, shape: tuple[int, ...]) -> tuple[int, ...]:
    """A per-channel tensor ``[C]`` of a ``[C, H, W]`` population is ``[C, 1, 1]``."""
    if len(tshape) == 1 and len(shape) > 1 and tshape[0] == shape[0] and tshape[0] != shape[-1]:
        return (tshape[0],) + (1,) * (len(shape) - 1)
    return tuple(tshape)
