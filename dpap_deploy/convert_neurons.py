"""Nearest deployable neurons, for ``make_deployable`` (``convert.py``).

For a neuron that a target cannot hold exactly, :func:`candidates` lists replacements from the
nearest to the farthest; ``make_deployable`` takes the first one the targets accept. Every
parameter is carried over (``beta``, ``alpha``, ``threshold``, their learnable flags, the
surrogate gradient, ``init_hidden`` / ``output``, a recurrent weight); only what the target
cannot hold changes. snnTorch's equations (snnTorch 1.0.0 source, ``U`` membrane, ``S``
spikes, ``I`` input current, ``thr`` threshold):

- ``Leaky`` ``reset_mechanism="subtract"``: ``U[t] = beta U[t-1] + I[t] - thr S[t-1]``
  -> ``"zero"``: ``U[t] = beta (1 - S[t-1]) U[t-1] + I[t]`` (Leaky's zero reset is NIR's).
- ``Synaptic`` / ``RLeaky`` / ``RSynaptic``: first the same reset with ``reset_delay=False``,
  then ``"zero"`` (``reset_delay`` kept), then ``"zero"`` with ``reset_delay=False``
  (``I_syn[t] = alpha I_syn[t-1] + I[t]``, ``U[t] = beta U[t-1] + I_syn[t]``, zeroed right
  after a spike, NIR's ``CubaLIF``).
- ``Alpha`` (``I_e[t] = alpha I_e[t-1] + I[t]``, ``I_i[t] = beta I_i[t-1] - I[t]``,
  ``U[t] = tau (I_e[t] + I_i[t])``, ``tau = ln(alpha) / (ln(beta) - ln(alpha)) + 1``): its
  membrane's response to a unit input ``k`` steps earlier is ``tau (alpha^k - beta^k)``.
  ``Synaptic`` with the same ``alpha`` and ``beta`` responds with
  ``(alpha^(k+1) - beta^(k+1)) / (alpha - beta)``: the same kernel one step earlier, scaled by
  ``1 / (tau (alpha - beta))``. So the replacement is :class:`SynapticForAlpha` with that
  ``alpha`` and ``beta``, ``threshold = thr / (tau (alpha - beta))`` (the same crossings
  without resets, one step earlier), reset to zero with ``reset_delay=False``. It is called
  like ``snn.Alpha`` (``spk, syn_exc, syn_inh, mem = lif(cur, syn_exc, syn_inh, mem)``,
  ``init_alpha()``), so the user's ``forward`` runs unchanged; ``syn_inh`` is returned as zeros.
- ``Lapicque`` (``U[t] = g I[t] + (1 - dt/(RC)) U[t-1]`` with ``g = dt / C``): a ``Leaky`` with
  ``beta = 1 - dt/(RC)`` and ``threshold = thr / g`` holds ``U / g`` (exact with subtract
  reset); then the same with zero reset.
- Last, for a target whose neurons have no synaptic current (netx here), ``Synaptic`` ->
  ``Leaky`` with the same ``beta`` and ``threshold = thr (1 - alpha)``: a constant input ``I``
  drives ``I_syn`` to ``I / (1 - alpha)``, so both membranes settle at the same height relative
  to the threshold; ``Alpha`` -> the same from its ``Synaptic`` form,
  ``threshold = thr (1 - alpha) / (tau (alpha - beta))``.

A replacement of another class is called as the neuron it replaces (``LeakyForSynaptic`` takes
``lif(cur, syn, mem)`` and has ``init_synaptic()``, ...), so the user's ``forward`` runs
unchanged; the state it does not have is returned as zeros. A neuron with ``init_hidden=True``
and ``output=False`` is called with the input alone: it becomes a plain ``snn.Leaky``.
"""
from __future__ import annotations

import inspect
from typing import Callable

import snntorch as snn
import torch
from torch import nn

_LEARNABLE = ("beta", "alpha", "threshold", "graded_spikes_factor")
_NOT_LOADED = ("reset_mechanism_val",)       # set by the constructor, not by the old neuron


def _tensor(v) -> torch.Tensor:
    return v.detach().clone() if isinstance(v, torch.Tensor) else torch.as_tensor(float(v))


