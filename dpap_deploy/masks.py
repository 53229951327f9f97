"""Pruning masks, the one module that knows their contract (docs/compaction.md, *Masks*).

``Masks`` maps a prunable layer's name (``graph.layers``) to two bool tensors, ``synapses
[C_out, C_in]`` (a conv synapse is a whole kernel) and ``neurons [C_out]``. The weight mask is
``synapses & neurons[:, None]`` over the kernel; the bias, the BatchNorm affine parameters and
(``RLeaky``) the recurrent weight's rows, columns and bias of a removed neuron are zeroed too,
so a pruned neuron can never fire again.
"""
from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import nn

from .errors import DPAPError
from .graph import ModelGraph, PrunableLayer, adapter_for, graph_of

Masks = dict[str, tuple[torch.Tensor, torch.Tensor]]   # layer name -> (synapses, neurons)
STATE_KEYS = ("name", "syn_alive", "neu_alive")          # a state's per-layer mask entries


def from_dpap_state(state: Any) -> Masks:
    """Masks from a DPAP ``state_dict`` (``checkpoint['dpap']``) or a structured baseline's."""
    layers = state.get("layers") if isinstance(state, Mapping) else None
    if not isinstance(layers, list) or not all(
            isinstance(d, Mapping) and all(k in d for k in STATE_KEYS) for d in layers):
        raise DPAPError(f"not a DPAP state: expected a mapping with a 'layers' list of "
                        f"{{{', '.join(STATE_KEYS)}}} entries, got {type(state).__name__}; pass "
                        "DPAP.state_dict() or a checkpoint's 'dpap' entry")
    return {d["name"]: (d["syn_alive"], d["neu_alive"]) for d in layers}


def from_weights(layers: Iterable[PrunableLayer], units: bool = False) -> Masks:
    """Synapses whose kernel holds a non-zero weight; every neuron kept, or with ``units``
    only those with such a synapse (the stats of a run whose pruner stored no masks)."""
    out = {}
    for l in layers:
        syn = nonzero_kernels(l.synapse.weight).cpu()
        out[l.name] = (syn, syn.any(1) if units else torch.ones(l.n_out, dtype=torch.bool))
    return out


def nonzero_kernels(weight: torch.Tensor) -> torch.Tensor:
    """``[C_out, C_in]`` synapses (kernels) holding a non-zero weight."""
    w = weight.detach()
    return w.reshape(w.shape[0], w.shape[1], -1).ne(0).any(2)


def check_state(state: Any, layers: list, where: Any) -> None:
    """A stored state's masks fit the model rebuilt from its configuration: per layer, in
    order, ``syn_alive`` a bool ``[n_out, n_in]`` and ``neu_alive`` a bool ``[n_out]``. A mask
    of another shape would compact to a wrong network (or fail deep inside torch)."""
    if not isinstance(state, Mapping) or not isinstance(state.get("layers"), list):
        raise DPAPError(f"{where}: the DPAP state has no layer list; the checkpoint is corrupt")
    if len(state["layers"]) != len(layers):
        raise DPAPError(f"{where}: the DPAP state has masks for {len(state['layers'])} layers, "
                        f"the model has {len(layers)} prunable layers; the checkpoint does not "
                        "fit its model")
    for d, layer in zip(state["layers"], layers):
        for key, shape in (("syn_alive", (layer.n_out, layer.n_in)), ("neu_alive", (layer.n_out,))):
            m = d.get(key) if isinstance(d, Mapping) else None
            got = tuple(getattr(m, "shape", ()))
            if not isinstance(m, torch.Tensor) or got != shape or m.dtype != torch.bool:
                raise DPAPError(f"{where}: layer {layer.name} {key} mask is "
                                f"{got or type(m).__name__} {getattr(m, 'dtype', '')}, the model "
                                f"needs a bool mask of shape {shape}; the checkpoint does not fit "
                                "its model")


def check(graph: ModelGraph, masks: Mapping | None) -> Masks:
    """``masks`` checked against the graph's prunable layers (names, shapes, values 0 / 1) and
    completed: every layer's ``(synapses, neurons)`` as bool tensors on the CPU, all kept for
    a layer not named (``None``: every layer)."""
    if masks is not None and not (isinstance(masks, Mapping) and all(
            isinstance(v, (tuple, list)) and len(v) == 2 and all(isinstance(t, torch.Tensor)
                                                                 for t in v)
            for v in masks.values())):
        raise DPAPError(f"masks must map layer names to (synapses, neurons) bool tensors, got "
                        f"{type(masks).__name__}; build them with dpap_deploy.masks."
                        "from_dpap_state(dpap.state_dict())")
    masks = masks or {}
    names = [l.name for l in graph.layers]
    unknown = sorted(set(masks) - set(names))
    if unknown:
        raise DPAPError(f"masks name layer(s) {', '.join(unknown)} that the model does not have; "
                        f"its prunable layers are {', '.join(names)}")
    out = {}
    for l in graph.layers:
        if l.name not in masks:
            out[l.name] = (torch.ones(l.n_out, l.n_in, dtype=torch.bool),
                           torch.ones(l.n_out, dtype=torch.bool))
            continue
        syn, neu = masks[l.name]
        if syn.shape != (l.n_out, l.n_in) or neu.shape != (l.n_out,):
            raise DPAPError(f"the mask of layer '{l.name}' has shapes {tuple(syn.shape)} / "
                            f"{tuple(neu.shape)} but the layer has {(l.n_out, l.n_in)} synapses "
                            f"/ {(l.n_out,)} neurons; the masks belong to another model")
        for what, t in (("synapse", syn), ("neuron", neu)):
            bad = t[(t != 0) & (t != 1)] if t.dtype != torch.bool else t[:0]
            if bad.numel():
                raise DPAPError(f"the {what} mask of layer '{l.name}' holds {bad.numel()} "
                                f"value(s) other than 0 and 1 (e.g. {bad.flatten()[0].item()}); "
                                "pass bool masks (True: kept)")
        out[l.name] = (syn.detach().cpu().bool(), neu.detach().cpu().bool())
    return out


