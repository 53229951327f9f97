"""``make_deployable``: a conversion where no exact deployable form exists.

    res = make_deployable(model, x[:2], (x_train, y_train), targets=("loihi-sim",),
                          dpap=dpap, epochs=1, time_steps=8, test_data=(x_test, y_test))
    res.model, res.changes, res.accuracy_before, res.accuracy_after, res.parity

Every operation the asked targets cannot hold exactly is replaced by its nearest deployable
form, on a copy of the model (the user's model is not modified):

- max pooling over currents (``nn.MaxPool1d/2d`` or ``F.max_pool1d/2d`` in the user's
  ``forward``; no target has an exact form) -> average pooling, same window
  (``convert_pools.py``); max pooling over spikes only where a target refuses it;
- a neuron a target refuses (snnTorch's subtract reset where the target resets to zero,
  ``Synaptic`` zero reset with ``reset_delay=True``, ``Alpha``, ``Lapicque``) -> the nearest
  neuron the targets accept, parameters carried over (``convert_neurons.py``);
- the threshold of a neuron behind a replaced max pooling over currents is divided by the
  ratio of its input current under max and under average pooling (``convert_calibrate.py``).

What a target refuses is asked from the deployability check, else the target's own
``blockers``, else a dry build (``convert_check.py``); the conversion repeats until no blocker
names an operation it can replace. Then the converted model is fine-tuned for ``epochs`` with
the DPAP masks kept (pruned weights stay exactly zero, ``convert_tune.py``), its accuracy is
measured before and after, and it is compacted and exported to each target on a few test
samples, run in the target's consumer: ``parity`` says whether the spike trains are identical.

The CLI route (``make-deployable RUN --target T --out DIR``) is :func:`add_cli` /
:func:`cmd_make_deployable` (``convert_run.py`` does the run folders).
"""
from __future__ import annotations

import copy
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from .errors import ConfigError, UnsupportedModelError

MAX_SAMPLES = 32          # test samples each target's parity check runs
CALIBRATION_SAMPLES = 256  # training inputs the thresholds behind replaced max pools are set on


@dataclass
class Conversion:
    """What ``make_deployable`` did and measured."""

    model: nn.Module                        # converted, fine-tuned, masks applied (eval mode)
    changes: list[str]                      # one line per replaced operation
    masks: dict                             # the DPAP masks, keyed by the model's layer names
    time_steps: int
    accuracy_before: float | None = None    # the model as given (test_data)
    accuracy_converted: float | None = None  # converted, before fine-tuning
    accuracy_after: float | None = None     # converted and fine-tuned
    losses: list[float] = field(default_factory=list)        # fine-tuning loss per epoch
    parity: dict[str, dict] = field(default_factory=dict)    # target -> parity table
    remaining: dict[str, list[str]] = field(default_factory=dict)  # blockers left, per target

    @property
    def passed(self) -> bool:
        return bool(self.parity) and all(p.get("passed") for p in self.parity.values())

    def summary(self) -> list[str]:
        """The changes, the accuracies and each target's parity, one line each."""
        def pct(a):
            return "n/a" if a is None else f"{a:.2%}"
        lines = [f"changed: {c}" for c in self.changes] or ["changed: nothing (every operation "
                                                             "already has an exact form)"]
        lines.append(f"accuracy: {pct(self.accuracy_before)} before, "
                     f"{pct(self.accuracy_converted)} converted, {pct(self.accuracy_after)} "
                     f"after {len(self.losses)} epoch(s) of fine-tuning")
        for target, p in self.parity.items():
            if "refused" in p:
                lines.append(f"{target}: refused: {p['refused']}")
            else:
                lines.append(f"{target}: {'passed' if p['passed'] else 'FAILED'}, identical "
                             f"spike trains on {p['identical_spike_trains']:.2%} of "
                             f"{p['n_samples']} samples, agreement {p['agreement']:.2%}")
        for target, lines_left in self.remaining.items():
            lines += [f"{target} still refuses: {b}" for b in lines_left]
        return lines


def _check_options(targets, epochs, lr, max_samples) -> list[str]:
    from .exporters import TARGETS
    targets = [targets] if isinstance(targets, str) else list(targets or ())
    bad = [t for t in targets if t not in TARGETS or t == "onnx"]
    if not targets or bad:
        raise ConfigError(f"make_deployable targets {bad or targets!r}: choose among "
                          f"{', '.join(t for t in TARGETS if t != 'onnx')} (spiking targets)")
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 0:
        raise ConfigError(f"epochs={epochs!r}: give the fine-tuning epochs, an integer >= 0")
    if not (isinstance(lr, (int, float)) and 0 < lr < 10):
        raise ConfigError(f"lr={lr!r}: give a learning rate in (0, 10)")
    if isinstance(max_samples, bool) or not isinstance(max_samples, int) or max_samples < 1:
        raise ConfigError(f"max_samples={max_samples!r}: give the parity samples, an integer >= 1")
    return targets


