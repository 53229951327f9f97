"""Checks of what a user passes in, done before any work: one :class:`ConfigError` line naming
the bad value and what to do. The API functions call these, so Python users and the CLI get
the same messages. No torch import here: the CLI refuses bad options before loading torch.
"""
from __future__ import annotations

import json
import math
import os
import tomllib
from dataclasses import fields
from pathlib import Path
from typing import Any, Mapping

from .errors import ConfigError, DPAPError

SEED_MAX = 2**32 - 1            # numpy's seed range
TIME_STEPS_MAX = 100_000        # beyond this the memory estimate refuses first, in practice
CONFIG_DEPTH_MAX = 32           # tables in a config file nest 3 deep ([dpap.linear]); 32 is ample

# The cost bound on --epochs. Training costs at least one network step per training sample per
# time step per epoch. Even at a generous 10^9 sample-steps per second (beyond any device for
# these networks), a year (365 x 86,400 s = 3.15e7 s) holds 3.15e16 sample-steps, so a run of
# epochs x training samples x time steps above that cannot finish within a year. With one
# sample of one step, that bounds --epochs itself by 3.15e16 before any data are loaded.
SAMPLE_STEPS_PER_SECOND = 10**9
YEAR_S = 365 * 86_400
SAMPLE_STEPS_PER_YEAR = SAMPLE_STEPS_PER_SECOND * YEAR_S
EMBEDDED_DATASETS = ("digits",)  # need no --data-root (npz:FILE and idx:DIR name their files)


def _opt(name: str) -> str:
    return name.replace("_", "-")


def is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def check_int(name: str, v: Any, lo: int | None = None, hi: int | None = None,
              what: str = "") -> int:
    """``v`` is an integer in ``[lo, hi]``; the message names the option ``--name``."""
    ok = is_int(v) and (lo is None or v >= lo) and (hi is None or v <= hi)
    if not ok:
        rng = (f">= {lo}" if hi is None else f"in [{lo}, {hi}]") if lo is not None else ""
        raise ConfigError(f"invalid {what or _opt(name)} {v!r}: must be an integer {rng}".rstrip())
    return v


def check_optional_count(name: str, v: Any) -> int | None:
    """An optional sample count (``--max-samples``, ``--limit-train``): None or >= 1."""
    return None if v is None else check_int(name, v, 1)


# Field types of the dataclasses (annotations are strings under `from __future__ import
# annotations`): which Python values each accepts. Anything else is left to the class.
_TYPES = {"int": (is_int, "an integer"), "float": (is_number, "a number"),
          "bool": (lambda v: isinstance(v, bool), "true or false"),
          "str": (lambda v: isinstance(v, str), "a string")}


def check_field_types(obj: Any, what: str) -> None:
    """Each field of the dataclass instance ``obj`` holds a value of its annotated type
    (``int``, ``float``, ``bool``, ``str``; ``X | None`` allows None). Finite numbers only."""
    for f in fields(obj):
        ann = str(f.type).replace(" ", "")
        optional = ann.endswith("|None")
        base = ann.removesuffix("|None")
        v = getattr(obj, f.name)
        if base not in _TYPES or (optional and v is None):
            continue
        test, desc = _TYPES[base]
        if not test(v) or (is_number(v) and not math.isfinite(v)):
            raise ConfigError(f"invalid {what} {f.name}={v!r}: must be {desc}"
                              + (" (or left out)" if optional else ""))


# The names of ``baselines.METHODS``, here without importing torch (a test keeps them equal).
BASELINES = ("magnitude", "random", "l1-structured", "rate-structured", "random-structured")