def recurrent_of(layer: PrunableLayer) -> nn.Module | None:
    """The recurrent weight owned by the layer's neuron (``RLeaky``), or ``None``."""
    adapter = adapter_for(layer.neuron) if layer.neuron is not None else None
    return adapter.recurrent(layer.neuron) if adapter is not None else None


def layer_param_masks(layer: PrunableLayer, syn_alive: torch.Tensor,
                      neu_alive: torch.Tensor) -> list[tuple[nn.Parameter, torch.Tensor]]:
    """Every (parameter, mask) pair of a layer, each mask in its parameter's dtype and
    broadcastable to it: weight, recurrent weight, bias, BatchNorm weight and bias."""
    def kernel(m: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        return m.reshape(m.shape + (1,) * (p.dim() - 2)).to(p.dtype)
    w = layer.synapse.weight
    pairs = [(w, kernel(syn_alive & neu_alive[:, None], w))]
    rec = recurrent_of(layer)
    if rec is not None:       # a pruned neuron neither sends nor receives recurrent input
        pairs.append((rec.weight, kernel(neu_alive[:, None] & neu_alive[None, :], rec.weight)))
    bn = layer.bn
    for p in (layer.synapse.bias, getattr(bn, "weight", None), getattr(bn, "bias", None),
              rec.bias if rec is not None else None):
        if p is not None:
            pairs.append((p, neu_alive.to(p.dtype)))
    return pairs


def param_pairs(graph: ModelGraph, masks: Mapping | None) -> list[tuple[nn.Parameter,
                                                                      torch.Tensor]]:
    """``(parameter, mask)`` of every masked parameter of the graph's layers (checked masks,
    on each layer's device)."""
    full = check(graph, masks)
    return [pair for l in graph.layers for pair in layer_param_masks(
        l, *(t.to(l.synapse.weight.device) for t in full[l.name]))]


@torch.no_grad()
def apply_masks(pairs: list[tuple[nn.Parameter, torch.Tensor]]) -> None:
    for p, m in pairs:
        p.mul_(m)


def apply_to_model(model: nn.Module, example_input: torch.Tensor | None, masks: Mapping | None,
                   graph: ModelGraph | None = None) -> nn.Module:
    """Zero, in place, every parameter the masks remove (the 'masked model'); ``graph``: the
    model's graph if already built, else traced on ``example_input``."""
    apply_masks(param_pairs(graph_of(graph or model, example_input), masks))
    return model


def layer_stats(layer: PrunableLayer, syn_alive: torch.Tensor | None = None,
                neu_alive: torch.Tensor | None = None) -> dict:
    """Neurons, synapses (a conv synapse is a kernel) and parameters of a layer, total and
    kept under the masks (all kept when no masks are given)."""
    dev = layer.synapse.weight.device
    if syn_alive is None:
        syn_alive = torch.ones(layer.n_out, layer.n_in, dtype=torch.bool, device=dev)
    if neu_alive is None:
        neu_alive = torch.ones(layer.n_out, dtype=torch.bool, device=dev)
    pairs = layer_param_masks(layer, syn_alive, neu_alive)
    return {"name": layer.name, "kind": layer.kind,
            "neurons_total": layer.n_out, "neurons_kept": int(neu_alive.sum()),
            "synapses_total": layer.n_out * layer.n_in,
            "synapses_kept": int((syn_alive & neu_alive[:, None]).sum()),
            "params_total": sum(p.numel() for p, _ in pairs),
            "params_kept": sum(int(torch.broadcast_to(m, p.shape).count_nonzero())
                               for p, m in pairs)}


def removed_fraction(stats: list[dict], params_total: int) -> float:
    """Parameters removed by pruning (``layer_stats`` rows) over all ``params_total``
    parameters of the model; the outgoing weights of dead units are counted by compaction."""
    removed = sum(s["params_total"] - s["params_kept"] for s in stats)
    return removed / params_total if params_total else 0.0


def digest(masks: Mapping | Iterable[torch.Tensor]) -> int:
    """A 63-bit hash of the masks (shapes and values, in order): a ``Masks`` table or a
    sequence of bool tensors."""
    tensors = [t for pair in masks.values() for t in pair] if isinstance(masks, Mapping) else masks
    h = hashlib.sha256()
    for t in tensors:
        t = t.detach().to("cpu", torch.bool).contiguous()
        h.update(str(tuple(t.shape)).encode())
        h.update(t.numpy().tobytes())
    return int.from_bytes(h.digest()[:8], "little") & (2 ** 63 - 1)
