"""Permanent pruning: masks on weights (after every optimizer step) and on gradients.

A layer's state is two boolean masks, ``synapses [C_out, C_in]`` and ``neurons [C_out]``.
The effective weight mask is ``synapses & neurons[:, None]`` broadcast over conv kernels
(a conv synapse is a whole kernel ``W[i, j, :, :]``); the bias and the BatchNorm affine
parameters of a pruned neuron are zeroed too, so a pruned neuron can never fire again.
"""
from __future__ import annotations

import torch
from torch import nn

from .layers import PrunableLayer


def weight_mask(syn_alive: torch.Tensor, neu_alive: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``[C_out, C_in, 1, ...]`` mask in the weight's dtype, broadcastable to the weight."""
    m = syn_alive & neu_alive[:, None]
    return m.reshape(m.shape + (1,) * (weight.dim() - 2)).to(weight.dtype)


def layer_param_masks(layer: PrunableLayer, syn_alive: torch.Tensor,
                      neu_alive: torch.Tensor) -> list[tuple[nn.Parameter, torch.Tensor]]:
    """Every (parameter, mask) pair of a layer: weight, bias, BatchNorm weight and bias."""
    w = layer.synapse.weight
    pairs = [(w, weight_mask(syn_alive, neu_alive, w))]
    rec = recurrent_of(layer)
    rec_params = ()
    if rec is not None:       # a pruned neuron neither sends nor receives recurrent input
        both = neu_alive[:, None] & neu_alive[None, :]
        pairs.append((rec.weight, both.reshape(both.shape + (1,) * (rec.weight.dim() - 2))
                      .to(rec.weight.dtype)))
        rec_params = (rec.bias,)
    for p in (layer.synapse.bias,
              getattr(layer.bn, "weight", None) if layer.bn is not None else None,
              getattr(layer.bn, "bias", None) if layer.bn is not None else None, *rec_params):
        if p is not None:
            pairs.append((p, neu_alive.to(p.dtype)))
    return pairs


def recurrent_of(layer: PrunableLayer) -> nn.Module | None:
    """The recurrent weight owned by the layer's neuron (``RLeaky``), or ``None``."""
    from ..graph import adapter_for
    if layer.neuron is None:
        return None
    adapter = adapter_for(layer.neuron)
    return adapter.recurrent(layer.neuron) if adapter is not None else None


@torch.no_grad()
def apply_masks(pairs: list[tuple[nn.Parameter, torch.Tensor]]) -> None:
    for p, m in pairs:
        p.mul_(m)


def count_params(pairs: list[tuple[nn.Parameter, torch.Tensor]]) -> tuple[int, int]:
    """``(total, kept)`` parameter counts of a layer under its masks."""
    total = sum(p.numel() for p, _ in pairs)
    kept = sum(int(torch.broadcast_to(m, p.shape).count_nonzero()) for p, m in pairs)
    return total, kept


def layer_stats(layer: PrunableLayer, syn_alive: torch.Tensor | None = None,
                neu_alive: torch.Tensor | None = None) -> dict:
    """Neurons, synapses (a conv synapse is a kernel) and parameters of a layer, total and
    kept under the masks (all kept when no masks are given)."""
    dev = layer.synapse.weight.device
    if syn_alive is None:
        syn_alive = torch.ones(layer.n_out, layer.n_in, dtype=torch.bool, device=dev)
    if neu_alive is None:
        neu_alive = torch.ones(layer.n_out, dtype=torch.bool, device=dev)
    p_total, p_kept = count_params(layer_param_masks(layer, syn_alive, neu_alive))
    return {"name": layer.name, "kind": layer.kind,
            "neurons_total": layer.n_out, "neurons_kept": int(neu_alive.sum()),
            "synapses_total": layer.n_out * layer.n_in,
            "synapses_kept": int((syn_alive & neu_alive[:, None]).sum()),
            "params_total": p_total, "params_kept": p_kept}


def nonzero_kernels(weight: torch.Tensor) -> torch.Tensor:
    """``[C_out, C_in]`` synapses (kernels) holding a non-zero weight: the synapse mask of a
    network pruned without masks of its own (an unstructured baseline zeroes weights)."""
    w = weight.detach()
    return w.reshape(w.shape[0], w.shape[1], -1).ne(0).any(2)


def removed_fraction(stats: list[dict], params_total: int) -> float:
    """Parameters removed by pruning (``layer_stats`` rows) over all ``params_total``
    parameters of the model; the outgoing weights of dead units are counted by compaction."""
    removed = sum(s["params_total"] - s["params_kept"] for s in stats)
    return removed / params_total if params_total else 0.0
