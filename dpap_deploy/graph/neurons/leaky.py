"""``snn.Leaky`` (and IF: ``beta = 1``). snnTorch computes (``lif_common`` has every reset x
reset_delay case): ``X[t] = beta U[t-1] + I[t]``;
``subtract`` (default, ``reset_delay=True``): ``U[t] = X[t] - thr S[t-1]``;
``zero``: ``U[t] = beta ((1 - S[t-1]) U[t-1]) + I[t]``; ``none``: ``U[t] = X[t]``;
``S[t] = U[t] > thr``.

NIR, reset to zero: ``LIF`` with ``tau = dt / (1 - beta)``, ``r = tau / dt``, ``v_leak = 0``,
``v_reset = 0`` (then ``v[t] = beta v[t-1] + I[t]``); ``IF`` with ``r = 1 / dt`` when
``beta = 1``. With ``encoding="unit-r"`` the node has ``r = 1`` instead (then
``v[t] = beta v[t-1] + (1 - beta) I[t]``, ``dt I[t]`` for IF) and the NIR writer scales the
weights feeding it by ``tau / dt`` (``1 / dt``). Reset by subtraction and no reset: the LI group
of ``li_forms`` (``LI`` + ``Threshold`` [+ ``Scale(-thr)`` on a cycle]); under ``"unit-r"``
its LI has ``r = 1`` and the reset ``Scale(-thr / (1 - beta))``."""
from __future__ import annotations

import nir
import numpy as np
import snntorch as snn

from . import register
from .lif_common import LIFFamily
from .li_forms import group


@register
class Leaky(LIFFamily):
    types = (snn.Leaky,)
    label = "snntorch.Leaky (LIF; IF with beta=1)"

    def to_nir(self, module, shape, dt, encoding="gain"):
        """``LIF`` / ``IF`` node (reset to zero) or the LI group (``li_forms.group``: a dict
        ``role -> node``); ``encoding``: ``"gain"`` (``r = tau/dt``, unit input gain) or
        ``"unit-r"`` (``r = 1``; the writer scales the input weights)."""
        self.check_nir(module)
        beta = np.clip(self.values(module, "beta", shape), 0.0, 1.0)
        vth = self.values(module, "threshold", shape).astype(np.float32)
        form = self.form(module)
        if form != "zero":
            return group(form, shape, dt, beta.astype(np.float32), vth, encoding=encoding)
        zeros = np.zeros(shape, dtype=np.float32)
        if np.all(beta == 1.0):
            r = 1.0 if encoding == "unit-r" else 1.0 / dt
            return nir.IF(r=np.full(shape, r, dtype=np.float32), v_threshold=vth, v_reset=zeros)
        # every beta < 1 here: a population mixing beta = 1 and beta < 1 is refused by
        # check_nir (decay_blockers), with its fix
        tau = dt / (1.0 - beta)
        r = np.ones(shape) if encoding == "unit-r" else tau / dt
        return nir.LIF(tau=tau.astype(np.float32), r=r.astype(np.float32),
                       v_leak=zeros, v_threshold=vth, v_reset=zeros)
