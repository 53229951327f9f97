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


def export(target: str, job: ExportJob, out: str | Path) -> ExportResult:
    mod = exporter(target)
    if job.kind not in mod.KINDS:
        other = "--target onnx" if job.kind == "ann" else "--target nir, netx or loihi-sim"
        raise UnsupportedModelError(
            f"target '{target}' takes {' or '.join(k.upper() for k in mod.KINDS)} models and this "
            f"is an {job.kind.upper()}; use {other}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    return mod.export(job, out)


__all__ = ["TARGETS", "ExportJob", "ExportResult", "export", "exporter"]
