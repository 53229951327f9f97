"""A training run in memory (:class:`Run`): built from its configuration, saved to and
restored from its checkpoint.

The checkpoint holds the model, optimizer, scheduler, pruner state, history and every RNG
state, so an interrupted run resumed from it ends with the same weights and masks as an
uninterrupted one (CPU, same seed). It also records what the later stages read without
rebuilding the run (:func:`dpap_deploy.trained.load_trained`): the per-layer counts under
the masks and the data's shapes.
"""
from __future__ import annotations

import csv
import io
import math
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .. import distributed, precision as amp
from ..atomic import atomic_write_text
from ..checkpoint import check_finite, rng_state, save_checkpoint, set_rng_state
from ..data import Dataset, load_dataset
from ..data.loader import EpochBatchSampler, epoch_order, make_loader
from ..dpap import DPAP, DPAPConfig, find_prunable_layers, preset
from ..masks import check_state, layer_stats, removed_fraction
from ..errors import ConfigError, DPAPError
from ..evaluation import model_output
from ..graph import graph_of
from ..train_config import TrainConfig
from ..trained import check_record
from ..validate import check_checkpoint_keys, check_training_cost
from ..zoo import build_model

CHECKPOINT = "checkpoint.pt"
HISTORY = "history.csv"


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {name} requested but CUDA is not available here; "
                          "use --device cpu or --device auto")
    return torch.device(name)


def resolve_dpap_config(cfg: TrainConfig, kind: str) -> DPAPConfig:
    if cfg.dpap_config is None:
        return preset("ann" if kind == "ann" else "default")
    return DPAPConfig.from_dict(cfg.dpap_config)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class WindowForward(nn.Module):
    """The training forward pass (:func:`model_output`) as one module, so that
    ``DistributedDataParallel`` sees the whole window, whichever executor runs it."""

    def __init__(self, run: "Run") -> None:
        super().__init__()
        self.model = run.model
        self._run = run

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r = self._run
        return model_output(self.model, x, r.kind, r.cfg.time_steps, r.executor, r.dpap,
                            graph=r.graph)


@dataclass
class Run:
    """Everything a training run holds in memory."""

    cfg: TrainConfig
    data: Dataset
    model: nn.Module
    kind: str
    device: torch.device
    optimizer: torch.optim.Optimizer
    scheduler: Any
    dpap: DPAP | None
    history: list[dict] = field(default_factory=list)
    baseline: Any = None                 # a baselines.GradualPruner, when cfg.baseline is set
    executor: Any = None                 # executor.MultiStep, when the SNN runs multi-step
    graph: Any = None                    # the SNN's ModelGraph, traced once (the step loop's)
    data_warnings: list[str] = field(default_factory=list)   # data.checks, when training began
    dist: distributed.Dist = field(default_factory=distributed.Dist)   # this process's rank
    forward: Any = None                  # WindowForward, wrapped in DDP when distributed
    sampler: Any = None                  # data.loader.EpochBatchSampler of this rank
    loader: Any = None                   # a DataLoader when cfg.workers > 0
    scaler: Any = None                   # GradScaler for fp16
    run_id: str | None = None            # uuid4 hex, recorded in run.json and the checkpoint
    data_fingerprint: str | None = None  # runfolder.data_fingerprint of the data it started on

    @property
    def pruner(self):
        return self.dpap if self.dpap is not None else self.baseline

    @property
    def epoch(self) -> int:
        return len(self.history)

    def layer_stats(self) -> list[dict]:
        if self.pruner is not None:
            return self.pruner.layer_stats()
        _, layers = find_prunable_layers(self.model, self.data.x_train[:2].to(self.device))
        return [layer_stats(layer) for layer in layers]

    def params_removed_fraction(self, stats: list[dict] | None = None) -> float:
        """Parameters removed by pruning over all parameters of the model."""
        stats = self.layer_stats() if stats is None else stats
        return removed_fraction(stats, sum(p.numel() for p in self.model.parameters()))


