"""Predictions, accuracy and output activity, shared by training, compaction and every exporter.

A prediction is the class with the highest score (SNN: most output spikes or highest rate;
ANN: highest logit). When two or more classes share the highest score (a tie, which includes
a silent output layer: all rates 0) there is no prediction: it is ``-1``, never equal to a
label, so ties and silence count as wrong. ``torch.argmax`` would instead pick the lowest tied
index, and a network that never spikes would score the frequency of class 0.

    pred = predictions(scores)                 # [N] long, -1 for ties
    acc = accuracy(pred, y)                    # mean(pred == y)
    nb = argmax_accuracy(scores, y)            # NeuroBench's: mean(argmax(scores) == y)
    agree = agreement(scores_a, scores_b)      # same top class, or the same tie
    act = output_activity(spikes_or_rates)     # firing rate, silent and tied fractions
"""
from __future__ import annotations

import numpy as np
import torch

NO_PREDICTION = -1
# More silent test samples than this (a fraction) prints a warning: a trained network that
# never spikes on 1 sample in 20 is not working, whatever its accuracy says.
SILENT_WARN_FRACTION = 0.05


def _tensor(a) -> torch.Tensor:
    return a.detach().cpu() if isinstance(a, torch.Tensor) else torch.as_tensor(np.asarray(a))


def predictions(scores) -> torch.Tensor:
    """``[N, classes]`` scores -> ``[N]`` predicted classes, ``-1`` where the top score is tied."""
    s = _tensor(scores)
    top = s.max(1, keepdim=True).values
    tied = (s == top).sum(1) > 1
    return torch.where(tied, torch.full_like(s.argmax(1), NO_PREDICTION), s.argmax(1))


def correct(pred, y) -> int:
    """Number of samples whose prediction equals the label (``-1`` never does)."""
    return int((_tensor(pred) == _tensor(y)).sum())


def accuracy(pred, y) -> float:
    n = len(_tensor(y))
    return correct(pred, y) / n if n else 0.0


def argmax_accuracy(scores, y) -> float:
    """NeuroBench's accuracy (``ChooseMaxCount``): ``mean(argmax(scores) == y)``, a tie (a
    silent output included) counted as the lowest tied class; for comparison with NeuroBench
    leaderboards only (:func:`accuracy` of :func:`predictions` counts a tie as wrong)."""
    s, n = _tensor(scores), len(_tensor(y))
    return correct(s.argmax(1), y) / n if n else 0.0


def top_classes(scores) -> torch.Tensor:
    """``[N, classes]`` bool: the classes that reach each sample's highest score."""
    s = _tensor(scores)
    return s == s.max(1, keepdim=True).values


def agreement(scores_a, scores_b) -> float:
    """Fraction of samples on which two networks make the same decision: the same predicted
    class, or the same tie (the same set of top classes, e.g. both silent). A tie never agrees
    with a prediction, so a silent export cannot agree with a network that answers (argmax
    would have made both "class 0"); a faithful export that reproduces a tie agrees."""
    a, b = top_classes(scores_a), top_classes(scores_b)
    return float((a == b).all(1).float().mean()) if len(a) else 0.0


def output_activity(out) -> dict:
    """Output-layer activity of ``[N, classes]`` rates or ``[N, T, classes]`` spikes:
    ``firing_rate`` (spikes per output neuron per time step, averaged over samples),
    ``silent_fraction`` (samples with no output spike at all) and ``tie_fraction`` (samples
    with no prediction, silent ones included)."""
    o = _tensor(out).float()
    per_sample = o.reshape(len(o), -1)
    scores = o.sum(1) if o.dim() == 3 else o
    n = max(len(o), 1)
    return {"firing_rate": float(per_sample.mean()) if len(o) else 0.0,
            "silent_fraction": int((per_sample == 0).all(1).sum()) / n,
            "tie_fraction": int((predictions(scores) == NO_PREDICTION).sum()) / n if len(o) else 0.0,
            "n_samples": len(o)}


def silent_warning(activity: dict, where: str) -> str | None:
    """A one-line warning when more than ``SILENT_WARN_FRACTION`` of samples are silent."""
    f = activity.get("silent_fraction", 0.0)
    if f <= SILENT_WARN_FRACTION:
        return None
    n = activity["n_samples"]
    return (f"{where}: the output layer is silent (no spike) on {f:.1%} of {n:,} "
            f"sample{'' if n == 1 else 's'} (warning above {SILENT_WARN_FRACTION:.0%}); those "
            "samples count as wrong. Train longer, raise the learning rate or lower the "
            "neurons' threshold")
