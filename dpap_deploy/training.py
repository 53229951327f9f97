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

import csv
import io
import random
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from .checkpoint import atomic_write_text, load_checkpoint, rng_state, save_checkpoint, set_rng_state
from .data import Dataset, load_dataset
from .data.checks import check_dataset
from .dpap import DPAP, DPAPConfig, find_prunable_layers, preset
from .dpap.masking import layer_stats
from .errors import ConfigError, DPAPError
from .metrics import correct as n_correct, output_activity, predictions, silent_warning
from .neurons import run_snn
from .notices import warn
from .progress import LogProgress
from .zoo import build_model

CHECKPOINT = "checkpoint.pt"
HISTORY = "history.csv"


@dataclass
class TrainConfig:
    """One training run. ``dpap_config=None`` picks the preset for the model kind
    (``default`` for SNNs, ``ann`` for ANNs)."""

    dataset: str = "digits"
    data_root: str | None = None
    model: str = "snn-digits"
    epochs: int = 60
    batch_size: int = 64
    time_steps: int = 8
    lr: float = 5e-3
    seed: int = 0
    device: str = "auto"
    dpap: bool = True
    dpap_config: dict | None = None
    baseline: str | None = None          # a baselines.METHODS name instead of DPAP
    executor: str = "multistep"          # SNN time loop: "multistep" (a window per layer) or "step"
    prune_target: float | None = None    # baseline: fraction of the target kind to remove
    prune_target_kind: str = "params"    # baseline: params, synops or macs (structured ones)
    prune_window: list | None = None     # baseline: [start, end] epochs of the schedule

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "time_steps"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ConfigError(f"invalid {name.replace('_', '-')} {v!r}: must be an integer >= 1")
        if not (isinstance(self.lr, (int, float)) and 0 < self.lr < 10):
            raise ConfigError(f"invalid learning rate {self.lr!r}: must be in (0, 10)")
        if self.baseline is not None:
            if self.dpap:
                raise ConfigError(f"--baseline {self.baseline} replaces DPAP: pass --no-dpap too")
            if self.prune_target is None:
                raise ConfigError("a pruning baseline needs --prune-target (fraction of all "
                                  "parameters to remove)")
        if self.executor not in ("multistep", "step"):
            raise ConfigError(f"invalid executor {self.executor!r}: use multistep or step")
        if self.device not in ("auto", "cpu", "cuda") and not str(self.device).startswith("cuda:"):
            raise ConfigError(f"invalid device {self.device!r}: use auto, cpu or cuda")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"unknown training option(s) {', '.join(unknown)}; "
                              f"known: {', '.join(sorted(known))}")
        return cls(**d)


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
    executor: Any = None                 # executor.MultiStep, when the SNN runs multi-step
    data_warnings: list[str] = field(default_factory=list)   # data.checks, when training began

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
    return MultiStep(graph)


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
    run.executor = make_executor(cfg, model, kind, data.x_train[:2].to(device),
                                 dpap.graph if dpap is not None else None)
    if cfg.baseline is not None:
        from .baselines import MEASURE_SAMPLES, make_baseline
        start, end = cfg.prune_window or [2, max(3, cfg.epochs // 2)]
        measure = data.x_train[epoch_order(len(data.y_train), cfg.seed, -1)[:MEASURE_SAMPLES]]
        run.baseline = make_baseline(cfg.baseline, model, data.x_train[:2].to(device),
                                     cfg.prune_target, start, end, cfg.seed,
                                     cfg.prune_target_kind, measure.to(device), cfg.time_steps)
    return run


def save_run(run: Run, out: Path) -> None:
    save_checkpoint(out / CHECKPOINT, {
        "train_config": run.cfg.to_dict(), "kind": run.kind, "epoch": run.epoch,
        "model": run.model.state_dict(), "optimizer": run.optimizer.state_dict(),
        "scheduler": run.scheduler.state_dict(),
        "dpap": run.dpap.state_dict() if run.dpap is not None else None,
        "baseline": run.baseline.state_dict() if run.baseline is not None else None,
        "history": run.history, "rng": rng_state(), "data_warnings": run.data_warnings})
    write_history(out / HISTORY, run.history)


def restore_run(ckpt: dict, device: str | None = None, data: Dataset | None = None) -> Run:
    """Rebuild a run from a checkpoint (model, optimizer, scheduler, DPAP, RNG, history)."""
    cfg_dict = dict(ckpt["train_config"])
    if device is not None:
        cfg_dict["device"] = device
    run = build_run(TrainConfig.from_dict(cfg_dict), data)
    try:
        run.model.load_state_dict(ckpt["model"])
        run.optimizer.load_state_dict(ckpt["optimizer"])
        run.scheduler.load_state_dict(ckpt["scheduler"])
        if run.dpap is not None:
            run.dpap.load_state_dict(ckpt["dpap"])
        if run.baseline is not None:
            run.baseline.load_state_dict(ckpt["baseline"])
    except (KeyError, RuntimeError, ValueError) as exc:
        raise DPAPError(f"checkpoint does not match its own model configuration: "
                        f"{str(exc).splitlines()[0][:200]}") from None
    run.history = list(ckpt["history"])
    run.data_warnings = list(ckpt.get("data_warnings", []))
    set_rng_state(ckpt["rng"])
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
    """One epoch; progress is a bar on a terminal, else a line every ``progress_interval_s``."""
    cfg, model, data = run.cfg, run.model, run.data
    model.train()
    order = epoch_order(len(data.y_train), cfg.seed, run.epoch)
    total_loss, correct, seen = 0.0, 0, 0
    batches = range(0, len(order), cfg.batch_size)
    tty = sys.stderr.isatty()
    bar = tqdm(batches, desc=f"epoch {run.epoch + 1}/{cfg.epochs}", leave=False, unit="batch",
               disable=not (progress and tty))
    lines = LogProgress(run.epoch + 1, cfg.epochs, len(order), len(batches),
                        progress_interval_s) if progress and not tty else None
    for b, i in enumerate(bar):
        idx = order[i:i + cfg.batch_size]
        x, y = data.x_train[idx].to(run.device), data.y_train[idx].to(run.device)
        out = model_output(model, x, run.kind, cfg.time_steps, run.executor, run.dpap)
        loss = loss_fn(out, y, run.kind)
        run.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        run.optimizer.step()
        if run.pruner is not None:
            run.pruner.step()
        total_loss += float(loss.detach()) * len(y)
        correct += n_correct(predictions(out.detach()), y)
        seen += len(y)
        bar.set_postfix(loss=f"{total_loss / seen:.4f}", acc=f"{correct / seen:.3f}")
        if lines is not None:
            lines.update(b + 1, seen, total_loss / seen)
    run.scheduler.step()
    return total_loss / seen, correct / seen


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
    log = log or (lambda msg: None)
    while run.epoch < run.cfg.epochs:
        t0 = time.perf_counter()
        loss, train_acc = train_epoch(run, progress, progress_interval_s)
        died = run.dpap.end_epoch() if run.dpap is not None else {}
        if run.baseline is not None:
            run.baseline.end_epoch()
        test_acc, activity = evaluate_outputs(run.model, run.data.x_test, run.data.y_test,
                                              run.kind, run.cfg.time_steps, run.device,
                                              executor=run.executor)
        row = history_row(run, loss, train_acc, test_acc, time.perf_counter() - t0, activity)
        run.history.append(row)
        save_run(run, out)
        n_died = sum(d["neurons"] for d in died.values())
        s_died = sum(d["synapses"] for d in died.values())
        log(f"epoch {row['epoch']:3d}/{run.cfg.epochs}  loss {loss:.4f}  train {train_acc:.4f}  "
            f"test {test_acc:.4f}  removed {row['params_removed_fraction']:.1%}"
            + (f"  (pruned {n_died} neurons, {s_died} synapses)" if n_died or s_died else "")
            + (f"  silent {row['test_silent_fraction']:.1%}" if row.get("test_silent_fraction") else "")
            + f"  {row['wall_time_s']:.2f}s")
    if run.kind == "snn" and run.history:
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
    them when None) must equal the stored ones, except ``device``."""
    out = Path(out)
    ckpt_path = out / CHECKPOINT
    if ckpt_path.exists() and not resume:
        raise DPAPError(f"{out} already holds a run ({CHECKPOINT}); pass --resume to continue "
                        "it or choose another --out")
    if resume and ckpt_path.exists():
        run = restore_run(load_checkpoint(ckpt_path), device=cfg.device, data=data)
        _check_resume_matches(run.cfg, cfg, explicit)
        if log:
            log(f"resuming {out} after epoch {run.epoch}")
    else:
        run = build_run(cfg, data)
        run.data_warnings = check_dataset(run.data, run.cfg.batch_size)
        out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "config.json", _json(run.cfg.to_dict() | {
        "dpap_config_resolved": run.dpap.config.to_dict() if run.dpap is not None else None}))
    return fit(run, out, progress, log, progress_interval_s)


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
