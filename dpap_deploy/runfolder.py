"""What a run folder is, recorded in it: ``run.json``, and who may write the folder.

Every stage that writes a folder records there, atomically and before its other files, a small
manifest (:class:`RunManifest`): the stage that made the folder (``train``, ``compact``,
``export --target T``), the run id (uuid4 hex), the id of the training run it was made from
(compact / export) and a sha256 fingerprint of its inputs (training: the arrays loaded and the
options; compact / export: the source checkpoint file). It is a file of its own, not a section
of ``report.json``, because every stage rewrites and merges the report; the manifest is the
folder's identity and is replaced whole or not at all. The training checkpoint carries the run
id and the data fingerprint too, so a folder whose manifest was deleted is still recognised.

The rules, checked before anything is written:

- ``train`` writes only into a folder that holds no run (``overwrite`` replaces one: its files
  are removed first, the manifest last, so the folder never mixes two runs);
- ``train --resume`` continues exactly the training run in the folder: its checkpoint, or the
  manifest of a run killed before its first epoch; anything else is refused;
- ``compact`` / ``export`` write into a folder that holds no run, their own source run (in
  place), or an earlier compact / export of the same source run; another run is refused unless
  ``overwrite``.

No torch import at module level: the checks run before torch is loaded where they can.
"""
from __future__ import annotations

import hashlib
import json
import os
import uuid
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from .atomic import atomic_write_text
from .errors import DPAPError

MANIFEST = "run.json"
FORMAT = "dpap-deploy-run"
VERSION = 1
CHECKPOINT = "checkpoint.pt"
# The files the stages write (exporters' files too: a registered target's are read from the
# report's export section), removed by an overwrite; any of them marks a folder as a run's.
RUN_FILES = (CHECKPOINT, "history.csv", "report.json", "report.md", "config.json", "compact.pt",
             "deploy.pt", "network.nir", "network-bn-folded.nir", "network.net", "model.onnx",
             "network-folded.nir")     # the loihi-sim file's name before it said what it holds
UNCHECKED_OPTIONS = ("device", "workers")     # a resumed run may change these


@dataclass
class RunManifest:
    """One folder's record (module docstring)."""

    run_id: str
    stage: str                           # what made the folder: train, compact, export --target T
    inputs: str | None                   # sha256 over the stage's inputs (None: not recorded)
    source_run_id: str | None = None     # compact / export: the training run they come from
    data: str | None = None              # train: sha256 of the arrays loaded (resume compares it)
    config: dict | None = None           # train: the options (a restart before epoch 1 reads them)
    stages: list = field(default_factory=list)   # every stage that wrote the folder, in order

    def to_dict(self) -> dict:
        return {"format": FORMAT, "version": VERSION, **asdict(self)}

    @property
    def short(self) -> str:
        return self.run_id[:8]


def new_run_id() -> str:
    return uuid.uuid4().hex


def read_manifest(folder: str | Path) -> RunManifest | None:
    """The manifest of ``folder``, None when it has none; a damaged one is refused."""
    path = Path(folder) / MANIFEST
    if not path.is_file():
        return None
    try:
        d = json.loads(path.read_text())
        if isinstance(d, dict) and d.get("format") == FORMAT and _typed(d):
            names = {f.name for f in fields(RunManifest)}
            return RunManifest(**{k: v for k, v in d.items() if k in names})
    except (OSError, ValueError, TypeError, RecursionError):
        pass
    raise DPAPError(f"{path} is not a readable run manifest; restore it, or delete it (the "
                    f"checkpoint, if any, still identifies the run)")


def _typed(d: dict) -> bool:
    """Each field of a manifest read from disk has its type (a damaged file must not reach
    the code that reads them as strings, lists and tables)."""
    text = lambda v: isinstance(v, str)                     # noqa: E731
    maybe = lambda v: v is None or isinstance(v, str)       # noqa: E731
    return (text(d.get("run_id")) and text(d.get("stage")) and maybe(d.get("inputs"))
            and maybe(d.get("source_run_id")) and maybe(d.get("data"))
            and (d.get("config") is None or isinstance(d.get("config"), dict))
            and isinstance(d.get("stages", []), list) and all(map(text, d.get("stages", []))))


def write_manifest(folder: str | Path, manifest: RunManifest) -> None:
    atomic_write_text(Path(folder) / MANIFEST, json.dumps(manifest.to_dict(), indent=2) + "\n")


# ---- fingerprints ------------------------------------------------------------------------

