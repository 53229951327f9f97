"""Memory a training run will need, estimated before anything is allocated.

Backpropagation through time keeps every layer's output of every step of a batch, so

    bytes ~ T x B x A x 4 bytes x K

with ``A`` the activation values of one sample in one step (the outputs of all leaf modules,
measured by hooks on one forward step of one sample), ``B`` the batch size (at most the training
set), ``T`` the time steps (1 for an ANN) and ``K = 3`` tensors saved per value for the backward
pass (the synaptic current, the membrane and the surrogate's input of a LIF layer; a ReLU
network keeps fewer, so the estimate errs on the safe side). Weights, gradients and Adam's two
moments add ``4 x 4`` bytes per parameter. A run whose estimate exceeds the available memory is
refused with the numbers and a way out, instead of growing until the system kills it.
"""
from __future__ import annotations

import torch
from torch import nn

from .validate import available_memory_bytes, check_memory

SAVED_PER_VALUE = 3
BYTES = 4


@torch.no_grad()
def activations_per_step(model: nn.Module, x1: torch.Tensor) -> int:
    """Output values of all leaf modules for one sample ``x1 [1, ...]`` and one step."""
    from .graph.state import reset_states
    total = 0

    def hook(_m, _inp, out):
        nonlocal total
        outs = out if isinstance(out, (tuple, list)) else (out,)
        total += sum(o.numel() for o in outs if isinstance(o, torch.Tensor))

    handles = [m.register_forward_hook(hook) for m in model.modules()
               if not list(m.children())]
    was = model.training
    try:
        model.eval()
        reset_states(model)
        model(x1[:, 0] if x1.dim() == 5 else x1)
    finally:
        for h in handles:
            h.remove()
        reset_states(model)
        model.train(was)
    return total


def training_bytes(model: nn.Module, x1: torch.Tensor, kind: str, time_steps: int,
                   batch: int) -> float:
    steps = time_steps if kind == "snn" else 1
    params = sum(p.numel() for p in model.parameters())
    act = activations_per_step(model, x1)
    return float(steps) * batch * act * BYTES * SAVED_PER_VALUE + 4 * BYTES * params


def available_bytes(device: torch.device) -> int | None:
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    return available_memory_bytes()


def check_training_memory(model: nn.Module, x1: torch.Tensor, kind: str, time_steps: int,
                          batch: int, device: torch.device) -> None:
    need = training_bytes(model, x1, kind, time_steps, batch)
    check_memory(need, available_bytes(device),
                 f"training with --time-steps {time_steps} and --batch-size {batch}",
                 "lower --time-steps or --batch-size")


LAVA_COPIES = 3   # the input schedule, Lava's copy of it in the source process, the sink buffer


def check_simulator_memory(n_samples: int, time_steps: int, in_values: int, out_values: int) -> None:
    """A Lava run holds its whole input schedule and output record in memory: ``n_samples x T``
    steps of ``in_values + out_values`` float64 values, about ``LAVA_COPIES`` times over."""
    need = float(n_samples) * time_steps * (in_values + out_values) * 8 * LAVA_COPIES
    check_memory(need, available_memory_bytes(),
                 f"the Lava run of {n_samples} samples x {time_steps} time steps",
                 "lower --max-samples")