def check_train_config(cfg: Any) -> None:
    """Every field of a :class:`~dpap_deploy.training.TrainConfig`, before anything runs."""
    check_field_types(cfg, "training option")
    for name in ("epochs", "batch_size"):
        check_int(name, getattr(cfg, name), 1)
    check_training_cost(cfg.epochs, 1, 1)
    check_int("time_steps", cfg.time_steps, 1, TIME_STEPS_MAX)
    check_int("seed", cfg.seed, 0, SEED_MAX)
    if not 0 < cfg.lr < 10:
        raise ConfigError(f"invalid learning rate {cfg.lr!r}: must be in (0, 10)")
    if cfg.device not in ("auto", "cpu", "cuda") and not str(cfg.device).startswith("cuda:"):
        raise ConfigError(f"invalid device {cfg.device!r}: use auto, cpu or cuda")
    if cfg.dpap_config is not None and not isinstance(cfg.dpap_config, Mapping):
        raise ConfigError(f"invalid dpap table {cfg.dpap_config!r}: must be a table of DPAP "
                          "options ([dpap] in a TOML file)")
    if cfg.baseline is not None:
        if cfg.baseline not in BASELINES:
            raise ConfigError(f"invalid baseline {cfg.baseline!r}: use {', '.join(BASELINES)}")
        if cfg.dpap:
            raise ConfigError(f"--baseline {cfg.baseline} replaces DPAP: pass --no-dpap too")
        if cfg.prune_target is None:
            raise ConfigError("a pruning baseline needs --prune-target (fraction of all "
                              "parameters to remove)")
    if cfg.prune_target is not None and not 0 < cfg.prune_target < 1:
        raise ConfigError(f"invalid prune-target {cfg.prune_target!r}: must be a fraction in (0, 1)")
    if cfg.prune_target_kind not in ("params", "synops", "macs"):
        raise ConfigError(f"invalid prune-target-kind {cfg.prune_target_kind!r}: use params, "
                          "synops or macs")
    if cfg.executor not in ("multistep", "step"):
        raise ConfigError(f"invalid executor {cfg.executor!r}: use multistep or step")
    if cfg.precision not in ("fp32", "bf16", "fp16"):
        raise ConfigError(f"invalid precision {cfg.precision!r}: use fp32, bf16 or fp16")
    check_int("workers", cfg.workers, 0, 256)
    if cfg.augment is not None and not isinstance(cfg.augment, bool):
        raise ConfigError(f"invalid augment {cfg.augment!r}: true or false")
    w = cfg.prune_window
    if w is not None and not (isinstance(w, (list, tuple)) and len(w) == 2
                              and all(is_int(e) and e >= 0 for e in w) and w[0] < w[1]):
        raise ConfigError(f"invalid prune_window {w!r}: must be [start, end] epochs, "
                          "integers with 0 <= start < end")


def check_training_cost(epochs: int, n_train: int, time_steps: int) -> None:
    """A run of ``epochs x n_train x time_steps`` sample-steps must be able to finish within a
    year at :data:`SAMPLE_STEPS_PER_SECOND` (see :data:`SAMPLE_STEPS_PER_YEAR`)."""
    cost = epochs * n_train * time_steps
    if cost > SAMPLE_STEPS_PER_YEAR:
        most = SAMPLE_STEPS_PER_YEAR // (n_train * time_steps)
        raise ConfigError(
            f"invalid epochs {epochs}: {epochs} epochs x {n_train} training samples x "
            f"{time_steps} time steps = {cost:.3g} sample-steps, more than a year at "
            f"{SAMPLE_STEPS_PER_SECOND:.0e} sample-steps/s ({SAMPLE_STEPS_PER_YEAR:.3g}); "
            f"use at most {most} epochs")


def check_data_root(dataset: Any, data_root: Any) -> None:
    """``--data-root`` only with a dataset read from a folder: the embedded digits, an
    ``npz:FILE`` and an ``idx:DIR`` would ignore it."""
    if data_root is None or not isinstance(dataset, str):
        return
    if dataset in EMBEDDED_DATASETS or dataset.startswith(("npz:", "idx:")):
        raise ConfigError(f"--data-root {data_root} would be ignored: dataset {dataset!r} "
                          "reads no folder; drop --data-root (or pick a dataset that reads one)")


def check_new_run_options(cfg: Any) -> None:
    """Options of a new run that it would ignore (not checked on a stored configuration:
    runs written before these checks still load)."""
    kind_given = cfg.given is not None and "prune_target_kind" in cfg.given
    check_data_root(cfg.dataset, cfg.data_root)
    check_baseline_options(cfg.baseline, cfg.prune_target, cfg.prune_target_kind, kind_given)


def check_baseline_options(baseline: Any, target: Any, kind: Any, kind_given: bool) -> None:
    """``--prune-target`` and ``--prune-target-kind`` configure a pruning baseline: without
    ``--baseline`` they would be ignored."""
    if baseline is not None:
        return
    if target is not None:
        raise ConfigError(f"--prune-target {target} would be ignored: it sets a pruning "
                          "baseline's goal; add --no-dpap --baseline NAME or drop it")
    if kind_given or kind != "params":
        raise ConfigError(f"--prune-target-kind {kind} would be ignored: it sets what a pruning "
                          "baseline removes; add --no-dpap --baseline NAME or drop it")


def nesting_depth(data: Any) -> int:
    """How deep tables and lists nest in ``data`` (a scalar is 0), without recursion; the one
    walker for config files and ``report.json`` (``report.files``)."""
    deepest, stack = 0, [(data, 1)]
    while stack:
        node, depth = stack.pop()
        children = node.values() if isinstance(node, dict) else node \
            if isinstance(node, list) else None
        if children is None:
            continue
        deepest = max(deepest, depth)
        stack.extend((c, depth + 1) for c in children)
    return deepest


