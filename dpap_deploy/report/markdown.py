"""``report.md``: the run's report for people, rendered from ``report.json``."""
from __future__ import annotations

from pathlib import Path
from typing import Any


def _pct(x: float) -> str:
    return f"{100 * x:.2f}%"


def _n(x: float) -> str:
    return f"{x:,.0f}"


def _removed(layer: dict, what: str) -> str:
    """'pruned + derived' removed counts of a compaction layer row ('' in older reports)."""
    p, d = layer.get(f"{what}_pruned"), layer.get(f"{what}_derived_dead")
    return f"{p} + {d}" if p is not None and d is not None else ""


def _output_lines(act: dict | None, where: str) -> list[str]:
    """Output-layer activity (metrics.output_activity) as one line; ties count as wrong."""
    if not act or act.get("tie_fraction") is None:
        return []
    rate = (f"firing rate {act['firing_rate']:.3g} spikes per neuron per step, silent on "
            f"{_pct(act['silent_fraction'])} of samples, " if act.get("firing_rate") is not None
            else "")
    return [f"- output layer {where}: {rate}tied (no prediction, counted wrong) on "
            f"{_pct(act['tie_fraction'])}"]


def render(report: dict[str, Any], plots: list[str]) -> str:
    r = report
    lines = [f"# {r['model']} on {r['dataset']}", "",
             f"- kind: {r['kind']}, epochs: {r['epochs']}, seed: {r['seed']}, "
             f"DPAP: {'on' if r['dpap'] else 'off'}"
             + (f", time steps: {r['time_steps']}" if r.get("time_steps") else ""),
             f"- test accuracy: {_pct(r['accuracy']['test'])} (best {_pct(r['accuracy']['best'])}"
             f" at epoch {r['accuracy'].get('best_epoch')})",
             f"- parameters removed by pruning: {_pct(r['pruning']['params_removed_fraction'])}"]
    lines += _output_lines(r.get("output"), "on the test set")
    if "params" in r:
        p = r["params"]
        lines += [f"- parameters: {_n(p['dense'])} dense, {_n(p['nonzero'])} non-zero after "
                  f"pruning, {_n(p['compact'])} after compaction ({_n(p['compact_nonzero'])} "
                  f"non-zero): {_pct(1 - p['compact'] / p['dense'])} smaller"]
    if "ops" in r:
        o = r["ops"]
        lines += [f"- per sample: {_n(o['synops_dense'])} SynOps dense -> "
                  f"{_n(o['synops_compact'])} compacted; {_n(o['macs_dense'])} MACs dense -> "
                  f"{_n(o['macs_compact'])} compacted",
                  f"- energy **estimate** per sample (0.9 pJ/AC, 4.6 pJ/MAC, 45 nm): "
                  f"{o['energy_pj_dense'] / 1e3:,.1f} nJ dense -> "
                  f"{o['energy_pj_compact'] / 1e3:,.1f} nJ compacted"]
    lines += ["", "## Layers", ""]
    if "compaction" in r:
        lines += ["| layer | kind | neurons kept | neurons pruned + derived | synapses kept | "
                  "synapses pruned + derived | params dense | params compact | "
                  "SynOps dense | SynOps compact | MACs dense | MACs compact |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for l in r["compaction"]["layers"]:
            lines.append(
                f"| {l['name']} | {l['kind']} | {l['neurons_kept']}/{l['neurons_total']} | "
                f"{_removed(l, 'neurons')} | {l['synapses_kept']}/{l['synapses_total']} | "
                f"{_removed(l, 'synapses')} | {_n(l['params_dense'])} | "
                f"{_n(l['params_compact'])} | {_n(l['synops_dense'])} | {_n(l['synops_compact'])} | "
                f"{_n(l['macs_dense'])} | {_n(l['macs_compact'])} |")
        lines += ["", f"Neurons are units (conv channels), synapses conv kernels or linear weights. "
                  f"Kept = total - pruned - derived: 'pruned' units were switched off by "
                  f"{r.get('pruning_method', 'the pruner')} during training (the `pruning.layers` "
                  "counts of report.json); 'derived' ones were removed by compaction because no "
                  "live input reaches them or nothing reads them (derived deaths). "
                  "SynOps count input spikes times their fan-out; MACs count non-spike inputs "
                  "(direct encoding, ANN). 'dense' counts every weight of the masked network, "
                  "'compact' only the non-zero weights of the compacted one."]
    else:
        lines += ["| layer | kind | neurons kept | synapses kept | params kept |", "|---|---|---|---|---|"]
        for l in r["pruning"]["layers"]:
            lines.append(f"| {l['name']} | {l['kind']} | {l['neurons_kept']}/{l['neurons_total']} | "
                         f"{l['synapses_kept']}/{l['synapses_total']} | "
                         f"{l.get('params_kept', '')}/{l.get('params_total', '')} |")
    status = r.get("export", {}).get("status")
    if status in ("pending", "stale"):
        why = {"pending": "**did not finish** (pending): no result",
               "stale": "**stale**: compaction ran again after this export, its result no "
                        "longer describes compact.pt"}[status]
        lines += ["", f"## Export: {r['export']['target']}", "",
                  f"- {why}; run 'dpap-deploy export' again"]
    elif "export" in r:
        e, par = r["export"], r["export"]["parity"]
        lines += ["", f"## Export: {e['target']}", "",
                  f"- files: {', '.join(e['files'])}",
                  f"- accuracy in the target: {_pct(e['accuracy'])} on {par['n_samples']} test samples",
                  f"- agreement with torch: {_pct(par['agreement'])} of samples"
                  + (f"; identical spike trains: {_pct(par['identical_spike_trains'])}"
                     if "identical_spike_trains" in par else "")
                  + (f"; max |logit difference| {par['max_abs_diff']:.2e}" if "max_abs_diff" in par else ""),
                  f"- parity check: {'passed' if e.get('passed') else 'FAILED'}"]
        lines += _output_lines(par.get("output"), "in the target")
        if "synapses" in e:
            lines.append(f"- non-zero synapses in the exported file: {e['synapses']:,}")
            c = r.get("params", {}).get("compact_nonzero_weights")
            if c is not None and c != e["synapses"]:
                lines.append(f"- the exported file holds {e['synapses']:,} synapses against "
                             f"{c:,} non-zero weights in the compacted network because average "
                             "pooling, folded into the next layer's weights for the target, "
                             "copies each weight over the pooling window (k x k copies for a "
                             "k x k pool): the same computation, with more stored synapses")
    warnings = (r.get("data_warnings") or []) + [w for w in [(r.get("output") or {}).get("warning")]
                                                  if w] + list(r.get("export", {}).get("warnings", []))
    if warnings:
        lines += ["", "## Warnings", ""] + [f"- {w}" for w in warnings]
    if plots:
        lines += ["", "## Plots", ""] + [f"![{Path(p).stem}]({p})" for p in plots]
    return "\n".join(lines) + "\n"
