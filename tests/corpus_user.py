"""What a user brings besides the model: the loop that runs it (``run(model, x)``, returning what
the user's forward returns), the loss, and :class:`UserStyle`, which ties them to a model and a
data layout. The loops and losses are snnTorch's tutorials' own (named where they come from)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F
from snntorch import functional as SF
from snntorch import utils
from torch import nn

num_steps = 6              # the tutorials' global of that name (25 there; small here)


def forward_pass(net, data):
    """Tutorials 6-7's ``forward_pass``: ``utils.reset(net)``, one call per step."""
    spk_rec, mem_rec = [], []
    utils.reset(net)
    for step in range(num_steps):
        spk_out, mem_out = net(data)
        spk_rec.append(spk_out)
        mem_rec.append(mem_out)
    return torch.stack(spk_rec), torch.stack(mem_rec)


def forward_pass_time_first(net, data):
    """Tutorial 7 / the quickstart: ``data`` is ``[T, B, ...]``, ``net(data[step])``."""
    spk_rec = []
    utils.reset(net)
    for step in range(data.size(0)):
        spk_out, mem_out = net(data[step])
        spk_rec.append(spk_out)
    return torch.stack(spk_rec)


def flat_call(net, data):
    """Tutorial 5's ``net(data.view(batch_size, -1))``."""
    return net(data.view(data.size(0), -1))


def call(net, data):
    return net(data)


def ce_mem_loss(out, y):
    """Tutorial 5: cross entropy of the output membrane, summed over the steps."""
    _, mem_rec = out
    return sum(F.cross_entropy(mem_rec[step], y) for step in range(mem_rec.size(0)))


_ce_rate = SF.ce_rate_loss()
_mse_count = SF.mse_count_loss(correct_rate=0.8, incorrect_rate=0.2)


def ce_rate_loss(out, y):
    """Tutorial 6: ``SF.ce_rate_loss()`` on the output spikes."""
    return _ce_rate(out[0] if isinstance(out, tuple) else out, y)


def mse_count_loss(out, y):
    """Tutorial 7: ``SF.mse_count_loss(correct_rate=0.8, incorrect_rate=0.2)``."""
    return _mse_count(out[0] if isinstance(out, tuple) else out, y)


def logits_loss(out, y):
    return F.cross_entropy(out, y)


def last_mem_loss(out, y):
    return F.cross_entropy(out[-1], y)


@dataclass
class UserStyle:
    """One user's model and habits. ``layout``: ``static`` (an image per sample, the model or
    the loop repeats it), ``time-first`` (``[T, B, ...]``), ``batch-first`` (``[B, T, ...]``);
    ``encode``: ``rate`` (``spikegen.rate``) or ``polarity`` (two event channels)."""
    name: str
    source: str
    build: Callable[[], nn.Module]
    run: Callable
    loss: Callable
    layout: str = "static"
    encode: str = "rate"
    features: bool = False          # the sample is 64 features, not a 1x8x8 image
    prepare: Callable | None = None  # the user's own shaping of the [N, ...] samples
    lr: float = 5e-3                 # the user's Adam learning rate
    expect: dict = field(default_factory=dict)
