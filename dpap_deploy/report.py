"""``report.json``: the machine-readable summary of a run (contract.md).

Built from a finished (or partly finished) :class:`~dpap_deploy.training.Run`; sections that
later stages add (``params``, ``ops``, ``export``) are merged in by those stages.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .atomic import atomic_write_text


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
            "layers": [{k: s[k] for k in ("name", "kind", "neurons_total", "neurons_kept",
                                          "synapses_total", "synapses_kept", "params_total",
                                          "params_kept")} for s in stats],
        },
        "wall_time_s": round(sum(h["wall_time_s"] for h in hist), 3),
        "train_config": run.cfg.to_dict(),
        "dpap_config": run.dpap.config.to_dict() if run.dpap is not None else None,
    }


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
