"""``compact(model, example_input, masks)``: a physically smaller network that computes exactly
what the masked network computed.

The model graph is built once (``dpap_deploy.graph``); the masks (``dpap_deploy.masks``) are
checked against it and applied to a copy; the plan (``plan.py``) says which units survive,
derived deaths included and residual ties respected; ``surgery.py`` cuts them from the graph's
kept indices, one ``index_select`` per dimension (Torch-Pruning is not used: ``surgery.py``
says why, a test checks both cut the zoo's chains alike). Synapse-level zeros inside kept
units stay. The result is the user's own module type (a deep copy with smaller layers) and is
verified against the masked model on ``example_input`` unless ``verify=False``.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import DPAPError
from ..executor.run import outputs as graph_outputs
from ..graph import ModelGraph, build_graph, graph_of
from ..graph.state import register_copies, reset_states
from ..masks import Masks, apply_to_model, check
from .plan import CompactionPlan, plan_compaction
from .surgery import cut, strip_hooks


RTOL = 1e-6


@dataclass
class Compacted:
    model: nn.Module
    plan: CompactionPlan
    kind: str
    graph: ModelGraph | None = None       # the compacted model's graph


def copy_with_graph(model: nn.Module, graph: ModelGraph) -> tuple[nn.Module, ModelGraph]:
    """A deep copy of the model and of its graph, the graph pointing at the copied modules.
    Neuron states are cleared first: right after a training step they still hold the last
    batch's autograd graph, which cannot be deep-copied."""
    reset_states(model)
    graph_model = graph.model
    graph.model = model
    try:
        new_model, new_graph = copy.deepcopy((model, graph))
    finally:
        graph.model = graph_model
    strip_hooks(new_model)
    return new_model, new_graph


def compact(model: nn.Module, example_input: torch.Tensor, masks: Masks | None = None,
            verify: bool = True, time_steps: int | None = None,
            graph: ModelGraph | None = None, time_axis: int | None = None,
            register: bool = True) -> Compacted:
    """Return the compacted copy of ``model`` (the input model is not modified).

    ``masks``: ``{layer_name: (synapses [C_out, C_in] bool, neurons [C_out] bool)}``; layers
    not named keep everything; ``None`` keeps everything (only derived deaths are removed).
    ``graph``: the model's graph if already built (``dpap_deploy.graph``), else it is built here.
    ``time_axis``: the input's time axis (``0``: ``[T, B, ...]``, ``1``: ``[B, T, ...]``) when
    it has one; ``None``: none, or inferred from the model's forward (``build_graph``).
    ``time_steps``: the T a static input runs over (inputs with a time axis have their own).
    ``register``: enter the copy's neurons in snnTorch's registry (``snntorch.utils.reset``
    then resets it; weakly, see ``register_copies``); ``False`` for a copy only measured or
    probed and never handed to the user.
    """
    graph = graph_of(graph or model, example_input, time_axis=time_axis)   # checks both
    reset_states(model)
    masked, mgraph = copy_with_graph(model, graph)
    masked.eval()
    masks = check(mgraph, masks)
    apply_to_model(masked, None, masks, graph=mgraph)
    plan = plan_compaction(mgraph, masks)
    small, sgraph = copy_with_graph(masked, mgraph)
    cut(small, sgraph, plan)
    small.eval()
    if register:
        register_copies(small)           # snntorch.utils.reset(small) resets it
    small_graph = build_graph(small, example_input, time_axis=graph.time_axis)
    result = Compacted(small, plan, graph.kind, small_graph)
    if verify:
        check_same_function(mgraph, small_graph, example_input, time_steps)
    return result


def outputs(model, x: torch.Tensor, kind: str | None = None, time_steps: int | None = None,
            graph: ModelGraph | None = None, multistep: bool = True) -> torch.Tensor:
    """SNN: output spikes ``[T, B, classes]``; ANN: logits (evaluation mode). ``multistep=False``
    calls every module once per step (for hooks that expect that)."""
    return graph_outputs(graph_of(graph or model, x), x, time_steps, multistep=multistep)


