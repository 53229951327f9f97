"""What the targets refuse, and the parity of a converted model, for ``make_deployable``.

:func:`target_blockers` asks, per target, every reason it would refuse a model, in this
order of preference: the deployability check (``dpap_deploy.deployability.check_deployable``),
else the target module's own ``blockers(graph, time_steps)``, else a dry build of the
target's artifact without running anything (nir: the NIR graph; loihi-sim: the NIR graph and
the Lava network's plan, no process started; netx: its layer list), whose refusal is one
blocker (``deployability.check_graph`` is used when present: the graph is built already).
:func:`named_nodes` finds the graph nodes a blocker line names (``'name'``).

:func:`export_parity` runs the real export of the compacted model to each target on a few
test samples (``dpap_deploy.exporters.export``): the files are written and run in the
target's own consumer (``nir.read`` + the reference executor, the Lava simulator, the netx
loader), and the parity table says how many samples gave identical spike trains.
"""
from __future__ import annotations

import importlib
from pathlib import Path

import torch

from .errors import DPAPError, UnsupportedModelError
from .graph import ModelGraph


def _from_check(result, targets: list[str]) -> dict[str, list[str]]:
    """Per-target blocker lines of a ``check_deployable`` result (a table ``blockers`` /
    ``targets`` of target -> lines or -> an object with ``blockers``)."""
    table = getattr(result, "blockers", None)
    if not isinstance(table, dict):
        table = getattr(result, "targets", None)
    if not isinstance(table, dict):
        table = result if isinstance(result, dict) else {}
    out = {}
    for t in targets:
        entry = table.get(t, [])
        lines = getattr(entry, "blockers", entry)
        out[t] = [str(line) for line in (lines or [])]
    return out


def _dry_build(target: str, graph: ModelGraph, time_steps: int) -> None:
    if target in ("nir", "loihi-sim"):
        from .exporters.nir_graph import to_nir
        nir_graph = to_nir(graph, time_steps=time_steps)
        if target == "loihi-sim":
            from .exporters.nir_to_lava import LavaNetwork
            LavaNetwork(nir_graph, time_steps)          # plans only: no Lava process runs
    elif target == "netx":
        from .exporters.netx_export import _layers
        _layers(graph)


def module_blockers(target: str, graph: ModelGraph, time_steps: int) -> list[str]:
    """Every reason ``target`` refuses ``graph``: its module's ``blockers``, else the refusal
    of a dry build (one line)."""
    from .exporters import check_target
    try:
        mod = check_target(target, graph.kind)
        fn = getattr(mod, "blockers", None)
        if fn is not None:
            return [str(line) for line in fn(graph, time_steps=time_steps)]
        _dry_build(target, graph, time_steps)
    except UnsupportedModelError as exc:
        return [str(exc)]
    return []


def target_blockers(model: torch.nn.Module, graph: ModelGraph, example_input: torch.Tensor,
                    targets: list[str], time_steps: int) -> dict[str, list[str]]:
    """``{target: [blocker line, ...]}`` (module docstring); an empty list: accepted. The
    input's time axis is the graph's (``graph.time_axis``)."""
    try:
        check = importlib.import_module(".deployability", __package__)
    except ImportError:
        check = None
    if hasattr(check, "check_graph"):             # the graph is built already
        return _from_check(check.check_graph(graph, list(targets), time_steps), list(targets))
    if hasattr(check, "check_deployable"):
        res = check.check_deployable(model, example_input, targets=list(targets),
                                     time_steps=time_steps, time_axis=graph.time_axis)
        return _from_check(res, list(targets))
    return {t: module_blockers(t, graph, time_steps) for t in targets}


def named_nodes(graph: ModelGraph, line: str) -> list[int]:
    """Ids of the graph's neuron and pooling nodes whose name the line quotes."""
    return [n.id for n in graph.nodes if n.op in ("neuron", "pool") and f"'{n.name}'" in line]


def export_parity(model: torch.nn.Module, example_input: torch.Tensor, masks: dict,
                  x: torch.Tensor, y: torch.Tensor, targets: list[str], time_steps: int,
                  out: Path, time_axis: int | None = None) -> dict[str, dict]:
    """Compact ``model`` under ``masks``, export it to each target (``out / target``) on
    ``x, y`` (``time_axis``: the inputs' time axis, ``build_graph``'s), and return per target
    ``{"passed", "identical_spike_trains", "agreement",
    "n_samples", "accuracy", ...}`` or ``{"passed": False, "refused": reason}``."""
    from .compaction import compact
    from .exporters import ExportJob, export
    res = compact(model, example_input, masks, time_steps=time_steps, time_axis=time_axis)
    table: dict[str, dict] = {}
    for target in targets:
        job = ExportJob(res.model, res.kind, x, y, time_steps, time_axis=time_axis)
        try:
            r = export(target, job, out / target)
        except DPAPError as exc:
            table[target] = {"passed": False, "refused": str(exc)}
            continue
        table[target] = {"passed": bool(r.passed), **r.parity, "files": list(r.files)}
    return table
