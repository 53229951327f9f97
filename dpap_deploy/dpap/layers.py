"""Find the prunable layers of an ordinary snnTorch / PyTorch model.

A prunable layer is a synaptic operator (``nn.Conv2d`` or ``nn.Linear``), optionally followed
by a BatchNorm, then a neuron population (``snntorch.Leaky`` for SNNs, ``nn.ReLU`` for ANNs).
The order is read from one probe forward pass with hooks on every leaf module, so any model
whose forward calls its modules in feed-forward order works, not only ``nn.Sequential``.
Anything else with parameters, or a neuron model other than ``Leaky`` / ``ReLU``, is refused
by name.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import snntorch as snn
import torch
from torch import nn

from ..errors import DPAPError, UnsupportedModelError
from ..neurons import reset_states

SYNAPTIC = (nn.Conv2d, nn.Linear)
NORMS = (nn.BatchNorm1d, nn.BatchNorm2d)
PASSIVE = (nn.AvgPool2d, nn.MaxPool2d, nn.Flatten, nn.Dropout, nn.Identity)
SUPPORTED_TEXT = ("Conv2d, Linear, BatchNorm1d/2d, snntorch.Leaky (SNN), ReLU (ANN), "
                  "AvgPool2d, MaxPool2d, Flatten, Dropout, Identity")

Forward = Callable[[nn.Module, torch.Tensor], object]


@dataclass
class Call:
    """One leaf-module call of the probe forward pass (shapes include the batch dimension)."""

    name: str
    module: nn.Module
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]


@dataclass
class PrunableLayer:
    """One synaptic operator with its optional BatchNorm and its neuron population."""

    name: str
    synapse: nn.Module
    bn: nn.Module | None = None
    bn_name: str | None = None
    neuron: nn.Module | None = None
    neuron_name: str | None = None
    is_output: bool = False

    @property
    def kind(self) -> str:
        return "conv" if isinstance(self.synapse, nn.Conv2d) else "linear"

    @property
    def n_out(self) -> int:
        return int(self.synapse.weight.shape[0])

    @property
    def n_in(self) -> int:
        return int(self.synapse.weight.shape[1])


def model_kind(model: nn.Module) -> str:
    """``snn`` if the model contains snnTorch neurons, else ``ann``."""
    return "snn" if any(isinstance(m, snn.SpikingNeuron) for m in model.modules()) else "ann"


def default_forward(model: nn.Module, x: torch.Tensor) -> object:
    return model(x)


def _shape(x) -> tuple[int, ...]:
    x = x[0] if isinstance(x, tuple) else x
    return tuple(x.shape) if isinstance(x, torch.Tensor) else ()


def call_order(model: nn.Module, example_input: torch.Tensor,
               forward: Forward = None) -> list[Call]:
    """Leaf modules in the order one forward step calls them, with their tensor shapes.
    Runs in eval mode without gradients and resets neuron states afterwards."""
    forward = forward or default_forward
    if example_input.dim() == 5 and forward is default_forward:
        example_input = example_input[:, 0]   # event frames [B, T, C, H, W]: one step is a frame
    names = {m: n for n, m in model.named_modules()}
    order: list[Call] = []
    seen: set[int] = set()

    def hook(mod, inp, out):
        if id(mod) in seen:
            raise UnsupportedModelError(
                f"module '{names[mod]}' ({type(mod).__name__}) is called more than once in one "
                "forward step; DPAP needs every layer used once per step (no weight sharing)")
        seen.add(id(mod))
        order.append(Call(names[mod], mod, _shape(inp), _shape(out)))

    leaves = [m for m in model.modules() if not list(m.children())]
    handles = [m.register_forward_hook(hook) for m in leaves]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            forward(model, example_input)
    except DPAPError:
        raise
    except (RuntimeError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DPAPError(f"input of shape {tuple(example_input.shape[1:])} (batch dimension "
                        f"excluded) does not fit the model: {first}") from None
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
        reset_states(model)
    return order


def _unsupported(name: str, mod: nn.Module, why: str = "") -> UnsupportedModelError:
    extra = f" ({why})" if why else ""
    return UnsupportedModelError(
        f"unsupported layer type '{type(mod).__name__}' at '{name}'{extra}; "
        f"DPAP supports {SUPPORTED_TEXT}")


def find_prunable_layers(model: nn.Module, example_input: torch.Tensor,
                         forward: Forward = default_forward) -> tuple[str, list[PrunableLayer]]:
    """Return ``(kind, layers)`` in forward order; the last layer is the output layer."""
    kind = model_kind(model)
    for name, mod in model.named_modules():
        if list(mod.children()) and list(mod.parameters(recurse=False)):
            raise _unsupported(name or "<root>", mod, "it owns parameters directly")
    neuron_type = snn.Leaky if kind == "snn" else nn.ReLU
    layers: list[PrunableLayer] = []
    cur: PrunableLayer | None = None
    for call in call_order(model, example_input, forward):
        name, mod = call.name, call.module
        if isinstance(mod, SYNAPTIC):
            if isinstance(mod, nn.Conv2d) and mod.groups != 1:
                raise _unsupported(name, mod, f"grouped convolution, groups={mod.groups}")
            if cur is not None and cur.neuron is None and kind == "snn":
                raise UnsupportedModelError(
                    f"'{cur.name}' feeds '{name}' with no spiking neuron in between; put an "
                    "snntorch.Leaky after every Conv2d/Linear (and its BatchNorm)")
            cur = PrunableLayer(name=name, synapse=mod)
            layers.append(cur)
        elif isinstance(mod, NORMS):
            if cur is None or cur.bn is not None or cur.neuron is not None:
                raise UnsupportedModelError(
                    f"BatchNorm '{name}' does not directly follow a Conv2d/Linear; DPAP expects "
                    "synapse -> BatchNorm -> neuron")
            cur.bn, cur.bn_name = mod, name
        elif isinstance(mod, neuron_type):
            if cur is None or cur.neuron is not None:
                raise UnsupportedModelError(
                    f"neuron layer '{name}' is not preceded by its own Conv2d/Linear")
            if kind == "snn" and getattr(mod, "reset_mechanism", "zero") != "zero":
                raise UnsupportedModelError(
                    f"Leaky '{name}' uses reset_mechanism='{mod.reset_mechanism}'; the DPAP "
                    "neuron (paper Eq 1) resets to zero: use reset_mechanism='zero'")
            cur.neuron, cur.neuron_name = mod, name
        elif isinstance(mod, PASSIVE):
            continue
        else:
            raise _unsupported(name, mod)
    if not layers:
        raise UnsupportedModelError("the model has no Conv2d or Linear layer to prune")
    if kind == "snn" and layers[-1].neuron is None:
        raise UnsupportedModelError(
            f"the output layer '{layers[-1].name}' has no spiking neuron after it; an SNN's "
            "output is the firing of its last Leaky layer")
    layers[-1].is_output = True
    return kind, layers
