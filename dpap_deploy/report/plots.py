"""Figures of a run (matplotlib, files only): what people would rather look at than read.

- ``accuracy.png``: test accuracy per epoch, with the baseline run when there is one.
- ``params_per_layer.png``: parameters kept by the pruner in each layer per epoch (paper
  Fig. 4G), and each layer's parameters before pruning, after pruning and after compaction.
- ``survival.png``: the survival score of neurons and synapses in the epochs before they were
  pruned, aligned at the epoch of pruning (paper Fig. 4E-F: F_D and F_BCM).
- ``fc_map.png``: kept / pruned synapses and neurons of the first fully connected layer
  (paper Fig. 4A, C).

Figures are drawn on ``matplotlib.figure.Figure`` objects (no pyplot): nothing global, such as
the process's matplotlib backend, is touched. Each figure reads alone, without the paper:
plain titles, axis labels with units, legends that say what each mark is; layers are named
as people count them (``conv 2``, with the module's name: :func:`layer_labels`); runs of at
most ``MARKER_EPOCHS`` epochs draw a marker at every epoch (a 1-epoch run is a single point),
and panels with nothing to draw say so.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

from ..atomic import atomic_path

MARKER_EPOCHS = 20


def _marker(history: list[dict]) -> dict:
    """Plot keywords: a marker per epoch for short runs, plain lines for long ones."""
    return {"marker": "o", "markersize": 3} if len(history) <= MARKER_EPOCHS else {}


def _empty(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="grey")


def layer_labels(layers: list[tuple[str, str]]) -> dict[str, str]:
    """``(module name, kind)`` pairs in network order -> names people read: each kind counted
    from 1 (``conv 1``, ``linear 2``), the module's name after it (``conv 2 (module 3)``); a
    kind this does not know is written as given."""
    seen: dict[str, int] = {}
    out = {}
    for name, kind in layers:
        kind = kind or "layer"
        seen[kind] = seen.get(kind, 0) + 1
        out[name] = f"{kind} {seen[kind]} (module {name})"
    return out


def _log_room(ax, values) -> None:
    """Log-scale limits with room: half the smallest value below, 30x the largest above (the
    legend goes there, over no data)."""
    v = [float(x) for x in values if x is not None and x > 0]
    if v:
        ax.set_ylim(min(v) / 2, max(v) * 30)


def _labels(layers: list[tuple[str, str]], labels: dict[str, str] | None) -> dict[str, str]:
    return {**layer_labels(layers), **(labels or {})}

def save_figure(fig, path: Path) -> Path:
    """Lay out and write a figure atomically (creating the folder); returns the path."""
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format=Path(path).suffix.lstrip(".") or "png")
    return path


def _col(history: list[dict], key: str) -> np.ndarray:
    return np.array([float(h[key]) for h in history])


def plot_accuracy(history: list[dict], path: Path, baseline: list[dict] | None = None,
                  label: str = "DPAP") -> Path:
    fig = Figure(figsize=(6, 3.6))
    ax = fig.subplots()
    ax.plot(_col(history, "epoch"), 100 * _col(history, "test_acc"),
            label=f"{label} run: test accuracy",
            **_marker(history))
    if baseline:
        ax.plot(_col(baseline, "epoch"), 100 * _col(baseline, "test_acc"), "--",
                label="no pruning: test accuracy", **_marker(baseline))
    handles = ax.get_legend_handles_labels()
    if "params_removed_fraction" in history[0]:
        ax2 = ax.twinx()
        ax2.plot(_col(history, "epoch"), 100 * _col(history, "params_removed_fraction"),
                 color="grey", alpha=0.5, lw=1, label="parameters removed (right axis)",
                 **_marker(history))
        ax2.set_ylabel("parameters removed by pruning (%)", color="grey")
        ax2.set_ylim(0, 100)
        more = ax2.get_legend_handles_labels()
        handles = (handles[0] + more[0], handles[1] + more[1])
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("test accuracy (%)")
    ax.legend(*handles, loc="lower right", fontsize=8)
    ax.set_title("Test accuracy and parameters removed during training", fontsize=10)
    return save_figure(fig, path)


def plot_params_per_layer(history: list[dict], layers: list[tuple[str, str]], path: Path,
                          counts: dict[str, tuple] | None = None,
                          labels: dict[str, str] | None = None) -> Path:
    """Left: parameters the pruner keeps in each layer, per epoch (``history.csv``'s
    ``NAME:params_kept``). Right, with ``counts`` (``{name: (before pruning, after pruning,
    after compaction or None)}``): those three counts side by side per layer.
    ``layers``: ``(name, kind)`` pairs, e.g. ``("7", "linear")``."""
    labels = _labels(layers, labels)
    fig = Figure(figsize=(11 if counts else 6.5, 4))
    ax, bars = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1, 1]}) if counts else \
        (fig.subplots(), None)
    epochs = _col(history, "epoch")
    for name, _kind in layers:
        key = f"{name}:params_kept"
        if history and key in history[0]:
            ax.plot(epochs, _col(history, key), label=labels[name], **_marker(history))
    ax.set_yscale("log")
    _log_room(ax, [y for line in ax.lines for y in line.get_ydata()])
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("parameters kept (weights and biases, log scale)")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, title="layer", title_fontsize=8, loc="upper right", ncol=2)
    else:
        _empty(ax, "history.csv has no per-layer parameter columns")
    ax.set_title("Parameters kept by pruning, per epoch", fontsize=10)
    if bars is not None:
        _count_bars(bars, [(labels[n], counts[n]) for n, _ in layers if n in counts])
    return save_figure(fig, path)


COUNT_NAMES = ("before pruning", "after pruning (non-zero)",
               "after compaction (all, zeros in kept units too)")


def _count_bars(ax, rows: list[tuple[str, tuple]]) -> None:
    """Grouped bars: each layer's parameters before pruning, after pruning, after compaction
    (a count that is None, e.g. a run not compacted yet, draws no bar)."""
    width = 0.27
    for i, what in enumerate(COUNT_NAMES):
        xs = [j + (i - 1) * width for j, (_, c) in enumerate(rows) if c[i] is not None]
        ys = [c[i] for _, c in rows if c[i] is not None]
        if ys:
            ax.bar(xs, ys, width, label=what)
    ax.set_xticks(range(len(rows)), [r[0].replace(" (", "\n(") for r in rows], fontsize=8)
    ax.set_yscale("log")
    _log_room(ax, [v for _, c in rows for v in c])
    ax.set_ylabel("parameters (weights and biases, log scale)")
    ax.set_title("Parameters per layer: before, after pruning, after compaction", fontsize=10)
    if rows:
        ax.legend(fontsize=7, loc="upper right")
    else:
        _empty(ax, "report.json has no per-layer parameter counts")


def _mean_trajectory(trajs: list[np.ndarray]) -> np.ndarray:
    """Mean over units at each epoch offset; offsets no unit reaches stay NaN (not plotted)."""
    stack = np.array(trajs)
    counts = (~np.isnan(stack)).sum(0)
    return np.where(counts > 0, np.nansum(stack, 0) / np.maximum(counts, 1), np.nan)


def _before_death(hist: torch.Tensor, died: torch.Tensor, window: int) -> list[np.ndarray]:
    """Trajectories ``hist[e-window+1 .. e, unit]`` of units that died at epoch ``e``."""
    out = []
    for unit, e in enumerate(died.tolist()):
        if e < 0:
            continue
        lo = max(0, e - window + 1)
        traj = hist[lo:e + 1, unit].numpy()
        out.append(np.concatenate([np.full(window - len(traj), np.nan), traj]))
    return out


def _first_negative(hist: torch.Tensor) -> torch.Tensor:
    """Per column of ``[epochs, units]``: the first epoch whose score is below 0, else -1."""
    neg = hist < 0
    return torch.where(neg.any(0), neg.float().argmax(0),
                       torch.full_like(neg[0], -1, dtype=torch.long))


SURVIVAL_TITLES = ("Survival score of each neuron, until it was pruned",
                   "Survival score of sampled synapses, until they were pruned")


def plot_survival(dpap_state: dict, path: Path, window: int = 8,
                  labels: dict[str, str] | None = None) -> Path:
    """The mean survival score (DPAP's F_D for neurons, F_BCM for a fixed sample of synapses)
    of the units each layer lost, over the ``window`` epochs up to the one they were pruned in
    (a unit is pruned when its score falls below 0)."""
    labels = _labels([(d["name"], d.get("kind", "")) for d in dpap_state["layers"]], labels)
    fig = Figure(figsize=(11, 4))
    axes = fig.subplots(1, 2, sharex=True)
    x = np.arange(-window + 1, 1)
    for d in dpap_state["layers"]:
        if not d["f_neu_hist"]:
            continue
        neu = torch.stack(d["f_neu_hist"])                      # [epochs, units]
        syn = torch.stack(d["f_syn_hist"])                      # [epochs, sampled synapses]
        for ax, trajs, unit in ((axes[0], _before_death(neu, d["neu_pruned_epoch"], window),
                                 "neurons"),
                                (axes[1], _before_death(syn, _first_negative(syn), window),
                                 "synapses")):
            if trajs:
                shown = (f"{len(trajs)} {unit}" if unit == "neurons" else
                         f"{len(trajs)} of {syn.shape[1]} sampled synapses")
                ax.plot(x, _mean_trajectory(trajs), marker="o",
                        label=f"{labels[d['name']]}: {shown} pruned")
    for ax, title, none in zip(axes, SURVIVAL_TITLES, ("no neuron was pruned",
                                                        "no sampled synapse was pruned")):
        ax.axhline(0, color="k", lw=0.8, ls="--", label="0: pruned below this line")
        ax.set_xlabel("epochs before pruning (0: the epoch it was pruned)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(title, fontsize=10)
        if len(ax.get_legend_handles_labels()[0]) > 1:
            ax.legend(fontsize=8, title="layer: how many were pruned", title_fontsize=8)
        else:
            _empty(ax, none)
    axes[0].set_ylabel("survival score (mean of those pruned)")
    return save_figure(fig, path)


def plot_fc_map(dpap_state: dict, path: Path,
                labels: dict[str, str] | None = None) -> Path | None:
    """Kept (black) / pruned (white) synapses of the first linear layer, one row per neuron
    and one column per input; the strip on the left marks each neuron kept (black) or pruned
    (white: its whole row is pruned with it). None if there is no such layer."""
    fc = [d for d in dpap_state["layers"] if d.get("kind") == "linear"]
    if not fc:
        return None
    d = fc[0]
    pairs = [(x["name"], x.get("kind", "")) for x in dpap_state["layers"]]
    label = _labels(pairs, labels)[d["name"]]
    kept = (d["syn_alive"] & d["neu_alive"][:, None]).float().numpy()
    fig = Figure(figsize=(10, 4.4))
    a0, a1 = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1, 30]})
    a0.imshow(d["neu_alive"].float().numpy()[:, None], aspect="auto", cmap="Greys", vmin=0, vmax=1,
              interpolation="nearest")
    a0.set_xticks([])
    a0.set_title("neuron\nkept\n(black)", fontsize=8)
    a0.set_ylabel("neuron (output of the layer)")
    a1.imshow(kept, aspect="auto", cmap="Greys", vmin=0, vmax=1, interpolation="nearest")
    a1.set_xlabel("input of the layer (one column per synapse)")
    a1.set_yticks([])
    a1.legend(handles=[Patch(facecolor="black", label="kept"),
                       Patch(facecolor="white", edgecolor="grey",
                             label="pruned (a white row: a pruned neuron)")],
              loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=2, fontsize=8)
    a1.set_title(f"Synapses of the first fully connected layer, {label}: "
                 f"{int(d['neu_alive'].sum())} of {len(d['neu_alive'])} neurons and "
                 f"{int(kept.sum()):,} of {kept.size:,} synapses kept", fontsize=10)
    return save_figure(fig, path)