def make_executor(cfg: TrainConfig, model: nn.Module, kind: str, example: torch.Tensor,
                  graph=None):
    """The multi-step executor for an SNN the graph can run layer by layer, else ``None``
    (the step loop; ``--executor step`` asks for it)."""
    if cfg.executor != "multistep" or kind != "snn":
        return None
    from ..executor import MultiStep
    graph = graph_of(graph or model, example)
    if not MultiStep.supports(graph):
        return None
    return MultiStep(graph, checked=True)


def braincog_lr(epoch: int, lr: float, epochs: int, warmup: int = 5, start: float = 1e-6,
                end: float = 1e-5) -> float:
    """The authors' schedule (``optimizer="braincog"``): the learning rate of epoch ``epoch``
    (from 0), linear from ``start`` over ``warmup`` epochs, then cosine from the curve's value
    at ``epoch`` down to ``end`` at ``epochs``: ``end + (lr - end)(1 + cos(pi epoch/epochs))/2``."""
    if epoch < warmup:
        return start + epoch * (lr - start) / warmup
    return end + 0.5 * (lr - end) * (1 + math.cos(math.pi * epoch / epochs))


def decay_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Parameter groups as the authors' ``timm.optim.create_optimizer`` builds them: weight
    decay on weight matrices and kernels, none on biases and other 0-d / 1-d parameters
    (a neuron's learnable decay or threshold, BatchNorm's affine)."""
    decay, plain = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (plain if p.ndim <= 1 or name.endswith(".bias") else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": plain, "weight_decay": 0.0}]


def make_optimizer(cfg: TrainConfig, model: nn.Module, device: torch.device):
    """``(optimizer, scheduler)`` of ``cfg.optimizer``; the scheduler steps once per epoch.
    The fused kernels: one for all parameters (snn-mnist's step 2.8 -> 0.2 ms on CPU)."""
    fused = device.type in ("cpu", "cuda") or None
    if cfg.optimizer == "braincog":
        opt = torch.optim.AdamW(decay_groups(model, 0.01), lr=cfg.lr, fused=fused)
        return opt, torch.optim.lr_scheduler.LambdaLR(
            opt, lambda e: braincog_lr(e, cfg.lr, cfg.epochs) / cfg.lr)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, fused=fused)
    return opt, torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.epochs)


