"""The sections of ``report.json``, built from what each stage measured.

- :func:`training_report`: the run (configuration, accuracy, pruning per layer, output
  activity) from a :class:`~dpap_deploy.trained.Trained` run.
- :func:`compaction_sections`: parameters, operations, NeuroBench's metrics, the per-layer
  table of a compaction (:class:`~dpap_deploy.compaction.measure.Measured`) and, for an SNN,
  its Loihi 2 resources (``chip``: an estimate, dense vs compacted).
- :func:`export_section`: an exporter's result.
"""
from __future__ import annotations

from pathlib import Path

import torch

from ..counting import PJ_PER_AC, PJ_PER_MAC, OpsReport
from ..masks import nonzero_kernels
from ..metrics import silent_warning
from ..notices import warn
from .schema import (Accuracy, Chip, Compaction, CompactionLayer, Export, LayerPruning, Ops,
                     Output, Params, Pruning, Report)

ENERGY_NOTE = f"estimate: {PJ_PER_AC} pJ per accumulate, {PJ_PER_MAC} pJ per MAC (45 nm)"


def training_report(trained, n_test: int) -> Report:
    """The training stage's sections; ``n_test``: test samples the history was measured on."""
    t, hist = trained, trained.history
    accs = [h["test_acc"] for h in hist]
    best = max(range(len(accs)), key=accs.__getitem__) if accs else None
    dpap = t.pruner_state is not None
    return Report(
        dataset=t.cfg.dataset, model=t.cfg.model, kind=t.kind, epochs=t.epoch, seed=t.cfg.seed,
        dpap=dpap, pruning_method="dpap" if dpap else (t.cfg.baseline or "none"),
        time_steps=t.cfg.time_steps if t.kind == "snn" else None,
        accuracy=Accuracy(test=accs[-1] if accs else 0.0,
                          best=accs[best] if best is not None else 0.0,
                          best_epoch=best + 1 if best is not None else None,
                          train=hist[-1]["train_acc"] if hist else 0.0),
        pruning=Pruning(params_removed_fraction=t.params_removed_fraction,
                        params_total=t.params_total,
                        params_kept=hist[-1]["params_kept"] if hist else None,
                        layers=[_pruning_row(s) for s in t.layer_stats]),
        output=_output(hist[-1] if hist else {}, t.kind, n_test),
        data_warnings=list(t.data_warnings),
        wall_time_s=round(sum(h["wall_time_s"] for h in hist), 3),
        train_config=t.cfg.to_dict(), dpap_config=t.dpap_config)


def _pruning_row(s: dict) -> LayerPruning:
    """A layer under the pruner's masks. ``*_pruned`` are removed by the pruner (DPAP or a
    baseline); units that compaction removes on top (derived deaths) are counted only in
    ``compaction.layers`` (``*_derived_dead``)."""
    return LayerPruning(**{k: s[k] for k in ("name", "kind", "neurons_total", "neurons_kept",
                                             "synapses_total", "synapses_kept", "params_total",
                                             "params_kept")},
                        neurons_pruned=s["neurons_total"] - s["neurons_kept"],
                        synapses_pruned=s["synapses_total"] - s["synapses_kept"])


def _output(last: dict, kind: str, n: int) -> Output:
    """Output-layer activity on the test set after the last epoch."""
    out = Output(tie_fraction=last.get("test_tie_fraction"), measured_on=f"{n} test samples",
                 snn=kind == "snn")
    if kind == "snn":
        out.firing_rate = last.get("test_output_rate")
        out.silent_fraction = last.get("test_silent_fraction")
        out.warning = silent_warning({"silent_fraction": out.silent_fraction or 0.0,
                                      "n_samples": n}, "test set")
    return out


def compaction_sections(c, masks, files: list[str]) -> dict:
    """``params``, ``ops``, ``compaction`` and ``neurobench`` of a compaction
    (:class:`~dpap_deploy.compaction.measure.Measured`) whose files are ``files``."""
    return {
        "params": Params(dense=c.params_dense[0], nonzero=c.params_dense[1],
                         compact=c.params_compact[0], compact_nonzero=c.params_compact[1],
                         compact_nonzero_weights=_weights(c.result.graph),
                         deploy_nonzero_weights=_weights(c.deploy_graph)),
        "ops": ops_section(c.masked_ops, c.compact_ops),
        "compaction": Compaction(accuracy_masked=c.accuracy_masked,
                                 accuracy_compact=c.accuracy_compact,
                                 verified_on=c.verified_on, files=list(files),
                                 layers=_layer_rows(c, masks)),
        "neurobench": c.neurobench,
        "chip": chip_section(c.graph, c.result.graph) if c.graph.kind == "snn" else None,
    }


