"""Running a traced model over an input window, whatever its style: the package's one time loop.

- One call = one time step (``steps_per_call == 1``): the model is called ``T`` times (static
  input repeated, or frame ``t`` of an input with a time axis at step ``t``).
- The model runs its own time loop: it is called once.
Either way the result is read from the graph's output node with a forward hook, so the model's
return value (spikes, ``(spk, mem)``, stacked records...) does not matter. What is read is the
graph's readout (``ModelGraph.readout``) at every step ``t``: the output neuron's spikes
``s[t]``, its membrane ``U[t]``, or the output synapse's current ``I[t] = W s[t] + b``.
Batches are cut along the batch axis (``graph/time_axis.py``), never along time.
"""
from __future__ import annotations

import torch
from torch import nn

from .model_graph import ModelGraph
from .state import neuron_membrane, reset_states
from .time_axis import batch_len, batch_slice, frame


def _has_frames(graph: ModelGraph, x: torch.Tensor) -> bool:
    """``x`` holds one frame per step (along ``graph.time_axis``; batch first when the graph
    has none) for a model taking one step per call; a static input has one axis less."""
    return graph.steps_per_call == 1 and x.dim() == len(graph.input_shape) + 2


def window_steps(graph: ModelGraph, x: torch.Tensor, time_steps: int | None) -> int:
    """Steps in one window: the model's own loop, the input's frames, or ``time_steps`` (the
    run's T: required for a static input, which has no length of its own)."""
    if graph.steps_per_call > 1:
        return graph.steps_per_call
    if _has_frames(graph, x):
        return int(x.shape[0 if graph.time_axis == 0 else 1])
    if not isinstance(time_steps, int) or isinstance(time_steps, bool) or time_steps < 1:
        from ..errors import ConfigError
        raise ConfigError(f"a static input runs over time_steps steps, got {time_steps!r}; "
                          "pass time_steps=<the T the network runs with>")
    return time_steps


def _reader(graph: ModelGraph):
    """A function of (module, output) giving the readout of one call of the output node."""
    node = graph.nodes[graph.output]
    adapter = node.adapter
    if adapter is None:
        return lambda _m, out: out[0] if isinstance(out, tuple) else out
    if graph.readout == "membrane":
        return lambda m, out: neuron_membrane(adapter, m, out)
    return lambda _m, out: adapter.spikes(out)


def run_window(graph: ModelGraph, x: torch.Tensor, time_steps: int | None) -> torch.Tensor:
    """Output of one input window: SNN ``[T, B, ...]`` readout (spikes, or graded membrane or
    current, ``graph.readout``); ANN the output (logits). Runs with the model's current mode
    and autograd setting (training uses it too)."""
    model = graph.model
    if graph.kind == "ann":
        out = model(x)
        return out[0] if isinstance(out, tuple) else out
    node = graph.nodes[graph.output]
    rec: list[torch.Tensor] = []
    if node.module is None:
        return _run_returns(graph, x, time_steps)
    read = _reader(graph)

    def hook(m, _inp, out):
        rec.append(read(m, out))

    h = node.module.register_forward_hook(hook)
    try:
        reset_states(model)
        steps = window_steps(graph, x, time_steps)
        if graph.steps_per_call > 1:
            model(x)
        elif _has_frames(graph, x):
            for t in range(steps):
                model(frame(x, graph.time_axis, t))
        else:
            for _ in range(steps):
                model(x)
    finally:
        h.remove()
    return torch.stack(rec)


def _run_returns(graph: ModelGraph, x: torch.Tensor, time_steps: int | None) -> torch.Tensor:
    """The output is a function of a module's output (``return spk * 2``): there is no module
    to hook, so the readout is what the forward returns, call by call, or an own loop's stacked
    records ``[T, B, ...]``."""
    model, node = graph.model, graph.nodes[graph.output]
    reset_states(model)
    steps = window_steps(graph, x, time_steps)

    def first(out):
        return out[0] if isinstance(out, tuple) else out
    if graph.steps_per_call > 1:
        out = first(model(x))
        if not isinstance(out, torch.Tensor) or out.dim() < 2 or out.shape[0] != steps:
            from ..errors import UnsupportedModelError
            raise UnsupportedModelError(
                f"the output '{node.name}' is computed by a function, not a module, and the "
                f"forward returns no records [T={steps}, B, ...]; return the output neuron's "
                "stacked spikes")
        return out
    if _has_frames(graph, x):
        return torch.stack([first(model(frame(x, graph.time_axis, t))) for t in range(steps)])
    return torch.stack([first(model(x)) for _ in range(steps)])


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
    if multistep and graph.kind == "snn":
        from ..executor import MultiStep
        if MultiStep.supports(graph):
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
