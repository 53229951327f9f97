"""``nir``: the compacted SNN as a NIR file (``network.nir``), written with ``nir.write`` and
verified by reading it back with ``nir.read`` and running it in torch: the output spikes must
be identical to the source model's on the test samples."""
from __future__ import annotations

from pathlib import Path

import nir

from ..atomic import atomic_path
from ._compare import spike_parity, torch_spikes
from .base import ExportJob, ExportResult
from .nir_graph import from_nir, to_nir

TARGET = "nir"
KINDS = ("snn",)


def write_nir(job: ExportJob, path: Path, model=None) -> Path:
    x, _ = job.samples()
    graph = to_nir(model if model is not None else job.model, x[:2], job.time_steps)
    with atomic_path(path) as tmp:   # a killed export leaves no half-written .nir
        nir.write(str(tmp), graph)
    return path


def export(job: ExportJob, out: Path) -> ExportResult:
    x, y = job.samples()
    path = write_nir(job, Path(out) / "network.nir")
    back = from_nir(nir.read(str(path)))
    par = spike_parity(torch_spikes(job.model, x, job.time_steps),
                       torch_spikes(back, x, job.time_steps), y.numpy())
    graph = nir.read(str(path))
    return ExportResult(TARGET, [path.name], par["accuracy"], par,
                        passed=par["identical_spike_trains"] == 1.0,
                        details={"nodes": {k: type(v).__name__ for k, v in graph.nodes.items()},
                                 "synapses": nir_synapses(graph)})


def nir_synapses(graph: nir.NIRGraph) -> int:
    """Non-zero weights stored in the graph's Conv2d / Affine / Linear nodes."""
    import numpy as np
    return int(sum(np.count_nonzero(n.weight) for n in graph.nodes.values()
                   if isinstance(n, (nir.Conv2d, nir.Affine, nir.Linear))))
