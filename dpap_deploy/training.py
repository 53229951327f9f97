"""Training with or without DPAP through one loop, with resumable checkpoints.

SNN: direct encoding over ``T`` steps, loss = ``||onehot - rate||^2`` (Eq 3, summed over
classes, averaged over the batch), prediction = most spikes. ANN: cross-entropy. Adam with a
cosine learning-rate schedule over the run. Each epoch ends with the DPAP survival update, a
test evaluation, one row of ``history.csv`` and an atomic checkpoint holding the model,
optimizer, scheduler, DPAP state and every RNG state, so an interrupted run resumed with
``resume=True`` ends with the same weights and masks as an uninterrupted one (CPU, same seed).
"""
from __future__ import annotations

import csv
import io
import math
import random
import sys
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from .atomic import atomic_write_text
from .checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from .data import Dataset, load_dataset
from .dpap import DPAP, DPAPConfig, find_prunable_layers, preset
from .dpap.masking import layer_stats
from .errors import ConfigError, DPAPError
from .lock import output_lock
from .resources import check_training_memory
from .train_config import TrainConfig
from .validate import check_checkpoint_keys, check_dpap_masks, check_out_dir
from .neurons import run_snn
from .zoo import build_model

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


def model_output(model: nn.Module, x: torch.Tensor, kind: str, time_steps: int) -> torch.Tensor:
    """SNN: firing rate ``[B, classes]`` over ``time_steps``; ANN: logits."""
    if kind == "snn":
        return run_snn(model, x, time_steps).mean(0)
    if x.dim() == 5:
        raise ConfigError("event frames [N, T, C, H, W] need a spiking model (an snn-* model)")
    return model(x)


def loss_fn(out: torch.Tensor, y: torch.Tensor, kind: str) -> torch.Tensor:
    if kind == "snn":
        target = F.one_hot(y, out.shape[1]).to(out.dtype)
        return ((out - target) ** 2).sum(1).mean()
    return F.cross_entropy(out, y)


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, kind: str, time_steps: int,
             device: torch.device, batch_size: int = 512) -> float:
    was = model.training
    model.eval()
    correct = 0
    for i in range(0, len(y), batch_size):
        out = model_output(model, x[i:i + batch_size].to(device), kind, time_steps)
        correct += int((out.argmax(1).cpu() == y[i:i + batch_size]).sum())
    model.train(was)
    return correct / max(len(y), 1)


def epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    """Shuffling that depends only on (seed, epoch): resuming needs no loader state."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))


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
        total = sum(p.numel() for p in self.model.parameters())
        return sum(s["params_total"] - s["params_kept"] for s in stats) / total


def build_run(cfg: TrainConfig, data: Dataset | None = None) -> Run:
    data = data if data is not None else load_dataset(cfg.dataset, cfg.data_root, cfg.time_steps)
    if data.is_sequence and data.x_train.shape[1] != cfg.time_steps:
        raise ConfigError(f"dataset {data.name!r} has {data.x_train.shape[1]} time bins but "
                          f"--time-steps is {cfg.time_steps}")
    device = resolve_device(cfg.device)
    seed_everything(cfg.seed)
    model, kind = build_model(cfg.model, data.input_shape, data.n_classes)
    model.to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.epochs)
    dpap = None
    if cfg.dpap:
        dpap = DPAP(model, data.x_train[:2].to(device), resolve_dpap_config(cfg, kind),
                    seed=cfg.seed)
    run = Run(cfg, data, model, kind, device, optimizer, scheduler, dpap)
    if cfg.baseline is not None:
        from .baselines import GradualPruner
        start, end = cfg.prune_window or [2, max(3, cfg.epochs // 2)]
        run.baseline = GradualPruner(model, data.x_train[:2].to(device), cfg.baseline,
                                     cfg.prune_target, start, end, seed=cfg.seed)
    return run


def save_run(run: Run, out: Path) -> None:
    save_checkpoint(out / CHECKPOINT, {
        "train_config": run.cfg.to_dict(), "kind": run.kind, "epoch": run.epoch,
        "model": run.model.state_dict(), "optimizer": run.optimizer.state_dict(),
        "scheduler": run.scheduler.state_dict(),
        "dpap": run.dpap.state_dict() if run.dpap is not None else None,
        "baseline": run.baseline.state_dict() if run.baseline is not None else None,
        "history": run.history, "rng": rng_state()})
    write_history(out / HISTORY, run.history)


def restore_run(ckpt: dict, device: str | None = None, data: Dataset | None = None) -> Run:
    """Rebuild a run from a checkpoint (model, optimizer, scheduler, DPAP, RNG, history)."""
    path = ckpt.get("path", "the checkpoint")
    check_checkpoint_keys(ckpt, path)
    cfg_dict = dict(ckpt["train_config"])
    if device is not None:
        cfg_dict["device"] = device
    run = build_run(TrainConfig.from_dict(cfg_dict), data)
    if run.dpap is not None:
        check_dpap_masks(ckpt.get("dpap"), run.dpap.layers, path)
    try:
        run.model.load_state_dict(ckpt["model"])
        run.optimizer.load_state_dict(ckpt["optimizer"])
        run.scheduler.load_state_dict(ckpt["scheduler"])
        if run.dpap is not None:
            run.dpap.load_state_dict(ckpt["dpap"])
        if run.baseline is not None:
            run.baseline.load_state_dict(ckpt["baseline"])
        run.history = list(ckpt["history"])
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


def train_epoch(run: Run, progress: bool) -> tuple[float, float]:
    cfg, model, data = run.cfg, run.model, run.data
    model.train()
    order = epoch_order(len(data.y_train), cfg.seed, run.epoch)
    total_loss, correct, seen = 0.0, 0, 0
    batches = range(0, len(order), cfg.batch_size)
    bar = tqdm(batches, desc=f"epoch {run.epoch + 1}/{cfg.epochs}", leave=False, unit="batch",
               disable=not (progress and sys.stderr.isatty()))
    for i in bar:
        idx = order[i:i + cfg.batch_size]
        x, y = data.x_train[idx].to(run.device), data.y_train[idx].to(run.device)
        out = model_output(model, x, run.kind, cfg.time_steps)
        loss = loss_fn(out, y, run.kind)
        run.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        run.optimizer.step()
        if run.pruner is not None:
            run.pruner.step()
        total_loss += float(loss.detach()) * len(y)
        correct += int((out.argmax(1) == y).sum())
        seen += len(y)
        bar.set_postfix(loss=f"{total_loss / seen:.4f}", acc=f"{correct / seen:.3f}")
    run.scheduler.step()
    return total_loss / seen, correct / seen


def history_row(run: Run, loss: float, train_acc: float, test_acc: float, wall: float) -> dict:
    row: dict[str, Any] = {"epoch": run.epoch + 1, "loss": loss,
                           "train_acc": train_acc, "test_acc": test_acc,
                           "lr": run.optimizer.param_groups[0]["lr"], "wall_time_s": round(wall, 4)}
    stats = run.layer_stats()
    row["params_kept"] = sum(s["params_kept"] for s in stats) + \
        sum(p.numel() for p in run.model.parameters()) - sum(s["params_total"] for s in stats)
    row["params_removed_fraction"] = run.params_removed_fraction(stats)
    for s in stats:
        row[f"{s['name']}:neurons_kept"] = s["neurons_kept"]
        row[f"{s['name']}:synapses_kept"] = s["synapses_kept"]
        row[f"{s['name']}:params_kept"] = s["params_kept"]
    return row


def fit(run: Run, out: Path, progress: bool = True,
        log: Callable[[str], None] | None = None) -> Run:
    """Train ``run`` from its current epoch to ``cfg.epochs``, checkpointing every epoch."""
    log = log or (lambda msg: None)
    while run.epoch < run.cfg.epochs:
        t0 = time.perf_counter()
        loss, train_acc = train_epoch(run, progress)
        if not math.isfinite(loss):
            raise DPAPError(f"training diverged in epoch {run.epoch + 1} (loss {loss}); nothing "
                            "of this epoch was saved: lower --lr or check the input data")
        died = run.dpap.end_epoch() if run.dpap is not None else {}
        if run.baseline is not None:
            run.baseline.end_epoch()
        test_acc = evaluate(run.model, run.data.x_test, run.data.y_test, run.kind,
                            run.cfg.time_steps, run.device)
        row = history_row(run, loss, train_acc, test_acc, time.perf_counter() - t0)
        run.history.append(row)
        save_run(run, out)
        n_died = sum(d["neurons"] for d in died.values())
        s_died = sum(d["synapses"] for d in died.values())
        log(f"epoch {row['epoch']:3d}/{run.cfg.epochs}  loss {loss:.4f}  train {train_acc:.4f}  "
            f"test {test_acc:.4f}  removed {row['params_removed_fraction']:.1%}"
            + (f"  (pruned {n_died} neurons, {s_died} synapses)" if n_died or s_died else "")
            + f"  {row['wall_time_s']:.2f}s")
    return run


def train(cfg: TrainConfig, out: str | Path, resume: bool = False, progress: bool = True,
          log: Callable[[str], None] | None = None, data: Dataset | None = None,
          explicit: set[str] | None = None) -> Run:
    """Train (or resume) a run in ``out``; returns the finished run. See :func:`fit`.

    On resume the run's stored configuration is used; options named in ``explicit`` (all of
    them when None) must equal the stored ones, except ``device``."""
    out = check_out_dir(out)
    ckpt_path = out / CHECKPOINT
    if ckpt_path.exists() and not resume:
        raise DPAPError(f"{out} already holds a run ({CHECKPOINT}); pass --resume to continue "
                        "it or choose another --out")
    with output_lock(out, "train"):
        if resume and ckpt_path.exists():
            run = restore_run(load_checkpoint(ckpt_path), device=cfg.device, data=data)
            _check_resume_matches(run.cfg, cfg, explicit)
            if log:
                log(f"resuming {out} after epoch {run.epoch}")
        else:
            run = build_run(cfg, data)
        check_training_memory(run.model, run.data.x_train[:1].to(run.device), run.kind,
                              run.cfg.time_steps, min(run.cfg.batch_size, len(run.data.y_train)),
                              run.device)
        atomic_write_text(out / "config.json", _json(run.cfg.to_dict() | {
            "dpap_config_resolved": run.dpap.config.to_dict() if run.dpap is not None else None}))
        return fit(run, out, progress, log)


def _check_resume_matches(stored: TrainConfig, asked: TrainConfig,
                          explicit: set[str] | None) -> None:
    names = [f.name for f in fields(TrainConfig) if explicit is None or f.name in explicit]
    diff = [n for n in names if n != "device" and getattr(stored, n) != getattr(asked, n)]
    if diff:
        name = diff[0]
        raise DPAPError(f"cannot resume with a different {name.replace('_', '-')} "
                        f"({getattr(asked, name)!r}; the run was started with "
                        f"{getattr(stored, name)!r}); resume with the run's own options")


def _json(obj: Any) -> str:
    import json
    return json.dumps(obj, indent=2, sort_keys=False) + "\n"
