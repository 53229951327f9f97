"""Any NIR file in the Lava simulator, checked against a torch run of the same graph.

    report = run_nir_file("net.nir", "out/", time_steps=8)   # = dpap-deploy export net.nir
                                                            #   --target loihi-sim --out out/
    run_nir_file("norse.nir", "out/", dt=1e-3)              # the file's step (--dt)

The file may come from any tool (snnTorch, sinabs, Norse, Rockpool, ours). Inputs: ``x`` of an
``.npz`` file (``[N, *input]`` repeated every step, or frames ``[N, T, *input]``), else
reproducible random ones shaped like the graph's input: uniform values in [0, 1) (direct
encoding) or, with ``inputs="spikes"``, 0/1 spikes with probability 0.3. Writes
``report.json`` and ``report.md``; raises ``ParityError`` (after writing them) when fewer than
99% of the samples agree (same predicted class: most output spikes, ties to the lowest index)
or when the output layer emitted no spike on any sample (silent). ``--out`` is checked and
locked before the file is read; the file is read checked (``nir_checks``: self-contained,
undamaged, finite, valid metadata; files that fail NIR's type check only for a leading batch
dimension in ``Input`` or scalar neuron parameters are conformed, and the report says how).

**The step ``dt``.** NIR's time constants are continuous; the run discretises them with
``dt`` (``nir_checks.resolve_dt``): the caller's (``--dt``), else the file's metadata ``dt``,
else ``1e-4`` (what snnTorch writes) with a warning line. sinabs and Norse store none, and the
wrong step silences IF networks (gain ``r dt``) or refuses LIF ones (``dt > tau``). The step
used and its source are in ``report.json`` (``dt``, ``dt_source``) and ``report.md``. Paths in
the reports are relative to the report's folder.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import nir
import numpy as np

from ..atomic import atomic_write_text
from ..errors import ConfigError, DPAPError, ParityError
from ..lock import output_lock
from ..metrics import output_activity
from ..runfolder import claim_folder_for_file, take
from ..validate import check_out_dir, existing_path
from ._compare import silence
from .lava_sim import MIN_AGREEMENT
from .nir_checks import metadata_time_steps, read_checked, resolve_dt
from .nir_to_lava import LavaNetwork
from .nir_torch import run_reference

DEFAULT_SAMPLES = 100
DEFAULT_TIME_STEPS = 8
MAX_STEPS = 200_000          # samples x time steps in one Lava run (~memory of the stream)


def read_graph(path: str | Path, check_time_steps: bool = True,
               notes: list[str] | None = None) -> nir.NIRGraph:
    """The NIR file at ``path``, read checked (``nir_checks.read_checked``; ``notes`` gets
    what was conformed)."""
    return read_checked(path, check_time_steps=check_time_steps, notes=notes)


def relative(path, out: Path) -> str:
    """``path`` as the report names it, never a machine path: relative to the report's folder
    ``out`` when they share a folder below the root, else the file's name alone."""
    p, o = Path(path).resolve(), out.resolve()
    if os.path.commonpath([p, o]) == p.anchor:
        return p.name
    return os.path.relpath(p, o)


def _inputs(shape, input_file, samples, inputs: str, seed: int, out: Path) -> tuple[np.ndarray, str]:
    if input_file is not None:
        try:
            with np.load(input_file) as f:
                x = np.asarray(f["x"], dtype=np.float32)
        except (OSError, KeyError, ValueError) as exc:
            raise DPAPError(f"--input {input_file}: cannot read an array 'x' from it ({exc}); "
                            "save one with np.savez(FILE, x=...)") from None
        if x.ndim == 0 or len(x) == 0 or not np.isfinite(x).all():
            raise DPAPError(f"--input {input_file}: 'x' must be a non-empty finite array, "
                            f"got shape {x.shape}")
        return (x if samples is None else x[:samples]), f"x of {relative(input_file, out)}"
    n = DEFAULT_SAMPLES if samples is None else samples
    rng = np.random.default_rng(seed)
    if inputs == "spikes":
        return (rng.random((n,) + shape) < 0.3).astype(np.float32), f"random 0/1 spikes p=0.3, seed {seed}"
    if inputs != "values":
        raise ConfigError(f"inputs={inputs!r}: choose 'values' or 'spikes'")
    return rng.random((n,) + shape).astype(np.float32), f"random uniform [0, 1) values, seed {seed}"


