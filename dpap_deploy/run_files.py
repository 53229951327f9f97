"""Reading the files of a run folder back (``report.json``, ``history.csv``), checked: a corrupt
or hand-edited file is refused with one line naming it, never half-used."""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

from .errors import DPAPError

REPORT = "report.json"
HISTORY = "history.csv"
REPORT_KEYS = ("dataset", "model", "kind", "epochs", "seed", "dpap", "accuracy", "pruning")
HISTORY_COLUMNS = ("epoch", "test_acc")


def _redo(path: Path) -> str:
    return (f"{path} is corrupt; rerun the command that wrote it (or delete it and run "
            "'dpap-deploy compact' / 'train --resume' on the run)")


def read_report(run_dir: str | Path) -> dict[str, Any]:
    path = Path(run_dir) / REPORT
    if not path.is_file():
        raise DPAPError(f"{run_dir} has no {REPORT}; pass a directory written by "
                        "'dpap-deploy train' or 'dpap-deploy compact'")
    try:
        report = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DPAPError(f"{path} is not valid JSON ({str(exc)[:80]}): {_redo(path)}") from None
    if not isinstance(report, dict):
        raise DPAPError(f"{path} holds a {type(report).__name__}, not a report object: "
                        f"{_redo(path)}")
    missing = [k for k in REPORT_KEYS if k not in report]
    layers = report.get("pruning", {}).get("layers") if isinstance(report.get("pruning"), dict) else None
    if missing or not isinstance(layers, list) or not isinstance(report.get("accuracy"), dict):
        raise DPAPError(f"{path} lacks {', '.join(missing) or 'pruning.layers / accuracy'}: "
                        f"{_redo(path)}")
    return report


def read_history(path: str | Path) -> list[dict]:
    """Rows of ``history.csv``: every cell a finite number, ``epoch`` and ``test_acc`` present."""
    path = Path(path)
    try:
        with open(path, newline="") as fh:
            rows = list(csv.DictReader(fh))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DPAPError(f"{path} cannot be read ({exc}): {_redo(path)}") from None
    if rows and any(c not in rows[0] for c in HISTORY_COLUMNS):
        raise DPAPError(f"{path} lacks column(s) {', '.join(HISTORY_COLUMNS)}: {_redo(path)}")
    for i, row in enumerate(rows, start=2):
        for col, v in row.items():
            try:
                ok = col is not None and v is not None and math.isfinite(float(v))
            except ValueError:
                ok = False
            if not ok:
                raise DPAPError(f"{path} line {i}: column {col} is {v!r}, not a number: "
                                f"{_redo(path)}")
    return rows
