"""The training loop: one loop with or without DPAP (or a baseline pruner).

SNN: direct encoding over ``T`` steps, loss = ``||onehot - rate||^2`` (Eq 3, summed over
classes, averaged over the batch), prediction = most spikes. ANN: cross-entropy. Adam with a
cosine learning-rate schedule over the run. Each epoch ends with the pruner's update, a test
evaluation, one row of ``history.csv`` and an atomic checkpoint (:mod:`.run`), so
``resume=True`` continues a run bit for bit.

The data are checked once when a run starts (:mod:`dpap_deploy.data.checks`), and a network
whose output is silent on many test samples is reported (:func:`dpap_deploy.metrics.silent_warning`).
"""
from __future__ import annotations

import contextlib
import math
import sys
import time
from dataclasses import fields
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from tqdm import tqdm

from .. import distributed, masks, precision as amp
from ..atomic import atomic_write_text
from ..checkpoint import load_checkpoint
from ..data import Dataset
from ..data.checks import check_dataset
from ..data.loader import batch_sizes, epoch_batches
from ..errors import DPAPError
from ..evaluation import evaluate_outputs
from ..lock import output_lock
from ..metrics import correct as n_correct, predictions, silent_warning
from ..notices import warn
from ..progress import LogProgress
from ..resources import check_training_memory
from ..runfolder import (TrainStart, check_checkpoint_is_run, check_same_data, clear_run,
                         data_fingerprint, new_run_id, plan_train, train_manifest, write_manifest)
from ..train_config import TrainConfig
from ..validate import check_new_run_options, check_out_dir
from .run import CHECKPOINT, Run, build_run, pruner_masks, restore_run, save_run

def loss_fn(out: torch.Tensor, y: torch.Tensor, kind: str) -> torch.Tensor:
    if kind == "snn":
        target = F.one_hot(y, out.shape[1]).to(out.dtype)
        return ((out - target) ** 2).sum(1).mean()
    return F.cross_entropy(out, y)


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
                lr: float, activity: dict | None = None) -> dict:
    """One epoch's row of history.csv; ``lr`` is the rate the epoch trained at."""
    row: dict[str, Any] = {"epoch": run.epoch + 1, "loss": loss,
                           "train_acc": train_acc, "test_acc": test_acc,
                           "lr": lr, "wall_time_s": round(wall, 4)}
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
        lr = run.optimizer.param_groups[0]["lr"]    # the epoch's rate: train_epoch steps it on
        loss, train_acc = train_epoch(run, progress, progress_interval_s)
        if not math.isfinite(loss):
            raise DPAPError(f"training diverged in epoch {run.epoch + 1} (loss {loss}); nothing "
                            "of this epoch was saved: lower --lr or check the input data")
        died = run.dpap.end_epoch() if run.dpap is not None else {}
        if run.baseline is not None:
            run.baseline.end_epoch()
        d.check_same(masks.digest(pruner_masks(run)),
                     f"the pruning masks after epoch {run.epoch + 1}")
        row = None
        if d.is_main:   # rank 0 evaluates and writes; the others take its history row
            test_acc, activity = evaluate_outputs(run.model, run.data.x_test, run.data.y_test,
                                                  run.kind, run.cfg.time_steps, run.device,
                                                  executor=run.executor)
            row = history_row(run, loss, train_acc, test_acc, time.perf_counter() - t0, lr,
                              activity)
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
          explicit: set[str] | None = None, progress_interval_s: float | None = None,
          overwrite: bool = False) -> Run:
    """Train (or resume) a run in ``out``; returns the finished run. See :func:`fit`.

    A new run needs a folder that holds no run (``overwrite=True`` replaces one); ``resume``
    continues exactly the training run in ``out`` and nothing else (:mod:`..runfolder`), on
    the data it started with. A folder with no record of a run at all (a start killed before
    it wrote anything, or no folder yet: "resume if there is a run") is started from the first
    epoch; the ``train`` stage and the CLI refuse ``--resume`` on a missing or empty folder.

    On resume the run's stored configuration is used; options named in ``explicit`` (default:
    ``cfg.given``, the names a config file or the command line set; all of them when None)
    must equal the stored ones, except ``device`` and ``workers``.

    Started by torchrun, every process calls this: they join one process group
    (:mod:`.distributed`), train data-parallel, and rank 0 writes the run directory."""
    out = check_out_dir(out)
    d = distributed.setup(cfg.device)
    lock = output_lock(out, "train") if d.is_main else contextlib.nullcontext()
    with lock:
        start = _shared_plan(out, resume, overwrite, d)
        run = _start_run(start, cfg, out, data, explicit if explicit is not None else cfg.given)
        if log and d.is_main and start.how != "new":
            log(f"resuming {out} after epoch {run.epoch}")
        check_training_memory(run.model, run.data.x_train[:1].to(run.device), run.kind,
                              run.cfg.time_steps, min(run.cfg.batch_size, len(run.data.y_train)),
                              run.device)
        if d.is_main:
            _record_run(run, out, start)
        return fit(run, out, progress, log, progress_interval_s)


def _shared_plan(out: Path, resume: bool, overwrite: bool, d) -> TrainStart:
    """Rank 0 reads the folder (before any rank writes it) and tells the others."""
    plan: Any = None
    if d.is_main:
        try:
            plan = plan_train(out, resume, overwrite)
        except DPAPError as exc:
            plan = exc
    plan = d.broadcast_object(plan)
    if isinstance(plan, DPAPError):
        raise plan
    return plan


def _start_run(start: TrainStart, cfg: TrainConfig, out: Path, data: Dataset | None,
               explicit: set[str] | None) -> Run:
    """The run in memory: new, restored from the checkpoint, or started again from the
    manifest of a run stopped before its first epoch; checked against the folder's record."""
    recorded, run_id = None, new_run_id()
    if start.how == "checkpoint":
        ckpt = load_checkpoint(out / CHECKPOINT)
        check_checkpoint_is_run(start, ckpt, out)
        run = restore_run(ckpt, device=cfg.device, data=data)
        recorded = ckpt.get("data_fingerprint") or getattr(start.manifest, "data", None)
        run_id = ckpt.get("run_id") or getattr(start.manifest, "run_id", None) or run_id
    elif start.how == "manifest":
        run = build_run(TrainConfig.from_dict({**start.manifest.config, "device": cfg.device}),
                        data)
        recorded, run_id = start.manifest.data, start.manifest.run_id
    else:
        check_new_run_options(cfg)
        run = build_run(cfg, data)
    amp.check(run.cfg.precision, run.device)   # here, not in build_run: a CPU can compact it
    if start.how != "checkpoint":
        run.data_warnings = check_dataset(run.data, run.cfg.batch_size)
    run.run_id, run.data_fingerprint = run_id, data_fingerprint(run.data)
    if start.how != "new":
        _check_resume_matches(run.cfg, cfg, explicit)
        check_same_data(recorded, run.data_fingerprint, run.cfg.dataset, out, warn)
        run.data_fingerprint = recorded       # None stays None: the start's data are unknown
    if start.note:
        warn(start.note)
    return run


def _record_run(run: Run, out: Path, start: TrainStart) -> None:
    """Replace the old run when asked, then record this one (manifest first, before any other
    file of the run) and its options."""
    if start.clear:
        clear_run(out)
    out.mkdir(parents=True, exist_ok=True)
    cfg = run.cfg.to_dict()
    write_manifest(out, train_manifest(out, run.run_id, run.data_fingerprint, cfg))
    atomic_write_text(out / "config.json", _json(cfg | {
        "dpap_config_resolved": run.dpap.config.to_dict() if run.dpap is not None else None}))


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