def check_same_function(reference: ModelGraph, candidate: ModelGraph, x: torch.Tensor,
                        time_steps: int, what: str = "compacted network",
                        than: str = "the masked one") -> float:
    """Raise unless ``candidate`` gives identical spikes (SNN) or graded outputs (ANN logits,
    an SNN's membrane or current readout) equal up to float32 rounding; returns the largest
    difference seen. (An SNN's hidden spikes must then be identical too: a changed spike moves
    a readout by a weight, orders of magnitude beyond rounding.)

    ANN tolerance: both networks compute the same sums of products, possibly in another order
    and with folded weights; float32 rounding of a sum of ``n`` terms of magnitude up to ``M``
    grows like ``n * eps * M``, so no fixed absolute tolerance fits every model. When the
    float32 outputs differ, both networks are run again in float64: evaluation rounding drops
    to ~1e-14 there, and what remains is the float32 *storage* of folded weights (relative
    ~6e-8 per weight), well under ``RTOL = 1e-6`` of the largest logit after a few dozen
    layers. A real error (one flipped weight sign) changes the logits by orders of magnitude
    more; the tests inject one."""
    a = graph_outputs(reference, x, time_steps)
    b = graph_outputs(candidate, x, time_steps)
    if a.shape != b.shape:
        raise DPAPError(f"{what} differs from {than}: output shape {tuple(b.shape)} instead of "
                        f"{tuple(a.shape)}")
    if reference.kind == "snn" and reference.readout == "spikes":
        if not torch.equal(a, b):
            n = int((a != b).sum())
            raise DPAPError(f"{what} differs from {than}: {n} of {a.numel()} output spikes "
                            "changed")
        return 0.0
    diff = float((a - b).abs().max()) if a.numel() else 0.0
    if diff == 0.0:
        return 0.0
    try:
        a64 = _float64_outputs(reference, x, time_steps)
        b64 = _float64_outputs(candidate, x, time_steps)
    except RuntimeError:
        if reference.kind == "ann":
            raise
        # snnTorch's own-loop neurons (init_leaky()) cannot run in float64: bound float32's
        # rounding of the readout instead
        bound = _readout_rounding_bound(reference, a.shape[0])
        if diff > bound:
            raise DPAPError(f"{what} differs from {than}: max |{reference.readout} difference| "
                            f"{diff:.3g}, beyond float32 rounding ({bound:.3g})") from None
        return diff
    scale = max(float(a64.abs().max()), 1.0)
    diff64 = float((a64 - b64).abs().max())
    if diff64 > RTOL * scale:
        out = "logit" if reference.kind == "ann" else reference.readout
        raise DPAPError(f"{what} differs from {than}: max |{out} difference| {diff64:.3g} in "
                        f"float64 ({out}s up to {scale:.3g}), beyond rounding")
    return diff


def _readout_rounding_bound(graph: ModelGraph, steps: int) -> float:
    """Largest float32 rounding difference of a graded SNN readout between two networks whose
    spikes are identical: the output synapse sums ``n`` products ``w_ij s_j`` plus ``b_i``
    (``|error| <= (n + 1) eps sum_j |w_ij| + |b_i|`` for any summation order, doubled for the
    two networks; a BatchNorm in between scales it by ``|gamma| / sqrt(var + eps)`` and adds
    its shift) and a membrane adds at most one such error per step, ``steps`` in all."""
    layer = next(l for l in graph.layers if l.is_output)
    w = layer.synapse.weight.detach().abs().flatten(1)
    total = w.sum(1)
    if layer.synapse.bias is not None:
        total = total + layer.synapse.bias.detach().abs()
    if layer.bn is not None and layer.bn.running_var is not None:     # y = g (v - m) / s + beta
        bn = layer.bn
        gain = (bn.weight.detach().abs() if bn.weight is not None else 1.0) / \
            torch.sqrt(bn.running_var + bn.eps)
        total = total * gain + (bn.running_mean.abs() * gain +
                                (bn.bias.detach().abs() if bn.bias is not None else 0.0))
    eps = float(torch.finfo(torch.float32).eps)
    return 2.0 * (w.shape[1] + 1) * eps * float(total.max()) * max(steps, 1)


def _float64_outputs(graph: ModelGraph, x: torch.Tensor, time_steps: int) -> torch.Tensor:
    model64, g64 = copy_with_graph(graph.model, graph)
    model64.double()
    return graph_outputs(g64, x.double(), time_steps)