def rebuild(old: nn.Module, cls: type, **changes) -> nn.Module:
    """A new ``cls`` neuron with ``old``'s constructor options and parameters, less
    ``changes``; parameters and buffers of the same name are copied (a recurrent weight too)."""
    kw = {}
    for p in list(inspect.signature(cls.__init__).parameters)[1:]:
        if p in changes:
            kw[p] = changes[p]
        elif p.startswith("learn_") and p[6:] in _LEARNABLE:
            kw[p] = isinstance(getattr(old, p[6:], None), nn.Parameter)
        elif p in _LEARNABLE and hasattr(old, p):
            kw[p] = _tensor(getattr(old, p))
        elif p in ("reset_mechanism",) and hasattr(old, p):
            kw[p] = old.reset_mechanism
        elif hasattr(old, p) and not callable(getattr(type(old), p, None)) or p == "spike_grad":
            kw[p] = getattr(old, p)
    new = cls(**kw)
    state = {k: v for k, v in old.state_dict().items()
             if k.rsplit(".", 1)[-1] not in _NOT_LOADED and k not in changes}
    own = new.state_dict()
    new.load_state_dict({k: v for k, v in state.items()
                         if k in own and own[k].shape == v.shape}, strict=False)
    new.train(old.training)
    return new


def describe(m: nn.Module) -> str:
    """``snn.Leaky(reset_mechanism='subtract', reset_delay=True)``: the options that matter."""
    parts = [f"reset_mechanism={m.reset_mechanism!r}"] if hasattr(m, "reset_mechanism") else []
    if hasattr(m, "reset_delay"):
        parts.append(f"reset_delay={bool(m.reset_delay)}")
    name = next(c.__name__ for c in type(m).__mro__ if c.__module__.startswith("snntorch"))
    return f"snn.{name}({', '.join(parts)})"


class SynapticForAlpha(snn.Synaptic):
    """``snn.Synaptic`` called as ``snn.Alpha`` (module docstring): ``forward(input_,
    syn_exc=None, syn_inh=None, mem=None)`` returns ``(spk, syn, zeros, mem)`` where Alpha
    returns ``(spk, syn_exc, syn_inh, mem)`` (only ``spk`` with ``init_hidden=True`` unless
    ``output=True``); ``init_alpha()`` returns ``(syn, zeros, mem)``."""

    def init_alpha(self):
        syn, mem = self.init_synaptic()
        return syn, torch.zeros_like(syn), mem

    def forward(self, input_, syn_exc=None, syn_inh=None, mem=None):
        if self.init_hidden:
            out = super().forward(input_)
            if not self.output:
                return out
            spk, syn, mem = out
        else:
            spk, syn, mem = super().forward(input_, syn_exc, mem)
        return spk, syn, torch.zeros_like(syn), mem


def _leaky_step(neuron: snn.Leaky, input_, mem):
    """One ``snn.Leaky`` step of a neuron called as another type: ``(spk, mem)``, or the
    spikes alone from a hidden-state neuron without ``output=True`` (returned as they are)."""
    if neuron.init_hidden:
        return snn.Leaky.forward(neuron, input_)
    return snn.Leaky.forward(neuron, input_, mem)


class LeakyForSynaptic(snn.Leaky):
    """``snn.Leaky`` called as ``snn.Synaptic``: ``forward(input_, syn=None, mem=None)`` returns
    ``(spk, zeros, mem)`` (``spk`` alone with ``init_hidden=True`` unless ``output=True``);
    ``init_synaptic()`` returns ``(zeros, mem)``."""

    def init_synaptic(self):
        mem = self.init_leaky()
        return torch.zeros_like(mem), mem

    def forward(self, input_, syn=None, mem=None):
        out = _leaky_step(self, input_, mem)
        if not isinstance(out, tuple):
            return out
        spk, mem = out
        return spk, torch.zeros_like(mem), mem


class LeakyForAlpha(snn.Leaky):
    """``snn.Leaky`` called as ``snn.Alpha``: returns ``(spk, zeros, zeros, mem)``;
    ``init_alpha()`` returns ``(zeros, zeros, mem)``."""

    def init_alpha(self):
        mem = self.init_leaky()
        return torch.zeros_like(mem), torch.zeros_like(mem), mem

    def forward(self, input_, syn_exc=None, syn_inh=None, mem=None):
        out = _leaky_step(self, input_, mem)
        if not isinstance(out, tuple):
            return out
        spk, mem = out
        return spk, torch.zeros_like(mem), torch.zeros_like(mem), mem


class LeakyForLapicque(snn.Leaky):
    """``snn.Leaky`` with ``init_lapicque()`` (Lapicque and Leaky take the same call)."""

    def init_lapicque(self):
        return self.init_leaky()


def _alpha_gain(m: nn.Module) -> torch.Tensor:
    """``tau (alpha - beta)``, ``tau = ln(alpha) / (ln(beta) - ln(alpha)) + 1`` (snnTorch's)."""
    a = _tensor(m.alpha).clamp(0, 1).double()
    b = _tensor(m.beta).clamp(0, 1).double()
    tau = torch.log(a) / (torch.log(b) - torch.log(a)) + 1
    return (tau * (a - b)).float()


