"""Exporters, one module per target, same interface: ``export(job, out_dir) -> ExportResult``.

| target      | module          | takes | consumer that verifies it                           |
|-------------|-----------------|-------|-----------------------------------------------------|
| `nir`       | `nir_export`    | SNN   | `nir.read` + the graph run again in torch           |
| `loihi-sim` | `lava_sim`      | SNN   | Lava simulator, floating point (or `fixed_point`)   |
| `netx`      | `netx_export`   | SNN   | `lava.lib.dl.netx.hdf5.Network`, Lava fixed point   |
| `onnx`      | `onnx_export`   | ANN   | `onnx.checker` + onnxruntime                        |
"""
from __future__ import annotations

import importlib
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..errors import ConfigError, UnsupportedModelError
from ..validate import check_out_dir
from ._compare import silence, with_failure
from .base import ExportJob, ExportResult, file_sha256

# The targets: name -> module in this package (imported when the target is asked for), or a
# module object added with register_target(). The CLI's --target choices are this table's keys.
TARGETS: dict[str, Any] = {"loihi-sim": "lava_sim", "netx": "netx_export", "nir": "nir_export",
                           "onnx": "onnx_export"}


def register_target(name: str, module) -> None:
    """Add a target: ``module`` has ``KINDS`` (``("snn",)`` and/or ``("ann",)``) and
    ``export(job, out) -> ExportResult``, and optionally ``DEFAULT_MAX_SAMPLES`` and
    ``blockers(graph, time_steps=None) -> list[str]`` (what the deployability check asks)."""
    for attr in ("KINDS", "export"):
        if not hasattr(module, attr):
            raise ConfigError(f"target {name!r}: its module has no {attr}; an exporter module "
                              "defines KINDS and export(job, out)")
    TARGETS[name] = module


def exporter(target: str):
    if target not in TARGETS:
        raise ConfigError(f"unknown target {target!r}; choose one of {', '.join(TARGETS)}")
    entry = TARGETS[target]
    return importlib.import_module(f".{entry}", __name__) if isinstance(entry, str) else entry


def sample_limit(target: str, max_samples: int | None, data, time_steps: int) -> int | None:
    """Test samples the target runs: ``max_samples``, else the target's own default (the Lava
    targets run 1,000, checked against this machine's memory before Lava allocates)."""
    mod = exporter(target)
    limit = max_samples if max_samples is not None else getattr(mod, "DEFAULT_MAX_SAMPLES", None)
    if getattr(mod, "SIMULATOR", False):
        from ..resources import check_simulator_memory
        check_simulator_memory(min(limit or len(data.y_test), len(data.y_test)), time_steps,
                               data.x_test[0].numel(), data.n_classes)
    return limit


def check_target(target: str, kind: str):
    """The exporter module of ``target``, if it takes models of ``kind``; else a clear error."""
    mod = exporter(target)
    if kind not in mod.KINDS:
        other = "--target onnx" if kind == "ann" else "--target nir, netx or loihi-sim"
        raise UnsupportedModelError(
            f"target '{target}' takes {' or '.join(k.upper() for k in mod.KINDS)} models and this "
            f"is an {kind.upper()}; use {other}")
    return mod


DEFAULT_CHECK_STEPS = 8      # the T a check assumes when none is given (the zoo's default)


