"""Paths in a report are relative to the report's folder: ``report.json`` and ``report.md`` hold
no absolute path of the machine that wrote them, so a run folder can be moved, shared or
published with its source run beside it.

    rel = relative("/data/runs/a", "/data/runs/b")      # "../a"
    folder = resolve("../a", "/data/runs/b")           # Path("/data/runs/a")
    report = with_relative_paths(report, out)          # before report.json is written

A path that is already relative is kept as written (it was relative to the report's folder);
``resolve`` of an absolute path (a report written before this rule) returns it unchanged.
Datasets named by a file (``npz:PATH``, ``idx:PATH``) and ``train_config.data_root`` are made
relative the same way; the checkpoint keeps the paths the run was given (``--resume`` uses
those), the report only describes them.
"""
from __future__ import annotations

import os
from pathlib import Path

from .schema import Report

FILE_DATASETS = ("npz:", "idx:")     # dataset names that carry a path after the prefix


def relative(path: str | Path, folder: str | Path) -> str:
    """``path`` relative to ``folder`` when it is absolute (``os.path.relpath``), else as is."""
    p = str(path)
    return os.path.relpath(p, Path(folder).resolve()) if os.path.isabs(p) else p


def resolve(path: str | Path, folder: str | Path) -> Path:
    """A path read from a report in ``folder``: ``folder / path`` (an absolute path stays)."""
    return Path(folder) / path


def _dataset(name: str | None, folder: Path) -> str | None:
    """A dataset name with its file path made relative (``npz:/d/x.npz`` -> ``npz:../d/x.npz``)."""
    for prefix in FILE_DATASETS:
        if isinstance(name, str) and name.startswith(prefix):
            return prefix + relative(name[len(prefix):], folder)
    return name


def _optional(path: str | None, folder: Path) -> str | None:
    return None if path is None else relative(path, folder)


def _replaced(texts: list[str] | None, moves: dict[str, str]) -> list[str] | None:
    """``texts`` with every absolute path of ``moves`` replaced by its relative form."""
    if texts is None:
        return None
    out = []
    for t in texts:
        for old, new in sorted(moves.items(), key=lambda kv: -len(kv[0])):
            t = t.replace(old, new)
        out.append(t)
    return out


def with_relative_paths(report: Report, folder: str | Path) -> Report:
    """``report`` with ``source_run``, ``baseline_run``, the dataset's file and
    ``train_config.data_root`` relative to ``folder`` (where it is written), and those paths
    replaced in its warnings too."""
    folder = Path(folder)
    cfg = dict(report.train_config) if report.train_config is not None else None
    moves = {}
    for old in (report.source_run, report.baseline_run, (cfg or {}).get("data_root"),
                *(report.dataset[len(p):] for p in FILE_DATASETS if report.dataset.startswith(p))):
        if isinstance(old, str) and os.path.isabs(old):
            moves[old] = relative(old, folder)
    if cfg is not None:
        cfg["dataset"] = _dataset(cfg.get("dataset"), folder)
        cfg["data_root"] = _optional(cfg.get("data_root"), folder)
    new = report.model_copy(update=dict(
        dataset=_dataset(report.dataset, folder), train_config=cfg,
        source_run=_optional(report.source_run, folder),
        baseline_run=_optional(report.baseline_run, folder),
        data_warnings=_replaced(report.data_warnings, moves)))
    if new.export is not None and new.export.warnings:
        new.export = new.export.model_copy(
            update={"warnings": _replaced(new.export.warnings, moves)})
    return new