def compare(ref: np.ndarray, got: np.ndarray) -> dict[str, Any]:
    """Identical spike trains and agreement of the predicted class, per sample, and the
    output activity of the Lava run (``metrics.output_activity``)."""
    flat_r, flat_g = ref.reshape(len(ref), ref.shape[1], -1), got.reshape(len(got), got.shape[1], -1)
    p_ref, p_got = flat_r.sum(1).argmax(1), flat_g.sum(1).argmax(1)
    return {"agreement": float((p_ref == p_got).mean()), "n_samples": int(len(ref)),
            "output": output_activity(flat_g),
            "identical_spike_trains": float((flat_r == flat_g).all(axis=(1, 2)).mean()),
            "max_abs_difference": float(np.abs(ref - got).max()) if ref.size else 0.0,
            "output_spikes_reference": float(ref.sum())}


def run_nir_file(path: str | Path, out: str | Path, time_steps: int | None = None,
                 samples: int | None = None, input_file: str | Path | None = None,
                 inputs: str = "values", seed: int = 0, target: str = "loihi-sim",
                 dt: float | None = None, overwrite: bool = False) -> dict[str, Any]:
    """Run the NIR file at ``path`` in Lava and in the torch reference and write the reports
    into ``out`` (module docstring); ``dt``: the file's time step (None: its metadata's, else
    1e-4 with a warning). ``out`` may hold nothing or an earlier run of the same file; another
    run there is refused unless ``overwrite`` (:mod:`dpap_deploy.runfolder`)."""
    if target != "loihi-sim":
        raise ConfigError(f"a NIR file runs with --target loihi-sim, not {target!r}")
    out = check_out_dir(out)
    if time_steps is not None and (not isinstance(time_steps, int) or time_steps < 1):
        raise ConfigError(f"--time-steps {time_steps}: give a positive number of steps")
    if samples is not None and samples < 1:
        raise ConfigError(f"--max-samples {samples}: give a positive number of samples")
    existing_path(path, "NIR file", "pass the path of a .nir file")
    with output_lock(out, f"export {path} --target loihi-sim"):
        claim = claim_folder_for_file(out, Path(path), "export --target loihi-sim", overwrite)
        run = _prepare(path, out, time_steps, samples, input_file, inputs, seed, dt)
        take(claim)                      # every refusal is behind us: now the folder is ours
        return _simulate_and_report(path, out, *run)


def _prepare(path, out: Path, time_steps, samples, input_file, inputs, seed, dt) -> tuple:
    """Read and check the file, build the Lava network, choose the inputs: everything that
    may refuse, before anything is written."""
    notes: list[str] = []
    graph = read_graph(path, check_time_steps=time_steps is None, notes=notes)
    T = time_steps if time_steps is not None else \
        (metadata_time_steps(graph, path) or DEFAULT_TIME_STEPS)
    warnings: list[str] = []
    dt, dt_source = resolve_dt(graph, dt, path, warnings)
    net = LavaNetwork(graph, T, dt)                  # refuses what Lava cannot hold, before running
    x, source = _inputs(net.in_shape, input_file, samples, inputs, seed, out)
    if len(x) * T > MAX_STEPS:
        raise ConfigError(f"{len(x)} samples x {T} steps = {len(x) * T} Lava steps is over "
                          f"{MAX_STEPS}; lower --max-samples or --time-steps")
    return graph, T, dt, dt_source, notes, warnings, net, x, source