def chip_section(dense, compact) -> Chip:
    """Loihi 2 cores and memory of the trained (every unit) and compacted graphs."""
    from ..chip import resources
    return Chip.from_dict(resources(dense, compact), "chip")


def export_section(result) -> Export:
    """An exporter's :class:`~dpap_deploy.exporters.ExportResult` as the ``export`` section,
    with a warning when the target's output layer was silent on many samples (not when the
    parity check already failed for it: the failure says so once)."""
    failed = result.parity.get("failure")
    silent = None if failed else silent_warning(result.parity.get("output", {}),
                                                f"{result.target} export")
    lines = ([silent] if silent else []) + saturation_warnings(result)
    return Export.from_dict({**result.to_report(), "warnings": list(result.details.get(
        "warnings") or []) + [warn(w) for w in lines]}, "export")


def saturation_warnings(result) -> list[str]:
    """One line per fixed-point layer whose integers saturated: weights or biases clipped when
    quantised, or the 24-bit current wrapped / voltage clipped while the test samples ran."""
    out = []
    for l in (result.details.get("quantization") or {}).get("layers", []):
        what = [f"{l[k]:,} {name}" for k, name in (
            ("weights_clipped", "weights clipped to [-256, 254]"),
            ("bias_clipped", "biases clipped to 13 bits"),
            ("u_wrapped", "24-bit currents wrapped"),
            ("v_clipped", "24-bit voltages clipped")) if l.get(k)]
        if what:
            out.append(f"{result.target} layer {l['layer']} ('{l['name']}') saturates: "
                       f"{', '.join(what)} (clipped when quantised; wrapped and clipped over "
                       "the test samples' steps): its fixed point computes less than the float "
                       "layer: lower its weights and bias relative to its threshold, or "
                       "fine-tune for fixed point (fine_tune=)")
    return out


def ops_section(masked: OpsReport, small: OpsReport) -> Ops:
    return Ops(synops_dense=masked.total("synops_dense"), synops_compact=small.total("synops"),
               macs_dense=masked.total("macs_dense"), macs_compact=small.total("macs"),
               macs_compact_dense=small.total("macs_dense"),
               energy_pj_dense=masked.energy_pj_dense, energy_pj_compact=small.energy_pj,
               energy_note=ENERGY_NOTE, measured_on=f"{small.samples} test samples")


def _weights(graph) -> int:
    return sum(int(layer.synapse.weight.count_nonzero()) for layer in graph.layers)


def _layer_rows(c, masks) -> list[CompactionLayer]:
    rows = []
    for layer, lp, mo, so in zip(c.graph.layers, c.result.plan.layers, c.masked_ops.layers,
                                 c.compact_ops.layers):
        syn, neu = masks[layer.name] if masks and layer.name in masks else (
            nonzero_kernels(layer.synapse.weight.cpu()), torch.ones(layer.n_out, dtype=torch.bool))
        eff = (syn & neu[:, None])
        bn_params = sum(p.numel() for p in layer.bn.parameters()) if layer.bn is not None else 0
        bn_kept = (bn_params // layer.n_out) * len(lp.keep_out)
        after_pruning, kept = int(eff.sum()), int(eff[lp.keep_out][:, lp.keep_in].sum())
        # kept = total - pruned (by the pruner's masks) - derived dead (removed by compaction)
        rows.append(CompactionLayer(
            name=layer.name, kind=layer.kind, neurons_total=layer.n_out,
            neurons_kept=len(lp.keep_out), neurons_pruned=lp.pruned_out,
            neurons_derived_dead=lp.derived_out, synapses_total=layer.n_out * layer.n_in,
            synapses_kept=kept, synapses_pruned=layer.n_out * layer.n_in - after_pruning,
            synapses_derived_dead=after_pruning - kept, params_dense=mo.params + bn_params,
            params_compact=so.params + bn_kept, synops_dense=mo.synops_dense,
            synops_compact=so.synops, macs_dense=mo.macs_dense, macs_compact=so.macs))
    return rows


def run_folder(source: str | Path) -> Path:
    p = Path(source)
    return p if p.is_dir() else p.parent
