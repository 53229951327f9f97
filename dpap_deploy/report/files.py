"""The files of a run folder: ``report.json`` written atomically and read back checked
(:mod:`.schema`), ``history.csv`` read back checked. A corrupt or hand-edited file is refused
with one line naming it, never half-used: invalid JSON, nesting deeper than ``MAX_DEPTH``
(dpap-deploy writes at most a handful of levels; a deeper file would only exhaust the reader's
recursion), a schema version this dpap-deploy does not read, a section that does not fit."""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path

from ..atomic import atomic_write_text
from ..errors import DPAPError
from ..validate import nesting_depth
from .paths import with_relative_paths
from .schema import Export, Report, SchemaVersionError

REPORT = "report.json"
HISTORY = "history.csv"
HISTORY_COLUMNS = ("epoch", "test_acc")
MAX_DEPTH = 32


def _redo(path: Path) -> str:
    return (f"{path} is corrupt; rerun the command that wrote it (or delete it and run "
            "'dpap-deploy compact' / 'train --resume' on the run)")


def read_report(run_dir: str | Path) -> Report:
    """The run folder's ``report.json``, checked section by section (:mod:`.schema`)."""
    path = Path(run_dir) / REPORT
    if not path.is_file():
        raise DPAPError(f"{run_dir} has no {REPORT}; pass a directory written by "
                        "'dpap-deploy train' or 'dpap-deploy compact'")
    try:
        data = json.loads(path.read_text())
        too_deep = nesting_depth(data) > MAX_DEPTH
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DPAPError(f"{path} is not valid JSON ({str(exc)[:80]}): {_redo(path)}") from None
    except RecursionError:            # the JSON decoder's own limit (about 1,000 levels)
        too_deep = True
    if too_deep:
        raise DPAPError(f"{path} nests objects or lists more than {MAX_DEPTH} levels deep: "
                        f"{_redo(path)}")
    try:
        return Report.from_dict(data, "report")      # checks the schema version first
    except SchemaVersionError as exc:                # another version's file, not a damaged one
        raise DPAPError(f"{path}: {exc}") from None
    except DPAPError as exc:
        raise DPAPError(f"{path}: {exc}: {_redo(path)}") from None


def _existing(out: Path) -> Report | None:
    """The report already in ``out``, or None when there is none or it cannot be read (a
    corrupt report is replaced: every section is rebuilt by its stage)."""
    try:
        return read_report(out) if (out / REPORT).is_file() else None
    except DPAPError:
        return None


def _write(out: Path, report: Report) -> Report:
    """Write ``report`` with its paths relative to ``out`` (:mod:`.paths`); returns that."""
    report = with_relative_paths(report, out)
    atomic_write_text(out / REPORT, json.dumps(report.to_dict(), indent=2) + "\n")
    return report


def save_report(out: str | Path, report: Report) -> Report:
    """Write ``report.json`` atomically; sections ``report`` lacks are kept from the report
    already there (a compaction keeps an export's pending mark). Returns what was written."""
    out = Path(out)
    old = _existing(out)
    return _write(out, old.merged(report) if old is not None else report)


def save_export(out: str | Path, export: Export) -> Report:
    """Set the ``export`` section of the report in ``out`` (written by an earlier stage)."""
    out = Path(out)
    report = read_report(out)
    report.export = export
    return _write(out, report)


def pending_export(target: str) -> Export:
    """The ``export`` section while an export runs (and after one that did not finish)."""
    return Export(target=target, status="pending", passed=False, files=[],
                  note="export started but did not finish; run 'dpap-deploy export' again")


def mark_export_stale(out: Path) -> None:
    """Compaction replaces compact.pt: an export result already in ``out`` no longer describes
    it, so it is marked stale (before anything is replaced) until an export runs again."""
    old = _existing(out)
    if old is not None and old.export is not None and old.export.status not in ("pending", "stale"):
        e = old.export
        e.status, e.passed = "stale", False
        e.note = "compaction ran again after this export; run 'dpap-deploy export' again"
        _write(out, old)


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
