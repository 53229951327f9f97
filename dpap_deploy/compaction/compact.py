"""``compact(model, example_input, masks)``: a physically smaller network that computes exactly
what the masked network computed.

Dead conv output channels go together with their bias and BatchNorm entries and the matching
input channels of the next conv; across ``Flatten`` a channel's block of columns goes from the
next Linear; dead Linear rows go with the next layer's columns; pooling is per channel and
unchanged. Synapse-level zeros inside kept units stay. The result is an ordinary torch /
snnTorch module (a deep copy of the input with some layers replaced) and is verified against
the masked model on ``example_input`` unless ``verify=False``.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from ..dpap.layers import Forward, call_order, default_forward, find_prunable_layers
from ..dpap.masking import apply_masks, layer_param_masks
from ..errors import DPAPError
from .plan import CompactionPlan, Masks, links_between, plan_compaction
from .surgery import replace_module, slice_batchnorm, slice_synapse, strip_hooks


@dataclass
class Compacted:
    model: nn.Module
    plan: CompactionPlan
    kind: str


def masks_from_dpap_state(state: dict) -> Masks:
    """Masks from a DPAP ``state_dict`` (e.g. ``checkpoint['dpap']``)."""
    return {d["name"]: (d["syn_alive"], d["neu_alive"]) for d in state["layers"]}


def apply_layer_masks(model: nn.Module, example_input: torch.Tensor, masks: Masks,
                      forward: Forward = default_forward) -> nn.Module:
    """Zero, in place, every parameter the masks remove (the 'masked model')."""
    _, layers = find_prunable_layers(model, example_input, forward)
    for layer in layers:
        if layer.name in masks:
            syn, neu = masks[layer.name]
            dev = layer.synapse.weight.device
            apply_masks(layer_param_masks(layer, syn.to(dev), neu.to(dev)))
    return model


def compact(model: nn.Module, example_input: torch.Tensor, masks: Masks | None = None,
            forward: Forward = default_forward, verify: bool = True,
            time_steps: int = 8) -> Compacted:
    """Return the compacted copy of ``model`` (the input model is not modified).

    ``masks``: ``{layer_name: (synapses [C_out, C_in] bool, neurons [C_out] bool)}``; layers
    not named keep everything; ``None`` keeps everything (only derived deaths are removed).
    """
    masked = copy.deepcopy(model)
    strip_hooks(masked)
    masked.eval()
    kind, layers = find_prunable_layers(masked, example_input, forward)
    full = {l.name: (torch.ones(l.n_out, l.n_in, dtype=torch.bool),
                     torch.ones(l.n_out, dtype=torch.bool)) for l in layers}
    masks = {**full, **{k: (v[0].cpu(), v[1].cpu()) for k, v in (masks or {}).items()}}
    unknown = sorted(set(masks) - set(full))
    if unknown:
        raise DPAPError(f"masks name layer(s) {', '.join(unknown)} that the model does not have; "
                        f"its prunable layers are {', '.join(full)}")
    apply_layer_masks(masked, example_input, masks, forward)
    calls = call_order(masked, example_input, forward)
    plan = plan_compaction(layers, links_between(layers, calls), masks)
    small = copy.deepcopy(masked)
    for layer, lp in zip(layers, plan.layers):
        replace_module(small, layer.name, slice_synapse(layer.synapse, lp.keep_out, lp.keep_in))
        if layer.bn is not None:
            replace_module(small, layer.bn_name, slice_batchnorm(layer.bn, lp.keep_out))
    result = Compacted(small, plan, kind)
    if verify:
        check_same_function(masked, small, example_input, kind, time_steps)
    return result


@torch.no_grad()
def outputs(model: nn.Module, x: torch.Tensor, kind: str, time_steps: int) -> torch.Tensor:
    """SNN: output spikes ``[T, B, classes]``; ANN: logits."""
    from ..neurons import run_snn
    was = model.training
    model.eval()
    try:
        return run_snn(model, x, time_steps) if kind == "snn" else model(x)
    finally:
        model.train(was)


def check_same_function(reference: nn.Module, candidate: nn.Module, x: torch.Tensor, kind: str,
                        time_steps: int = 8, atol: float = 1e-5) -> float:
    """Raise unless ``candidate`` gives identical spikes (SNN) or logits within ``atol`` (ANN);
    returns the largest difference seen."""
    a = outputs(reference, x, kind, time_steps)
    b = outputs(candidate, x, kind, time_steps)
    diff = float((a - b).abs().max()) if a.numel() else 0.0
    if kind == "snn" and not torch.equal(a, b):
        n = int((a != b).sum())
        raise DPAPError(f"compacted network differs from the masked one: {n} of {a.numel()} "
                        "output spikes changed")
    if kind == "ann" and diff > atol:
        raise DPAPError(f"compacted network differs from the masked one: max |logit difference| "
                        f"{diff:.3g} > {atol:g}")
    return diff
