"""Parity between torch output spikes and a consumer's, both ``[N, T, classes]``."""
from __future__ import annotations

import numpy as np
import torch

from ..graph import ModelGraph, build_graph, outputs
from ..metrics import accuracy, agreement, output_activity, predictions


def torch_spikes(model, x: torch.Tensor, time_steps: int) -> np.ndarray:
    """``[N, T, classes]`` output spikes of an snnTorch model or its ``ModelGraph``
    (evaluation mode)."""
    graph = model if isinstance(model, ModelGraph) else build_graph(model, x[:2])
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