def _array_bytes(x: Any):
    """The bytes of a tensor or array; frames binned on demand give their event files'
    hashes (``LazyFrames.sample_hashes``) instead of binning every sample."""
    if hasattr(x, "sample_hashes"):
        return b"".join(x.sample_hashes())
    import numpy as np
    a = x.detach().cpu().numpy() if hasattr(x, "detach") else x
    return np.ascontiguousarray(a).reshape(-1).view(np.uint8)   # its bytes, not a copy of them


def data_fingerprint(data: Any) -> str:
    """sha256 over the arrays a run trains and tests on: for each of x_train, y_train,
    x_test, y_test its name, dtype, shape and bytes. Event frames (``data.source_key`` set)
    give that key (their files' names and contents, the binning) instead of their bytes: the
    same whether the frames are held in memory or binned on demand (data/base.py)."""
    h = hashlib.sha256()
    key = getattr(data, "source_key", None)
    for name in ("x_train", "y_train", "x_test", "y_test"):
        x = getattr(data, name)
        h.update(f"{name}|{x.dtype}|{tuple(x.shape)}|".encode())
        if key is not None and name in ("x_train", "x_test"):
            h.update(f"source_key|{key}".encode())
        else:
            h.update(_array_bytes(x))
    return h.hexdigest()


def config_fingerprint(config: dict) -> str:
    """sha256 of a run's options, less those a resume may change."""
    kept = {k: v for k, v in config.items() if k not in UNCHECKED_OPTIONS}
    return hashlib.sha256(json.dumps(kept, sort_keys=True, default=str).encode()).hexdigest()


def train_inputs(data: str | None, config: dict) -> str | None:
    """A training run's input fingerprint: its data and its options."""
    if data is None:
        return None
    return hashlib.sha256(f"{data}|{config_fingerprint(config)}".encode()).hexdigest()


