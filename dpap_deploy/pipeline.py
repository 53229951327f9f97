"""The four stages over run folders, and the whole path. The CLI calls these and nothing else.

    train(cfg, "runs/a")                        # = dpap-deploy train ... --out runs/a
    compact("runs/a", "runs/a-small")           # = dpap-deploy compact runs/a --out ...
    export("runs/a", "loihi-sim", "runs/a-x")   # = dpap-deploy export runs/a --target ...
    report("runs/a")                            # = dpap-deploy report runs/a
    train_and_export(cfg, "loihi-sim", "runs/b")
    check("runs/a", ["nir", "netx"])            # = dpap-deploy check runs/a --target nir ...

Each stage reads what the stage before it wrote (the checkpoint, ``compact.pt``, the report)
and writes ``report.json`` (a typed :class:`~dpap_deploy.report.Report`), ``report.md`` and
the plots. Each records in ``run.json`` what made the folder, and writes only into a folder
that holds no other run (:mod:`.runfolder`; ``overwrite=True`` replaces one). Inputs are
checked before any work (and before torch is imported where the checks allow); a dataset is
loaded at most once per call.
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path

from .lock import output_lock
from .runfolder import check_nothing_to_resume, claim_folder, take
from .validate import check_new_run_options, check_optional_count, check_out_dir, \
    check_run_source


def train(cfg, out: str | Path, *, resume: bool = False, progress: bool = True, log=None,
          data=None, overwrite: bool = False):
    """Train (or resume) a run in ``out`` and write its report; under torchrun every rank
    calls this, rank 0 writes and returns the report, the others return ``None``. ``resume``
    needs a folder holding the run; ``overwrite`` replaces a run already in ``out``."""
    from .distributed import shutdown
    from .report import save_report, training_report
    from .trained import load_trained
    from .training import train as fit_run
    out = _check_train_out(cfg, out, resume)
    main = int(os.environ.get("RANK", "0")) == 0
    with output_lock(out, "train") if main else contextlib.nullcontext():
        try:
            run = fit_run(cfg, out, resume=resume, progress=progress, log=log, data=data,
                          overwrite=overwrite)
        finally:
            shutdown()               # leave torchrun's process group (no-op for one process)
        if not run.dist.is_main:
            return None
        rep = save_report(out, training_report(load_trained(out), len(run.data.y_test)))
        report(out)
    return rep


def _check_train_out(cfg, out: str | Path, resume: bool) -> Path:
    """``out`` of a training command: ``resume`` needs something there; a new run's options
    must not hold ones it would ignore."""
    from .train_config import TrainConfig
    if not isinstance(cfg, TrainConfig):
        from .errors import ConfigError
        raise ConfigError(f"the training options must be a TrainConfig, got "
                          f"{type(cfg).__name__}; build one with TrainConfig(...) or "
                          "TrainConfig.from_dict(table)")
    out = check_out_dir(out)
    if resume:
        check_nothing_to_resume(out)
    else:
        check_new_run_options(cfg)
    return out


def compact(source: str | Path, out: str | Path, *, data=None, overwrite: bool = False,
            log=None):
    """Compact the run at ``source`` (run folder or checkpoint), count, verify, report.
    ``out`` may hold nothing, the source run itself, or an earlier compact / export of it;
    another run there is refused unless ``overwrite``."""
    source, out = check_run_source(source), check_out_dir(out)
    from .trained import load_trained
    with output_lock(out, "compact"):
        trained = load_trained(source)
        claim = claim_folder(out, source, "compact", overwrite)
        data = data if data is not None else trained.load_data()
        take(claim)
        return _compact(trained, source, out, data, log=log)


def _compact(trained, source: Path, out: Path, data, render: bool = True, log=None,
             fine_tune: int = 0):
    from .atomic import atomic_copy
    from .compaction.measure import compact_and_measure
    from .report import compaction_sections, mark_export_stale, run_folder, save_report, \
        training_report
    from .serialize import save_model
    from .training import HISTORY
    mark_export_stale(out)
    m = compact_and_measure(trained.model, trained.kind, trained.masks, data.x_test, data.y_test,
                            trained.cfg.time_steps, log=log, time_axis=_time_axis(data))
    meta = {"dataset": trained.cfg.dataset, "model": trained.cfg.model,
            "time_steps": trained.cfg.time_steps, "input_shape": list(trained.input_shape),
            "n_classes": trained.n_classes}
    tuned = _fine_tune(m.deploy, data, trained.cfg.time_steps, fine_tune, log)
    deploy = tuned.model if tuned else m.deploy
    files = [save_model(out / "compact.pt", m.result.model, trained.kind, meta).name,
             save_model(out / "deploy.pt", deploy, trained.kind,
                        {**meta, "folded": True, "fine_tuned": bool(tuned)}).name]
    rep = training_report(trained, len(data.y_test))
    for name, section in compaction_sections(m, trained.masks, files).items():
        setattr(rep, name, section)
    if tuned:
        from .report.schema import Qat
        rep.qat = Qat.from_dict(tuned.section(), "qat")
    rep.source_run = str(run_folder(source).resolve())
    src_hist = run_folder(source) / HISTORY
    if src_hist.exists() and src_hist.resolve() != (out / HISTORY).resolve():
        atomic_copy(src_hist, out / HISTORY)
    rep = save_report(out, rep)
    if render:
        report(out)
    return rep


def _fine_tune(deploy, data, time_steps: int, epochs: int, log):
    """Quantization-aware fine-tuning of the folded network for netx (``qat.fine_tune``) on
    the run's training set, or ``None`` for ``epochs == 0``."""
    if not epochs:
        return None
    import torch
    from .qat import fine_tune
    if not isinstance(data.x_train, torch.Tensor):
        from .errors import ConfigError
        raise ConfigError("fine-tuning for fixed point takes a dataset held in memory; this "
                          "one streams its event frames from files: export without it")
    return fine_tune(deploy, (data.x_train, data.y_train), (data.x_test, data.y_test),
                     time_steps, epochs=epochs, log=log)


