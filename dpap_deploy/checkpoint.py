"""Atomic, safe checkpoints.

Written to a temporary file in the same folder, flushed to disk, then renamed over the old one,
so a crash leaves either the previous checkpoint or the new one, never half a file. Loaded with
``torch.load(weights_only=True)``: only tensors and plain containers, no code. RNG states are
stored as tensors and plain values for the same reason.

Every checkpoint (and model file, serialize.py) carries a content digest under ``"digest"``:
a sha256 over every tensor's dtype, shape and bytes and every plain value, walked in a canonical
key order (:func:`content_digest`). Loading recomputes it: a file whose bytes changed after it
was written (a flipped bit in a weight) is refused, never used. Files from before digests were
stored load as they are.
"""
from __future__ import annotations

import hashlib
import math
import pickle
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .atomic import atomic_write_bytes, atomic_write_text  # noqa: F401  (re-exported)
from .errors import CheckpointError, non_finite

FORMAT = "dpap-deploy-checkpoint"
VERSION = 1


DIGEST = "digest"


def _feed(h, obj: Any) -> None:
    """Add ``obj`` to the hash ``h``: type tags, then values; dicts in sorted key order."""
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu()
        t = (t.to_dense() if t.layout != torch.strided else t).contiguous().reshape(-1)
        h.update(f"T{t.dtype}{tuple(obj.shape)}:".encode())
        h.update(t.view(torch.uint8).numpy().data if t.numel() else b"")
    elif isinstance(obj, dict):
        h.update(f"D{len(obj)}:".encode())
        for k in sorted(obj, key=repr):
            _feed(h, k)
            _feed(h, obj[k])
    elif isinstance(obj, (list, tuple)):
        h.update(f"L{len(obj)}:".encode())
        for v in obj:
            _feed(h, v)
    elif isinstance(obj, np.ndarray):
        _feed(h, torch.from_numpy(np.ascontiguousarray(obj)))
    else:
        h.update(f"V{type(obj).__name__}:{obj!r};".encode())


def content_digest(data: dict[str, Any]) -> str:
    """sha256 of everything in ``data`` except its ``"digest"`` entry."""
    h = hashlib.sha256()
    _feed(h, {k: v for k, v in data.items() if k != DIGEST})
    return h.hexdigest()


def with_digest(data: dict[str, Any]) -> dict[str, Any]:
    """``data`` with its content digest stored under ``"digest"``."""
    return {**data, DIGEST: content_digest(data)}


def verify_digest(data: dict[str, Any], path: Path, what: str) -> None:
    """A stored digest must match the content; files without one (written before digests
    were stored) pass."""
    if DIGEST in data and data[DIGEST] != content_digest(data):
        raise CheckpointError(f"{path} is a damaged {what}: content digest mismatch (its bytes "
                              "changed after it was written); restore it or train again")


def check_finite(tensors: dict[str, Any], where: str) -> None:
    """Every floating tensor (weights, biases, thresholds, decays, BatchNorm statistics) holds
    finite values; the first one that does not is named with its count of NaN / inf."""
    for name, t in tensors.items():
        if isinstance(t, torch.Tensor) and t.is_floating_point():
            bad = int((~torch.isfinite(t)).sum())
            if bad:
                raise CheckpointError(non_finite(f"{where}: tensor {name}", bad, t.numel(),
                                                 "train it again"))
        elif isinstance(t, float) and not math.isfinite(t):
            raise CheckpointError(f"{where}: {name} is {t!r}, not a finite number; train it again")


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> None:
    data = with_digest({"format": FORMAT, "version": VERSION, **payload})
    atomic_write_bytes(path, lambda fh: torch.save(data, fh))


def safe_torch_load(path: Path, map_location, what: str) -> Any:
    """``torch.load(weights_only=True)`` with one-line errors. torch's own message for a file
    holding code suggests loading it with ``weights_only=False``: that runs whatever the file
    holds, so it is never passed on."""
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        if "weights only" in str(exc).lower():
            raise CheckpointError(f"{path} is not a readable {what}: it holds objects other than "
                                  "tensors and plain values, which are not loaded (they could "
                                  "run code); pass a file written by dpap-deploy") from None
        raise CheckpointError(f"{path} is not a readable {what} (corrupt, truncated or not a "
                              "torch file); write it again with dpap-deploy") from None
    except Exception as exc:  # noqa: BLE001 - a damaged file fails in many ways (struct.error...)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if "weights_only" in first:
            first = type(exc).__name__
        raise CheckpointError(f"{path} is not a readable {what} (corrupt or truncated): "
                              f"{first[:200]}; write it again with dpap-deploy") from None


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    path = Path(path)
    if path.is_dir():
        path = path / "checkpoint.pt"
    if not path.exists():
        raise CheckpointError(f"no checkpoint at {path}: pass a run directory written by "
                              "'dpap-deploy train' or its checkpoint.pt")
    data = safe_torch_load(path, map_location, "checkpoint")
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise CheckpointError(f"{path} is a torch file but not a dpap-deploy checkpoint; "
                              "pass a run directory written by 'dpap-deploy train'")
    if data.get("version") != VERSION:
        raise CheckpointError(f"{path} has checkpoint version {data.get('version')}, this "
                              f"dpap-deploy reads version {VERSION}")
    verify_digest(data, path, "checkpoint")
    data.setdefault("path", str(path))   # for messages about this file
    return data


def rng_state() -> dict[str, Any]:
    """Every RNG a training run touches, as weights_only-safe values."""
    np_state = np.random.get_state()
    state = {"torch": torch.get_rng_state(),
             "numpy": {"name": np_state[0], "keys": torch.from_numpy(np_state[1].astype(np.int64)),
                       "pos": int(np_state[2]), "has_gauss": int(np_state[3]),
                       "cached_gaussian": float(np_state[4])},
             "python": [list(x) if isinstance(x, tuple) else x for x in random.getstate()]}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"],
                         n["has_gauss"], n["cached_gaussian"]))
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
