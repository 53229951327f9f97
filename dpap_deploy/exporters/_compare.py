"""Parity between torch output spikes and a consumer's, both ``[N, T, classes]``."""
from __future__ import annotations

import numpy as np
import torch

from ..executor.run import outputs
from ..graph import graph_of
from ..metrics import accuracy, agreement, output_activity, predictions


def torch_spikes(model, x: torch.Tensor, time_steps: int,
                 time_axis: int | None = None) -> np.ndarray:
    """``[N, T, classes]`` output spikes of an snnTorch model or its ``ModelGraph``
    (evaluation mode); ``x`` in the model's own layout (``time_axis``: as for ``build_graph``;
    a graph's own axis is used for a graph)."""
    graph = graph_of(model, x, time_axis=time_axis)
    out = outputs(graph, x, time_steps)
    return out.reshape(out.shape[0], out.shape[1], -1).permute(1, 0, 2).cpu().numpy()


def spike_parity(ref: np.ndarray, got: np.ndarray, y: np.ndarray) -> dict:
    """Sample agreement (same predicted class), exact spike agreement, accuracies, and the
    output activity of both (``metrics``). Prediction: most output spikes; a tie (silence
    included) is no prediction: wrong, and agreeing only with the same tie."""
    p_ref, p_got = predictions(ref.sum(1)), predictions(got.sum(1))
    return {"agreement": agreement(ref.sum(1), got.sum(1)),
            "n_samples": int(len(ref)),
            "identical_spike_trains": float((ref == got).all(axis=(1, 2)).mean()),
            "accuracy_torch": accuracy(p_ref, y),
            "accuracy": accuracy(p_got, y),
            "output": output_activity(got), "output_torch": output_activity(ref)}


def silence(parity: dict) -> str | None:
    """Why a spiking export fails however well it agrees: its output layer emitted no spike on
    any sample (two silent networks agree on every sample, which says nothing). None if not."""
    out = parity.get("output") or {}
    n = out.get("n_samples", 0)
    if n and out.get("silent_fraction", 0.0) >= 1.0:
        return (f"silent output: the exported network's output layer emitted no spike on any "
                f"of {n} samples")
    return None


def with_failure(parity: dict, reason: str) -> dict:
    """``parity`` with ``failure: reason`` right after its agreement and sample count (the
    one-line parity error shows it first)."""
    head = {k: parity[k] for k in ("agreement", "n_samples") if k in parity}
    return {**head, "failure": reason, **{k: v for k, v in parity.items() if k not in head}}


def constant_output(logits: np.ndarray) -> str | None:
    """Why an ANN export fails however well it agrees: every sample got the same logits (a
    dead network answers with its last bias), or no sample has a single top class. None if
    the output depends on the input."""
    scores = np.asarray(logits).reshape(len(logits), -1)
    if len(scores) > 1 and float(np.ptp(scores, axis=0).max(initial=0.0)) == 0.0:
        return f"constant output: the network gives the same logits for all {len(scores)} samples"
    if len(scores) and bool((predictions(scores) == -1).all()):
        return f"no prediction: the top logit is tied on all {len(scores)} samples"
    return None


F32_EPS = float(np.finfo(np.float32).eps)


def graded_tolerance(ref: np.ndarray, time_steps: int) -> float:
    """The largest difference float32 arithmetic explains between two runs of the same graded
    output (a membrane or a readout current, ``[N, T, ...]``) that sum or decay in another
    order: one rounding (``eps/2`` relative) per step and per term, each term at most the
    largest magnitude seen, ``4 eps (T + 1) max(1, max |ref|)``. Two runs of the same float32
    operations in the same order differ by 0."""
    peak = float(np.abs(ref).max(initial=0.0))
    return 4.0 * F32_EPS * (int(time_steps) + 1) * max(1.0, peak)


def graded_parity(ref: np.ndarray, got: np.ndarray, y: np.ndarray, time_steps: int) -> dict:
    """Parity of graded outputs (readouts: membrane or current ``[N, T, classes]``): the max
    absolute difference against ``graded_tolerance``, the fraction of samples whose every value
    is within it (``within_tolerance``), identical predictions of the time-summed output
    (``identical_predictions``: the fraction of samples), accuracies. A constant output (all
    samples the same time-summed output, zero included) is a ``failure``, like silence."""
    ref = np.asarray(ref, np.float64)
    got = np.asarray(got, np.float64)
    diff = np.abs(ref - got).reshape(len(ref), -1)
    tol = graded_tolerance(ref, time_steps)
    p_ref, p_got = predictions(ref.sum(1)), predictions(got.sum(1))
    par = {"agreement": agreement(ref.sum(1), got.sum(1)),
           "n_samples": int(len(ref)),
           "within_tolerance": float((diff <= tol).all(1).mean()) if len(ref) else 0.0,
           "max_abs_diff": float(diff.max(initial=0.0)), "tolerance": tol,
           "identical_predictions": float((p_ref == p_got).float().mean()) if len(ref) else 0.0,
           "accuracy_torch": accuracy(p_ref, y), "accuracy": accuracy(p_got, y),
           "readout": "graded"}
    failure = constant_output(got.sum(1))
    return with_failure(par, failure) if failure else par


def graded_passed(par: dict) -> bool:
    return ("failure" not in par and par["within_tolerance"] == 1.0
            and par["identical_predictions"] == 1.0)
