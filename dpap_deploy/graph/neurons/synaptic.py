"""``snn.Synaptic`` (current-based LIF). snnTorch computes (``lif_common`` has every case):
``syn[t] = alpha syn[t-1] + x[t]``, ``X[t] = beta U[t-1] + syn[t]``;
``subtract`` (default, ``reset_delay=True``): ``U[t] = X[t] - thr S[t-1]``;
``zero`` with ``reset_delay=False``: ``U[t] = 0`` after a spike at ``t``, else ``X[t]``;
``zero`` with ``reset_delay=True`` (the default): ``U[t] = (1 - S[t-1]) X[t]`` (refused: a
refractory step); ``none``: ``U[t] = X[t]``; ``S[t] = U[t] > thr``.

NIR, reset to zero: ``CubaLIF`` with ``tau_syn = dt / (1 - alpha)``, ``w_in = tau_syn / dt``,
``tau_mem = dt / (1 - beta)``, ``r = tau_mem / dt`` (as snnTorch's own exporter writes it). With
``encoding="unit-r"``: ``r = 1``, ``w_in = 1``, and the NIR writer scales the weights feeding it
by ``(tau_syn / dt) (tau_mem / dt)``. Subtract / none: ``LI`` (syn) -> ``LI`` (mem) ->
``Threshold`` [-> ``Scale(-thr)`` -> mem on a cycle] (``li_forms``)."""
from __future__ import annotations

import nir
import numpy as np
import snntorch as snn

from . import register
from .lif_common import LIFFamily
from .li_forms import group


@register
class Synaptic(LIFFamily):
    zero_reset = "delay-false"
    synaptic = True

    types = (snn.Synaptic,)
    label = "snntorch.Synaptic (CUBA LIF)"
    per_neuron_attrs = ("alpha", "beta", "threshold")

    def to_nir(self, module, shape, dt, encoding="gain"):
        """``CubaLIF`` node (reset to zero) or the LI group; ``encoding`` as for
        ``Leaky.to_nir``."""
        self.check_nir(module)
        f = np.float32
        vth = self.values(module, "threshold", shape).astype(f)
        if self.form(module) != "zero":
            return group(self.form(module), shape, dt,
                         np.clip(self.values(module, "beta", shape), 0, 1).astype(f), vth,
                         alpha=np.clip(self.values(module, "alpha", shape), 0, 1).astype(f),
                         encoding=encoding)
        # snnTorch clamps both decays to [0, 1]; a decay of 1 is refused by check_nir
        # (decay_blockers), so every tau below is finite and maps back to the decay itself
        alpha = np.clip(self.values(module, "alpha", shape), 0.0, 1.0)
        beta = np.clip(self.values(module, "beta", shape), 0.0, 1.0)
        tau_syn, tau_mem = dt / (1.0 - alpha), dt / (1.0 - beta)
        unit = encoding == "unit-r"
        r, w_in = (np.ones(shape), np.ones(shape)) if unit else (tau_mem / dt, tau_syn / dt)
        return nir.CubaLIF(tau_syn=tau_syn.astype(f), tau_mem=tau_mem.astype(f),
                           r=r.astype(f), v_leak=np.zeros(shape, f),
                           v_threshold=vth, v_reset=np.zeros(shape, f), w_in=w_in.astype(f))
