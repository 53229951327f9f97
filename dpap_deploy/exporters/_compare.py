"""Parity between torch output spikes and a consumer's, both ``[N, T, classes]``."""
from __future__ import annotations

import numpy as np
import torch

from ..graph import ModelGraph, build_graph, outputs


def torch_spikes(model, x: torch.Tensor, time_steps: int) -> np.ndarray:
    """``[N, T, classes]`` output spikes of an snnTorch model or its ``ModelGraph``
    (evaluation mode)."""
    graph = model if isinstance(model, ModelGraph) else build_graph(model, x[:2])
    out = outputs(graph, x, time_steps)
    return out.reshape(out.shape[0], out.shape[1], -1).permute(1, 0, 2).cpu().numpy()


def spike_parity(ref: np.ndarray, got: np.ndarray, y: np.ndarray) -> dict:
    """Sample agreement (same predicted class), exact spike agreement, and accuracies.
    Prediction: most output spikes; ties go to the lowest class index, as in torch."""
    p_ref, p_got = ref.sum(1).argmax(1), got.sum(1).argmax(1)
    return {"agreement": float((p_ref == p_got).mean()),
            "n_samples": int(len(ref)),
            "identical_spike_trains": float((ref == got).all(axis=(1, 2)).mean()),
            "accuracy_torch": float((p_ref == y).mean()),
            "accuracy": float((p_got == y).mean())}
