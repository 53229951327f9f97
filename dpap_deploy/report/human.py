"""``report.md`` and ``plots/*.png`` of a run folder, from its files."""
from __future__ import annotations

from pathlib import Path

from ..atomic import atomic_write_text
from ..checkpoint import load_checkpoint
from ..errors import DPAPError
from ..lock import output_lock
from ..validate import existing_path
from . import plots
from .files import HISTORY, read_history, read_report, save_report
from .markdown import render
from .paths import resolve


def write_human_report(run_dir: str | Path, baseline: str | Path | None = None) -> Path:
    """(Re)write ``report.md`` and ``plots/*.png`` of a run directory from its files; with
    ``baseline`` (a ``--no-dpap`` run) the accuracy plot draws it too."""
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
            report.baseline_run = str(Path(baseline).resolve())
            report = save_report(run_dir, report)
        return _write(run_dir, report.to_dict(), history)


def _write(run_dir: Path, report: dict, history: list[dict]) -> Path:
    made: list[Path] = []
    layers = _layers(report)
    labels = plots.layer_labels(layers)
    if history:
        base_hist = None
        base = resolve(report["baseline_run"], run_dir) if report.get("baseline_run") else None
        if base is not None and (base / HISTORY).exists():
            base_hist = read_history(base / HISTORY)
        made.append(plots.plot_accuracy(history, run_dir / "plots/accuracy.png", base_hist))
        made.append(plots.plot_params_per_layer(history, layers,
                                                run_dir / "plots/params_per_layer.png",
                                                _param_counts(report), labels))
    state = _dpap_state(run_dir, report)
    if state is not None:
        made.append(plots.plot_survival(state, run_dir / "plots/survival.png", labels=labels))
        fc = plots.plot_fc_map(state, run_dir / "plots/fc_map.png", labels)
        if fc is not None:
            made.append(fc)
    md = render(report, [str(Path(p).relative_to(run_dir)) for p in made])
    atomic_write_text(run_dir / "report.md", md)
    return run_dir / "report.md"


def _layers(report: dict) -> list[tuple[str, str]]:
    """``(name, kind)`` of the network's layers in order: compaction's table has every layer,
    the pruning table the pruned ones (a baseline leaves the output layer out)."""
    rows = (report.get("compaction") or {}).get("layers") or report["pruning"]["layers"]
    return [(l["name"], l.get("kind", "")) for l in rows]


def _param_counts(report: dict) -> dict[str, tuple]:
    """``{layer: (before pruning, after pruning, after compaction)}`` from report.json: the
    pruning table's ``params_total`` / ``params_kept`` and compaction's ``params_compact``
    (None before compaction); a count an older report lacks is None."""
    compacted = {l["name"]: l for l in (report.get("compaction") or {}).get("layers", [])}
    out = {}
    for l in report["pruning"]["layers"]:
        c = compacted.get(l["name"], {})
        out[l["name"]] = (l.get("params_total", c.get("params_dense")), l.get("params_kept"),
                          c.get("params_compact"))
    for name, c in compacted.items():
        out.setdefault(name, (c["params_dense"], None, c["params_compact"]))
    return out


def _dpap_state(run_dir: Path, report: dict) -> dict | None:
    """The DPAP state of the run's checkpoint (here, or in the run it was compacted from)."""
    from ..trained import migrate_kinds
    for d in (run_dir, resolve(report.get("source_run") or ".", run_dir)):
        ck = d / "checkpoint.pt"
        if ck.exists():
            data = load_checkpoint(ck)
            state = data.get("dpap")
            if state is not None:
                migrate_kinds(state, data["model"])
            return state
    return None
