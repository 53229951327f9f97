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

Inputs with a time axis (``time_axis=0``: ``[T, B, ...]``, snnTorch's ``spikegen`` layout;
``1``: ``[B, T, ...]``; stated, or inferred once from the user's forward) keep it throughout:
every graph, check and export is traced with it, and every batch, calibration set and parity
set is cut along the batch axis (``graph.batch_slice``), never along time. The user's model is
left as it was (neuron states and training mode put back); the returned model is entered in
snnTorch's neuron registry (``graph.register_copies``), so ``snntorch.utils.reset(res.model)``
clears it between the user's windows.

The CLI route (``make-deployable RUN --target T --out DIR``) is ``convert_run.py`` (run
folders in and out).
"""
from __future__ import annotations

import copy
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from . import masks as mk
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
                why = f" ({p['failure']})" if not p["passed"] and p.get("failure") else ""
                lines.append(f"{target}: {'passed' if p['passed'] else 'FAILED'}{why}, identical "
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


def _first_samples(data, n: int, what: str = "test_data",
                   time_axis: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``n`` samples of ``data``, cut and joined along the batch axis of its inputs
    (``time_axis=0``: ``[T, N, ...]``, samples along axis 1; else along axis 0)."""
    from .convert_tune import batches
    from .graph.time_axis import batch_axis, batch_slice
    xs, ys, got = [], [], 0
    for x, y in batches(data, n, what, time_axis):
        xs.append(x), ys.append(y)
        got += len(y)
        if got >= n:
            break
    return batch_slice(torch.cat(xs, dim=batch_axis(time_axis)), time_axis, 0, n), \
        torch.cat(ys)[:n]


def _neuron_states(model: nn.Module) -> list[tuple[nn.Module, bool, dict, dict]]:
    """What running a model changes, per module: its training flag, its buffers (snnTorch keeps
    ``mem`` as a buffer) and its plain tensor attributes (``syn``, ``spk``, ...), each by
    reference, to be put back as they were (:func:`_restore`; running the model rebinds
    these names to new tensors, so the saved ones are untouched)."""
    return [(m, m.training, dict(m._buffers),
             {k: v for k, v in vars(m).items() if isinstance(v, torch.Tensor)})
            for m in model.modules()]


def _restore(saved: list[tuple[nn.Module, bool, dict, dict]]) -> None:
    for m, training, buffers, tensors in saved:
        m.training = training
        m._buffers.clear()
        m._buffers.update(buffers)
        for k, v in tensors.items():
            object.__setattr__(m, k, v)


def make_deployable(model: nn.Module, example_input: torch.Tensor, train_data, *,
                    targets=("loihi-sim",), dpap=None, epochs: int = 1, lr: float = 1e-3,
                    time_steps: int | None = None, time_axis: int | None = None,
                    test_data=None, batch_size: int = 64, max_samples: int = MAX_SAMPLES,
                    out: str | Path | None = None, log=None,
                    check_converted: Callable[[nn.Module], None] | None = None) -> Conversion:
    """Convert ``model`` for ``targets``, fine-tune, measure, export (module docstring).

    ``train_data`` / ``test_data``: ``(x, y)`` tensors or an iterable of ``(x, y)`` batches;
    ``dpap``: the ``DPAP`` object, its ``state_dict()`` or a mask table (``None``: the pruned
    synapses are the all-zero kernels); ``time_steps``: the ``T`` a one-call-per-step model
    runs (a model with its own time loop has its own); ``time_axis``: where the inputs hold
    their time steps, as for ``build_graph`` (``0``: ``[T, B, ...]``, snnTorch's ``spikegen``
    layout; ``1``: ``[B, T, ...]``; ``None``: no time axis, or inferred from the forward):
    every graph, check, export and batch of the data is cut along the batch axis, never along
    time; ``max_samples``: test samples of each target's parity check; ``out``: where the
    exports are written (``None``: a temporary folder, removed); ``log``: a callable taking a
    progress line; ``check_converted``: called with the converted model before the
    fine-tuning (what it raises stops the conversion there).

    The user's ``model`` is left as it was: its neuron states and training mode are put back
    after every run of it. The returned model is entered in snnTorch's neuron registry, so
    ``snntorch.utils.reset(res.model)`` clears its states."""
    saved = _neuron_states(model)
    try:
        return _make_deployable(model, example_input, train_data, targets, dpap, epochs, lr,
                                time_steps, time_axis, test_data, batch_size, max_samples, out,
                                log, check_converted)
    finally:
        _restore(saved)


def _make_deployable(model, example_input, train_data, targets, dpap, epochs, lr, time_steps,
                     time_axis, test_data, batch_size, max_samples, out, log,
                     check_converted) -> Conversion:
    from .compaction.surgery import strip_hooks
    from .convert_calibrate import calibrate
    from .convert_check import export_parity
    from .convert_plan import convert
    from .convert_tune import accuracy, fine_tune, resolve_masks
    from .graph import build_graph, register_copies, window_steps
    from .graph.state import reset_states
    say = log or (lambda line: None)
    targets = _check_options(targets, epochs, lr, max_samples)
    graph0 = build_graph(model, example_input, time_axis=time_axis)
    axis = graph0.time_axis                      # stated, or inferred once here
    if graph0.kind != "snn":
        raise UnsupportedModelError("make_deployable converts spiking networks (snnTorch "
                                    "neurons); an ANN exports to onnx as it is")
    T = window_steps(graph0, example_input, time_steps)
    masks0 = resolve_masks(dpap, graph0)
    res_before = accuracy(graph0, test_data, T) if test_data is not None else None
    reset_states(model)        # a state holding an autograd graph cannot be deep-copied
    work = copy.deepcopy(model)
    strip_hooks(work)
    plan = convert(work, graph0, example_input, targets, T, say)
    graph = plan.graph()
    masks = {plan.prefix + k: v for k, v in masks0.items()}
    mk.apply_masks(mk.param_pairs(graph, masks))
    x_cal, _ = _first_samples(train_data, CALIBRATION_SAMPLES, "train_data", axis)
    changes = plan.changes + list(calibrate(graph0, graph, plan.prefix, x_cal, T).values())
    result = Conversion(plan.model, changes, masks, T, accuracy_before=res_before)
    if check_converted is not None:
        check_converted(plan.model)
    if test_data is not None:
        result.accuracy_converted = accuracy(graph, test_data, T)
    if epochs:
        say(f"fine-tuning for {epochs} epoch(s), masks kept")
        result.losses = fine_tune(graph, masks, train_data, epochs, lr, T, batch_size)
    if test_data is not None:
        result.accuracy_after = accuracy(graph, test_data, T)
    result.remaining = {t: b for t, b in plan.final_blockers(graph).items() if b}
    x, y = _first_samples(test_data if test_data is not None else train_data, max_samples,
                          time_axis=axis)
    say(f"exporting to {', '.join(targets)} on {len(y)} samples")
    with tempfile.TemporaryDirectory() if out is None else _nullcontext(out) as folder:
        result.parity = export_parity(plan.model, example_input, masks, x, y, targets, T,
                                      Path(folder), time_axis=axis)
    plan.model.eval()
    register_copies(plan.model)       # deep copies: snnTorch's reset() must find them
    return result


class _nullcontext:
    def __init__(self, value) -> None:
        self.value = value

    def __enter__(self):
        return self.value

    def __exit__(self, *exc):
        return False


__all__ = ["Conversion", "make_deployable"]
