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
"""
from __future__ import annotations

import hashlib
import math
from pathlib import Path

import nir
import numpy as np

from ..errors import DPAPError
from ..validate import TIME_STEPS_MAX
from .hdf5_safety import check_self_contained

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
                raise DPAPError(f"{path}: node '{prefix}{name}' {key} holds {bad} non-finite "
                                f"value{'' if bad == 1 else 's'} (NaN or inf) of {a.size}; "
                                "a network with them computes nothing meaningful: export a "
                                "finite network")


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


def read_checked(path: str | Path, *, check_time_steps: bool = True) -> nir.NIRGraph:
    """Read a NIR file: self-contained, readable, undamaged, finite, with valid metadata
    (``check_time_steps=False``: its ``time_steps`` is overridden by the caller)."""
    p = Path(path)
    if not p.is_file():
        raise DPAPError(f"NIR file {path} does not exist")
    check_self_contained(p, "NIR file")
    try:
        graph = nir.read(str(p))
    except Exception as exc:   # noqa: BLE001 - h5py / nir raise many kinds; one line for the user
        first = str(exc).splitlines()[0] if str(exc) else ""
        raise DPAPError(f"{path} is not a readable NIR file ({type(exc).__name__}: {first[:160]}); "
                        "write it with nir.write") from None
    verify(graph, path)
    check_finite(graph, path)
    check_dt(graph, path)
    if check_time_steps:
        metadata_time_steps(graph, path)
    return graph
