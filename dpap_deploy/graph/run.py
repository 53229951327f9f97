"""Running a traced model over an input window, whatever its style.

- One call = one time step (``steps_per_call == 1``): the model is called ``T`` times (static
  input repeated, or event frame ``t`` at step ``t``).
- The model runs its own time loop: it is called once.
Either way the result is read from the graph's output node with a forward hook, so the model's
return value (spikes, ``(spk, mem)``, stacked records...) does not matter.
"""
from __future__ import annotations

import torch
from torch import nn

from .model_graph import ModelGraph
from .state import reset_states


def _frame(x: torch.Tensor, t: int, graph: ModelGraph) -> torch.Tensor:
    return x[:, t] if x.dim() == len(graph.input_shape) + 2 and graph.steps_per_call == 1 else x


def window_steps(graph: ModelGraph, x: torch.Tensor, time_steps: int | None) -> int:
    """Steps in one window: the model's own loop, the event frames, or ``time_steps`` (the
    run's T: required for a static input, which has no length of its own)."""
    if graph.steps_per_call > 1:
        return graph.steps_per_call
    if x.dim() == len(graph.input_shape) + 2:
        return int(x.shape[1])
    if not isinstance(time_steps, int) or isinstance(time_steps, bool) or time_steps < 1:
        from ..errors import ConfigError
        raise ConfigError(f"a static input runs over time_steps steps, got {time_steps!r}; "
                          "pass the T the network runs with (the run's --time-steps)")
    return time_steps


def run_window(graph: ModelGraph, x: torch.Tensor, time_steps: int) -> torch.Tensor:
    """Output of one input window: SNN ``[T, B, ...]`` output spikes; ANN the output (logits).
    Runs with the model's current mode and autograd setting (training uses it too)."""
    model = graph.model
    if graph.kind == "ann":
        out = model(x)
        return out[0] if isinstance(out, tuple) else out
    node = graph.nodes[graph.output]
    rec: list[torch.Tensor] = []
    if node.module is None:
        raise RuntimeError(f"the output '{node.name}' of the model is not a module")
    adapter = node.adapter

    def hook(_m, _inp, out):
        rec.append(adapter.spikes(out) if adapter is not None else
                   (out[0] if isinstance(out, tuple) else out))

    h = node.module.register_forward_hook(hook)
    try:
        reset_states(model)
        steps = window_steps(graph, x, time_steps)
        if graph.steps_per_call > 1:
            model(x)
        else:
            for t in range(steps):
                model(_frame(x, t, graph))
    finally:
        h.remove()
    return torch.stack(rec)


@torch.no_grad()
def outputs(graph: ModelGraph, x: torch.Tensor, time_steps: int, batch_size: int = 512,
            dtype: torch.dtype | None = None, multistep: bool = True) -> torch.Tensor:
    """Evaluation-mode output over ``x`` in batches: SNN ``[T, N, ...]`` spikes, ANN logits.
    ``dtype=torch.float64`` runs a float64 copy of the input (the model must be float64 too).
    SNNs run on the multi-step executor when it can take the graph (identical spikes, faster);
    ``multistep=False`` keeps the step loop (counting hooks need one call per step)."""
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
        for s in range(0, len(x), batch_size):
            xb = x[s:s + batch_size]
            xb = xb.to(dtype) if dtype else xb
            parts.append(runner(xb, time_steps) if runner else run_window(graph, xb, time_steps))
        return torch.cat(parts, dim=1 if graph.kind == "snn" else 0)
    finally:
        model.train(was)
        reset_states(model)