def file_digest(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# ---- what a folder holds -----------------------------------------------------------------

def run_files(folder: Path) -> list[str]:
    """The names of run files in ``folder`` (the manifest, a checkpoint link included)."""
    if not folder.is_dir():
        return []
    names = (MANIFEST, *RUN_FILES)
    return [n for n in names if os.path.lexists(folder / n)] + \
        (["plots"] if (folder / "plots").is_dir() else [])


def checkpoint_run_id(path: Path) -> str | None:
    from .checkpoint import load_checkpoint
    rid = load_checkpoint(path).get("run_id")
    return rid if isinstance(rid, str) else None


def identify(folder: Path) -> RunManifest | None:
    """The run in ``folder``: its manifest, else what its checkpoint says (a training run,
    run id None when written before ids were recorded); None when neither is there."""
    m = read_manifest(folder)
    if m is not None or not (folder / CHECKPOINT).is_file():
        return m
    return RunManifest(run_id=checkpoint_run_id(folder / CHECKPOINT) or "", stage="train",
                       inputs=None)


def _describe(m: RunManifest) -> str:
    if m.stage == "train":
        return f"training run {m.short or '(from before run ids)'}"
    src = f" made from run {m.source_run_id[:8]}" if m.source_run_id else ""
    return f"a {m.stage} output (run {m.short}{src})"


def check_nothing_to_resume(out: Path) -> None:
    """``--resume`` needs a folder with something in it."""
    if not out.is_dir() or not any(out.iterdir()):
        raise DPAPError(f"nothing to resume in {out}: it is {'empty' if out.is_dir() else 'not there'}; "
                        "drop --resume to start a run")


# ---- training ------------------------------------------------------------------------------

@dataclass
class TrainStart:
    """How ``train`` starts in a folder: ``new`` run, from the ``checkpoint``, or again from
    the ``manifest`` of a run stopped before its first epoch; ``clear``: remove the old run."""

    how: str
    manifest: RunManifest | None = None
    clear: bool = False
    note: str | None = None


def plan_train(out: Path, resume: bool, overwrite: bool) -> TrainStart:
    """Where a training command starts in ``out``, or a refusal (module docstring)."""
    if resume and overwrite:
        raise DPAPError("--resume continues the run in --out, --overwrite replaces it: pass one")
    present = run_files(out)
    if not resume:
        if present and not overwrite:
            raise DPAPError(f"{out} already holds a run ({', '.join(present)}); pass --resume to "
                            "continue it, --overwrite to replace it, or choose another --out")
        return TrainStart("new", clear=bool(present))
    return _plan_resume(out, present)


def _plan_resume(out: Path, present: list[str]) -> TrainStart:
    ckpt = out / CHECKPOINT
    manifest = read_manifest(out)
    if manifest is not None and manifest.stage != "train":
        raise DPAPError(f"nothing to resume in {out}: it holds {_describe(manifest)}, not a "
                        "training run; drop --resume and choose another --out")
    if os.path.lexists(ckpt):
        if not ckpt.is_file():
            raise DPAPError(f"{ckpt} is not a readable file (a folder, or a symbolic link that "
                            "loops or leads nowhere); nothing to resume: restore the checkpoint "
                            "or drop --resume and choose another --out")
        return TrainStart("checkpoint", manifest)
    recorded = [n for n in present if n not in (MANIFEST, "config.json")]
    if manifest is not None and manifest.config is not None and not recorded:
        return TrainStart("manifest", manifest,
                          note=f"{out}: no epoch of run {manifest.short} finished; starting it "
                               "again from its first epoch")
    if present == ["config.json"]:       # stopped before its first epoch, before run.json
        m = RunManifest(new_run_id(), "train", None, config=_stored_options(out))
        return TrainStart("manifest", m, note=f"{out}: no epoch of the run in config.json "
                                              "finished; starting it again from its first epoch")
    if present:
        raise DPAPError(f"nothing to resume in {out}: it holds no {CHECKPOINT} of a training run "
                        f"(only {', '.join(present)}); restore the checkpoint, or drop --resume "
                        "and choose another --out")
    leftovers = out.is_dir() and any(out.iterdir())    # a lock file, temporaries
    return TrainStart("new", note=f"{out} holds no record of a run (a start stopped before "
                                  "recording it); starting the run from its first epoch"
                      if leftovers else None)


def _stored_options(out: Path) -> dict:
    """The training options in ``out/config.json`` (less the resolved DPAP table)."""
    try:
        d = json.loads((out / "config.json").read_text())
        if isinstance(d, dict):
            return {k: v for k, v in d.items() if k != "dpap_config_resolved"}
    except (OSError, ValueError, RecursionError):
        pass
    raise DPAPError(f"{out / 'config.json'} is not a readable table of training options and the "
                    f"folder holds no {CHECKPOINT}; nothing to resume: drop --resume and choose "
                    "another --out")


def check_checkpoint_is_run(start: TrainStart, ckpt: dict, out: Path) -> None:
    """A folder's manifest and checkpoint name the same run."""
    rid, m = ckpt.get("run_id"), start.manifest
    if m is not None and m.run_id and isinstance(rid, str) and rid != m.run_id:
        raise DPAPError(f"{out} mixes two runs: {MANIFEST} names run {m.short}, {CHECKPOINT} run "
                        f"{rid[:8]}; resume neither: choose another --out")


def check_same_data(recorded: str | None, now: str, dataset: str, out: Path, warn) -> None:
    """A resumed run trains on the data it started with; a run that recorded no fingerprint
    (written before they were recorded) resumes with a warning."""
    if recorded is None:
        warn(f"{out}: the run recorded no fingerprint of its data (written by an earlier "
             f"version); resuming without checking that dataset {dataset!r} is unchanged")
    elif recorded != now:
        raise DPAPError(f"cannot resume {out}: dataset {dataset!r} changed since the run started "
                        f"(data fingerprint {recorded[:12]} then, {now[:12]} now); resume with "
                        "the run's own data or start a new run in another --out")


def train_manifest(out: Path, run_id: str, data: str | None, config: dict) -> RunManifest:
    """The manifest of a training run (stages kept from the one already there)."""
    old = read_manifest(out)
    stages = old.stages if old is not None and old.run_id == run_id else ["train"]
    return RunManifest(run_id=run_id, stage="train", inputs=train_inputs(data, config),
                       data=data, config=config, stages=stages or ["train"])


# ---- compact and export --------------------------------------------------------------------

@dataclass
class Claim:
    """A compact / export's right to write ``out``: what it records there."""

    out: Path
    manifest: RunManifest | None         # None: a folder from before manifests, left as it is
    clear: bool


def source_identity(source: Path) -> tuple[str, str]:
    """``(run id, sha256 of the checkpoint file)`` of a compact / export source (a run folder
    or a checkpoint). A checkpoint from before run ids stands for itself (its digest)."""
    ckpt = source / CHECKPOINT if source.is_dir() else source
    digest = file_digest(ckpt)
    m = read_manifest(ckpt.parent) if ckpt.name == CHECKPOINT else None
    rid = m.run_id if m is not None and m.stage == "train" else checkpoint_run_id(ckpt)
    return rid or f"checkpoint-{digest[:32]}", digest


def claim_folder(out: Path, source: Path, stage: str, overwrite: bool) -> Claim:
    """May ``stage`` (compact / export) of ``source`` write ``out``? (module docstring)"""
    src_id, digest = source_identity(source)
    return _claim(out, source, source if source.is_dir() else source.parent, src_id, digest,
                  stage, overwrite)


def claim_folder_for_file(out: Path, source: Path, stage: str, overwrite: bool) -> Claim:
    """The same rule for a stage whose source is a plain file (``export FILE.nir``): the file
    stands for itself by its sha256, so rerunning the same file into ``out`` is allowed and
    anything else there is refused unless ``overwrite``."""
    digest = file_digest(source)
    return _claim(out, source, None, f"file-{digest[:32]}", digest, stage, overwrite)


def _claim(out: Path, source: Path, src_dir: Path | None, src_id: str, digest: str, stage: str,
           overwrite: bool) -> Claim:
    try:
        here = identify(out)
    except DPAPError:
        if not overwrite:                # a damaged record of the run there: --overwrite only
            raise
        here = None
    if here is not None and here.stage == "train" and here.run_id == src_id \
            or src_dir is not None and out.resolve() == src_dir.resolve():
        return _in_place(out, stage)
    if here is not None and here.source_run_id == src_id:
        m = RunManifest(here.run_id, stage, digest, src_id, stages=[*here.stages, stage])
        return Claim(out, m, clear=False)
    if here is None and src_dir is not None and _reported_source(out) == src_dir.resolve():
        # a compact / export of this source written before manifests: its report names it
        return Claim(out, RunManifest(new_run_id(), stage, digest, src_id, stages=[stage]),
                     clear=False)
    present = run_files(out)
    if present and overwrite and source.resolve().is_relative_to(out.resolve()):
        raise DPAPError(f"{source} is inside --out {out}: --overwrite would remove the run that "
                        "holds it before it is read; choose another --out")
    if present and not overwrite:
        what = _describe(here) if here is not None else \
            f"files of a run that records no identity ({', '.join(present)})"
        raise DPAPError(f"{out} holds another run: {what}, not one made from {source} (run "
                        f"{src_id[:8]}); pass --overwrite to replace it, or choose another --out")
    return Claim(out, RunManifest(new_run_id(), stage, digest, src_id, stages=[stage]),
                 clear=bool(present))


def _reported_source(folder: Path) -> Path | None:
    """The run a folder's ``report.json`` says it was made from (``source_run``: absolute in
    reports from before manifests, relative to the folder since), resolved; None if none."""
    try:
        src = json.loads((folder / "report.json").read_text()).get("source_run")
    except (OSError, ValueError, AttributeError, RecursionError):
        return None
    return (folder / src).resolve() if isinstance(src, str) and src else None


def _in_place(out: Path, stage: str) -> Claim:
    """A stage written into its own source run's folder: the folder stays that training run,
    the stage is added to its record."""
    m = read_manifest(out)
    if m is None:                        # a run from before manifests: nothing to add to
        return Claim(out, None, clear=False)
    m.stages = [*m.stages, stage]
    return Claim(out, m, clear=False)


def take(claim: Claim) -> None:
    """Clear the old run when the claim replaces it, then record the new stage."""
    if claim.clear:
        clear_run(claim.out)
    if claim.manifest is not None:
        write_manifest(claim.out, claim.manifest)


# ---- replacing a run -----------------------------------------------------------------------

def _export_files(folder: Path) -> list[str]:
    """The files a report's export section names (a registered target's own files)."""
    try:
        files = json.loads((folder / "report.json").read_text())["export"]["files"]
    except (OSError, ValueError, KeyError, TypeError, RecursionError):
        return []
    return [f for f in files if isinstance(f, str) and "/" not in f and not f.startswith(".")] \
        if isinstance(files, list) else []


def clear_run(folder: Path) -> list[str]:
    """Remove the run files of ``folder`` (``--overwrite``): the manifest last, so a command
    stopped half-way leaves a folder that still names its old run, never one that mixes two."""
    removed = []
    for name in dict.fromkeys([*_export_files(folder), *RUN_FILES]):
        p = folder / name
        if os.path.lexists(p) and not p.is_dir():
            p.unlink()
            removed.append(name)
    plots = folder / "plots"
    if plots.is_dir():
        for p in plots.glob("*.png"):
            p.unlink()
        if not any(plots.iterdir()):
            plots.rmdir()
        removed.append("plots")
    if (folder / MANIFEST).exists():
        (folder / MANIFEST).unlink()
        removed.append(MANIFEST)
    return removed
