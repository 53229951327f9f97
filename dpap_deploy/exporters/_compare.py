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
