"""NIR files read back checked: every reader of a ``.nir`` (``export FILE.nir``, the ``nir`` and
``loihi-sim`` exporters reading their own file) goes through :func:`read_checked`.

- the HDF5 file must hold its own data (no external links or storage: ``hdf5_safety``);
- every numeric parameter of every node (weights, biases, thresholds, time constants...) must
  be finite: one line names the node, the parameter and how many values are not;
- the metadata's ``time_steps`` must be an integer in ``[1, TIME_STEPS_MAX]`` and ``dt`` a
  positive finite number;
- a file written by dpap-deploy carries ``content_sha256`` in its metadata: a sha256 over the
  nodes' parameters and the edges (:func:`graph_digest`); a file whose content no longer
  matches it is refused as damaged. Files from other tools have none and are read as they are.

Files from other writers (sinabs, Norse) often fail NIR's own type check although ``nir.write``
wrote them: the ``Input`` carries a leading batch (or time) dimension, ``Input([B, 16])``
before an ``Affine`` that takes 16, or neuron parameters are scalars (shape ``()``). Such a
file is read without NIR's type check and :func:`conform_input` drops the leading dimension
when the Input's consumers determine the shape without it (else one line names the shape and
the shape expected). Scalar parameters need nothing: both executors apply a scalar to every
neuron of its layer, which is exact. :func:`resolve_dt` says which step discretises the file.
"""
from __future__ import annotations

import hashlib
import math
from pathlib import Path

import nir
import numpy as np

from ..errors import ConfigError, DPAPError, non_finite
from ..notices import warn
from ..validate import TIME_STEPS_MAX
from .hdf5_safety import check_self_contained
from .nir_topology import DT

DT_TEXT = f"{DT:.0e}".replace("e-0", "e-")          # "1e-4"
DT_SOURCES = ("--dt", "the file's metadata", f"default {DT_TEXT}: the file has none")

DIGEST_KEY = "content_sha256"


def _node_values(node) -> list[tuple[str, object]]:
    """A node's parameters in name order: arrays, numbers and strings (not derived types)."""
    out = []
    for key in sorted(vars(node)):
        if key in ("metadata", "input_type", "output_type"):
            continue
        v = getattr(node, key)
        if isinstance(v, (np.ndarray, np.generic, int, float, list, tuple)) \
                and not isinstance(v, bool):
            out.append((key, v))
        elif isinstance(v, str):
            out.append((key, v))
    return out


def _numeric(v) -> np.ndarray | None:
    """``v`` as a float64 array, or None when it is not numeric (a list of names, ...)."""
    try:
        return np.asarray(v, dtype=np.float64)
    except (TypeError, ValueError):
        return None


def _feed_graph(h, graph: nir.NIRGraph) -> None:
    for name in sorted(graph.nodes):
        node = graph.nodes[name]
        h.update(f"N{name}:{type(node).__name__};".encode())
        if isinstance(node, nir.NIRGraph):
            _feed_graph(h, node)
            continue
        for key, v in _node_values(node):
            a = None if isinstance(v, str) else _numeric(v)
            if a is None:
                h.update(f"S{key}={v!r};".encode())
                continue
            h.update(f"A{key}{a.shape}:".encode())
            h.update(np.ascontiguousarray(a).tobytes())
    for src, dst in sorted(graph.edges):
        h.update(f"E{src}>{dst};".encode())


def graph_digest(graph: nir.NIRGraph) -> str:
    """sha256 over the graph's nodes (names, types, parameters as float64) and edges: the same
    before ``nir.write`` and after ``nir.read``."""
    h = hashlib.sha256()
    _feed_graph(h, graph)
    return h.hexdigest()


def sign(graph: nir.NIRGraph) -> nir.NIRGraph:
    """``graph`` with its content digest in its metadata (before ``nir.write``)."""
    meta = dict(graph.metadata) if isinstance(graph.metadata, dict) else {}
    meta[DIGEST_KEY] = graph_digest(graph)
    graph.metadata = meta
    return graph


