"""``loihi-sim``: the compacted SNN with BatchNorm folded into its synapses (and nothing else
folded: average pooling stays an ``AvgPool2d`` node), as a NIR graph (``FILE``,
``network-bn-folded.nir``) turned into a Lava process graph and run in the Lava simulator
(``Loihi2SimCfg``, floating point) on test samples. Pooling is its own small stage in Lava
(a pool process, not folded into the next layer's weights); both the Lava and the NIR synapse
counts are reported. Reports Lava's accuracy and its agreement with torch (same predicted
class; target >= 99% of samples). A graded readout (a leaky integrator's membrane, a Linear's
current) is compared value by value within float32 rounding (``_compare.graded_parity``): >= 99%
of samples within the bound and with the same prediction.

**Fixed point** (``export(job, out, fixed_point=True)``, or a job whose ``fixed_point`` is
true): the same network in Lava's bit-accurate models (``select_tag="fixed_pt"``: Lava's
``Dense`` / ``Sparse`` / ``Conv`` / ``LIFReset`` and our ``Population`` and ``Relay`` fixed
models) with the integers of ``lava_fixed`` (calibrated on the first
``CALIBRATION_SAMPLES`` samples). The parity check is then bit-exact: Lava's output equals the
torch emulation (``fixed_point.emulate``) on every sample (``fixed_identical`` = 1.0; a
silent or constant output fails, as in floating point); the
decisions' agreement with the float torch network, its accuracy and the per-layer exponents,
scales and saturation counts are reported as information."""
from __future__ import annotations

import time
from pathlib import Path

from ..errors import DPAPError
from . import nir_export
from ._compare import graded_parity, silence, spike_parity, torch_spikes, with_failure
from .base import ExportJob, ExportResult
from .nir_export import nir_synapses, read_nir, write_nir
from .nir_graph import to_nir
from .nir_to_lava import LavaNetwork
from .nir_to_lava import blockers as nir_blockers

TARGET = "loihi-sim"
KINDS = ("snn",)
DEFAULT_MAX_SAMPLES = 1000     # test samples run in the simulator unless asked otherwise
SIMULATOR = True              # runs in Lava: its memory is checked first
MIN_AGREEMENT = 0.99
FILE = "network-bn-folded.nir"   # BatchNorm folded; pooling is still a node


CALIBRATION_SAMPLES = 64


def export(job: ExportJob, out: Path, fixed_point: bool | None = None) -> ExportResult:
    """``fixed_point``: None reads the job's ``fixed_point``."""
    if job.fixed_point if fixed_point is None else fixed_point:
        return export_fixed(job, out)
    x, y = job.samples()
    path, fgraph = write_nir(job, Path(out) / FILE)
    graph = read_nir(path, job.time_steps)
    net = LavaNetwork(graph, job.time_steps)
    t0 = time.perf_counter()
    got = net.run(job.per_sample(x).numpy(), log=job.log)    # [N, ...] or frames [N, T, ...]
    wall = time.perf_counter() - t0
    ref = torch_spikes(fgraph, x, job.time_steps)
    got = got.reshape(got.shape[0], got.shape[1], -1)
    if getattr(fgraph, "readout", "spikes") == "spikes":
        par = spike_parity(ref, got, y.numpy())
        passed = par["agreement"] >= MIN_AGREEMENT
    else:                       # a membrane / current readout: graded values (float32 bound)
        par = graded_parity(ref, got, y.numpy(), job.time_steps)
        passed = "failure" not in par and min(par["within_tolerance"],
                                              par["identical_predictions"]) >= MIN_AGREEMENT
    return ExportResult(TARGET, [path.name], par["accuracy"], par, passed=passed,
                        details={"lava_config": "Loihi2SimCfg(select_tag='floating_pt')",
                                 "lava_layers": [f"{l.name}:{l.kind}{list(l.shape)}" for l in net.layers],
                                 "lava_steps": len(y) * job.time_steps, "lava_wall_s": wall,
                                 "synapses": net.synapses, "synapses_lava": net.synapses,
                                 "synapses_nir": nir_synapses(graph)})


def export_fixed(job: ExportJob, out: Path) -> ExportResult:
    """The network in Lava fixed point against its torch emulation, bit for bit."""
    x, y = job.samples()
    path, fgraph = write_nir(job, Path(out) / FILE)
    graph = read_nir(path, job.time_steps)
    net = LavaNetwork(graph, job.time_steps)
    xs = job.per_sample(x).numpy()
    fx = net.fixed_point(xs[:CALIBRATION_SAMPLES])
    stats: dict = {}
    emulated = fx.run(xs, stats)
    t0 = time.perf_counter()
    got = net.run_fixed(xs, log=job.log)
    wall = time.perf_counter() - t0
    n = len(got)
    same = (got.reshape(n, -1) == emulated.reshape(n, -1)).all(1)
    ref = torch_spikes(fgraph, x, job.time_steps)
    fixed = fx.to_float(got).reshape(n, got.shape[1], -1)
    if getattr(fgraph, "readout", "spikes") == "spikes":
        par = spike_parity(ref, fixed, y.numpy())
    else:
        par = graded_parity(ref, fixed, y.numpy(), job.time_steps)
    par = {"fixed_identical": float(same.mean()), "n_samples": n,
           "agreement_float": par["agreement"],
           **{k: v for k, v in par.items() if k not in ("agreement", "n_samples")}}
    par["agreement"] = par["fixed_identical"]
    failure = par.get("failure") or silence(par)     # two silent runs agree, proving nothing
    if failure and "failure" not in par:
        par = with_failure(par, failure)
    saturated = {k: v for k, v in stats.items() if v.get("u_wrapped") or v.get("v_clipped")}
    warnings = [f"fixed point: layer {k!r} saturates on the test samples ({v['u_wrapped']} "
                f"current wraps, {v['v_clipped']} voltage clips at 24 bits): lower its input "
                "weights or threshold range" for k, v in saturated.items()]
    for w in warnings:
        job.log and job.log(w)
    return ExportResult(TARGET, [path.name], par["accuracy"], par,
                        passed=bool(same.all()) and n > 0 and not failure,
                        details={"lava_config": "Loihi2SimCfg(select_tag='fixed_pt')",
                                 "lava_layers": [f"{l.name}:{l.kind}{list(l.shape)}" for l in net.layers],
                                 "lava_steps": n * job.time_steps, "lava_wall_s": wall,
                                 "fixed_point": {"input_bits": fx.input_bits, "layers": fx.layers,
                                                 "saturation": stats,
                                                 "saturated_layers": sorted(saturated),
                                                 "edge_gains": {f"{a}->{b}": g for (a, b), g
                                                                in fx.gains.items()}},
                                 "synapses": net.synapses, "synapses_lava": net.synapses,
                                 "synapses_nir": nir_synapses(graph),
                                 **({"warnings": warnings} if warnings else {})})


def blockers(graph, time_steps: int | None = None) -> list[str]:
    """Every reason this target would refuse the model graph ``graph``, one line each, without
    training or running Lava: the NIR writer's (``nir_export.blockers``) and, when the NIR
    graph can be written, the Lava mapping's on it (``nir_to_lava.blockers``). ``time_steps``:
    the run's ``T`` (None: one step; no refusal depends on it)."""
    t = 1 if time_steps is None else int(time_steps)
    writer = getattr(nir_export, "blockers", None)
    found = list(writer(graph, time_steps)) if writer is not None else []
    if found:
        return found
    try:
        nir_graph = to_nir(graph, time_steps=t)
    except DPAPError as exc:
        return [str(exc)]
    return nir_blockers(nir_graph, t)
