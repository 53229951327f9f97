"""``dpap-deploy make-deployable RUN --target T --out DIR [--epochs N]``: ``make_deployable``
on a trained run folder, written as a new run folder.

The run is loaded as ``dpap_deploy.trained.load_trained`` loads it (model, masks, options),
converted for the target, fine-tuned on the run's own dataset with its masks kept, and written
to ``DIR``: ``checkpoint.pt`` (the source run's record with the converted weights, one more
history row, a new run id and the ``conversion`` record), ``run.json`` (stage
``make-deployable``, the source run's id) and ``report.json``. The changes and the accuracy
before and after are printed, then each target's parity (the exports are written to
``DIR/parity/<target>``). Nothing appears in ``DIR`` before the end: the run is written into a
hidden folder beside it and moved in place once it reads back converted (:func:`staged`); a
failure anywhere leaves ``DIR`` as it was.

A run folder names its model by the zoo name it was trained with; the ``conversion`` record
(``[{"module", "op", ...}]``) says which modules the conversion replaced, and
``convert_record.apply_conversion`` applies it to the zoo model rebuilt from that name (the loader
of run folders calls it).
"""
from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from torch import nn

from .convert_record import apply_conversion, conversion_record  # noqa: F401  (apply: old name)
from .errors import ConfigError, UnsupportedModelError

STAGE = "make-deployable"
CONVERSION = "conversion"        # the checkpoint key of the record
PARITY = "parity"                # the folder of the parity exports, in the new run


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        STAGE, help="replace what a target cannot hold exactly (max pooling over currents, "
                    "neurons without an exact form) by its nearest form, fine-tune with the "
                    "masks kept, and write a new run folder",
        description="Convert a trained run for --target, fine-tune it briefly on the run's "
                    "dataset with its DPAP masks kept, report the changes, the accuracy "
                    "before and after and the target's parity, and write a new run folder "
                    "that compact and export take.")
    p.add_argument("run", help="a run folder written by 'dpap-deploy train' (or its checkpoint)")
    p.add_argument("--target", required=True, action="append",
                   help="a spiking target (nir, loihi-sim, netx); repeat for several")
    p.add_argument("--out", required=True, help="the new run folder")
    p.add_argument("--epochs", type=int, default=1, help="fine-tuning epochs (default 1)")
    p.add_argument("--lr", type=float, default=1e-3, help="fine-tuning learning rate")
    p.add_argument("--max-samples", type=int, default=32,
                   help="test samples of each target's parity check (default 32)")
    p.set_defaults(func=run_command)
    return p


def _check_args(args) -> None:
    for name in ("epochs", "max_samples"):
        v = getattr(args, name)
        if not isinstance(v, int) or v < (0 if name == "epochs" else 1):
            raise ConfigError(f"--{name.replace('_', '-')} {v!r}: give an integer "
                              f"{'>= 0' if name == 'epochs' else '>= 1'}")


def convert_run(source, targets: list[str], out, *, epochs: int = 1, lr: float = 1e-3,
                max_samples: int = 32, log=None):
    """``make_deployable`` on the run at ``source``, written to the run folder ``out``;
    returns the :class:`~dpap_deploy.convert.Conversion`.

    Nothing is written to ``out`` until the end: the conversion record is computed on the
    converted model before the fine-tuning (a model a run folder cannot record is refused
    there), the run is written into a hidden folder beside ``out`` (:func:`staged`) and moved
    in place once it reads back as the converted model; any exception removes that folder and
    leaves ``out`` as it was."""
    import copy
    from .convert import make_deployable
    from .trained import load_trained
    from .validate import check_out_dir, check_run_source
    from .runfolder import run_files
    source, out = check_run_source(source), check_out_dir(out)
    present = run_files(out) + ([PARITY] if os.path.lexists(out / PARITY) else [])
    if present:
        raise ConfigError(f"{out} already holds a run ({', '.join(present)}); choose another "
                          "--out")
    trained = load_trained(source)
    if trained.kind != "snn":
        raise UnsupportedModelError(f"the run at {source} is an ANN; make-deployable converts "
                                    "spiking networks (an ANN exports to onnx as it is)")
    data = trained.load_data()
    original = copy.deepcopy(trained.model)
    record: list[dict] = []

    def check(converted: nn.Module) -> None:
        record[:] = conversion_record(original, converted)
    with staged(out) as folder:
        res = make_deployable(trained.model, data.x_train[:2], (data.x_train, data.y_train),
                              targets=targets, dpap=trained.masks, epochs=epochs, lr=lr,
                              time_steps=trained.cfg.time_steps,
                              time_axis=1 if data.is_sequence else None,   # frames [N, T, ...]
                              test_data=(data.x_test, data.y_test), max_samples=max_samples,
                              out=folder / PARITY, log=log, check_converted=check)
        _write_run(source, folder, out, trained, record, res, len(data.y_test))
    return res