def check_finite(graph: nir.NIRGraph, path, prefix: str = "") -> None:
    """Every numeric parameter of every node (nested graphs included) is finite."""
    for name, node in graph.nodes.items():
        if isinstance(node, nir.NIRGraph):
            check_finite(node, path, f"{prefix}{name}.")
            continue
        for key, v in _node_values(node):
            a = None if isinstance(v, str) else _numeric(v)
            if a is None:
                continue
            bad = int((~np.isfinite(a)).sum())
            if bad:
                raise DPAPError(non_finite(f"{path}: node '{prefix}{name}' {key}", bad, a.size,
                                           "export a finite network"))


def check_dt(graph: nir.NIRGraph, path) -> None:
    """The metadata's ``dt``, when present, is a positive finite number."""
    meta = graph.metadata if isinstance(graph.metadata, dict) else {}
    if "dt" in meta:
        dt = meta["dt"]
        ok = isinstance(dt, (int, float, np.integer, np.floating)) and not isinstance(dt, bool)
        if not ok or not math.isfinite(float(dt)) or float(dt) <= 0:
            raise DPAPError(f"{path}: metadata dt is {dt!r:.60}, not a positive number; write "
                            "the file again with a valid dt")


def metadata_time_steps(graph: nir.NIRGraph, path) -> int | None:
    """The metadata's ``time_steps``: None when absent, else an integer in range (not bytes,
    a float, NaN or a bool)."""
    meta = graph.metadata if isinstance(graph.metadata, dict) else {}
    if "time_steps" not in meta:
        return None
    t = meta["time_steps"]
    if not isinstance(t, (int, np.integer)) or isinstance(t, (bool, np.bool_)) \
            or not 1 <= int(t) <= TIME_STEPS_MAX:
        raise DPAPError(f"{path}: metadata time_steps is {t!r:.60}, not an integer in "
                        f"[1, {TIME_STEPS_MAX}]; write the file again, or pass --time-steps")
    return int(t)


def verify(graph: nir.NIRGraph, path) -> None:
    """A stored content digest must match the graph read back."""
    meta = graph.metadata if isinstance(graph.metadata, dict) else {}
    if DIGEST_KEY in meta and str(meta[DIGEST_KEY]) != graph_digest(graph):
        raise DPAPError(f"{path} is damaged: content digest mismatch (its parameters changed "
                        "after it was written); restore it or export it again")


def _read(p: Path, path) -> nir.NIRGraph:
    """NIR's type-checked read, else (a type mismatch only) the unchecked one."""
    try:
        return nir.read(str(p))
    except ValueError as exc:
        if "type" not in str(exc).lower():
            _unreadable(path, exc)
    except Exception as exc:   # noqa: BLE001 - h5py / nir raise many kinds; one line for the user
        _unreadable(path, exc)
    try:
        return nir.read(str(p), type_check=False)
    except Exception as exc:   # noqa: BLE001
        _unreadable(path, exc)


def _unreadable(path, exc: BaseException):
    first = str(exc).splitlines()[0] if str(exc) else ""
    raise DPAPError(f"{path} is not a readable NIR file ({type(exc).__name__}: {first[:160]}); "
                    "check that it is the NIR (HDF5) file its writer exported") from None


def _shape(t) -> tuple[int, ...] | None:
    """A node's recorded type (``{"input": shape}`` or a shape) as a tuple; None when absent."""
    if isinstance(t, dict):
        t = next(iter(t.values()), None)
    if t is None:
        return None
    a = np.atleast_1d(np.asarray(t)).ravel()
    return tuple(int(v) for v in a) if a.size else None


def expected_input(node) -> tuple[int, ...] | None:
    """The per-sample shape a node takes, as far as its parameters fix it: ``(F,)`` for
    ``Affine`` / ``Linear``; ``(C,)`` then free sizes (``-1``) for ``Conv1d`` / ``Conv2d``;
    a neuron's parameter shape when it is not a scalar; else None (not determined)."""
    if isinstance(node, (nir.Affine, nir.Linear)):
        return (int(np.shape(node.weight)[1]),)
    if isinstance(node, (nir.Conv1d, nir.Conv2d)):
        w = np.shape(node.weight)
        return (int(w[1]) * int(node.groups),) + (-1,) * (len(w) - 2)
    if isinstance(node, (nir.LIF, nir.CubaLIF, nir.IF, nir.LI)):
        shapes = {np.shape(v) for k, v in vars(node).items() if isinstance(v, np.ndarray)}
        shapes.discard(())
        return shapes.pop() if len(shapes) == 1 else None
    return None