def _check_fine_tune(fine_tune, target: str) -> int:
    from .validate import check_int
    n = check_int("fine_tune", fine_tune, 0)
    if n and target != "netx":
        from .errors import ConfigError
        raise ConfigError(f"fine-tuning for fixed point (fine_tune={n}) trains through netx's "
                          f"integers; target {target!r} does not run them: use --target netx "
                          "or leave it out")
    return n


def _check_fixed_point(fixed_point, target: str) -> bool:
    if fixed_point not in (True, False):
        from .errors import ConfigError
        raise ConfigError(f"fixed_point must be True or False, got {fixed_point!r}")
    if fixed_point and target != "loihi-sim":
        from .errors import ConfigError
        raise ConfigError(f"--fixed-point is for --target loihi-sim, not {target!r} (netx is "
                          "always fixed point): drop the option")
    return bool(fixed_point)


def export(source: str | Path, target: str, out: str | Path, *, max_samples: int | None = None,
           data=None, overwrite: bool = False, log=None, nir_encoding: str | None = None,
           nir_pooling: str | None = None, fine_tune: int = 0, fixed_point: bool = False):
    """Compact the run at ``source``, export the compacted network to ``target``, verify it in
    the target's consumer, report. Raises ``ParityError`` (after writing the report) when the
    parity check fails. The report's ``export`` reads ``pending`` from before the export starts
    until its result is written: a killed export leaves no earlier result that reads as passed.
    ``out`` may hold what :func:`compact`'s may; ``overwrite`` replaces another run.
    ``nir_encoding`` / ``nir_pooling``: how the NIR file of ``nir`` and ``loihi-sim`` is
    written (``"gain"`` / ``"unit-r"``, ``"avg"`` / ``"sum"``; docs/nir-compat.md).
    ``fine_tune``: epochs of quantization-aware fine-tuning of the folded network on the
    training set before a ``netx`` export (``qat.py``; report.json's ``qat``), 0: none.
    ``fixed_point``: ``loihi-sim`` runs Lava's bit-accurate fixed-point models, checked bit for
    bit against the torch emulation (``exporters/lava_sim.py``)."""
    from .exporters import ExportJob, check_target, export as run_export, sample_limit
    from .exporters.nir_export import nir_options
    from .report import export_section, pending_export, save_export
    from .trained import load_trained
    source, out = check_run_source(source), check_out_dir(out)
    max_samples = check_optional_count("max_samples", max_samples)
    fine_tune = _check_fine_tune(fine_tune, target)
    fixed_point = _check_fixed_point(fixed_point, target)
    trained = load_trained(source)
    check_target(target, trained.kind)                     # fail before any work
    options = nir_options(target, nir_encoding, nir_pooling)
    if fixed_point:
        options["fixed_point"] = True
    with output_lock(out, f"export --target {target}"):
        claim = claim_folder(out, source, f"export --target {target}", overwrite)
        data = data if data is not None else trained.load_data()
        limit = sample_limit(target, max_samples, data, trained.cfg.time_steps)
        take(claim)                                         # the refusals are behind us
        if (out / "report.json").exists():
            save_export(out, pending_export(target))
        _compact(trained, source, out, data, render=False, log=log,   # keeps the pending mark
                 fine_tune=fine_tune)
        save_export(out, pending_export(target))
        report(out)                                         # report.md says: pending
        job = ExportJob.from_files(out, data.x_test, data.y_test, trained.cfg.time_steps, limit,
                                   **options)
        rep = save_export(out, export_section(run_export(target, job, out, log=log)))
        report(out)
    if not rep.export.passed:
        from .errors import ParityError
        parity = rep.export.parity.to_dict()
        reason = parity.get("failure") or f"parity {parity}"
        raise ParityError(f"{target} parity check failed: {reason}; the files and report are "
                          f"in {out}")
    return rep


def report(run_dir: str | Path, *, baseline: str | Path | None = None) -> Path:
    """(Re)write ``report.md`` and ``plots/*.png`` of a run folder from its files."""
    from .report import write_human_report
    return write_human_report(run_dir, baseline=baseline)


