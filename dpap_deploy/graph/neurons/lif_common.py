"""What snnTorch's LIF-family neurons share: state clearing, per-neuron tensors and the checks
every export of them needs (reset to zero, binary spikes)."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ...errors import UnsupportedModelError
from . import NeuronAdapter, per_neuron_tensor

STATE_ATTRS = ("mem", "syn", "spk", "reset")


class LIFFamily(NeuronAdapter):
    kind = "snn"
    per_neuron_attrs: tuple[str, ...] = ("beta", "threshold")

    def per_neuron(self, module: nn.Module) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        for attr in self.per_neuron_attrs:
            out.update(per_neuron_tensor(module, attr))
        return out

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

    # snnTorch's Leaky with reset to zero multiplies the old membrane by (1 - spike) before
    # adding the input, which is NIR's reset; Synaptic / RLeaky instead zero the *new*
    # membrane at the step after a spike (their input of that step is lost) unless
    # reset_delay=False, which zeroes it right after the spike as NIR does.
    delayed_reset_is_nir = True

    def check_exportable(self, module: nn.Module, name: str = "") -> None:
        where = f" '{name}'" if name else ""
        mech = getattr(module, "reset_mechanism", "zero")
        if mech != "zero":
            raise UnsupportedModelError(
                f"{type(module).__name__}{where} uses reset_mechanism='{mech}'; NIR and Lava "
                "neurons reset to zero: train with reset_mechanism='zero' to export")
        if not self.delayed_reset_is_nir and getattr(module, "reset_delay", False):
            raise UnsupportedModelError(
                f"{type(module).__name__}{where} uses reset_delay=True, which zeroes the "
                "membrane one step after a spike and drops that step's input; NIR's reset does "
                "not: train with reset_delay=False to export")
        g = getattr(module, "graded_spikes_factor", 1.0)
        if float(torch.as_tensor(g).float().mean()) != 1.0 or torch.as_tensor(g).numel() != 1:
            raise UnsupportedModelError(
                f"{type(module).__name__}{where} has graded_spikes_factor={g}; exported neurons "
                "emit binary spikes: use graded_spikes_factor=1.0")
        if getattr(module, "inhibition", False):
            raise UnsupportedModelError(
                f"{type(module).__name__}{where} uses inhibition=True, which NIR cannot express")


def _align(tshape: torch.Size, shape: tuple[int, ...]) -> tuple[int, ...]:
    """A per-channel tensor ``[C]`` of a ``[C, H, W]`` population is ``[C, 1, 1]``."""
    if len(tshape) == 1 and len(shape) > 1 and tshape[0] == shape[0] and tshape[0] != shape[-1]:
        return (tshape[0],) + (1,) * (len(shape) - 1)
    return tuple(tshape)
