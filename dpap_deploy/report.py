"""``report.json``: the machine-readable summary of a run (contract.md).

Built from a finished (or partly finished) :class:`~dpap_deploy.training.Run`; sections that
later stages add (``params``, ``ops``, ``export``) are merged in by those stages.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .atomic import atomic_write_text
from .metrics import silent_warning


def run_report(run) -> dict[str, Any]:
    hist = run.history
    accs = [h["test_acc"] for h in hist]
    best = max(range(len(accs)), key=accs.__getitem__) if accs else None
    stats = run.layer_stats()
    return {
        "dataset": run.cfg.dataset,
        "model": run.cfg.model,
        "kind": run.kind,
        "epochs": run.epoch,
        "seed": run.cfg.seed,
        "dpap": run.dpap is not None,
        "pruning_method": "dpap" if run.dpap is not None else (run.cfg.baseline or "none"),
        "time_steps": run.cfg.time_steps if run.kind == "snn" else None,
        "accuracy": {"test": accs[-1] if accs else 0.0,
                     "best": accs[best] if best is not None else 0.0,
                     "best_epoch": best + 1 if best is not None else None,
                     "train": hist[-1]["train_acc"] if hist else 0.0},
        "pruning": {
            "params_removed_fraction": run.params_removed_fraction(),
            "params_total": sum(p.numel() for p in run.model.parameters()),
            "params_kept": hist[-1]["params_kept"] if hist else None,
            "layers": [_pruning_row(s) for s in stats],
        },
        "output": _output_section(run),
        "data_warnings": list(run.data_warnings),
        "wall_time_s": round(sum(h["wall_time_s"] for h in hist), 3),
        "train_config": run.cfg.to_dict(),
        "dpap_config": run.dpap.config.to_dict() if run.dpap is not None else None,
    }


def _pruning_row(s: dict) -> dict:
    """A layer under the pruner's masks. ``*_pruned`` are removed by the pruner (DPAP or a
    baseline); units that compaction removes on top (derived deaths) are counted only in
    ``compaction.layers`` (``*_derived_dead``)."""
    row = {k: s[k] for k in ("name", "kind", "neurons_total", "neurons_kept", "synapses_total",
                             "synapses_kept", "params_total", "params_kept")}
    row["neurons_pruned"] = s["neurons_total"] - s["neurons_kept"]
    row["synapses_pruned"] = s["synapses_total"] - s["synapses_kept"]
    return row


def _output_section(run) -> dict[str, Any]:
    """Output-layer activity on the test set after the last epoch (``metrics.output_activity``;
    None for runs from before it was recorded)."""
    last = run.history[-1] if run.history else {}
    n = len(run.data.y_test)
    out: dict[str, Any] = {"tie_fraction": last.get("test_tie_fraction"),
                           "measured_on": f"{n} test samples"}
    if run.kind == "snn":
        out["firing_rate"] = last.get("test_output_rate")
        out["silent_fraction"] = last.get("test_silent_fraction")
        out["warning"] = silent_warning({"silent_fraction": out["silent_fraction"] or 0.0,
                                         "n_samples": n}, "test set")
    return out


def write_report(out: str | Path, report: dict[str, Any]) -> Path:
    """Write ``report.json`` atomically, merging into an existing report's other sections."""
    path = Path(out) / "report.json"
    merged: dict[str, Any] = {}
    if path.exists():
        try:   # a corrupt report is replaced: every section below is rebuilt by its stage
            merged = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            merged = {}
        merged = merged if isinstance(merged, dict) else {}
    merged.update(report)
    atomic_write_text(path, json.dumps(merged, indent=2) + "\n")
    return path
