"""``snn.Lapicque``: an RC neuron. snnTorch 1.0.0 computes, in float32 (``ts`` its
``time_step``, ``R``, ``C`` its buffers; given ``beta`` alone it sets ``R = 1``,
``C = ts / log(1 / beta)``, so the decay is ``1 - log(1/beta)``, *not* ``beta``):
``X[t] = ((I[t] R) (1 / (R C))) ts + (1 - ts / (R C)) U[t-1]``, then the reset of
``lif_common`` (no ``reset_delay`` option: always delayed): ``subtract`` (default):
``U[t] = X[t] - thr S[t-1]``; ``zero``: ``U[t] = X[t] - S[t-1] X[t]`` (a refractory step:
refused); ``none``: ``U[t] = X[t]``; ``S[t] = U[t] > thr``.

NIR: the LI group of ``li_forms`` with ``decay = float32(1 - ts / (R C))`` and the input gain
``g = R ts float32(1 / (R C))`` as a ``Scale(g)`` node before the membrane LI (in the LI's
``r`` it would scale the reset input too). Exact when ``R`` and ``ts`` are powers of
two (1 included: the ``beta=`` form): the three products then round once, like ``g I``;
otherwise refused in one line (use the ``beta=`` form, or ``snn.Leaky``)."""
from __future__ import annotations

import numpy as np
import snntorch as snn
import torch

from ...errors import UnsupportedModelError
from . import register
from .lif_common import LIFFamily
from .li_forms import group


def _pow2(t: torch.Tensor) -> bool:
    m, _ = np.frexp(np.abs(t.detach().cpu().double().numpy()))
    return bool(np.all(m == 0.5))


@register
class Lapicque(LIFFamily):
    types = (snn.Lapicque,)
    label = "snntorch.Lapicque (RC LIF)"
    per_neuron_attrs = ("beta", "threshold", "R", "C")
    zero_reset = "never"
    has_reset_delay = False

    @staticmethod
    def constants(module) -> tuple[torch.Tensor, torch.Tensor]:
        """(decay, gain) as snnTorch's float32 arithmetic gives them (module docstring)."""
        R, C, ts = module.R, module.C, module.time_step
        k = 1 / (R * C)
        decay = 1 - (ts / (R * C))
        return decay.float(), (R * ts).float() * k.float()

    def blockers(self, module, name=""):
        out = super().blockers(module, name)
        where = f" '{name}'" if name else ""
        if not (_pow2(module.R) and _pow2(module.time_step)):
            out.append(
                f"snn.Lapicque{where} has R={float(module.R.reshape(-1)[0]):g}, "
                f"time_step={float(module.time_step.reshape(-1)[0]):g}: snnTorch rounds "
                "((I R) (1/(R C))) time_step three times, which no single NIR input gain "
                "reproduces exactly; give beta= alone (R = 1, time_step = 1) or use snn.Leaky")
        decay, _ = self.constants(module)
        if bool(((decay <= 0) | (decay >= 1)).any()):
            out.append(f"snn.Lapicque{where} has a decay 1 - time_step/(R C) = "
                       f"{float(decay.reshape(-1)[0]):g} outside (0, 1): NIR's LI cannot hold it; "
                       "use R C > time_step")
        return out

    def decay_blockers(self, module, cls):
        return []

    def to_nir(self, module, shape, dt, encoding="gain"):
        """The LI group (``li_forms.group``) with snnTorch's decay and input gain."""
        self.check_nir(module)
        decay, gain = self.constants(module)
        f = np.float32
        bc = lambda t: np.broadcast_to(t.detach().cpu().numpy().astype(f), shape).copy()  # noqa
        if self.form(module) not in ("subtract", "none"):
            raise UnsupportedModelError(self.reset_blocker(module, ""))
        return group(self.form(module), shape, dt, bc(decay),
                     self.values(module, "threshold", shape).astype(f), gain=bc(gain),
                     encoding=encoding)