def _parse_config(path: str | Path, text: str, kind: str) -> Any:
    """The parsed file; input nested past Python's recursion limit is refused like any input
    nested past :data:`CONFIG_DEPTH_MAX`."""
    try:
        return json.loads(text) if kind == "JSON" else tomllib.loads(text)
    except RecursionError:
        raise ConfigError(f"config file {path} nests tables or lists too deeply (more than "
                          f"{CONFIG_DEPTH_MAX} levels); flatten it") from None


def read_config_file(path: str | Path) -> dict[str, Any]:
    """A TOML (or ``.json``) file of training options with an optional ``[dpap]`` table."""
    f = Path(path)
    if not f.is_file():
        raise ConfigError(f"config file {path} does not exist")
    kind = "JSON" if f.suffix == ".json" else "TOML"
    try:
        data = _parse_config(path, f.read_text(), kind)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        first = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
        raise ConfigError(f"config file {path} is not valid {kind}: {first}") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a table of options, got a "
                          f"{type(data).__name__}")
    depth = nesting_depth(data)
    if depth > CONFIG_DEPTH_MAX:
        raise ConfigError(f"config file {path} nests tables or lists {depth} levels deep, more "
                          f"than {CONFIG_DEPTH_MAX}; flatten it")
    if "dpap" in data and not isinstance(data["dpap"], dict):
        raise ConfigError(f"config file {path}: 'dpap' must be a table ([dpap]), got "
                          f"{data['dpap']!r}")
    return data


def as_path(value: Any, what: str) -> Path:
    """A path given as a string or a path object; anything else is refused in one line."""
    if not isinstance(value, (str, os.PathLike)):
        raise ConfigError(f"{what} must be a path (a string or pathlib.Path), got "
                          f"{type(value).__name__} {value!r:.60}")
    return Path(value)


def existing_path(path: str | Path, what: str, hint: str) -> Path:
    """An input file or folder that must exist."""
    p = as_path(path, what)
    if not p.exists():
        raise ConfigError(f"{what} {path} does not exist; {hint}")
    return p


def check_out_dir(out: str | Path) -> Path:
    """``--out``: a folder that exists or can be created, and can be written. An empty path
    is refused: it would write into the current folder."""
    as_path(out, "--out")
    if not str(out).strip():
        raise ConfigError(f"--out {str(out)!r} is empty: it would write into the current folder; "
                          "pass a folder path")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file, not a folder; pass a folder path")
    p = out.absolute()
    while not p.exists():
        p = p.parent
    if not p.is_dir():
        raise ConfigError(f"--out {out}: {p} is a file, so the folder cannot be created; "
                          "pass another path")
    if not os.access(p, os.W_OK | os.X_OK):
        raise ConfigError(f"--out {out}: {p} is not writable; pass a folder you can write to")
    return out


def check_run_source(source: str | Path) -> Path:
    """A run directory (holding ``checkpoint.pt``) or a checkpoint file."""
    p = as_path(source, "the run")
    if not p.exists():
        raise DPAPError(f"no checkpoint at {source}: it does not exist; pass a run directory "
                        "written by 'dpap-deploy train' or its checkpoint.pt")
    if p.is_dir() and not (p / "checkpoint.pt").is_file():
        raise DPAPError(f"{p} holds no checkpoint.pt; pass a run directory written by "
                        "'dpap-deploy train'")
    return p


def available_memory_bytes() -> int | None:
    """``MemAvailable`` of ``/proc/meminfo`` (Linux), else None."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def check_memory(need: float, available: int | None, what: str, fix: str) -> None:
    """Refuse a run whose estimated memory ``need`` (bytes) exceeds what is available."""
    if available is not None and need > available:
        raise ConfigError(f"{what} needs about {need / 2**30:,.1f} GiB of memory, "
                          f"{available / 2**30:,.1f} GiB are available; {fix}")


CHECKPOINT_KEYS = ("train_config", "kind", "model", "optimizer", "scheduler", "history", "rng")


def check_checkpoint_keys(ckpt: Mapping[str, Any], path: str | Path) -> None:
    missing = [k for k in CHECKPOINT_KEYS if k not in ckpt]
    if missing or not isinstance(ckpt.get("train_config"), Mapping):
        raise DPAPError(f"{path} lacks {', '.join(missing) or 'a train_config table'}: not a "
                        "complete dpap-deploy checkpoint; train the run again")
