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


def _tie_line(nb: dict | None, kind: str) -> str:
    """How our accuracy counts ties, and NeuroBench's accuracy beside ours when measured."""
    line = ("- ties: a sample whose highest score is shared by several classes"
            + (" (a silent output included)" if kind == "snn" else "")
            + " counts as wrong here; NeuroBench's "
            + ("`ChooseMaxCount`" if kind == "snn" else "argmax") + " takes the first of them")
    if nb and nb.get("accuracy") is not None and nb.get("accuracy_ties_wrong") is not None:
        line += (f": on the {nb['measured_on']} NeuroBench counts {_pct(nb['accuracy'])} "
                 f"accurate where we count {_pct(nb['accuracy_ties_wrong'])} (compacted network)")
    return line


# (NeuroBench's name, key in report.json's neurobench section, format)
NEUROBENCH_ROWS = (("Effective_ACs", "effective_acs", _n), ("Effective_MACs", "effective_macs", _n),
                   ("Dense (ops)", "dense_ops", _n),
                   ("ConnectionSparsity", "connection_sparsity", lambda v: f"{v:.4f}"),
                   ("ActivationSparsity", "activation_sparsity", lambda v: f"{v:.4f}"),
                   ("Footprint (bytes)", "footprint_bytes", _n),
                   ("ClassificationAccuracy (argmax)", "accuracy", _pct))
# NeuroBench's key -> (our key in report.json's ops, our name)
NEUROBENCH_OURS = {"effective_acs": ("synops_compact", "SynOps"),
                   "effective_macs": ("macs_compact", "MACs")}


def _neurobench_lines(nb: dict | None, ops: dict | None) -> list[str]:
    """NeuroBench's metrics of the compacted and the folded network, with ours beside them."""
    if not nb or "compact" not in nb:
        return []
    c, d = nb["compact"], nb.get("deploy") or {}
    lines = ["", "## NeuroBench", "",
             f"As NeuroBench 2.3 (`neurobench.metrics`) defines them, per sample, on the "
             f"{c.get('measured_on', 'test samples')}; ours from the lines above"
             + (f" (on {ops['measured_on']})" if ops and ops.get("measured_on") else "") + ".", "",
             "| NeuroBench metric | compacted | folded for deployment | ours (compacted) |",
             "|---|---|---|---|"]
    for name, key, fmt in NEUROBENCH_ROWS:
        if c.get(key) is None:
            continue
        ours = NEUROBENCH_OURS.get(key)
        mine = (f"{_n(ops[ours[0]])} {ours[1]}" if ours and ops else
                f"{_pct(c['accuracy_ties_wrong'])} (ties wrong)" if key == "accuracy" else "")
        lines.append(f"| {name} | {fmt(c[key])} | "
                     f"{fmt(d[key]) if d.get(key) is not None else ''} | {mine} |")
    lines += ["", "They differ from ours on purpose: NeuroBench counts a layer's input as spikes "
              "(ACs) only when every value is 0 or +-1, so the spikes an average pool mixes "
              "(0.25, 0.5...) count as MACs, and it skips zero pixels in a first layer's MACs; "
              "our SynOps count a pooled spike as the k x k spikes it stands for, and our MACs "
              "count every input pixel. In the folded network the pool is in the weights. "
              "Dense: every input active, every weight. Footprint: bytes of the parameters and "
              "buffers of a freshly built model (no neuron state)."]
    return lines


def _synapse_lines(e: dict, params: dict) -> list[str]:
    """Synapses of an export against the compacted network's non-zero weights, with the
    reason they differ: Lava runs each average pool as its own stage (``C k^2`` weights: one
    ``k x k`` kernel per channel) beside the file's weights; netx takes the pool folded into
    the next layer's weights (each weight copied ``k x k`` times), then quantised."""
    c, folded = params.get("compact_nonzero_weights"), params.get("deploy_nonzero_weights")
    if "synapses_lava" in e and "synapses_nir" in e:
        nir, lava = e["synapses_nir"], e["synapses_lava"]
        lines = [f"- synapses: {nir:,} non-zero weights in {', '.join(e['files'])}"
                 + (f" (the compacted network has {c:,})" if c is not None and c != nir else
                    " (the compacted network's)" if c is not None else "")
                 + f"; the Lava network holds {lava:,}"]
        if lava != nir:
            lines[0] += (f": those and the {lava - nir:,} weights of its pooling stages (Lava "
                         "runs each k x k pool as its own depthwise convolution process, one "
                         "k x k kernel per channel, of 1/k^2 for an average pool)")
        return lines
    if "synapses" not in e:
        return []
    n = e["synapses"]
    if e.get("target") == "loihi-sim":            # an older report: the Lava count alone
        return [f"- synapses held by the Lava network: {n:,} (the file's non-zero weights and "
                "those of its pooling stages)"]
    lines = [f"- non-zero synapses in the exported file: {n:,}"]
    if c is None or n == c:
        return lines
    if folded is not None and folded != c:
        lines.append(f"- the compacted network's {c:,} non-zero weights become {folded:,} in "
                     "the network folded for the target: an average pool folded into the next "
                     "layer's weights copies each weight over the pooling window (k x k copies "
                     "for a k x k pool): the same computation, with more stored synapses"
                     + (f"; {folded - n:,} of them round to zero when quantised for the target"
                        if n < folded else ""))
    else:
        lines.append(f"- the compacted network has {c:,} non-zero weights")
    return lines


