"""``snn.Lapicque``: an RC neuron. snnTorch 1.0.0 computes, in float32 (``ts`` its
``time_step``, ``R``, ``C`` its buffers; given ``beta`` alone it sets ``R = 1``,
``C = ts / log(1 / beta)``, so the decay is ``1 - log(1/beta)``, *not* ``beta``):
``X[t] = ((I[t] R) k) ts + d U[t-1]`` with ``k = 1 / (R C)``, ``d = 1 - ts / (R C)``, then the
reset of ``lif_common`` (no ``reset_delay`` option: always delayed): ``subtract`` (default):
``U[t] = X[t] - thr S[t-1]``; ``zero``: ``U[t] = X[t] - S[t-1] X[t]`` (a refractory step:
refused); ``none``: ``U[t] = X[t]``; ``S[t] = U[t] > thr``.

NIR: the LI group of ``li_forms`` with decay ``d`` and the input gain as a chain of ``Scale``
nodes ``R -> k -> ts`` before the membrane LI (factors equal to 1 left out: ``x 1`` is exact),
each one float32 product as in snnTorch, so the file computes snnTorch's very membrane."""
from __future__ import annotations

import numpy as np
import snntorch as snn
import torch

from ...errors import UnsupportedModelError
from . import register
from .lif_common import LIFFamily
from .li_forms import group


@register
class Lapicque(LIFFamily):
    types = (snn.Lapicque,)
    label = "snntorch.Lapicque (RC LIF)"
    per_neuron_attrs = ("beta", "threshold", "R", "C")
    zero_reset = "never"
    has_reset_delay = False

    @staticmethod
    def constants(module) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """``(d, [R, k, ts])`` as snnTorch's float32 arithmetic gives them (module docstring),
        the factors equal to 1 left out."""
        R, C, ts = module.R, module.C, module.time_step
        k = 1 / (R * C)
        decay = 1 - (ts / (R * C))
        factors = [torch.as_tensor(f).float() for f in (R, k, ts)]
        return decay.float(), [f for f in factors if not bool((f == 1).all())]

    def blockers(self, module, name=""):
        out = super().blockers(module, name)
        decay, _ = self.constants(module)
        if bool(((decay <= 0) | (decay >= 1)).any()):
            where = f" '{name}'" if name else ""
            out.append(f"snn.Lapicque{where} has a decay 1 - time_step/(R C) = "
                       f"{float(decay.reshape(-1)[0]):g} outside (0, 1): NIR's LI cannot hold it; "
                       "use R C > time_step")
        return out

    def decay_blockers(self, module, cls):
        return []

    def to_nir(self, module, shape, dt, encoding="gain"):
        """The LI group (``li_forms.group``) with snnTorch's decay and input gain."""
        self.check_nir(module)
        decay, factors = self.constants(module)
        if self.form(module) not in ("subtract", "none"):
            raise UnsupportedModelError(self.reset_blocker(module, ""))

        def full(t: torch.Tensor) -> np.ndarray:
            return np.broadcast_to(t.detach().cpu().numpy().astype(np.float32), shape).copy()
        return group(self.form(module), shape, dt, full(decay),
                     self.values(module, "threshold", shape).astype(np.float32),
                     gain=[full(g) for g in factors], encoding=encoding)
