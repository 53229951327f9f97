"""A run's reports: ``report.json`` as a typed object, ``report.md`` and the plots.

| module | job |
|---|---|
| `schema.py` | the sections as pydantic models (JSON Schema: docs/report.schema.json), checked |
| `build.py` | the sections from what each stage measured (training, compaction, export) |
| `files.py` | ``report.json`` written atomically and read back checked; ``history.csv`` read back |
| `paths.py` | paths in a report relative to its folder (no absolute machine path) |
| `markdown.py` | ``report.md``, rendered from ``report.json`` |
| `plots.py` | the figures |
| `human.py` | ``report.md`` and the plots of a run folder |
"""
from .build import compaction_sections, export_section, run_folder, training_report
from .files import (HISTORY, REPORT, mark_export_stale, pending_export, read_history, read_report,
                    save_export, save_report)
from .human import write_human_report
from .markdown import render
from .schema import SCHEMA_VERSION, Export, Report

__all__ = ["HISTORY", "REPORT", "SCHEMA_VERSION", "Export", "Report", "compaction_sections",
           "export_section", "mark_export_stale", "pending_export", "read_history", "read_report",
           "render", "run_folder", "save_export", "save_report", "training_report",
           "write_human_report"]
