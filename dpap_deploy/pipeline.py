"""Stages over run directories: compact a trained run, (re)generate its report.

    compact_run("runs/a", "runs/a-compact")   # = dpap-deploy compact runs/a --out runs/a-compact
    write_human_report("runs/a")              # = dpap-deploy report runs/a
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from .atomic import atomic_copy, atomic_write_text
from .checkpoint import load_checkpoint
from .compaction import compact, fold_for_deployment, masks_from_dpap_state
from .graph import build_graph
from .counting import PJ_PER_AC, PJ_PER_MAC, OpsReport, count_ops, param_counts
from .errors import DPAPError
from .lock import output_lock
from .metrics import silent_warning
from .neurobench_defs import neurobench_metrics
from .notices import warn
from .report import run_report, write_report
from .report_md import render
from .run_files import read_history, read_report
from .serialize import save_model
from .training import HISTORY, evaluate, restore_run
from .validate import check_optional_count, check_out_dir, check_run_source, existing_path

VERIFY_SAMPLES = 1000


def _run_dir(source: str | Path) -> Path:
    p = Path(source)
    return p if p.is_dir() else p.parent


def _ops_section(masked: OpsReport, small: OpsReport) -> dict[str, float]:
    dense_pj = PJ_PER_AC * masked.total("synops_dense") + PJ_PER_MAC * masked.total("macs_dense")
    return {"synops_dense": masked.total("synops_dense"), "synops_compact": small.total("synops"),
            "macs_dense": masked.total("macs_dense"), "macs_compact": small.total("macs"),
            "macs_compact_dense": small.total("macs_dense"),
            "energy_pj_dense": dense_pj, "energy_pj_compact": small.energy_pj,
            "energy_note": "estimate: 0.9 pJ per accumulate, 4.6 pJ per MAC (45 nm)",
            "measured_on": f"{small.samples} test samples"}


def _nonzero_kernels(weight: torch.Tensor) -> torch.Tensor:
    """``[C_out, C_in]`` synapses (kernels) with a non-zero weight: the masks of a run pruned
    without DPAP state (a baseline), whose pruned weights are zero."""
    w = weight.detach().cpu()
    return w.reshape(w.shape[0], w.shape[1], -1).ne(0).any(2)


def _layer_rows(layers, plan, masks, masked_ops: OpsReport, small_ops: OpsReport) -> list[dict]:
    rows = []
    for layer, lp, mo, so in zip(layers, plan.layers, masked_ops.layers, small_ops.layers):
        syn, neu = masks[layer.name] if masks and layer.name in masks else (
            _nonzero_kernels(layer.synapse.weight), torch.ones(layer.n_out, dtype=torch.bool))
        eff = (syn & neu[:, None])
        in_units = lp.keep_in
        bn_params = sum(p.numel() for p in layer.bn.parameters()) if layer.bn is not None else 0
        bn_kept = (bn_params // layer.n_out) * len(lp.keep_out)
        after_pruning, kept = int(eff.sum()), int(eff[lp.keep_out][:, in_units].sum())
        # kept = total - pruned (by the pruner's masks) - derived dead (removed by compaction)
        rows.append({"name": layer.name, "kind": layer.kind,
                     "neurons_total": layer.n_out, "neurons_kept": len(lp.keep_out),
                     "neurons_pruned": lp.pruned_out, "neurons_derived_dead": lp.derived_out,
                     "synapses_total": layer.n_out * layer.n_in, "synapses_kept": kept,
                     "synapses_pruned": layer.n_out * layer.n_in - after_pruning,
                     "synapses_derived_dead": after_pruning - kept,
                     "params_dense": mo.params + bn_params, "params_compact": so.params + bn_kept,
                     "synops_dense": mo.synops_dense, "synops_compact": so.synops,
                     "macs_dense": mo.macs_dense, "macs_compact": so.macs})
    return rows


def compact_run(source: str | Path, out: str | Path, progress: bool = False) -> dict[str, Any]:
    """Compact the run at ``source`` (run directory or checkpoint), count, verify, report."""
    source, out = check_run_source(source), check_out_dir(out)
    with output_lock(out, "compact"):
        _mark_export_stale(out)
        ckpt = load_checkpoint(source)
        run = restore_run(ckpt, device="cpu")
        T, kind = run.cfg.time_steps, run.kind
        x, y = run.data.x_test, run.data.y_test
        xv = x[:VERIFY_SAMPLES]
        pruner_state = ckpt.get("dpap") or ckpt.get("baseline") or {}
        masks = masks_from_dpap_state(pruner_state) if "layers" in pruner_state else None
        model = run.model.eval()
        graph = run.dpap.graph if run.dpap is not None else build_graph(model, xv[:2])
        result = compact(model, xv, masks, time_steps=T, graph=graph)
        deploy, deploy_graph = fold_for_deployment(result.model, xv, time_steps=T,
                                                   graph=result.graph)
        masked_ops = count_ops(model, x, T, graph=graph)
        small_ops = count_ops(result.model, x, T, graph=result.graph)
        acc_masked = evaluate(model, x, y, kind, T, torch.device("cpu"))
        acc_compact = evaluate(result.model, x, y, kind, T, torch.device("cpu"))
        if acc_masked != acc_compact:
            raise DPAPError(f"compacted accuracy {acc_compact:.4f} differs from the masked model's "
                            f"{acc_masked:.4f}")
        dense, nonzero = param_counts(model)
        c_dense, c_nonzero = param_counts(result.model)
        weights = lambda g: sum(int(l.synapse.weight.count_nonzero()) for l in g.layers)  # noqa: E731
        layers = graph.layers
        meta = {"dataset": run.cfg.dataset, "model": run.cfg.model, "time_steps": T,
                "input_shape": list(run.data.input_shape), "n_classes": run.data.n_classes}
        files = [str(save_model(out / "compact.pt", result.model, kind, meta).name),
                 str(save_model(out / "deploy.pt", deploy, kind, {**meta, "folded": True}).name)]
        report = run_report(run)
        report.update({
            "params": {"dense": dense, "nonzero": nonzero, "compact": c_dense,
                       "compact_nonzero": c_nonzero,
                       "compact_nonzero_weights": weights(result.graph),
                       "deploy_nonzero_weights": weights(deploy_graph)},
            "ops": _ops_section(masked_ops, small_ops),
            "compaction": {"accuracy_masked": acc_masked, "accuracy_compact": acc_compact,
                           "verified_on": len(xv), "files": files,
                           "layers": _layer_rows(layers, result.plan, masks, masked_ops, small_ops)},
            "source_run": str(_run_dir(source).resolve()),
            "neurobench": {"compact": neurobench_metrics(result.model, xv, T, result.graph),
                           "deploy": neurobench_metrics(deploy, xv, T, deploy_graph)},
        })
        src_hist = _run_dir(source) / HISTORY
        if src_hist.exists() and src_hist.resolve() != (out / HISTORY).resolve():
            atomic_copy(src_hist, out / HISTORY)
        write_report(out, report)
        write_human_report(out)
        return report


def _mark_export_stale(out: Path) -> None:
    """Compaction replaces compact.pt: an export result already in ``out`` no longer describes
    it, so it is marked stale (before anything is replaced) until an export runs again."""
    try:
        old = json.loads((out / "report.json").read_text()).get("export")
    except (OSError, ValueError, AttributeError):
        return
    if isinstance(old, dict) and old.get("status") not in ("pending", "stale"):
        write_report(out, {"export": {**old, "status": "stale", "passed": False,
                                      "note": "compaction ran again after this export; run "
                                              "'dpap-deploy export' again"}})


def write_human_report(run_dir: str | Path, baseline: str | Path | None = None) -> Path:
    """(Re)write ``report.md`` and ``plots/*.png`` of a run directory from its files."""
    run_dir = existing_path(run_dir, "run folder", "pass a directory written by 'dpap-deploy "
                            "train' or 'dpap-deploy compact'")
    if baseline is not None:
        base = existing_path(baseline, "--baseline run", "pass the folder of a 'dpap-deploy "
                             "train --no-dpap' run")
        if not (base / HISTORY).is_file():
            raise DPAPError(f"--baseline {baseline} holds no {HISTORY}; pass the folder of a "
                            "finished 'dpap-deploy train --no-dpap' run")
        read_history(base / HISTORY)
    report = read_report(run_dir)
    hist_path = run_dir / HISTORY
    history = read_history(hist_path) if hist_path.exists() else []
    with output_lock(run_dir, "report"):
        if baseline is not None:
            report["baseline_run"] = str(Path(baseline).resolve())
            write_report(run_dir, {"baseline_run": report["baseline_run"]})
        return _write_human_report(run_dir, report, history)


def _write_human_report(run_dir: Path, report: dict, history: list[dict]) -> Path:
    from . import plots
    made: list[str] = []
    if history:
        base_hist = None
        if report.get("baseline_run") and (Path(report["baseline_run"]) / HISTORY).exists():
            base_hist = read_history(Path(report["baseline_run"]) / HISTORY)
        made.append(plots.plot_accuracy(history, run_dir / "plots/accuracy.png", base_hist))
        layers = [(l["name"], l["kind"]) for l in report["pruning"]["layers"]]
        made.append(plots.plot_params_per_layer(history, layers, run_dir / "plots/params_per_layer.png"))
    state = _dpap_state(run_dir, report)
    if state is not None:
        made.append(plots.plot_survival(state, run_dir / "plots/survival.png"))
        fc = plots.plot_fc_map(state, run_dir / "plots/fc_map.png")
        if fc is not None:
            made.append(fc)
    md = render(report, [str(Path(p).relative_to(run_dir)) for p in made])
    atomic_write_text(run_dir / "report.md", md)
    return run_dir / "report.md"


def _dpap_state(run_dir: Path, report: dict) -> dict | None:
    for d in (run_dir, Path(report.get("source_run", run_dir))):
        ck = d / "checkpoint.pt"
        if ck.exists():
            data = load_checkpoint(ck)
            state = data.get("dpap")
            if state is not None:   # checkpoints from before layer kinds were stored
                for d in state["layers"]:
                    d.setdefault("kind", "conv" if data["model"][f"{d['name']}.weight"].dim() == 4
                                 else "linear")
            return state
    return None


DEFAULT_MAX_SAMPLES = {"loihi-sim": 1000, "netx": 1000}


def export_run(source: str | Path, target: str, out: str | Path,
               max_samples: int | None = None) -> dict[str, Any]:
    """Compact the run at ``source``, export the compacted network to ``target``, verify it in
    the target's consumer and write the report. Raises ``ParityError`` (after writing the
    report) when the parity check fails.

    The report's ``export`` section reads ``pending`` from before the export starts until its
    result is written: an export that is killed leaves no earlier result that reads as passed."""
    from .exporters import ExportJob, check_target, export
    from .serialize import load_model
    source, out = check_run_source(source), check_out_dir(out)
    max_samples = check_optional_count("max_samples", max_samples)
    from .data import load_dataset
    ckpt = load_checkpoint(source)
    check_target(target, ckpt["kind"])   # fail before any work
    run_cfg = ckpt.get("train_config") or {}
    data = load_dataset(run_cfg.get("dataset", "digits"), run_cfg.get("data_root"),
                        run_cfg.get("time_steps", 8))
    limit = max_samples if max_samples is not None else DEFAULT_MAX_SAMPLES.get(target)
    if target in DEFAULT_MAX_SAMPLES:     # the Lava targets: refuse before Lava allocates
        from .resources import check_simulator_memory
        check_simulator_memory(min(limit or len(data.y_test), len(data.y_test)),
                               run_cfg.get("time_steps", 8), data.x_test[0].numel(),
                               data.n_classes)
    with output_lock(out, f"export --target {target}"):
        if (out / "report.json").exists():
            write_report(out, {"export": pending_export(target)})
        report = compact_run(source, out)      # keeps the pending mark (reports are merged)
        write_report(out, {"export": pending_export(target)})
        write_human_report(out)
        model, kind, meta = load_model(out / "compact.pt")
        job = ExportJob(model, kind, data.x_test, data.y_test, meta["time_steps"], limit)
        result = export(target, job, out)
        section = {"export": result.to_report()}
        silent = silent_warning(result.parity.get("output", {}), f"{target} export")
        section["export"]["warnings"] = [warn(silent)] if silent else []
        write_report(out, section)
        write_human_report(out)
    if not result.passed:
        from .errors import ParityError
        raise ParityError(f"{target} parity check failed: {result.parity}; the files and "
                          f"report are in {out}")
    return {**report, **section}


def pending_export(target: str) -> dict[str, Any]:
    """The ``export`` section while an export runs (and after one that did not finish)."""
    return {"target": target, "status": "pending", "passed": False, "files": [],
            "note": "export started but did not finish; run 'dpap-deploy export' again"}


def train_and_report(cfg, out: str | Path, resume: bool = False, progress: bool = True,
                     log=None, explicit=None) -> dict[str, Any]:
    """Train (or resume) and write ``report.json``, ``report.md`` and the plots."""
    import contextlib
    import os
    from .distributed import shutdown
    from .training import train
    out = check_out_dir(out)
    main = int(os.environ.get("RANK", "0")) == 0      # under torchrun, rank 0 writes
    with output_lock(out, "train") if main else contextlib.nullcontext():
        try:
            run = train(cfg, out, resume=resume, progress=progress, log=log, explicit=explicit)
        finally:
            shutdown()               # leave torchrun's process group (no-op for one process)
        if not run.dist.is_main:
            return None
        report = run_report(run)
        write_report(out, report)
        write_human_report(out)
    return report


def train_and_export(cfg, target: str, out: str | Path, resume: bool = False,
                     progress: bool = True, log=None, explicit=None,
                     max_samples: int | None = None) -> dict[str, Any]:
    """Train with DPAP, compact, export, verify, report: the whole path in one call."""
    from .exporters import check_target
    from .zoo import ZOO
    if cfg.model in ZOO:
        check_target(target, ZOO[cfg.model].kind)     # refuse before training, not after
    max_samples = check_optional_count("max_samples", max_samples)
    out = check_out_dir(out)
    with output_lock(out, f"train-and-export --target {target}"):
        train_and_report(cfg, out, resume=resume, progress=progress, log=log, explicit=explicit)
        return export_run(out, target, out, max_samples)
