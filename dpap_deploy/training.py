"""Training with or without DPAP through one loop, with resumable checkpoints.

SNN: direct encoding over ``T`` steps, loss = ``||onehot - rate||^2`` (Eq 3, summed over
classes, averaged over the batch), prediction = most spikes. ANN: cross-entropy. Adam with a
cosine learning-rate schedule over the run. Each epoch ends with the DPAP survival update, a
test evaluation, one row of ``history.csv`` and an atomic checkpoint holding the model,
optimizer, scheduler, DPAP state and every RNG state, so an interrupted run resumed with
``resume=True`` ends with the same weights and masks as an uninterrupted one (CPU, same seed).

A sample whose output scores tie (a silent output layer included) counts as wrong
(:mod:`.metrics`). The data are checked once when a run starts (:mod:`.data.checks`), and a
network whose output is silent on many test samples is reported (:func:`.metrics.silent_warning`).
"""
from __future__ import annotations

import contextlib
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

from . import distributed, precision as amp
from .atomic import atomic_write_text
from .checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from .data import Dataset, load_dataset
from .data.checks import check_dataset
from .data.loader import EpochBatchSampler, batch_sizes, epoch_batches, epoch_order, make_loader
from .dpap import DPAP, DPAPConfig, find_prunable_layers, preset
from .dpap.masking import layer_stats
from .errors import ConfigError, DPAPError
from .metrics import correct as n_correct, output_activity, predictions, silent_warning
from .lock import output_lock
from .resources import check_training_memory
from .train_config import TrainConfig
from .validate import check_checkpoint_keys, check_dpap_masks, check_out_dir
from .neurons import run_snn
from .notices import warn
from .progress import LogProgress
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


def model_output(model: nn.Module, x: torch.Tensor, kind: str, time_steps: int,
                 executor=None, observer=None) -> torch.Tensor:
    """SNN: firing rate ``[B, classes]`` over ``time_steps``; ANN: logits. With a multi-step
    ``executor`` (``dpap_deploy.executor.MultiStep``) the window runs layer by layer, and DPAP
    (``observer``) takes its traces from the executor instead of its hooks."""
    if kind == "snn":
        if executor is not None:
            if observer is not None and hasattr(observer, "windows"):
                with observer.windows():
                    return executor.run(x, time_steps, observer).mean(0)
            return executor.run(x, time_steps).mean(0)
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
def evaluate_outputs(model: nn.Module, x: torch.Tensor, y: torch.Tensor, kind: str,
                     time_steps: int, device: torch.device,
                     batch_size: int = 512, executor=None) -> tuple[float, dict]:
    """Accuracy (ties and silence wrong) and the output activity (:func:`output_activity`;
    for an ANN only ``tie_fraction`` means something)."""
    was = model.training
    model.eval()
    outs = [model_output(model, x[i:i + batch_size].to(device), kind, time_steps, executor).cpu()
            for i in range(0, len(y), batch_size)]
    model.train(was)
    out = torch.cat(outs) if outs else torch.zeros(0, 1)
    return n_correct(predictions(out), y) / max(len(y), 1), output_activity(out)


def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, kind: str, time_steps: int,
             device: torch.device, batch_size: int = 512) -> float:
    """Test accuracy; a sample whose outputs tie (e.g. all silent) counts as wrong."""
    return evaluate_outputs(model, x, y, kind, time_steps, device, batch_size)[0]


class WindowForward(nn.Module):
    """The training forward pass (:func:`model_output`) as one module, so that
    ``DistributedDataParallel`` sees the whole window, whichever executor runs it."""

    def __init__(self, run: "Run") -> None:
        super().__init__()
        self.model = run.model
        self._run = run

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r = self._run
        return model_output(self.model, x, r.kind, r.cfg.time_steps, r.executor, r.dpap)


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
    data_warnings: list[str] = field(default_factory=list)   # data.checks, when training began
    dist: distributed.Dist = field(default_factory=distributed.Dist)   # this process's rank
    forward: Any = None                  # WindowForward, wrapped in DDP when distributed
    sampler: Any = None                  # data.loader.EpochBatchSampler of this rank
    loader: Any = None                   # a DataLoader when cfg.workers > 0
    scaler: Any = None                   # GradScaler for fp16

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


def make_executor(cfg: TrainConfig, model: nn.Module, kind: str, example: torch.Tensor,
                  graph=None):
    """The multi-step executor for an SNN the graph can run layer by layer, else ``None``
    (the step loop; ``--executor step`` asks for it)."""
    if cfg.executor != "multistep" or kind != "snn":
        return None
    from .executor import MultiStep, tune_cpu_allocator
    from .graph import build_graph
    graph = graph if graph is not None else build_graph(model, example)
    if not MultiStep.supports(graph):
        return None
    if example.device.type == "cpu":
        tune_cpu_allocator()
    return MultiStep(graph, checked=True)


