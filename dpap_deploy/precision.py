"""Mixed precision for training (``--precision``): autocast around the forward pass and the
loss; DPAP reads its traces in float32 and keeps its accumulators in float64 whatever the
precision. ``fp16`` needs CUDA and a ``GradScaler`` (its range is too small for unscaled
gradients); ``bf16`` has float32's range and runs on CUDA and on CPU; ``fp32`` is the default.
Evaluation runs in float32.
"""
from __future__ import annotations

import contextlib

import torch

from .errors import ConfigError

DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def check(precision: str, device: torch.device) -> None:
    if precision not in DTYPES:
        raise ConfigError(f"invalid precision {precision!r}: use {', '.join(DTYPES)}")
    if precision == "fp16" and device.type != "cuda":
        raise ConfigError(f"--precision fp16 needs --device cuda (the device is {device.type}); "
                          "on CPU use bf16 or fp32")


def autocast(precision: str, device: torch.device):
    """The context the training forward pass runs in."""
    dtype = DTYPES[precision]
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def grad_scaler(precision: str, device: torch.device):
    """A ``GradScaler`` for fp16, else None."""
    return torch.amp.GradScaler(device.type) if precision == "fp16" else None