def _kib(n: int) -> str:
    return f"{n / 1024:,.1f} KiB"


def _chip_lines(chip: dict | None) -> list[str]:
    """Loihi 2 neuro-cores and synaptic memory, dense vs compacted (``chip.resources``)."""
    if not chip:
        return []
    d, c, s = chip["dense"], chip["compacted"], chip["saving"]
    lim = chip["limits"]
    lines = ["", "## Loihi 2 resources (estimate)", "",
             f"- neuro-cores: {d['cores']:,} dense -> {c['cores']:,} compacted (saves "
             f"{s['cores']:,}); chips: {d['chips']} -> {c['chips']}",
             f"- synaptic memory: {_kib(d['memory_bytes'])} dense -> "
             f"{_kib(c['memory_bytes'])} compacted (saves {_kib(s['memory_bytes'])}); "
             f"neurons: {d['neurons']:,} -> {c['neurons']:,}", "",
             "| layer | kind | neurons | weights stored | synaptic memory | cores | set by |",
             "|---|---|---|---|---|---|---|"]
    dense = {l["name"]: l for l in d["layers"]}
    for l in c["layers"]:
        o = dense.get(l["name"], l)
        lines.append(f"| {l['name']} | {l['kind']} | {o['neurons']:,} -> {l['neurons']:,} | "
                     f"{o['weights']:,} -> {l['weights']:,} | {_kib(o['memory_bytes'])} -> "
                     f"{_kib(l['memory_bytes'])} | {o['cores']} -> {l['cores']} | {l['bound']} |")
    lines += ["", f"An **estimate**, not a measurement on hardware: each layer takes cores of its "
              f"own, enough for its neurons ({lim['neurons_per_core']:,} per core) and for its "
              f"{lim['weight_bits']}-bit weights ({_kib(lim['memory_bytes_per_core'])} per core, "
              "all of a core's memory counted as synaptic), conv kernels stored once (shared "
              f"over positions); {lim['cores_per_chip']} cores per chip. Sources and rule: "
              "docs/deploy.md, *Chip resources*."]
    return lines


