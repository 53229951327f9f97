"""``nir``: the compacted SNN as a NIR file (``network.nir``), written with ``nir.write`` and
verified by reading it back with ``nir.read`` and running it with the torch reference executor
of NIR graphs (``nir_torch``): the output spikes must be identical to the source model's on the
test samples. BatchNorm is folded into its synapse first (NIR has no BatchNorm; the fold is
checked on its own); pooling, branches and every neuron type stay as they are, so this fold
(BatchNorm only) is not compaction's ``deploy.pt``, which also folds pooling for netx. The
file carries the run's ``time_steps`` and a content digest in its metadata, both checked when it
is read back (``nir_checks``), and the report records each written file's sha256.

A model whose output is graded (``graph.readout``: a leaky-integrator membrane or a ``Linear``
readout's current) is compared value by value instead (``_compare.graded_parity``: every value
within the float32 tolerance, identical predictions of the time-summed output).
:func:`blockers` lists every reason this target would refuse a model graph, without running it.

The neurons are written in the job's ``nir_encoding`` (``"gain"`` unless the job says
``"unit-r"``) and the pools as its ``nir_pooling`` (``"avg"`` unless ``"sum"``): see
``nir_graph``'s docstring; every choice reads back to the same spikes."""
from __future__ import annotations

from pathlib import Path

import nir
import numpy as np

from ..compaction import fold_for_deployment
from ..atomic import atomic_buffer
from ..errors import ConfigError, DPAPError, UnsupportedModelError
from ..graph.time_axis import batch_slice
from ._compare import graded_parity, graded_passed, spike_parity, torch_spikes
from .base import ExportJob, ExportResult
from .nir_checks import metadata_time_steps, read_checked, sign
from .nir_graph import ENCODINGS, POOLINGS, to_nir

TARGET = "nir"
KINDS = ("snn",)


def job_encoding(job: ExportJob) -> dict[str, str]:
    """The job's ``nir_encoding`` and ``nir_pooling`` as ``to_nir`` options."""
    return {"encoding": job.nir_encoding, "pooling": job.nir_pooling}


NIR_TARGETS = ("nir", "loihi-sim")       # the targets that write a NIR file


def nir_options(target: str, encoding: str | None = None, pooling: str | None = None) -> dict:
    """``ExportJob`` options for the NIR file a target writes, checked before any work: a
    choice for a target that writes no NIR file would be ignored, so it is refused."""
    given = {k: v for k, v in (("nir_encoding", encoding), ("nir_pooling", pooling))
             if v is not None}
    if given and target not in NIR_TARGETS:
        names = ", ".join(f"--{k.replace('_', '-')}" for k in given)
        raise ConfigError(f"{names} shape the NIR file of --target {' or '.join(NIR_TARGETS)}; "
                          f"--target {target} writes none: drop the option")
    for key, choices in (("nir_encoding", ENCODINGS), ("nir_pooling", POOLINGS)):
        if key in given and given[key] not in choices:
            raise ConfigError(f"invalid {key.replace('_', '-')} {given[key]!r}: choose "
                              f"{' or '.join(choices)}")
    return given


def write_nir(job: ExportJob, path: Path, fold_pools: bool = False):
    """Fold BatchNorm (and with ``fold_pools`` average pooling), write the NIR file in the
    job's encoding (``job_encoding``); returns ``(path, folded model graph)``."""
    x, _ = job.samples()
    _, fgraph = fold_for_deployment(job.model, batch_slice(x, job.time_axis, 0, 64),
                                    time_steps=job.time_steps,
                                    graph=job.model_graph(), fold_pools=fold_pools)
    graph = sign(to_nir(fgraph, time_steps=job.time_steps, **job_encoding(job)))
    # Written in memory, then atomically: a killed export leaves no half-written .nir, and
    # HDF5 never meets a full disk (it can crash the process when a flush fails on close).
    with atomic_buffer(path) as buf:
        nir.write(buf, graph)
    return path, fgraph


def read_nir(path: Path, time_steps: int) -> nir.NIRGraph:
    """Read a file this exporter wrote (checked: ``nir_checks.read_checked``); its metadata's
    ``time_steps`` must be the run's."""
    graph = read_checked(path)
    stored = metadata_time_steps(graph, path)
    if stored is not None and stored != time_steps:
        raise DPAPError(f"{path} says time_steps={stored}, the run has {time_steps}; "
                        "export it again")
    return graph