def synaptic_for_alpha(m: nn.Module) -> nn.Module:
    new = rebuild(m, SynapticForAlpha, reset_mechanism="zero", reset_delay=False,
                  threshold=_tensor(m.threshold) / _alpha_gain(m))
    if isinstance(m.threshold, nn.Parameter):
        new.threshold = nn.Parameter(new.threshold.detach().clone())
    return new


def _lapicque_gain_decay(m: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """``(dt / C, 1 - dt / (R C))`` as snnTorch's Lapicque computes them."""
    R, C, dt = (_tensor(getattr(m, k)).double() for k in ("R", "C", "time_step"))
    return (R * (1 / (R * C)) * dt).float(), (1 - dt / (R * C)).float()


def _leaky_class(m: nn.Module, shim: type) -> type:
    """``snn.Leaky`` where the neuron is called with its input alone, else ``shim``."""
    return snn.Leaky if getattr(m, "init_hidden", False) and not getattr(m, "output", False) \
        else shim


def leaky_for_lapicque(m: nn.Module, mechanism: str) -> nn.Module:
    gain, beta = _lapicque_gain_decay(m)
    return rebuild(m, _leaky_class(m, LeakyForLapicque), beta=beta,
                   threshold=_tensor(m.threshold) / gain, reset_mechanism=mechanism)


def leaky_for_synaptic(m: nn.Module) -> nn.Module:
    """``Leaky(beta, threshold = thr (1 - alpha))``, reset to zero (module docstring)."""
    one_minus = 1 - _tensor(m.alpha).clamp(0, 1)
    return rebuild(m, _leaky_class(m, LeakyForSynaptic),
                   threshold=_tensor(m.threshold) * one_minus, reset_mechanism="zero",
                   reset_delay=True)


def leaky_for_alpha(m: nn.Module) -> nn.Module:
    """``Leaky(beta, threshold = thr (1 - alpha) / (tau (alpha - beta)))``, reset to zero."""
    one_minus = 1 - _tensor(m.alpha).clamp(0, 1)
    return rebuild(m, _leaky_class(m, LeakyForAlpha),
                   threshold=_tensor(m.threshold) * one_minus / _alpha_gain(m),
                   reset_mechanism="zero", reset_delay=True)


Candidate = tuple[str, Callable[[], nn.Module]]
LEAKY_FOR_SYN = ("snn.Leaky(reset_mechanism='zero') without a synaptic current, beta kept, "
                 "threshold * (1 - alpha)")


def candidates(m: nn.Module) -> list[Candidate]:
    """Replacements of neuron ``m``, nearest first: ``(what, build)``; empty for a neuron this
    module knows no replacement of."""
    if isinstance(m, snn.Alpha):
        return [("snn.Synaptic(reset_mechanism='zero', reset_delay=False), alpha and beta kept, "
                 "threshold / (tau (alpha - beta)) (the same membrane kernel, one step earlier)",
                 lambda: synaptic_for_alpha(m)),
                (LEAKY_FOR_SYN + " / (tau (alpha - beta))", lambda: leaky_for_alpha(m))]
    if isinstance(m, snn.Lapicque):
        mechs = dict.fromkeys([m.reset_mechanism, "zero"])
        return [(f"snn.Leaky(reset_mechanism={mech!r}), beta = 1 - dt/(RC), threshold / (dt/C) "
                 "(the same membrane scaled by C/dt)",
                 lambda mech=mech: leaky_for_lapicque(m, mech)) for mech in mechs]
    mech = getattr(m, "reset_mechanism", None)
    delay = bool(getattr(m, "reset_delay", False))
    if isinstance(m, snn.Leaky) and not isinstance(m, snn.Lapicque):
        options = [("zero", delay)] if mech != "zero" else []
    elif isinstance(m, (snn.Synaptic, snn.RLeaky, snn.RSynaptic)):
        options = list(dict.fromkeys([(mech, False), ("zero", delay), ("zero", False)]))
        options = [o for o in options if o != (mech, delay)]
    else:
        return []
    cls = type(m)
    out = [(f"{describe(m).split('(')[0]}(reset_mechanism={r!r}, reset_delay={d})",
            lambda r=r, d=d: rebuild(m, cls, reset_mechanism=r, reset_delay=d))
           for r, d in options]
    if type(m) is snn.Synaptic:
        out.append((LEAKY_FOR_SYN, lambda: leaky_for_synaptic(m)))
    return out