def train_and_export(cfg, target: str, out: str | Path, *, resume: bool = False,
                     progress: bool = True, log=None, max_samples: int | None = None,
                     overwrite: bool = False, nir_encoding: str | None = None,
                     nir_pooling: str | None = None, fine_tune: int = 0,
                     fixed_point: bool = False):
    """Train with DPAP, compact (``fine_tune``: and fine-tune for netx's fixed point, as
    :func:`export`), export (``fixed_point``: as :func:`export`), verify, report: the whole
    path in one call. The export goes into the training folder itself (the same run);
    ``overwrite`` replaces a run already in ``out``. A model ``target`` would refuse is refused
    before training, with every blocker (``NotDeployableError``; nothing is trained or written)."""
    from .distributed import env_world
    from .errors import ConfigError
    from .exporters import check_target
    from .exporters.nir_export import nir_options
    from .zoo import ZOO
    if env_world() > 1:
        raise ConfigError(f"train-and-export runs in one process (WORLD_SIZE is {env_world()}); "
                          "under torchrun use 'train', then 'export' the run directory")
    if cfg.model in ZOO:
        check_target(target, ZOO[cfg.model].kind)     # refuse before training, not after
    nir_options(target, nir_encoding, nir_pooling)
    max_samples = check_optional_count("max_samples", max_samples)
    fine_tune = _check_fine_tune(fine_tune, target)
    fixed_point = _check_fixed_point(fixed_point, target)
    out = _check_train_out(cfg, out, resume)
    from .data import load_dataset
    data = load_dataset(cfg.dataset, cfg.data_root, cfg.time_steps)
    check_before_training(cfg, target, data)
    with output_lock(out, f"train-and-export --target {target}"):
        train(cfg, out, resume=resume, progress=progress, log=log, data=data,
              overwrite=overwrite)
        return export(out, target, out, max_samples=max_samples, data=data, log=log,
                      nir_encoding=nir_encoding, nir_pooling=nir_pooling, fine_tune=fine_tune,
                      fixed_point=fixed_point)


def check(source: str | Path, targets=None):
    """Will it deploy? The blockers (``deployability.Deployability``) of the model at
    ``source`` for ``targets`` (a name, a list, or None: every target of its kind): a run
    folder or its checkpoint (the run's model with its time steps), or a model file written
    by ``save_model`` (``compact.pt``, ``deploy.pt``; its stored input shape and time steps).
    Nothing is written."""
    import torch
    from .deployability import check_graph, targets_for
    from .graph import build_graph
    from .validate import as_path
    path = as_path(source, "the run or model file")
    if not path.exists():
        from .errors import DPAPError
        raise DPAPError(f"{source} does not exist; pass a run folder, its checkpoint.pt, or a "
                        "model file (compact.pt, deploy.pt)")
    if path.is_file() and _is_model_file(path):
        from .serialize import load_model
        model, kind, meta = load_model(path)
        shape, steps = meta.get("input_shape"), meta.get("time_steps")
        if not (isinstance(shape, list) and shape and all(isinstance(v, int) for v in shape)):
            from .errors import CheckpointError
            raise CheckpointError(f"{path} stores no input shape (meta input_shape is "
                                  f"{shape!r}); check the run it came from instead")
    else:
        from .trained import load_trained
        trained = load_trained(check_run_source(source))
        model, kind, shape = trained.model, trained.kind, list(trained.input_shape)
        steps = trained.cfg.time_steps
    names = targets_for(kind, targets)
    return check_graph(build_graph(model, torch.zeros(2, *shape)), names,
                       steps if isinstance(steps, int) else None)


def _is_model_file(path: Path) -> bool:
    """Whether ``path`` is a ``save_model`` file (else a checkpoint, or not ours)."""
    from .checkpoint import safe_torch_load
    from .serialize import FORMAT
    data = safe_torch_load(path, "cpu", "model or checkpoint file")
    return isinstance(data, dict) and data.get("format") == FORMAT


def check_before_training(cfg, target: str, data) -> None:
    """Refuse, before any training, a model ``target`` would refuse after it: the run's model
    is built as training builds it (the caller's random state untouched) and checked
    (``deployability.check_graph``) on two training samples with the run's time steps."""
    import torch
    from .deployability import check_graph
    from .graph import build_graph
    from .zoo import build_model
    with torch.random.fork_rng(devices=[]):
        model, _ = build_model(cfg.model, data.input_shape, data.n_classes)
    # two samples (batch first: a dataset's frames are [N, T, ...]; frames binned on demand
    # are not a tensor, so they are cut here rather than by build_graph)
    result = check_graph(build_graph(model, data.x_train[:2], time_axis=_time_axis(data)),
                         [target], cfg.time_steps)
    if not result.ok:
        raise result.refusal(f"model {cfg.model!r} was not trained and nothing was written; "
                             "fix each, or check it first with 'dpap-deploy check' / "
                             "check_deployable()")


def _time_axis(data) -> int | None:
    """A dataset's time axis: its event frames are batch first ``[N, T, C, H, W]`` (1);
    images have none."""
    return 1 if data.is_sequence else None


# Names of the stages before they were four (kept for scripts that call them).
compact_run, export_run = compact, export