def _simulate_and_report(path, out: Path, graph, T, dt, dt_source, notes, warnings, net, x,
                         source) -> dict[str, Any]:
    """Run the reference and Lava, compare, write the reports (``out`` is locked)."""
    ref = run_reference(net.top, x, T)               # the same topology: the same dt
    t0 = time.perf_counter()
    got = net.run(x)
    wall = time.perf_counter() - t0
    par = compare(ref, got)
    failure = silence(par)
    if failure:
        par["failure"] = failure
    passed = par["agreement"] >= MIN_AGREEMENT and not failure
    export = {"target": "loihi-sim", "source_nir": relative(path, out), "files": [],
              "parity": par, "passed": passed, "time_steps": T, "inputs": source,
              "dt": dt, "dt_source": dt_source, "read_notes": notes,
              "warnings": [w.replace(str(path), relative(path, out)) for w in warnings],
              "reference": "dpap_deploy.exporters.nir_torch.run_reference",
              "lava_config": "Loihi2SimCfg(select_tag='floating_pt')",
              "nodes": {k: type(v).__name__ for k, v in net.top.nodes.items()},
              "lava_layers": [f"{l.name}:{l.kind}{list(l.shape)}" for l in net.layers],
              "synapses_nir": nir_synapses_all(graph), "synapses_lava": net.synapses,
              "lava_steps": len(x) * T, "lava_wall_s": round(wall, 3)}
    report = {"export": export}
    atomic_write_text(out / "report.json", json.dumps(report, indent=2) + "\n")
    atomic_write_text(out / "report.md", _markdown(export))
    if not passed:
        why = failure or (f"agreement {par['agreement']:.2%} < {MIN_AGREEMENT:.0%} on "
                          f"{par['n_samples']} samples")
        raise ParityError(f"loihi-sim parity check failed for {path}: {why}; the report is "
                          f"in {out}")
    return report


def nir_synapses_all(graph: nir.NIRGraph) -> int:
    """Non-zero weights of every weight node, nested graphs and Conv1d included."""
    from .nir_topology import flatten
    nodes, _ = flatten(graph)
    return int(sum(np.count_nonzero(v.weight) for v in nodes.values()
                   if isinstance(v, (nir.Conv1d, nir.Conv2d, nir.Affine, nir.Linear))))


def _pool_words(e: dict) -> str:
    """Why Lava holds more weights than the file: each pool runs as its own stage."""
    extra = e["synapses_lava"] - e["synapses_nir"]
    return f" ({extra:,} more: each pool is its own stage, C x k x k weights)" if extra else ""


def _markdown(e: dict) -> str:
    p = e["parity"]
    return (f"# NIR file in the Lava simulator\n\n"
            f"- file: `{e['source_nir']}`"
            f"{' (relative to this folder)' if '/' in e['source_nir'] else ''}\n"
            f"- time steps: {e['time_steps']}; inputs: {e['inputs']}\n"
            f"- dt: {e['dt']:g} s ({e['dt_source']}): NIR's time constants are discretised "
            "with it (decay 1 - dt/tau, input gain r dt/tau)\n" +
            "".join(f"- read: {n}\n" for n in e["read_notes"]) +
            "".join(f"- **warning**: {w}\n" for w in e["warnings"]) +
            f"- parity with the torch reference: agreement {p['agreement']:.2%}, identical spike "
            f"trains {p['identical_spike_trains']:.2%} on {p['n_samples']} samples: "
            f"**{'passed' if e['passed'] else 'FAILED'}**\n"
            f"- synapses: {e['synapses_nir']:,} non-zero weights in the file, "
            f"{e['synapses_lava']:,} held by the Lava network"
            f"{_pool_words(e)}\n"
            f"- Lava: {e['lava_steps']:,} steps in {e['lava_wall_s']} s\n\n"
            "| Lava process | kind and shape |\n|---|---|\n" +
            "".join(f"| {s.split(':')[0]} | {s.split(':', 1)[1]} |\n" for s in e["lava_layers"]))