def _fits(shape: tuple, want: tuple) -> bool:
    return len(shape) == len(want) and all(w in (-1, s) for s, w in zip(shape, want))


def conform_input(graph: nir.NIRGraph, path) -> list[str]:
    """Drop a leading batch (or time) dimension of the top-level ``Input``'s shape when every
    consumer whose parameters fix its input shape takes the shape without it; returns what was
    changed, one line each. A shape that fits neither way is refused, naming both shapes."""
    notes = []
    for name, node in graph.nodes.items():
        if not isinstance(node, nir.Input) or any(d == name for _, d in graph.edges):
            continue
        shape = _shape(node.input_type)
        wants = [(c, expected_input(graph.nodes[c])) for s, c in graph.edges if s == name]
        wants = [(c, w) for c, w in wants if w is not None]
        if shape is None or not wants or all(_fits(shape, w) for _, w in wants):
            continue
        c, want = wants[0]
        if all(_fits(shape[1:], w) for _, w in wants):
            node.input_type = {"input": np.array(shape[1:])}
            node.output_type = {"output": np.array(shape[1:])}
            notes.append(f"Input {name!r} shape {list(shape)} read as {list(shape[1:])}: its "
                         f"leading dimension (the writer's batch or time steps) is not part of one "
                         f"sample: its consumer {c!r} takes {_show(want)}")
            continue
        raise DPAPError(f"{path}: Input {name!r} has shape {list(shape)}, but its consumer "
                        f"{c!r} ({type(graph.nodes[c]).__name__}) takes {_show(want)} per "
                        "sample; write the Input with the shape of one sample, without the "
                        "batch dimension")
    return notes


def _show(want: tuple) -> str:
    return "[" + ", ".join("any" if w == -1 else str(w) for w in want) + "]"


def resolve_dt(graph: nir.NIRGraph, dt, path,
               warnings: list[str] | None = None) -> tuple[float, str]:
    """The step that discretises the file's time constants, and where it came from: the
    caller's ``dt`` (``--dt``), else the metadata's, else ``DT`` (what snnTorch writes) with
    a warning line (also appended to ``warnings``): a wrong step changes every decay
    ``1 - dt/tau`` and gain ``r dt/tau``."""
    if dt is not None:
        ok = isinstance(dt, (int, float, np.integer, np.floating)) and not isinstance(dt, bool)
        if not ok or not math.isfinite(float(dt)) or float(dt) <= 0:
            raise ConfigError(f"--dt {dt!r:.60}: give the file's time step as a positive "
                              "number of seconds, e.g. --dt 1e-3")
        return float(dt), DT_SOURCES[0]
    meta = graph.metadata if isinstance(graph.metadata, dict) else {}
    if "dt" in meta:
        return float(meta["dt"]), DT_SOURCES[1]
    said = warn(f"{path} stores no dt: its time constants are discretised with the default "
                f"dt = {DT_TEXT} (what snnTorch writes); if its writer used another step, pass "
                "it with --dt")
    if warnings is not None:
        warnings.append(said)
    return DT, DT_SOURCES[2]


def read_checked(path: str | Path, *, check_time_steps: bool = True,
                 notes: list[str] | None = None) -> nir.NIRGraph:
    """Read a NIR file: self-contained, readable, undamaged, finite, with valid metadata
    (``check_time_steps=False``: its ``time_steps`` is overridden by the caller). A file that
    fails NIR's type check is read without it; every file's Input is conformed
    (:func:`conform_input`) and what was changed is appended to ``notes``."""
    p = Path(path)
    if not p.is_file():
        raise DPAPError(f"NIR file {path} does not exist")
    check_self_contained(p, "NIR file")
    graph = _read(p, path)
    verify(graph, path)
    check_finite(graph, path)
    check_dt(graph, path)
    if check_time_steps:
        metadata_time_steps(graph, path)
    changed = conform_input(graph, path)       # also where every node's type has the batch
    if notes is not None:
        notes += changed
    return graph
