"""``snn.RLeaky`` / ``snn.RSynaptic``: a Leaky / Synaptic neuron with its own recurrent weight
``V`` applied to its spikes of the previous step:
``X[t] = (beta U[t-1] + I[t]) + V S[t-1]`` (RSynaptic: ``syn[t] = (alpha syn[t-1] + I[t]) +
V S[t-1]``, ``X[t] = beta U[t-1] + syn[t]``), then the reset of ``lif_common`` (RLeaky's zero
reset is NIR's only with ``reset_delay=False``; RSynaptic ignores ``reset_delay=False`` and its
zero reset is never NIR's). With ``all_to_all=True`` the recurrent weight is an
``nn.Linear`` (or ``nn.Conv2d``) the neuron owns: a synapse whose pre- and post-synaptic
populations are both this population, so compaction slices both of its dimensions. NIR: the
neuron node plus a ``Linear`` node on a cycle (``lif -> w_rec -> lif``), as snnTorch writes it;
in the LI group (subtract / none) the cycle is ``spike -> rec -> mem`` (RSynaptic: ``-> syn``),
listed before the reset edge so that readers add it first, as snnTorch does."""
from __future__ import annotations

import snntorch as snn
import torch
from torch import nn

from ...errors import UnsupportedModelError
from . import register
from .lif_common import LIFFamily
from .leaky import Leaky
from .synaptic import Synaptic


class _Recurrent(LIFFamily):
    zero_reset = "delay-false"

    def recurrent(self, module: nn.Module) -> nn.Module | None:
        if getattr(module, "all_to_all", False):
            rec = module.recurrent
            if not isinstance(rec, (nn.Linear, nn.Conv2d)):
                raise UnsupportedModelError(
                    f"{type(module).__name__} with a recurrent {type(rec).__name__}: only Linear "
                    "and Conv2d recurrent weights are supported")
            return rec
        return None

    def per_neuron(self, module: nn.Module) -> dict[str, torch.Tensor]:
        out = super().per_neuron(module)
        if not getattr(module, "all_to_all", False):
            V = getattr(module.recurrent, "V", None)
            if isinstance(V, torch.Tensor) and V.numel() > 1:
                out["recurrent.V"] = V
        return out

    def recurrent_bias(self, module: nn.Module):
        """The recurrent weight's bias (added at every step, the first included), or ``None``;
        the NIR writer moves it into the bias of the synapse that feeds the neuron, where it
        has the same effect at every step."""
        rec = self.recurrent(module)
        if rec is None or rec.bias is None or not bool(rec.bias.detach().ne(0).any()):
            return None
        return rec.bias.detach().cpu().numpy().astype("float32")

    def recurrent_nir(self, module: nn.Module, shape: tuple[int, ...]):
        """The NIR node of the recurrent weight (``Linear``, bias apart), or refuse."""
        import nir
        import numpy as np
        rec = self.recurrent(module)
        if rec is None:
            V = module.recurrent.V.detach().cpu().double()
            n = int(np.prod(shape))
            w = np.diag(np.broadcast_to(V.numpy(), (n,)).astype(np.float32))
            return nir.Linear(weight=w)
        if isinstance(rec, nn.Conv2d):
            raise UnsupportedModelError(f"{type(module).__name__} with a recurrent Conv2d has no "
                                        "NIR export here; use all_to_all with linear_features")
        return nir.Linear(weight=rec.weight.detach().cpu().numpy().astype(np.float32))


@register
class RLeaky(_Recurrent):
    types = (snn.RLeaky,)
    label = "snntorch.RLeaky (recurrent LIF)"

    def to_nir(self, module, shape, dt, encoding="gain"):
        return Leaky.to_nir(self, module, shape, dt, encoding)


@register
class RSynaptic(_Recurrent):
    types = (snn.RSynaptic,)
    label = "snntorch.RSynaptic (recurrent CUBA LIF)"
    per_neuron_attrs = ("alpha", "beta", "threshold")
    zero_reset = "never"
    synaptic = True

    def to_nir(self, module, shape, dt, encoding="gain"):
        return Synaptic.to_nir(self, module, shape, dt, encoding)