def build_run(cfg: TrainConfig, data: Dataset | None = None) -> Run:
    data = data if data is not None else load_dataset(cfg.dataset, cfg.data_root, cfg.time_steps)
    if data.is_sequence and data.x_train.shape[1] != cfg.time_steps:
        raise ConfigError(f"dataset {data.name!r} has {data.x_train.shape[1]} time bins but "
                          f"--time-steps is {cfg.time_steps}")
    check_training_cost(cfg.epochs, len(data.y_train), cfg.time_steps)
    d = distributed.current()
    device = resolve_device(distributed.device_for(cfg.device, d))
    distributed.check_batch(len(data.y_train), cfg.batch_size, d.world)
    if cfg.augment and data.is_sequence:
        raise ConfigError(f"--augment crops and flips images; {data.name!r} holds event frames")
    seed_everything(cfg.seed)
    model, kind = build_model(cfg.model, data.input_shape, data.n_classes)
    model.to(device)
    optimizer, scheduler = make_optimizer(cfg, model, device)
    dpap = None
    if cfg.dpap:
        dpap = DPAP(model, data.x_train[:2].to(device), resolve_dpap_config(cfg, kind),
                    seed=cfg.seed)
    run = Run(cfg, data, model, kind, device, optimizer, scheduler, dpap)
    example = data.x_train[:2].to(device)
    if kind == "snn":
        run.graph = dpap.graph if dpap is not None else graph_of(model, example)
    run.executor = make_executor(cfg, model, kind, example, run.graph)
    if cfg.baseline is not None:
        from ..baselines import MEASURE_SAMPLES, make_baseline
        start, end = cfg.prune_window or [2, max(3, cfg.epochs // 2)]
        measure = data.x_train[epoch_order(len(data.y_train), cfg.seed, -1)[:MEASURE_SAMPLES]]
        run.baseline = make_baseline(cfg.baseline, model, data.x_train[:2].to(device),
                                     cfg.prune_target, start, end, cfg.seed,
                                     cfg.prune_target_kind, measure.to(device), cfg.time_steps)
    _attach_data_parallel(run, d)
    return run


def _attach_data_parallel(run: Run, d: distributed.Dist) -> None:
    """This rank's batches, the (DDP-wrapped) forward pass, the fp16 scaler; DPAP's per-batch
    sums all-reduced over the ranks."""
    cfg = run.cfg
    run.dist = d
    run.sampler = EpochBatchSampler(len(run.data.y_train), cfg.batch_size, cfg.seed, d,
                                    cfg.augmenting and not run.data.is_sequence)
    if cfg.workers > 0:
        run.loader = make_loader(run.data.x_train, run.data.y_train, run.sampler, cfg.workers,
                                 pin=run.device.type == "cuda")
    run.forward = distributed.wrap(WindowForward(run), run.device, d)
    run.scaler = amp.grad_scaler(cfg.precision, run.device)
    if run.dpap is not None and d.active:
        run.dpap.reduce = d.all_reduce_sum_


def pruner_masks(run: Run) -> list[torch.Tensor]:
    """The masks that must agree across ranks."""
    if run.dpap is not None:
        return [t for st in run.dpap.states for t in (st.syn_alive, st.neu_alive)]
    if run.baseline is None:
        return []
    masks = run.baseline.masks
    if callable(masks):                   # structured baselines: {layer: (synapses, units)}
        return [t for pair in masks().values() for t in pair]
    return list(masks)


def save_run(run: Run, out: Path) -> None:
    save_checkpoint(out / CHECKPOINT, {
        "train_config": run.cfg.to_dict(), "kind": run.kind, "epoch": run.epoch,
        "model": run.model.state_dict(), "optimizer": run.optimizer.state_dict(),
        "scheduler": run.scheduler.state_dict(),
        "dpap": run.dpap.state_dict() if run.dpap is not None else None,
        "baseline": run.baseline.state_dict() if run.baseline is not None else None,
        "history": run.history, "rng": rng_state(), "data_warnings": run.data_warnings,
        "scaler": run.scaler.state_dict() if run.scaler is not None else None,
        "world_size": run.dist.world, "layer_stats": run.layer_stats(),
        "run_id": run.run_id, "data_fingerprint": run.data_fingerprint,
        "data_shape": {"input_shape": list(run.data.input_shape),
                       "sample_shape": list(run.data.x_test.shape[1:]),
                       "n_classes": run.data.n_classes}})
    write_history(out / HISTORY, run.history)


def restore_run(ckpt: dict, device: str | None = None, data: Dataset | None = None) -> Run:
    """Rebuild a run from a checkpoint (model, optimizer, scheduler, DPAP, RNG, history)."""
    path = ckpt.get("path", "the checkpoint")
    check_checkpoint_keys(ckpt, path)
    check_record(ckpt, path)                # the same checks as every later stage's load
    check_finite(ckpt["model"], str(path))
    cfg_dict = dict(ckpt["train_config"])
    if device is not None:
        cfg_dict["device"] = device
    run = build_run(TrainConfig.from_dict(cfg_dict), data)
    if run.dpap is not None:
        check_state(ckpt.get("dpap"), run.dpap.layers, path)
    try:
        run.model.load_state_dict(ckpt["model"])
        run.optimizer.load_state_dict(ckpt["optimizer"])
        run.scheduler.load_state_dict(ckpt["scheduler"])
        if run.dpap is not None:
            run.dpap.load_state_dict(ckpt["dpap"])
        if run.baseline is not None:
            run.baseline.load_state_dict(ckpt["baseline"])
        if run.scaler is not None and ckpt.get("scaler"):
            run.scaler.load_state_dict(ckpt["scaler"])
        run.history = list(ckpt["history"])
        run.data_warnings = list(ckpt.get("data_warnings", []))
        set_rng_state(ckpt["rng"])
    except (KeyError, RuntimeError, ValueError, TypeError, AttributeError, IndexError) as exc:
        first = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise DPAPError(f"{path} does not match its own model configuration: {first}; "
                        "train the run again") from None
    return run


def write_history(path: Path, history: list[dict]) -> None:
    if not history:
        return
    cols: list[str] = []
    for row in history:
        cols += [c for c in row if c not in cols]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols)
    w.writeheader()
    w.writerows(history)
    atomic_write_text(path, buf.getvalue())
