"""``snn.Synaptic`` (current-based LIF): ``I[t] = alpha I[t-1] + x[t]``,
``U[t] = beta U[t-1] + I[t]``. NIR: ``CubaLIF`` with ``tau_syn = dt / (1 - alpha)``,
``w_in = tau_syn / dt``, ``tau_mem = dt / (1 - beta)``, ``r = tau_mem / dt`` (as snnTorch's
own exporter writes it). With ``encoding="unit-r"``: ``r = 1``, ``w_in = 1``, and the NIR writer
scales the weights feeding it by ``(tau_syn / dt) (tau_mem / dt)``."""
from __future__ import annotations

import nir
import numpy as np
import snntorch as snn

from . import register
from .lif_common import LIFFamily


@register
class Synaptic(LIFFamily):
    delayed_reset_is_nir = False

    types = (snn.Synaptic,)
    label = "snntorch.Synaptic (CUBA LIF)"
    per_neuron_attrs = ("alpha", "beta", "threshold")

    def to_nir(self, module, shape, dt, encoding="gain"):
        """``CubaLIF`` node; ``encoding`` as for ``Leaky.to_nir``."""
        self.check_exportable(module)
        alpha = np.clip(self.values(module, "alpha", shape), 0.0, 1.0 - 1e-7)
        beta = np.clip(self.values(module, "beta", shape), 0.0, 1.0 - 1e-7)
        tau_syn, tau_mem = dt / (1.0 - alpha), dt / (1.0 - beta)
        f = np.float32
        unit = encoding == "unit-r"
        r, w_in = (np.ones(shape), np.ones(shape)) if unit else (tau_mem / dt, tau_syn / dt)
        return nir.CubaLIF(tau_syn=tau_syn.astype(f), tau_mem=tau_mem.astype(f),
                           r=r.astype(f), v_leak=np.zeros(shape, f),
                           v_threshold=self.values(module, "threshold", shape).astype(f),
                           v_reset=np.zeros(shape, f), w_in=w_in.astype(f))