@contextlib.contextmanager
def staged(out: Path) -> Iterator[Path]:
    """A new hidden folder beside ``out`` (``.NAME.XXXXXXXX.tmp``, the same file system) to
    write a run into. On a clean exit its entries move into ``out``: one rename of the folder
    where ``out`` is absent or empty, else entry by entry with the manifest last (a reader sees
    no run until then); on an exception it is removed, with any parent folder made for it, and
    ``out`` is left as it was."""
    from .runfolder import MANIFEST
    out = Path(out).absolute()
    made = [p for p in (out.parent, *out.parent.parents) if not p.exists()]
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        yield tmp
        if not out.exists() or (out.is_dir() and not out.is_symlink()
                                and not any(out.iterdir())):
            os.replace(tmp, out)
        else:
            names = sorted(p.name for p in tmp.iterdir() if p.name != MANIFEST)
            for name in names + ([MANIFEST] if (tmp / MANIFEST).exists() else []):
                os.rename(tmp / name, out / name)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        for p in made:                             # innermost first
            with contextlib.suppress(OSError):
                p.rmdir()
        raise
    shutil.rmtree(tmp, ignore_errors=True)


def _write_run(source: Path, folder: Path, out: Path, trained, record: list[dict], res,
               n_test: int) -> None:
    """Write the converted run into ``folder`` (the staging folder of ``out``)."""
    from .checkpoint import load_checkpoint, save_checkpoint
    from .report import save_report, training_report
    from .runfolder import CHECKPOINT, RunManifest, new_run_id, source_identity, write_manifest
    from .trained import load_trained
    ckpt = load_checkpoint(source)
    src_id, digest = source_identity(source)
    run_id = new_run_id()
    for key in ("path", "digest", "format", "version"):
        ckpt.pop(key, None)
    history = list(ckpt["history"])
    row = dict(history[-1]) if history else {}
    row.update({"epoch": len(history) + 1, "test_acc": res.accuracy_after,
                "loss": res.losses[-1] if res.losses else row.get("loss", 0.0)})
    ckpt.update({"model": {k: v.detach().cpu() for k, v in res.model.state_dict().items()},
                 "history": history + [row], "run_id": run_id, CONVERSION: record,
                 "converted_from": src_id})
    write_manifest(folder, RunManifest(run_id, STAGE, digest, src_id, stages=[STAGE]))
    save_checkpoint(folder / CHECKPOINT, ckpt)
    back = load_trained(folder)
    check_reloaded(back.model, res.model, out)
    save_report(folder, training_report(back, n_test))


def check_reloaded(back: nn.Module, converted: nn.Module, out: Path) -> None:
    """The run folder reads back as the converted model (the loader applies the conversion
    record): the same module names and types, and every neuron's ``reset_mechanism`` and
    ``reset_delay``; else the command refuses, in one line (``staged`` keeps nothing)."""
    from .errors import DPAPError
    mods = dict(back.named_modules())

    def neuron(m: nn.Module) -> tuple:
        return (getattr(m, "reset_mechanism", None), getattr(m, "reset_delay", None))
    differ = [name for name, m in converted.named_modules()
              if name and (name not in mods or type(mods[name]) is not type(m) or
                           neuron(m) != neuron(mods[name]))]
    if differ:
        raise DPAPError(f"{out}: the run folder reads back without the conversion of "
                        f"{', '.join(differ)} (this version's run loader does not apply the "
                        "checkpoint's conversion record); nothing was kept: convert with "
                        "make_deployable in Python")


def run_command(args) -> int:
    """The command: print the changes, the accuracies and the parity; 0 when every target's
    parity passed, 1 otherwise."""
    _check_args(args)
    res = convert_run(args.run, list(dict.fromkeys(args.target)), args.out, epochs=args.epochs,
                      lr=args.lr, max_samples=args.max_samples)
    for line in res.summary():
        print(line)
    print(f"new run: {args.out}")
    return 0 if res.passed else 1
