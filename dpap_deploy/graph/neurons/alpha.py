"""``snn.Alpha``: a spiking neuron with two synaptic currents. snnTorch 1.0.0 computes
``exc[t] = alpha exc[t-1] + I[t]``, ``inh[t] = beta inh[t-1] - I[t]``,
``U[t] = tau_a (exc[t] + inh[t])`` with ``tau_a = log(alpha) / (log(beta) - log(alpha)) + 1``,
``S[t] = U[t] > thr``, and on the step after a spike (``R[t] = U[t-1] > thr``): ``zero``
(default): all three states are zero; ``subtract``: ``exc -= thr``, ``inh`` is zero,
``U += inh[t-1]``. DPAP prunes from its spikes (``output[0]``); its state (``syn_exc``,
``syn_inh``, ``mem``) is cleared like the other neurons'. No target holds it: NIR, Lava and netx
have no alpha neuron (``U`` is not a decayed sum of its inputs), so every export refuses it in
one line."""
from __future__ import annotations

import snntorch as snn

from ...errors import UnsupportedModelError
from . import register
from .lif_common import LIFFamily

REFUSAL = ("snn.Alpha{where} has no NIR/Lava/netx equivalent (its membrane is the difference "
           "of two synaptic currents, which no NIR node states); use snn.Synaptic, or convert "
           "the model with make_deployable")


@register
class Alpha(LIFFamily):
    types = (snn.Alpha,)
    label = "snntorch.Alpha (no export target)"
    per_neuron_attrs = ("alpha", "beta", "threshold")
    has_reset_delay = False

    def blockers(self, module, name=""):
        return [REFUSAL.format(where=f" '{name}'" if name else "")]

    def to_nir(self, module, shape, dt, encoding="gain"):
        raise UnsupportedModelError(self.blockers(module)[0])
