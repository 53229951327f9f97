"""Running a model graph over an input window, whatever the model's style: the package's one
time loop (``graph/`` says what the model is; this says how it runs).

- One call = one time step (``steps_per_call == 1``): the model is called ``T`` times (static
  input repeated, or frame ``t`` of an input with a time axis at step ``t``).
- The model runs its own time loop: it is called once.
Either way the result is read from the graph's output node with a forward hook, so the model's
return value (spikes, ``(spk, mem)``, stacked records...) does not matter. What is read is the
graph's readout (``ModelGraph.readout``) at every step ``t``: the output neuron's spikes
``s[t]``, its membrane ``U[t]``, or the output synapse's current ``I[t] = W s[t] + b``.
Batches are cut along the batch axis (``graph/time_axis.py``), never along time.

``run_window`` is the step loop (the model's own modules, one call per step: what hooks and
training see); ``outputs`` runs evaluation batches on the multi-step executor where it takes
the graph (``multistep.py``: the same outputs, a window per layer), else on the step loop.
"""
from __future__ import annotations

import torch
from torch import nn

from ..errors import UnsupportedModelError
from ..graph.model_graph import ModelGraph
from ..graph.state import neuron_membrane, reset_states
from ..graph.time_axis import batch_len, batch_slice, frame, has_frames, window_steps
from .multistep import MultiStep


def _first(out):
    return out[0] if isinstance(out, tuple) else out


def _reader(graph: ModelGraph):
    """A function of (module, output) giving the readout of one call of the output node."""
    adapter = graph.nodes[graph.output].adapter
    if adapter is None:
        return lambda _m, out: _first(out)
    if graph.readout == "membrane":
        return lambda m, out: neuron_membrane(adapter, m, out)
    return lambda _m, out: adapter.spikes(out)


def _calls(graph: ModelGraph, x: torch.Tensor, steps: int) -> list:
    """What the model returns, call by call, over one window (its own loop: one call)."""
    model = graph.model
    if graph.steps_per_call > 1:
        return [model(x)]
    if has_frames(graph, x):
        return [model(frame(x, graph.time_axis, t)) for t in range(steps)]
    return [model(x) for _ in range(steps)]


def run_window(graph: ModelGraph, x: torch.Tensor, time_steps: int | None) -> torch.Tensor:
    """Output of one input window: SNN ``[T, B, ...]`` readout (spikes, or graded membrane or
    current, ``graph.readout``); ANN the output (logits). Runs with the model's current mode
    and autograd setting (training uses it too), from zero neuron states."""
    if graph.kind == "ann":
        return _first(graph.model(x))
    node = graph.nodes[graph.output]
    reset_states(graph.model)
    steps = window_steps(graph, x, time_steps)
    if node.module is None:
        return _run_returns(graph, x, steps)
    rec: list[torch.Tensor] = []
    read = _reader(graph)
    h = node.module.register_forward_hook(lambda m, _inp, out: rec.append(read(m, out)))
    try:
        _calls(graph, x, steps)
    finally:
        h.remove()
    return torch.stack(rec)


def _run_returns(graph: ModelGraph, x: torch.Tensor, steps: int) -> torch.Tensor:
    """The output is a function of a module's output (``return spk * 2``): there is no module
    to hook, so the readout is what the forward returns, call by call, or an own loop's stacked
    records ``[T, B, ...]``."""
    outs = [_first(o) for o in _calls(graph, x, steps)]
    if graph.steps_per_call == 1:
        return torch.stack(outs)
    out = outs[0]
    if not isinstance(out, torch.Tensor) or out.dim() < 2 or out.shape[0] != steps:
        raise UnsupportedModelError(
            f"the output '{graph.nodes[graph.output].name}' is computed by a function, not a "
            f"module, and the forward returns no records [T={steps}, B, ...]; return the output "
            "neuron's stacked spikes")
    return out


@torch.no_grad()
def outputs(graph: ModelGraph, x: torch.Tensor, time_steps: int | None, batch_size: int = 512,
            dtype: torch.dtype | None = None, multistep: bool = True) -> torch.Tensor:
    """Evaluation-mode output over ``x`` in batches (cut along the batch axis): SNN
    ``[T, N, ...]`` readout, ANN logits. ``dtype=torch.float64`` runs a float64 copy of the
    input (the model must be float64 too). SNNs run on the multi-step executor when it can take
    the graph (identical outputs, faster); ``multistep=False`` keeps the step loop (counting
    hooks need one call per step)."""
    model: nn.Module = graph.model
    was = model.training
    model.eval()
    runner = None
    if multistep and graph.kind == "snn" and MultiStep.supports(graph):
        runner = MultiStep(graph, checked=True).run
    try:
        parts = []
        for s in range(0, batch_len(x, graph.time_axis), batch_size):
            xb = batch_slice(x, graph.time_axis, s, s + batch_size)
            xb = xb.to(dtype) if dtype else xb
            parts.append(runner(xb, time_steps) if runner else run_window(graph, xb, time_steps))
        return torch.cat(parts, dim=1 if graph.kind == "snn" else 0)
    finally:
        model.train(was)
        reset_states(model)


__all__ = ["run_window", "outputs"]