def build_run(cfg: TrainConfig, data: Dataset | None = None) -> Run:
    data = data if data is not None else load_dataset(cfg.dataset, cfg.data_root, cfg.time_steps)
    if data.is_sequence and data.x_train.shape[1] != cfg.time_steps:
        raise ConfigError(f"dataset {data.name!r} has {data.x_train.shape[1]} time bins but "
                          f"--time-steps is {cfg.time_steps}")
    d = distributed.current()
    device = resolve_device(distributed.device_for(cfg.device, d))
    distributed.check_batch(len(data.y_train), cfg.batch_size, d.world)
    if cfg.augment and data.is_sequence:
        raise ConfigError(f"--augment crops and flips images; {data.name!r} holds event frames")
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
    run.executor = make_executor(cfg, model, kind, data.x_train[:2].to(device),
                                 dpap.graph if dpap is not None else None)
    if cfg.baseline is not None:
        from .baselines import MEASURE_SAMPLES, make_baseline
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
        "world_size": run.dist.world})
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


def train_epoch(run: Run, progress: bool,
                progress_interval_s: float | None = None) -> tuple[float, float]:
    """One epoch; progress is a bar on a terminal, else a line every ``progress_interval_s``.
    Under data parallelism each rank trains on its slice of every global batch; the epoch's
    loss and accuracy are summed over the ranks."""
    cfg, model, data, d = run.cfg, run.model, run.data, run.dist
    model.train()
    run.sampler.set_epoch(run.epoch)
    sizes = batch_sizes(len(data.y_train), cfg.batch_size)
    totals = torch.zeros(3, dtype=torch.float64)     # loss sum, correct, samples (this rank)
    show = progress and d.is_main
    tty = sys.stderr.isatty()
    bar = tqdm(total=len(sizes), desc=f"epoch {run.epoch + 1}/{cfg.epochs}", leave=False,
               unit="batch", disable=not (show and tty))
    lines = LogProgress(run.epoch + 1, cfg.epochs, len(data.y_train), len(sizes),
                        progress_interval_s) if show and not tty else None
    batches = epoch_batches(data.x_train, data.y_train, run.sampler, run.loader)
    for b, (x, y) in enumerate(batches):
        x, y = x.to(run.device, non_blocking=True), y.to(run.device, non_blocking=True)
        with amp.autocast(cfg.precision, run.device):
            out = run.forward(x)
        out = out.float()
        loss = loss_fn(out, y, run.kind)
        scaled = loss * distributed.loss_scale(len(y), sizes[b], d)
        run.optimizer.zero_grad(set_to_none=True)
        if run.scaler is not None:
            run.scaler.scale(scaled).backward()
            run.scaler.step(run.optimizer)
            run.scaler.update()
        else:
            scaled.backward()
            run.optimizer.step()
        if run.pruner is not None:
            run.pruner.step()
        totals += torch.tensor([float(loss.detach()) * len(y),
                                n_correct(predictions(out.detach()), y), len(y)],
                               dtype=torch.float64)
        seen = int(totals[2]) * d.world
        bar.update(1)
        bar.set_postfix(loss=f"{totals[0] / totals[2]:.4f}", acc=f"{totals[1] / totals[2]:.3f}")
        if lines is not None:
            lines.update(b + 1, seen, float(totals[0] / totals[2]))
    bar.close()
    run.scheduler.step()
    if d.active:
        totals = d.all_reduce_sum_(totals.to(distributed.collective_device())).cpu()
    return float(totals[0] / totals[2]), float(totals[1] / totals[2])


