"""Exporters, one module per target, same interface: ``export(job, out_dir) -> ExportResult``.

| target      | module          | takes | consumer that verifies it                           |
|-------------|-----------------|-------|-----------------------------------------------------|
| `nir`       | `nir_export`    | SNN   | `nir.read` + the graph run again in torch           |
| `loihi-sim` | `lava_sim`      | SNN   | Lava simulator, `Loihi2SimCfg` floating point       |
| `netx`      | `netx_export`   | SNN   | `lava.lib.dl.netx.hdf5.Network`, Lava fixed point   |
| `onnx`      | `onnx_export`   | ANN   | `onnx.checker` + onnxruntime                        |
"""
from __future__ import annotations

import importlib
from pathlib import Path

from ..errors import ConfigError, UnsupportedModelError
from .base import ExportJob, ExportResult

TARGETS = {"nir": "nir_export", "loihi-sim": "lava_sim", "netx": "netx_export", "onnx": "onnx_export"}


def exporter(target: str):
    if target not in TARGETS:
        raise ConfigError(f"unknown target {target!r}; choose one of {', '.join(TARGETS)}")
    return importlib.import_module(f".{TARGETS[target]}", __name__)


def check_target(target: str, kind: str):
    """The exporter module of ``target``, if it takes models of ``kind``; else a clear error."""
    mod = exporter(target)
    if kind not in mod.KINDS:
        other = "--target onnx" if kind == "ann" else "--target nir, netx or loihi-sim"
        raise UnsupportedModelError(
            f"target '{target}' takes {' or '.join(k.upper() for k in mod.KINDS)} models and this "
            f"is an {kind.upper()}; use {other}")
    return mod


def export(target: str, job: ExportJob, out: str | Path) -> ExportResult:
    mod = check_target(target, job.kind)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    return mod.export(job, out)


__all__ = ["TARGETS", "ExportJob", "ExportResult", "check_target", "export", "exporter"]