def _first_samples(data, n: int, what: str = "test_data") -> tuple[torch.Tensor, torch.Tensor]:
    from .convert_tune import batches
    xs, ys, got = [], [], 0
    for x, y in batches(data, n, what):
        xs.append(x), ys.append(y)
        got += len(y)
        if got >= n:
            break
    return torch.cat(xs)[:n], torch.cat(ys)[:n]


def make_deployable(model: nn.Module, example_input: torch.Tensor, train_data, *,
                    targets=("loihi-sim",), dpap=None, epochs: int = 1, lr: float = 1e-3,
                    time_steps: int | None = None, test_data=None, batch_size: int = 64,
                    max_samples: int = MAX_SAMPLES, out: str | Path | None = None,
                    log=None) -> Conversion:
    """Convert ``model`` for ``targets``, fine-tune, measure, export (module docstring).

    ``train_data`` / ``test_data``: ``(x, y)`` tensors or an iterable of ``(x, y)`` batches;
    ``dpap``: the ``DPAP`` object, its ``state_dict()`` or a mask table (``None``: the pruned
    synapses are the all-zero kernels); ``time_steps``: the ``T`` a one-call-per-step model
    runs (a model with its own time loop has its own); ``max_samples``: test samples of each
    target's parity check; ``out``: where the exports are written (``None``: a temporary
    folder, removed); ``log``: a callable taking a progress line."""
    from .compaction.surgery import strip_hooks
    from .convert_check import export_parity
    from .convert_plan import convert
    from .convert_tune import accuracy, fine_tune, resolve_masks
    from .graph import build_graph, window_steps
    from .graph.state import reset_states
    say = log or (lambda line: None)
    targets = _check_options(targets, epochs, lr, max_samples)
    graph0 = build_graph(model, example_input)
    if graph0.kind != "snn":
        raise UnsupportedModelError("make_deployable converts spiking networks (snnTorch "
                                    "neurons); an ANN exports to onnx as it is")
    T = window_steps(graph0, example_input, time_steps)
    masks0 = resolve_masks(dpap, graph0)
    res_before = accuracy(graph0, test_data, T) if test_data is not None else None
    reset_states(model)
    work = copy.deepcopy(model)
    strip_hooks(work)
    plan = convert(work, graph0, example_input, targets, T, say)
    graph = build_graph(plan.model, example_input)
    masks = {plan.prefix + k: v for k, v in masks0.items()}
    from .convert_calibrate import calibrate
    from .convert_tune import apply_mask_table
    apply_mask_table(graph, masks)
    x_cal, _ = _first_samples(train_data, CALIBRATION_SAMPLES, "train_data")
    changes = plan.changes + list(calibrate(graph0, graph, plan.prefix, x_cal, T).values())
    result = Conversion(plan.model, changes, masks, T, accuracy_before=res_before)
    if test_data is not None:
        result.accuracy_converted = accuracy(graph, test_data, T)
    if epochs:
        say(f"fine-tuning for {epochs} epoch(s), masks kept")
        result.losses = fine_tune(graph, masks, train_data, epochs, lr, T, batch_size)
    if test_data is not None:
        result.accuracy_after = accuracy(graph, test_data, T)
    result.remaining = {t: b for t, b in plan.final_blockers(graph).items() if b}
    x, y = _first_samples(test_data if test_data is not None else train_data, max_samples)
    say(f"exporting to {', '.join(targets)} on {len(y)} samples")
    with tempfile.TemporaryDirectory() if out is None else _nullcontext(out) as folder:
        result.parity = export_parity(plan.model, example_input, masks, x, y, targets, T,
                                      Path(folder))
    plan.model.eval()
    return result


class _nullcontext:
    def __init__(self, value) -> None:
        self.value = value

    def __enter__(self):
        return self.value

    def __exit__(self, *exc):
        return False


def add_cli(subparsers) -> None:
    """``make-deployable RUN --target T --out DIR [--epochs N]`` (``convert_run.py``)."""
    from .convert_run import add_parser
    add_parser(subparsers)


def cmd_make_deployable(args) -> int:
    """Run the ``make-deployable`` command; prints the changes and the accuracies; returns
    the exit status (0: every target's parity passed, 1: a parity failed)."""
    from .convert_run import run_command
    return run_command(args)


__all__ = ["Conversion", "make_deployable", "add_cli", "cmd_make_deployable"]