def export(job: ExportJob, out: Path) -> ExportResult:
    from .nir_torch import run_reference
    x, y = job.samples()
    path, fgraph = write_nir(job, Path(out) / "network.nir")
    graph = read_nir(path, job.time_steps)
    ref = torch_spikes(fgraph, x, job.time_steps)
    got = run_reference(graph, job.per_sample(x).numpy(), job.time_steps)
    got = got.reshape(got.shape[0], got.shape[1], -1)
    if getattr(fgraph, "readout", "spikes") == "spikes":
        par = spike_parity(ref, got, y.numpy())
        passed = par["identical_spike_trains"] == 1.0
    else:                                  # a membrane / current readout: graded values
        par = graded_parity(ref, got, y.numpy(), job.time_steps)
        passed = graded_passed(par)
    return ExportResult(TARGET, [path.name], par["accuracy"], par, passed=passed,
                        details={"nodes": {k: type(v).__name__ for k, v in graph.nodes.items()},
                                 "neuron_encoding": graph.metadata.get("neuron_encoding"),
                                 "pooling": graph.metadata.get("pooling"),
                                 "synapses": nir_synapses(graph)})


def nir_synapses(graph: nir.NIRGraph) -> int:
    """Non-zero weights stored in the graph's Conv / Affine / Linear nodes."""
    return int(sum(np.count_nonzero(n.weight) for n in graph.nodes.values()
                   if isinstance(n, (nir.Conv1d, nir.Conv2d, nir.Affine, nir.Linear))))


def blockers(graph, time_steps: int | None = None, encoding: str = "gain") -> list[str]:
    """Every reason ``nir`` would refuse ``graph`` (one line each, every node at once),
    computed from the graph and the modules alone (nothing runs): the node-level reasons, and
    when there are none, whatever building the NIR graph itself refuses (nir's type check)."""
    out = []
    if graph.kind != "snn":
        out.append("NIR export takes spiking networks; for an ANN use --target onnx")
    if time_steps is not None and (not isinstance(time_steps, int) or time_steps < 1):
        out.append(f"time_steps must be a positive integer, got {time_steps!r}")
    if graph.kind != "snn":
        return out
    nodes = node_blockers(graph, encoding)
    if nodes:
        return out + nodes
    # Nothing refused node by node: build the NIR graph (weights only, nothing runs) so that
    # what only nir's own type check sees is listed too.
    steps = time_steps if isinstance(time_steps, int) and time_steps >= 1 else 1
    why = _refusal(lambda: to_nir(graph, time_steps=steps, encoding=encoding))
    return out + ([why] if why else [])


def _refusal(fn) -> str | None:
    try:
        fn()
    except UnsupportedModelError as exc:
        return str(exc)
    return None


def node_blockers(graph: ModelGraph, encoding: str = "gain") -> list[str]:
    """Every node-level reason ``to_nir`` would refuse ``graph`` (one line each, every node),
    from the graph and its modules alone: the neurons' ``blockers`` (and their NIR nodes'
    own checks), pools, concatenations, unfoldable BatchNorm, a membrane readout without an
    LI."""
    out: list[str] = []
    from ..graph.model_graph import (ADD, CAT, FLATTEN, INPUT, NEURON, NORM, OUTPUT, PASS,
                                     POOL, SYNAPSE)
    from .nir_forms import max_pool
    from .nir_graph import DT, _output_sources, _pool_node
    folded = {i for layer in graph.layers for i in layer.path}
    for n in graph.nodes:
        why = None
        if n.op == NEURON:
            a = n.adapter
            if a is None or a.kind != "snn":
                why = (f"'{n.name}' ({type(n.module).__name__}) is not a spiking neuron; NIR "
                       "export takes SNNs")
            else:
                b = a.blockers(n.module, n.name) if hasattr(a, "blockers") else []
                if b:
                    out += b
                    continue
                why = _refusal(lambda: a.to_nir(n.module, n.out_shape, DT, encoding))
                rec = getattr(a, "recurrent_nir", None)
                why = why or (rec and _refusal(lambda: rec(n.module, n.out_shape)))
                why = why and f"neuron '{n.name}': {why}"
        elif n.op == POOL and n.attrs.get("pool") == "max":
            fed = getattr(graph, "fed_by_spikes", lambda i: False)(n.id)
            why = _refusal(lambda: max_pool(n, encoding, DT, fed))
        elif n.op == POOL:
            why = _refusal(lambda: _pool_node(n))
        elif n.op == NORM and n.id not in folded:
            why = (f"BatchNorm '{n.name}' does not follow a synapse of its own and cannot be "
                   "folded; NIR has no BatchNorm node")
        elif n.op == CAT:
            why = (f"'{n.name}' is a torch.cat: NIR has no concatenation node; export a model "
                   "without concatenation (or sum the branches)")
        elif n.op not in (INPUT, OUTPUT, SYNAPSE, NORM, FLATTEN, PASS, ADD):
            why = f"operation '{n.attrs.get('fn', n.op)}' at '{n.name}' has no NIR node"
        elif n.op == OUTPUT and getattr(graph, "readout", "spikes") == "membrane":
            src = graph.nodes[n.inputs[0]]
            form = getattr(src.adapter, "form", lambda m: "")(src.module)
            if form not in ("subtract", "none"):
                why = _refusal(lambda: _output_sources(graph, n, {}, {}))
        if why:
            out.append(why)
    return out