def blockers(target: str, graph, time_steps: int | None = None) -> list[str]:
    """Every reason ``target`` would refuse the model ``graph`` (a ``ModelGraph``), one line
    each (what, where, why, the fix), computed without training and without running anything.

    The target's module answers with its own ``blockers(graph, time_steps=None)`` when it has
    one (all its reasons at once). Otherwise the target's artifact is built dry and its first
    refusal (``UnsupportedModelError``) is the one blocker it can tell: ``nir``, the NIR graph
    (``nir_graph.to_nir``); ``loihi-sim``, that graph planned as a Lava network
    (``nir_to_lava.LavaNetwork``: layouts, delays, neuron constants; no Lava process is made or
    run); ``netx``, the layer chain of the netx file (``netx_export._layers``) with BatchNorm
    and average pooling taken as folded, as the export folds them. A target taking the other
    kind of model (SNN / ANN) has that one blocker. A check that fails otherwise (a bug) is a
    blocker saying so: a model is never called deployable because its check crashed."""
    mod = exporter(target)
    if graph.kind not in mod.KINDS:
        other = "onnx" if graph.kind == "ann" else "nir, loihi-sim or netx"
        return [f"the model is an {graph.kind.upper()} and '{target}' takes "
                f"{' or '.join(k.upper() for k in mod.KINDS)} models: use target {other}"]
    steps = time_steps or (graph.steps_per_call if graph.steps_per_call > 1 else
                           DEFAULT_CHECK_STEPS)
    own = getattr(mod, "blockers", None)
    try:
        if own is not None:
            return [" ".join(str(line).split()) for line in own(graph, time_steps=time_steps)]
        dry = _DRY_BUILDS.get(target)
        if dry is not None:
            dry(graph, steps)
    except UnsupportedModelError as exc:
        return [" ".join(str(exc).split())]
    except Exception as exc:  # noqa: BLE001 - a failing check is never read as "it deploys"
        from ..errors import one_line
        return [f"the check of target '{target}' itself failed ({one_line(exc)}); the model is "
                "not known to deploy: export it to see, and report the failure"]
    return []


def _dry_nir(graph, steps: int):
    from .nir_graph import to_nir
    return to_nir(graph, time_steps=steps)


def _dry_lava(graph, steps: int) -> None:
    from .nir_to_lava import LavaNetwork
    LavaNetwork(_dry_nir(graph, steps), steps)       # plans only: no process is built or run


def _dry_netx(graph, steps: int) -> None:
    from .netx_export import _layers
    _layers(_folded_view(graph))


def _folded_view(graph):
    """``graph`` with its BatchNorm nodes and exact 2-d average pools as pass-through nodes
    (ids kept): the structure of the network the netx export folds them into."""
    from dataclasses import replace as copy
    from ..graph.model_graph import NORM, PASS, POOL

    def folded(n) -> bool:
        a = n.attrs
        return n.op == NORM or (n.op == POOL and a.get("pool") == "avg" and a.get("dims") == 2
                                and a.get("exact", True) and not a.get("ceil_mode"))
    nodes = [copy(n, op=PASS, module=None, attrs={}) if folded(n) else n for n in graph.nodes]
    return copy(graph, nodes=nodes, layers=list(graph.layers))


_DRY_BUILDS = {"nir": _dry_nir, "loihi-sim": _dry_lava, "netx": _dry_netx}


def export(target: str, job: ExportJob, out: str | Path, log=None) -> ExportResult:
    """Run ``target``'s exporter on ``job`` (finite weights only); the result records each
    file's sha256 and fails when its output was silent or constant, whatever the agreement.
    ``log``: a callable taking one line, told when the export starts and when its result is
    checked (``progress.Stage``); ``None`` (the default): silent."""
    from ..progress import Stage
    mod = check_target(target, job.kind)
    check_job_finite(job)
    out = check_out_dir(out)
    out.mkdir(parents=True, exist_ok=True)
    n = len(job.samples()[1])
    stage = Stage(log, f"export {target}",
                  f"writing the files, running them in the consumer on {n:,} samples")
    with stage:
        result = mod.export(replace(job, log=log) if log is not None else job, out)
    stage.say(f"checking the result against torch ({_agreement(result.parity)})")
    reason = result.parity.get("failure") or silence(result.parity)
    if reason:
        result.parity, result.passed = with_failure(result.parity, reason), False
    result.details["file_sha256"] = file_sha256(out, result.files)
    return result


def _agreement(parity: dict) -> str:
    """The agreement figure of a parity table as words (``n/a`` when the target has none)."""
    a = parity.get("agreement")
    return "agreement n/a" if a is None else f"agreement {a:.2%}"


def check_job_finite(job: ExportJob) -> None:
    """The networks to export hold finite weights, biases, thresholds and decays."""
    from ..checkpoint import check_finite
    for what, model in (("the compacted network", job.model), ("the folded network", job.deploy)):
        if model is not None:
            check_finite(model.state_dict(), what)


__all__ = ["TARGETS", "ExportJob", "ExportResult", "blockers", "check_target", "export", "exporter",
           "file_sha256", "register_target", "sample_limit"]