def _quant_lines(e: dict) -> list[str]:
    """A fixed-point export's layers: scale, threshold, weight exponent, clipping, saturation."""
    rows = (e.get("quantization") or {}).get("layers")
    if not rows:
        return []
    lines = ["", "| layer | name | scale | vThMant | weight exponent (bits) | weights clipped | "
             "biases clipped | currents wrapped | voltages clipped | synapses |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for l in rows:
        exp = (f"{l['weight_exponent']} ({l['weight_bits']})" if "weight_exponent" in l else "")
        lines.append(f"| {l['layer']} | {l['name']} | {l['scale']:.4g} | {l['vThMant']} | {exp} | "
                     f"{l.get('weights_clipped', '')} | {l.get('bias_clipped', '')} | "
                     f"{l.get('u_wrapped', '')} | {l.get('v_clipped', '')} | "
                     f"{l['synapses']:,} |")
    return lines + ["", "Per layer: the float -> integer scale, the threshold mantissa, the weight "
                    "exponent and bits the netx loader derives, values clipped when quantised, "
                    "and the 24-bit currents wrapped and voltages clipped in the emulation over "
                    "every test sample and step (a warning below when any is not 0)."]


def _fixed_lines(e: dict) -> list[str]:
    """loihi-sim in fixed point: each synapse's exponent and clipping, each population's scale,
    threshold and decays, and its 24-bit saturation on the test samples."""
    fp = e.get("fixed_point") or {}
    if not fp.get("layers"):
        return []
    sat = fp.get("saturation") or {}
    lines = ["", "| layer | kind | scale | weight exponent | weights clipped | vth mantissa | "
             "du, dv | biases rounded | currents wrapped | voltages clipped |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for l in fp["layers"]:
        st, rng = sat.get(l["layer"], {}), lambda k: "..".join(map(str, l[k])) if k in l else ""
        lines.append(f"| {l['layer']} | {l['kind']} | {l['scale']:.4g} | "
                     f"{l.get('weight_exp', '')} | {l.get('weights_clipped', '')} | {rng('vth_mant')} | "
                     f"{rng('du') + (', ' + rng('dv') if 'dv' in l else '')} | "
                     f"{l.get('bias_rounded', '')} | {st.get('u_wrapped', '')} | "
                     f"{st.get('v_clipped', '')} |")
    return lines


def _qat_lines(q: dict | None) -> list[str]:
    if not q:
        return []
    return ["", f"## Fine-tuning for fixed point ({q['target']})", "",
            f"- accuracy on the {q['measured_on']}: float {_pct(q['accuracy_float'])} -> "
            f"post-training quantised {_pct(q['accuracy_quantised'])} -> fine-tuned "
            f"{_pct(q['accuracy_fine_tuned'])} (fixed point, as the exported file runs); the "
            f"fine-tuned float network {_pct(q['accuracy_fine_tuned_float'])}",
            f"- {q['epochs']} epoch{'' if q['epochs'] == 1 else 's'} on "
            f"{q['train_samples']:,} training samples, Adam lr "
            f"{q['lr']:g}, through the integer arithmetic with straight-through rounding; pruned "
            "weights stay zero; deploy.pt holds the fine-tuned network"]


# What each target's parity check requires (the exporters' own rules).
PASS_RULES = {"loihi-sim": "at least 99% of the samples predict the class torch predicts",
              "nir": "identical output spike trains on every sample",
              "netx": "fixed-point accuracy at most 2 points below float torch's; agreement "
                      "is reported, not required",
              "onnx": "logits equal to torch's within float32 rounding"}


def render(report: dict[str, Any], plots: list[str]) -> str:
    r = report
    lines = [f"# {r['model']} on {r['dataset']}", "",
             f"- kind: {r['kind']}, epochs: {r['epochs']}, seed: {r['seed']}, "
             f"DPAP: {'on' if r['dpap'] else 'off'}"
             + (f", time steps: {r['time_steps']}" if r.get("time_steps") else ""),
             f"- test accuracy: {_pct(r['accuracy']['test'])} (best {_pct(r['accuracy']['best'])}"
             f" at epoch {r['accuracy'].get('best_epoch')})",
             _tie_line((r.get("neurobench") or {}).get("compact"), r["kind"]),
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
    lines += _neurobench_lines(r.get("neurobench"), r.get("ops"))
    lines += _chip_lines(r.get("chip"))
    lines += _qat_lines(r.get("qat"))
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
                  "(direct encoding, ANN). 'params compact' counts every parameter of the "
                  "compacted layer, the zeros left inside kept units included; in SynOps and MACs "
                  "'dense' counts every weight of the masked network, 'compact' only the non-zero "
                  "weights of the compacted one."]
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
                  f"- agreement with {'the fixed-point emulation' if 'fixed_identical' in par else 'torch'}:"
                  f" {_pct(par['agreement'])} of samples"
                  + (f"; identical spike trains: {_pct(par['identical_spike_trains'])}"
                     if "identical_spike_trains" in par else "")
                  + (f"; max |logit difference| {par['max_abs_diff']:.2e}" if "max_abs_diff" in par else "")
                  + (f"; the fixed-point emulation gives Lava's trains on "
                     f"{_pct(par['emulation_identical'])}" if "emulation_identical" in par else ""),
                  f"- parity check: {'passed' if e.get('passed') else 'FAILED'}"
                  + (f" (the rule: {PASS_RULES[e['target']]})" if e["target"] in PASS_RULES
                     else "")]
        if "accuracy_float" in par:
            lines.append(f"- float torch accuracy on the same samples: {_pct(par['accuracy_float'])}")
        lines += _output_lines(par.get("output"), "in the target")
        lines += _synapse_lines(e, r.get("params") or {})
        lines += _quant_lines(e) + _fixed_lines(e)
    warnings = (r.get("data_warnings") or []) + [w for w in [(r.get("output") or {}).get("warning")]
                                                  if w] + list(r.get("export", {}).get("warnings", []))
    if warnings:
        lines += ["", "## Warnings", ""] + [f"- {w}" for w in warnings]
    if plots:
        lines += ["", "## Plots", ""] + [f"![{Path(p).stem}]({p})" for p in plots]
    return "\n".join(lines) + "\n"
