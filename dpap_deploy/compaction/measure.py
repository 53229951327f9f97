"""Compact a trained network and measure it: ``compact_and_measure(model, kind, masks, x, y, T)``.

The compacted network, the folded deployment network (BatchNorm and average pooling folded,
what netx takes), their operations counted on the test inputs, NeuroBench's metrics, and the
accuracy of the masked and the compacted network on every test sample, which must be equal
(compaction removes only what cannot change an output). Every network runs through the graph's
one time loop (``executor.run.outputs``), whatever its forward returns; inputs with a time axis are
cut along their batch axis.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..counting import OpsReport, count_ops, param_counts
from ..errors import DPAPError
from ..executor.run import outputs
from ..graph import ModelGraph, graph_of
from ..graph.time_axis import batch_slice
from ..metrics import correct, predictions
from ..progress import Stage
from .compact import Compacted, compact
from .fold import fold_for_deployment

VERIFY_SAMPLES = 1000      # test samples the compacted and folded networks are verified on


@dataclass
class Measured:
    graph: ModelGraph              # the masked (trained) network's graph
    result: Compacted              # the compacted network, its plan and graph
    deploy: nn.Module              # the folded deployment network
    deploy_graph: ModelGraph
    masked_ops: OpsReport
    compact_ops: OpsReport
    accuracy_masked: float
    accuracy_compact: float
    params_dense: tuple[int, int]      # (all, non-zero) of the masked network
    params_compact: tuple[int, int]    # (all, non-zero) of the compacted network
    verified_on: int
    neurobench: dict


def accuracy(graph: ModelGraph, x: torch.Tensor, y: torch.Tensor, time_steps: int | None) -> float:
    """Accuracy through the graph's time loop: the prediction is the class with the largest
    time-averaged readout, ``argmax_c (1/T) sum_t y[t, c]`` (the firing rate for spikes;
    ties, a silent output included, count as wrong, ``metrics.predictions``); ANN: logits."""
    out = outputs(graph, x, time_steps)
    score = out.mean(0) if graph.kind == "snn" else out
    return correct(predictions(score.cpu()), y) / max(len(y), 1)


def compact_and_measure(model: nn.Module, kind: str, masks, x: torch.Tensor, y: torch.Tensor,
                        time_steps: int, log=None, time_axis: int | None = None) -> Measured:
    """``log``: a callable taking one line; each stage (compact and check, fold and check,
    accuracy, counting, NeuroBench) then says when it starts and ends (``progress.Stage``).
    ``None`` (the default): silent. ``time_axis``: the input's time axis, as for
    ``build_graph`` (``None``: none, or inferred)."""
    from ..neurobench_defs import neurobench_metrics
    model = model.eval()
    graph = graph_of(model, x, time_axis=time_axis)
    xv = batch_slice(x, graph.time_axis, 0, VERIFY_SAMPLES)
    n, nv = f"{len(y):,} samples", f"{min(len(y), VERIFY_SAMPLES):,} samples"
    with Stage(log, "compact", f"removing pruned units, checking the result on {nv}"):
        result = compact(model, xv, masks, time_steps=time_steps, graph=graph)
    with Stage(log, "compact", f"folding BatchNorm and pooling, checking on {nv}"):
        deploy, deploy_graph = fold_for_deployment(result.model, xv, time_steps=time_steps,
                                                   graph=result.graph)
    with Stage(log, "compact", f"accuracy of the masked and compacted networks on {n}"):
        acc_masked = accuracy(graph, x, y, time_steps)
        acc_compact = accuracy(result.graph, x, y, time_steps)
    if acc_masked != acc_compact:
        raise DPAPError(f"compacted accuracy {acc_compact:.4f} differs from the masked model's "
                        f"{acc_masked:.4f}")
    with Stage(log, "compact", f"counting parameters, SynOps and MACs on {n}"):
        masked_ops = count_ops(model, x, time_steps, graph=graph)
        compact_ops = count_ops(result.model, x, time_steps, graph=result.graph)
    with Stage(log, "compact", f"NeuroBench's metrics on {nv}"):
        yv = y[:VERIFY_SAMPLES]     # NeuroBench's accuracy (ties to the lowest class) too
        bench = {"compact": neurobench_metrics(result.model, xv, time_steps, result.graph, y=yv),
                 "deploy": neurobench_metrics(deploy, xv, time_steps, deploy_graph, y=yv)}
    return Measured(
        graph=graph, result=result, deploy=deploy, deploy_graph=deploy_graph,
        masked_ops=masked_ops, compact_ops=compact_ops,
        accuracy_masked=acc_masked, accuracy_compact=acc_compact,
        params_dense=param_counts(model), params_compact=param_counts(result.model),
        verified_on=min(len(y), VERIFY_SAMPLES), neurobench=bench)
