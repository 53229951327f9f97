"""NeuroBench's definitions of cost and sparsity (NeuroBench 2.3, ``neurobench.metrics``),
computed with our own hooks so they sit next to ours in ``report.json`` without the package.

Per synaptic layer (``Linear``, ``Conv1d``, ``Conv2d``) and per call (one call per time step):
the input is binarised (``b = [x != 0]``) and the operations are ``sum_k b_k * fanout_k``, the
fan-out counting non-zero weights only; the bias is not an operation.

- ``effective_acs``: the operations of calls whose input holds only ``0`` and ``+-1`` (spikes);
- ``effective_macs``: the operations of every other call (the directly encoded first layer,
  every ANN layer, and a layer behind an average pool, whose pooled spikes ``count / k^2``
  are not ``0/1``: count the pool-folded network to have those as ACs);
- ``dense_ops``: every input element times the full fan-out (all weights);
- ``connection_sparsity``: zero weights over all weights of those layers (biases excluded);
- ``activation_sparsity``: zero outputs over all outputs of the neuron layers (snnTorch
  neurons; ``ReLU`` / ``Sigmoid`` in an ANN), over samples, time steps and positions;
- ``footprint_bytes``: bytes of the parameters and buffers of a freshly built model, which is
  what NeuroBench's ``Footprint`` sees when it runs first: ``sum(numel * element_size)`` over
  the parameters and the persistent buffers (thresholds, betas, BatchNorm statistics). snnTorch
  keeps a neuron's state (``mem``, ``syn``) in non-persistent buffers that are empty until the
  first input and then hold the last batch, ``[batch, *shape]``: they are not counted, so the
  footprint does not depend on what the model ran last;
- ``accuracy`` (with labels ``y``): NeuroBench's ``ChooseMaxCount``, ``mean(argmax(counts) ==
  y)`` over the spike counts (ANN: logits), where a tie, a silent output included, goes to
  the lowest tied class; ours (``accuracy_ties_wrong``, :mod:`.metrics`) counts it as wrong.
All operation counts are per sample. Ours differ on purpose: SynOps multiply a pooled spike
back by ``k^2`` (it stands for that many spikes) and our MACs of a first layer count every
input pixel, zero or not (a dense implementation computes them).
"""
from __future__ import annotations

import torch
from torch import nn

from .counting import fanout
from .executor.run import outputs
from .graph import ModelGraph, adapter_for, batch_len, graph_of

SYNAPSES = (nn.Linear, nn.Conv1d, nn.Conv2d)
ACTIVATIONS = (nn.ReLU, nn.Sigmoid)


def footprint_bytes(model: nn.Module) -> int:
    """Bytes of the parameters and persistent buffers: NeuroBench's ``Footprint`` on a fresh
    model, whatever batch the model ran last (neuron state is a non-persistent buffer)."""
    tensors = {id(p): p for p in model.parameters()}
    for mod in model.modules():
        for name, buf in mod.named_buffers(recurse=False):
            if buf is not None and name not in mod._non_persistent_buffers_set:
                tensors[id(buf)] = buf
    return sum(t.numel() * t.element_size() for t in tensors.values())


def _accuracies(out: torch.Tensor, y, kind: str) -> dict:
    """NeuroBench's accuracy (argmax, ties to the lowest class) and ours (ties wrong) on the
    same samples, from ``[T, N, classes]`` spikes (SNN) or ``[N, classes]`` logits (ANN)."""
    from .metrics import accuracy, argmax_accuracy, predictions
    scores = out.sum(0) if kind == "snn" else out
    return {"accuracy": argmax_accuracy(scores, y),
            "accuracy_ties_wrong": accuracy(predictions(scores), y)}


@torch.no_grad()
def neurobench_metrics(model: nn.Module, x: torch.Tensor, time_steps: int | None = None,
                       graph: ModelGraph | None = None, y: torch.Tensor | None = None) -> dict:
    """NeuroBench's metrics of ``model`` on ``x`` (see the module's docstring); with labels
    ``y`` also NeuroBench's accuracy beside ours."""
    footprint = footprint_bytes(model)
    graph = graph_of(graph or model, x)
    samples = batch_len(x, graph.time_axis)
    ops = {"acs": 0.0, "macs": 0.0, "dense": 0.0}
    active = [0, 0]                # non-zero outputs, all outputs of the neuron layers
    cache: dict = {}

    def synapse_hook(mod, inputs, _out):
        inp = inputs[0].detach()
        key = (id(mod), tuple(inp.shape[1:]))
        if key not in cache:
            cache[key] = (fanout(mod, inp.shape[1:], True), fanout(mod, inp.shape[1:], False))
        fo_nz, fo_all = cache[key]
        spiking = bool(((inp == 0) | (inp == 1) | (inp == -1)).all())
        n = float(((inp != 0).to(torch.float64) * fo_nz).sum())
        ops["acs" if spiking else "macs"] += n
        ops["dense"] += float(fo_all.sum()) * inp.shape[0]

    def neuron_hook(mod, _inp, out):
        a = adapter_for(mod)
        s = a.spikes(out) if a is not None else (out[0] if isinstance(out, tuple) else out)
        active[0] += int(s.count_nonzero())
        active[1] += s.numel()

    import snntorch as snn
    hooks = [m.register_forward_hook(synapse_hook) for m in model.modules()
             if isinstance(m, SYNAPSES)]
    hooks += [m.register_forward_hook(neuron_hook) for m in model.modules()
              if isinstance(m, (snn.SpikingNeuron, *ACTIVATIONS))]
    try:
        out = outputs(graph, x, time_steps, multistep=False)   # hooks: one call per step
    finally:
        for h in hooks:
            h.remove()
    n = max(samples, 1)
    weights = [m.weight for m in model.modules() if isinstance(m, SYNAPSES)]
    n_w = sum(w.numel() for w in weights)
    acc = _accuracies(out, y[:samples], graph.kind) if y is not None else {}
    return {
        "effective_acs": ops["acs"] / n, "effective_macs": ops["macs"] / n,
        "dense_ops": ops["dense"] / n,
        "connection_sparsity": sum(int((w == 0).sum()) for w in weights) / max(n_w, 1),
        "activation_sparsity": (active[1] - active[0]) / max(active[1], 1),
        "footprint_bytes": footprint,
        **acc,
        "definitions": "NeuroBench 2.3 (neurobench.metrics): binarised inputs, non-zero "
                       "weights, bias excluded; per sample; footprint of a fresh model "
                       "(parameters and persistent buffers)"
                       + ("; accuracy: argmax of the spike counts (ANN: logits), a tie to the "
                          "lowest class; accuracy_ties_wrong: ours, a tie wrong" if acc else ""),
        "measured_on": f"{samples} test samples",
    }
