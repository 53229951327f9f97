"""Masks, a short fine-tuning and accuracy, for ``make_deployable`` (``convert.py``).

The DPAP masks live on the synapses: ``{layer: (synapses [C_out, C_in], neurons [C_out])}``
(``dpap_deploy.masks``). Fine-tuning keeps them as DPAP's own training step does: after every
optimizer step the masked parameters (weights, biases and BatchNorm affine parameters of
removed neurons, a recurrent weight's rows and columns) are multiplied by their masks, so a
pruned weight is exactly zero after each step, and no pruning decision is taken.

Loss and prediction are the package's (``training/loop.py``): over the window's output spikes
``S[t]`` (``T`` steps), rate ``r = (1/T) sum_t S[t]``, loss ``sum_c (onehot_c - r_c)^2``
averaged over the batch (Eq 3); prediction = the class with most spikes, a tie is wrong.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
from torch import nn

from . import masks as mk
from .errors import ConfigError
from .executor.run import outputs, run_window
from .graph import ModelGraph
from .graph.state import reset_states
from .graph.time_axis import batch_axis, batch_len, batch_slice


def resolve_masks(dpap, graph: ModelGraph) -> dict:
    """Masks keyed by layer name from a ``DPAP`` object, its ``state_dict()``, a mask table, or
    ``None`` (read from the weights: a kernel that is all zeros is pruned)."""
    if dpap is None:
        return mk.from_weights(graph.layers)
    if hasattr(dpap, "state_dict") and hasattr(dpap, "layers"):
        return mk.from_dpap_state(dpap.state_dict())
    if isinstance(dpap, Mapping) and "layers" in dpap:
        return mk.from_dpap_state(dpap)
    if isinstance(dpap, Mapping):
        return dict(dpap)
    raise ConfigError(f"dpap must be a DPAP object, its state_dict(), a mask table "
                      f"{{layer: (synapses, neurons)}} or None, got {type(dpap).__name__}")


def batches(data, batch_size: int, what: str,
            time_axis: int | None = None) -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
    """``(x, y)`` batches of ``data``: a pair of tensors, cut along the batch axis of ``x``
    (``time_axis=0``: ``x`` is ``[T, N, ...]``, cut as ``x[:, i:j]``; else ``x[i:j]``), or an
    iterable of ``(x, y)`` batches, taken as they are."""
    if isinstance(data, (tuple, list)) and len(data) == 2 and all(
            isinstance(t, torch.Tensor) for t in data):
        x, y = data
        n = batch_len(x, time_axis) if x.dim() > batch_axis(time_axis) else 0
        if n != len(y) or n == 0:
            raise ConfigError(f"{what}: inputs and labels differ in length ({n} samples along "
                              f"the batch axis {batch_axis(time_axis)} of x, {len(y)} labels) or "
                              f"are empty; pass (x, y) with one label per sample")
        return [(batch_slice(x, time_axis, i, i + batch_size), y[i:i + batch_size])
                for i in range(0, n, batch_size)]
    if isinstance(data, Iterable) and not isinstance(data, (str, bytes)):
        return data
    raise ConfigError(f"{what} must be (x, y) tensors or an iterable of (x, y) batches (a "
                      f"DataLoader), got {type(data).__name__}")


def loss_of(spikes: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Eq 3 over the window's output spikes ``[T, B, C]`` (module docstring)."""
    from .training.loop import loss_fn
    rate = spikes.reshape(spikes.shape[0], spikes.shape[1], -1).float().mean(0)
    return loss_fn(rate, y, "snn")


def fine_tune(graph: ModelGraph, masks: dict, data, epochs: int, lr: float, time_steps: int,
              batch_size: int) -> list[float]:
    """Adam for ``epochs`` over ``data`` with the masks re-applied after every step; returns
    the mean loss of each epoch."""
    model: nn.Module = graph.model
    pairs = mk.param_pairs(graph, masks)
    mk.apply_masks(pairs)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=lr)
    losses = []
    model.train()
    for _ in range(epochs):
        total, n = 0.0, 0
        for x, y in batches(data, batch_size, "train_data", graph.time_axis):
            loss = loss_of(run_window(graph, x, time_steps), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            mk.apply_masks(pairs)
            total, n = total + float(loss.detach()) * len(y), n + len(y)
        losses.append(total / max(n, 1))
    model.eval()
    reset_states(model)
    return losses


@torch.no_grad()
def accuracy(graph: ModelGraph, data, time_steps: int, batch_size: int = 256) -> float:
    """Accuracy over ``data`` (prediction: most output spikes; a tie is wrong)."""
    from .metrics import correct, predictions
    hit, n = 0, 0
    for x, y in batches(data, batch_size, "test_data", graph.time_axis):
        spikes = outputs(graph, x, time_steps, batch_size=batch_size)
        hit += correct(predictions(spikes.reshape(spikes.shape[0], len(y), -1).sum(0)), y)
        n += len(y)
    return hit / n if n else 0.0
