"""Compact a trained network and measure it: ``compact_and_measure(model, kind, masks, x, y, T)``.

The compacted network, the folded deployment network (BatchNorm and average pooling folded,
what netx takes), their operations counted on the test inputs, NeuroBench's metrics, and the
accuracy of the masked and the compacted network on every test sample, which must be equal
(compaction removes only what cannot change an output).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..counting import OpsReport, count_ops, param_counts
from ..errors import DPAPError
from ..graph import ModelGraph, build_graph
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


def compact_and_measure(model: nn.Module, kind: str, masks, x: torch.Tensor, y: torch.Tensor,
                        time_steps: int, log=None) -> Measured:
    """``log``: a callable taking one line; each stage (compact and check, fold and check,
    accuracy, counting, NeuroBench) then says when it starts and ends (``progress.Stage``).
    ``None`` (the default): silent."""
    from ..evaluation import evaluate
    from ..neurobench_defs import neurobench_metrics
    model = model.eval()
    xv = x[:VERIFY_SAMPLES]
    n, nv = f"{len(x):,} samples", f"{len(xv):,} samples"
    with Stage(log, "compact", f"removing pruned units, checking the result on {nv}"):
        graph = build_graph(model, xv[:2])
        result = compact(model, xv, masks, time_steps=time_steps, graph=graph)
    with Stage(log, "compact", f"folding BatchNorm and pooling, checking on {nv}"):
        deploy, deploy_graph = fold_for_deployment(result.model, xv, time_steps=time_steps,
                                                   graph=result.graph)
    with Stage(log, "compact", f"accuracy of the masked and compacted networks on {n}"):
        cpu = torch.device("cpu")
        acc_masked = evaluate(model, x, y, kind, time_steps, cpu)
        acc_compact = evaluate(result.model, x, y, kind, time_steps, cpu)
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
        verified_on=len(xv), neurobench=bench)