def history_row(run: Run, loss: float, train_acc: float, test_acc: float, wall: float,
                activity: dict | None = None) -> dict:
    row: dict[str, Any] = {"epoch": run.epoch + 1, "loss": loss,
                           "train_acc": train_acc, "test_acc": test_acc,
                           "lr": run.optimizer.param_groups[0]["lr"], "wall_time_s": round(wall, 4)}
    if activity is not None:
        row["test_tie_fraction"] = activity["tie_fraction"]
        if run.kind == "snn":
            row["test_silent_fraction"] = activity["silent_fraction"]
            row["test_output_rate"] = activity["firing_rate"]
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
        log: Callable[[str], None] | None = None,
        progress_interval_s: float | None = None) -> Run:
    """Train ``run`` from its current epoch to ``cfg.epochs``, checkpointing every epoch.
    ``progress_interval_s``: seconds between progress lines when stderr is not a terminal
    (default: :func:`.progress.default_interval`, 30 s)."""
    d = run.dist
    log = log if log is not None and d.is_main else (lambda msg: None)
    while run.epoch < run.cfg.epochs:
        t0 = time.perf_counter()
        loss, train_acc = train_epoch(run, progress, progress_interval_s)
        if not math.isfinite(loss):
            raise DPAPError(f"training diverged in epoch {run.epoch + 1} (loss {loss}); nothing "
                            "of this epoch was saved: lower --lr or check the input data")
        died = run.dpap.end_epoch() if run.dpap is not None else {}
        if run.baseline is not None:
            run.baseline.end_epoch()
        d.check_same(distributed.masks_digest(pruner_masks(run)),
                     f"the pruning masks after epoch {run.epoch + 1}")
        row = None
        if d.is_main:   # rank 0 evaluates and writes; the others take its history row
            test_acc, activity = evaluate_outputs(run.model, run.data.x_test, run.data.y_test,
                                                  run.kind, run.cfg.time_steps, run.device,
                                                  executor=run.executor)
            row = history_row(run, loss, train_acc, test_acc, time.perf_counter() - t0, activity)
        row = d.broadcast_object(row)
        run.history.append(row)
        if d.is_main:
            save_run(run, out)
        n_died = sum(k["neurons"] for k in died.values())
        s_died = sum(k["synapses"] for k in died.values())
        log(f"epoch {row['epoch']:3d}/{run.cfg.epochs}  loss {loss:.4f}  train {train_acc:.4f}  "
            f"test {row['test_acc']:.4f}  removed {row['params_removed_fraction']:.1%}"
            + (f"  (pruned {n_died} neurons, {s_died} synapses)" if n_died or s_died else "")
            + (f"  silent {row['test_silent_fraction']:.1%}" if row.get("test_silent_fraction") else "")
            + f"  {row['wall_time_s']:.2f}s")
    if run.kind == "snn" and run.history and d.is_main:
        last = run.history[-1]
        msg = silent_warning({"silent_fraction": float(last.get("test_silent_fraction", 0.0)),
                              "n_samples": len(run.data.y_test)}, "test set")
        if msg:
            warn(msg)
    return run


def train(cfg: TrainConfig, out: str | Path, resume: bool = False, progress: bool = True,
          log: Callable[[str], None] | None = None, data: Dataset | None = None,
          explicit: set[str] | None = None, progress_interval_s: float | None = None) -> Run:
    """Train (or resume) a run in ``out``; returns the finished run. See :func:`fit`.

    On resume the run's stored configuration is used; options named in ``explicit`` (all of
    them when None) must equal the stored ones, except ``device`` and ``workers``.

    Started by torchrun, every process calls this: they join one process group
    (:mod:`.distributed`), train data-parallel, and rank 0 writes the run directory."""
    out = check_out_dir(out)
    d = distributed.setup(cfg.device)
    ckpt_path = out / CHECKPOINT
    if ckpt_path.exists() and not resume:
        raise DPAPError(f"{out} already holds a run ({CHECKPOINT}); pass --resume to continue "
                        "it or choose another --out")
    lock = output_lock(out, "train") if d.is_main else contextlib.nullcontext()
    with lock:
        if resume and ckpt_path.exists():
            run = restore_run(load_checkpoint(ckpt_path), device=cfg.device, data=data)
            amp.check(run.cfg.precision, run.device)
            _check_resume_matches(run.cfg, cfg, explicit)
            if log and d.is_main:
                log(f"resuming {out} after epoch {run.epoch}")
        else:
            run = build_run(cfg, data)
            amp.check(cfg.precision, run.device)   # here, not in build_run: a CPU can compact it
            run.data_warnings = check_dataset(run.data, run.cfg.batch_size)
            if d.is_main:
                out.mkdir(parents=True, exist_ok=True)
        check_training_memory(run.model, run.data.x_train[:1].to(run.device), run.kind,
                              run.cfg.time_steps, min(run.cfg.batch_size, len(run.data.y_train)),
                              run.device)
        if d.is_main:
            atomic_write_text(out / "config.json", _json(run.cfg.to_dict() | {
                "dpap_config_resolved": run.dpap.config.to_dict() if run.dpap is not None else None}))
        return fit(run, out, progress, log, progress_interval_s)


def _check_resume_matches(stored: TrainConfig, asked: TrainConfig,
                          explicit: set[str] | None) -> None:
    names = [f.name for f in fields(TrainConfig) if explicit is None or f.name in explicit]
    diff = [n for n in names if n not in ("device", "workers") and getattr(stored, n) != getattr(asked, n)]
    if diff:
        name = diff[0]
        raise DPAPError(f"cannot resume with a different {name.replace('_', '-')} "
                        f"({getattr(asked, name)!r}; the run was started with "
                        f"{getattr(stored, name)!r}); resume with the run's own options")


def _json(obj: Any) -> str:
    import json
    return json.dumps(obj, indent=2, sort_keys=False) + "\n"
