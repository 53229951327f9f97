"""Figures of a run (matplotlib, files only): what people would rather look at than read.

- ``accuracy.png``: test accuracy per epoch, with the baseline run when there is one.
- ``params_per_layer.png``: parameters alive per layer per epoch (paper Fig. 4G).
- ``survival.png``: survival functions of neurons and synapses in the epochs before they were
  pruned, aligned at the epoch of pruning (paper Fig. 4E-F).
- ``fc_map.png``: kept / pruned synapses and neurons of the first fully connected layer
  (paper Fig. 4A, C).

Figures are drawn on ``matplotlib.figure.Figure`` objects (no pyplot): nothing global, such as
the process's matplotlib backend, is touched. Each figure reads alone: runs of at most ``MARKER_EPOCHS`` epochs draw a marker at every
epoch (a 1-epoch run is a single point), panels with nothing to draw say so, maps have legends.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from ..atomic import atomic_path

MARKER_EPOCHS = 20


def _marker(history: list[dict]) -> dict:
    """Plot keywords: a marker per epoch for short runs, plain lines for long ones."""
    return {"marker": "o", "markersize": 3} if len(history) <= MARKER_EPOCHS else {}


def _empty(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="grey")

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
    ax.plot(_col(history, "epoch"), 100 * _col(history, "test_acc"), label=f"{label} (test)",
            **_marker(history))
    if baseline:
        ax.plot(_col(baseline, "epoch"), 100 * _col(baseline, "test_acc"), "--",
                label="no pruning (test)", **_marker(baseline))
    if "params_removed_fraction" in history[0]:
        ax2 = ax.twinx()
        ax2.plot(_col(history, "epoch"), 100 * _col(history, "params_removed_fraction"),
                 color="grey", alpha=0.5, lw=1, **_marker(history))
        ax2.set_ylabel("parameters removed (%)", color="grey")
        ax2.set_ylim(0, 100)
    ax.set_xlabel("epoch")
    ax.set_ylabel("test accuracy (%)")
    ax.legend(loc="lower right")
    ax.set_title("Accuracy during training")
    return save_figure(fig, path)


def plot_params_per_layer(history: list[dict], layers: list[tuple[str, str]], path: Path) -> Path:
    """``layers``: ``(name, kind)`` pairs, e.g. ``("7", "linear")``."""
    fig = Figure(figsize=(6, 3.6))
    ax = fig.subplots()
    epochs = _col(history, "epoch")
    for name, kind in layers:
        key = f"{name}:params_kept"
        if key in history[0]:
            ax.plot(epochs, _col(history, key), label=f"layer {name} ({kind})", **_marker(history))
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("parameters alive")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    else:
        _empty(ax, "history.csv has no per-layer parameter columns")
    ax.set_title("Alive parameters per layer")
    return save_figure(fig, path)


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


def plot_survival(dpap_state: dict, path: Path, window: int = 8) -> Path:
    fig = Figure(figsize=(9, 3.6))
    axes = fig.subplots(1, 2, sharex=True)
    x = np.arange(-window + 1, 1)
    for d in dpap_state["layers"]:
        if not d["f_neu_hist"]:
            continue
        neu = torch.stack(d["f_neu_hist"])                      # [epochs, units]
        trajs = _before_death(neu, d["neu_pruned_epoch"], window)
        if trajs:
            axes[0].plot(x, _mean_trajectory(trajs), marker="o", label=f"{d['name']} ({len(trajs)})")
        syn = torch.stack(d["f_syn_hist"])                      # [epochs, sampled synapses]
        neg = syn < 0
        first = torch.where(neg.any(0), neg.float().argmax(0), torch.full_like(neg[0], -1, dtype=torch.long))
        trajs = _before_death(syn, first, window)
        if trajs:
            axes[1].plot(x, _mean_trajectory(trajs), marker="o", label=f"{d['name']} ({len(trajs)})")
    for ax, title in zip(axes, ("neurons: F_D", "synapses (sample): F_BCM")):
        ax.axhline(0, color="k", lw=0.8)
        ax.set_xlabel("epochs before pruning")
        ax.set_title(title)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8, title="layer (pruned)")
        else:
            _empty(ax, "nothing pruned")
    axes[0].set_ylabel("survival value (mean)")
    return save_figure(fig, path)


def plot_fc_map(dpap_state: dict, path: Path) -> Path | None:
    """Kept (dark) / pruned (white) synapses of the first linear layer; pruned neurons are
    white rows, and the strip on the left marks the neurons. None if there is no such layer."""
    fc = [d for d in dpap_state["layers"] if d.get("kind") == "linear"]
    if not fc:
        return None
    d = fc[0]
    kept = (d["syn_alive"] & d["neu_alive"][:, None]).float().numpy()
    fig = Figure(figsize=(9, 4))
    a0, a1 = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1, 30]})
    a0.imshow(d["neu_alive"].float().numpy()[:, None], aspect="auto", cmap="Greys", vmin=0, vmax=1,
              interpolation="nearest")
    a0.set_xticks([])
    a0.set_ylabel("neuron")
    a1.imshow(kept, aspect="auto", cmap="Greys", vmin=0, vmax=1, interpolation="nearest")
    a1.set_xlabel("input (synapse)")
    a1.set_yticks([])
    a1.legend(handles=[Patch(facecolor="black", label="kept"),
                       Patch(facecolor="white", edgecolor="grey", label="pruned")],
              loc="upper right", fontsize=8, framealpha=0.9)
    a1.set_title(f"layer {d['name']}: {int(d['neu_alive'].sum())}/{len(d['neu_alive'])} neurons, "
                 f"{int(kept.sum())}/{kept.size} synapses kept")
    return save_figure(fig, path)
