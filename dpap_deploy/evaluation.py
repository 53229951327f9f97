"""Running a network on inputs: its output over a window, accuracy, output activity.

SNN: direct encoding over ``time_steps`` steps, output = firing rate, prediction = most spikes;
ANN: logits. A sample whose output scores tie (a silent output layer included) counts as wrong
(:mod:`.metrics`). Shared by training, compaction, counting and the exporters' references.
"""
from __future__ import annotations

import torch
from torch import nn

from .errors import ConfigError
from .executor.run import run_window
from .graph import graph_of
from .graph.time_axis import batch_slice
from .metrics import correct as n_correct, output_activity, predictions


def model_output(model: nn.Module, x: torch.Tensor, kind: str, time_steps: int,
                 executor=None, observer=None, time_axis: int | None = None,
                 graph=None) -> torch.Tensor:
    """SNN: firing rate ``[B, classes]`` over ``time_steps`` (over the frames of an input with a
    ``time_axis``: 1 ``[B, T, ...]``, 0 ``[T, B, ...]``); ANN: logits. With a multi-step
    ``executor`` (``dpap_deploy.executor.MultiStep``) the window runs layer by layer, and DPAP
    (``observer``) takes its traces from the executor instead of its hooks; else the step loop
    runs on ``graph`` (the model's ``ModelGraph``; traced here when ``None``)."""
    if kind == "snn":
        if executor is not None:
            if observer is not None and hasattr(observer, "windows"):
                with observer.windows():
                    return executor.run(x, time_steps, observer).mean(0)
            return executor.run(x, time_steps).mean(0)
        return run_window(graph_of(graph or model, x, time_axis=time_axis), x, time_steps).mean(0)
    if x.dim() == 5:
        raise ConfigError("event frames [N, T, C, H, W] need a spiking model (an snn-* model)")
    return model(x)


@torch.no_grad()
def evaluate_outputs(model: nn.Module, x: torch.Tensor, y: torch.Tensor, kind: str,
                     time_steps: int, device: torch.device,
                     batch_size: int = 512, executor=None,
                     time_axis: int | None = None) -> tuple[float, dict]:
    """Accuracy (ties and silence wrong) and the output activity (:func:`output_activity`;
    for an ANN only ``tie_fraction`` means something). ``time_axis``: the input's, as for
    ``build_graph``; batches are cut along the batch axis (``batch_slice``), never time."""
    was = model.training
    model.eval()
    outs, graph = [], None
    for i in range(0, len(y), batch_size):
        xb = batch_slice(x, time_axis, i, i + batch_size).to(device)
        if kind == "snn" and executor is None and graph is None:
            graph = graph_of(model, xb, time_axis=time_axis)     # traced once, not per batch
        outs.append(model_output(model, xb, kind, time_steps, executor, time_axis=time_axis,
                                 graph=graph).cpu())
    model.train(was)
    out = torch.cat(outs) if outs else torch.zeros(0, 1)
    return n_correct(predictions(out), y) / max(len(y), 1), output_activity(out)


def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, kind: str, time_steps: int,
             device: torch.device, batch_size: int = 512, time_axis: int | None = None) -> float:
    """Test accuracy; a sample whose outputs tie (e.g. all silent) counts as wrong."""
    return evaluate_outputs(model, x, y, kind, time_steps, device, batch_size,
                            time_axis=time_axis)[0]
