"""``dpap-deploy``: a thin command line over the Python API (contract.md).

Every command parses its options, calls the API and prints. Errors in the user's input
(checked by the API before any work) are printed as one line on stderr (``dpap-deploy: error:
...``) with exit status 2; any other failure also ends in one line, with exit status 1 and a
hint to rerun with ``--debug`` for the traceback. A model a target would refuse
(``NotDeployableError``, e.g. ``train-and-export`` before training) is that line followed by
one line per blocker, exit status 2. ``check`` exits 0 when every asked target takes the
model and 1 when one does not.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from . import __version__
from .errors import DPAPError, NotDeployableError, one_line

TRAIN_OPTIONS = ("dataset", "data_root", "model", "epochs", "batch_size", "time_steps", "lr",
                 "device", "seed", "baseline", "prune_target", "prune_target_kind", "executor",
                 "precision", "workers", "augment", "optimizer", "rule", "preset", "no_dpap")


class _Names:
    """The names of a registry, read when argparse first needs them (a given option's check,
    --help), so that parsing a command line imports nothing heavy."""

    def __init__(self, read):
        self._read = read

    def _get(self) -> list[str]:
        return list(self._read())      # read each time: a target registered later is listed

    def __contains__(self, name) -> bool:
        return name in self._get()

    def __iter__(self):
        return iter(self._get())

    def __len__(self) -> int:
        return len(self._get())


def _targets():
    from .exporters import TARGETS
    return TARGETS


def _rules():
    from .dpap.rules import RULES
    return RULES


TARGET_CHOICES = _Names(_targets)


class _DatasetNames:
    """The dataset registry's names for ``--help`` (``%(names)s``), read only when help is
    shown: the registry imports torch, which parsing a command line does not."""

    def __str__(self) -> str:
        from .data import DATASETS
        return f"{', '.join(DATASETS)}, idx:DIR or npz:FILE"


def _add_dataset(p: argparse.ArgumentParser, default: str) -> None:
    p.add_argument("--dataset", help=f"%(names)s (default {default})").names = _DatasetNames()


def _add_train_options(p: argparse.ArgumentParser) -> None:
    _add_dataset(p, "digits, embedded")
    p.add_argument("--data-root", help="folder holding the dataset's files")
    p.add_argument("--model", help="zoo model (default: snn-digits); see 'dpap-deploy models'")
    p.add_argument("--epochs", type=int, help="training epochs (default 60)")
    p.add_argument("--batch-size", type=int, help="batch size (default 64)")
    p.add_argument("--time-steps", type=int, help="SNN time steps T (default 8)")
    p.add_argument("--lr", type=float, help="learning rate (default 5e-3; 2.44e-4 with "
                   "--optimizer braincog)")
    from .train_config import OPTIMIZERS
    p.add_argument("--optimizer", choices=OPTIMIZERS,
                   help="adam (default: Adam, cosine to 0) or braincog (the authors' code: "
                        "AdamW, weight decay 0.01, 5 warm-up epochs, cosine to 1e-5; batch 50 "
                        "unless --batch-size is given)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], help="default auto")
    p.add_argument("--seed", type=int, help="random seed (default 0)")
    p.add_argument("--executor", choices=["multistep", "step"],
                   help="SNN time loop: multistep (a whole window per layer, default) or step "
                        "(snnTorch's step loop)")
    p.add_argument("--precision", choices=["fp32", "bf16", "fp16"],
                   help="autocast dtype of the training forward (default fp32; fp16 needs cuda)")
    p.add_argument("--workers", type=int, help="DataLoader worker processes (default 0: "
                   "batches indexed from memory)")
    p.add_argument("--augment", action=argparse.BooleanOptionalAction, default=None,
                   help="random crop (padding 4) and horizontal flip (default: on for cifar10)")
    p.add_argument("--no-dpap", action="store_true", help="train without pruning (baseline)")
    p.add_argument("--baseline", choices=["magnitude", "random", "l1-structured",
                                          "rate-structured", "random-structured"],
                   help="prune with a baseline instead of DPAP (with --no-dpap --prune-target F); "
                        "*-structured remove whole channels / neurons")
    p.add_argument("--prune-target", type=float,
                   help="baseline: fraction of the target kind to remove")
    p.add_argument("--prune-target-kind", choices=["params", "synops", "macs"],
                   help="baseline: what --prune-target removes, counted after compaction "
                        "(default params; synops / macs for *-structured)")
    p.add_argument("--rule", choices=_Names(_rules), metavar="RULE",
                   help="plasticity rule: %(choices)s (default bcm)")
    p.add_argument("--preset", help="DPAP preset: default, keep-conv, ann, short (~10-20 "
                   "epochs), short-keep-conv, minmax, conv-pruning (= default), braincog "
                   "(the authors' code)")
    p.add_argument("--config", help="TOML or JSON file with training options and a [dpap] table")
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    p.add_argument("--out", required=True, help="run directory")
    _add_overwrite(p)
    p.add_argument("--quiet", action="store_true", help="no per-epoch lines or progress bars")


def _add_overwrite(p: argparse.ArgumentParser) -> None:
    p.add_argument("--overwrite", action="store_true",
                   help="replace another run already in --out (its files are removed first)")


def _add_nir_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--nir-encoding", choices=["gain", "unit-r"], help="the NIR file's neurons "
                   "(nir, loihi-sim): gain (r = tau/dt, default) or unit-r (r = 1, input weights "
                   "scaled: for readers that ignore r, e.g. Norse); see docs/nir-compat.md")
    p.add_argument("--nir-pooling", choices=["avg", "sum"], help="the NIR file's pools: avg "
                   "(AvgPool2d, default) or sum (SumPool2d with 1/(kh kw) in the next weights: "
                   "for readers without AvgPool2d, e.g. Norse)")


def _add_fixed_point_options(p: argparse.ArgumentParser) -> None:
    # default None, not False / 0: a NIR file's run refuses them when given (RUN_ONLY_OPTIONS)
    p.add_argument("--fixed-point", action="store_true", default=None, help="loihi-sim: Lava's "
                   "bit-accurate fixed-point models, checked bit for bit against the torch "
                   "emulation")
    p.add_argument("--fine-tune", type=int, metavar="EPOCHS", help="netx: epochs of "
                   "quantization-aware fine-tuning of the folded network on the training set "
                   "before the export (report.json's qat; docs/deploy.md); default none")


def _fixed_point_args(args: argparse.Namespace) -> dict:
    return {"fixed_point": bool(args.fixed_point), "fine_tune": args.fine_tune or 0}


def _add_quiet(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quiet", action="store_true", help="no progress lines")


def train_config_from_args(args: argparse.Namespace):
    """Defaults < config file < command line (:meth:`TrainConfig.from_file`)."""
    from .train_config import TrainConfig
    return TrainConfig.from_file(args.config, **{k: getattr(args, k) for k in TRAIN_OPTIONS})


def _log(args: argparse.Namespace):
    return None if args.quiet else (lambda m: print(m, file=sys.stderr, flush=True))


def cmd_train(args: argparse.Namespace) -> int:
    from . import pipeline
    report = pipeline.train(train_config_from_args(args), args.out, resume=args.resume,
                            progress=not args.quiet, log=_log(args), overwrite=args.overwrite)
    if report is None:           # a torchrun rank other than 0
        return 0
    print(f"test accuracy {report.accuracy.test:.4f} (best {report.accuracy.best:.4f}), "
          f"parameters removed {report.pruning.params_removed_fraction:.1%}; "
          f"wrote {Path(args.out) / 'report.json'}")
    return 0


def cmd_compact(args: argparse.Namespace) -> int:
    from . import pipeline
    r = pipeline.compact(args.source, args.out, overwrite=args.overwrite, log=_log(args))
    p, o = r.params, r.ops
    print(f"parameters {p.dense:,} -> {p.compact:,} ({1 - p.compact / p.dense:.1%} "
          f"smaller); SynOps/sample {o.synops_dense:,.0f} -> {o.synops_compact:,.0f}; "
          f"MACs/sample {o.macs_dense:,.0f} -> {o.macs_compact:,.0f}; "
          f"accuracy {r.compaction.accuracy_compact:.4f} (identical to the masked model); "
          f"wrote {args.out}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from . import pipeline
    path = pipeline.report(args.run_dir, baseline=args.baseline)
    print(f"wrote {path} and {Path(args.run_dir) / 'plots'}")
    return 0


def _print_export(e) -> None:
    par = e.parity
    ref = "its fixed-point emulation" if "fixed_identical" in (par.model_extra or {}) else "torch"
    print(f"{e.target}: accuracy {e.accuracy:.4f} on {par.n_samples} test samples, "
          f"agreement with {ref} {par.agreement:.2%}, parity "
          f"{'passed' if e.passed else 'FAILED'}; files {', '.join(e.files)}")


NIR_FILE_OPTIONS = ("time_steps", "input", "dt")   # what a run folder's export would ignore
# and what a NIR file's run would ignore
RUN_ONLY_OPTIONS = ("nir_encoding", "nir_pooling", "fixed_point", "fine_tune")


def cmd_export(args: argparse.Namespace) -> int:
    from .errors import ConfigError
    nir_file = args.source.endswith(".nir")
    given = [f"--{n.replace('_', '-')}" for n in (RUN_ONLY_OPTIONS if nir_file else
                                                   NIR_FILE_OPTIONS) if getattr(args, n) is not None]
    if given and nir_file:
        raise ConfigError(f"{', '.join(given)} appl{'ies' if len(given) == 1 else 'y'} to a "
                          f"run's export; {args.source} is a NIR file already, run as it is "
                          "written: drop the option")
    if given:
        raise ConfigError(f"{', '.join(given)} appl{'ies' if len(given) == 1 else 'y'} to a NIR "
                          f"file only; {args.source} is a run, which exports with its own "
                          "time steps and test set: drop the option")
    if nir_file:
        return _export_nir_file(args)
    from . import pipeline
    _print_export(pipeline.export(args.source, args.target, args.out,
                                  max_samples=args.max_samples, overwrite=args.overwrite,
                                  log=_log(args), nir_encoding=args.nir_encoding,
                                  nir_pooling=args.nir_pooling, **_fixed_point_args(args)).export)
    return 0


def _export_nir_file(args: argparse.Namespace) -> int:
    from .exporters.nir_file import run_nir_file
    e = run_nir_file(args.source, args.out, args.time_steps, args.max_samples, args.input,
                     target=args.target, dt=args.dt, overwrite=args.overwrite)["export"]
    p = e["parity"]
    print(f"loihi-sim: {args.source} ran {p['n_samples']} samples x {e['time_steps']} steps "
          f"(dt {e['dt']:g} s, {e['dt_source']}) in Lava; "
          f"agreement with the torch reference {p['agreement']:.2%}, identical spike trains "
          f"{p['identical_spike_trains']:.2%}; {e['synapses_lava']:,} Lava synapses; "
          f"wrote {args.out}/report.json")
    return 0


def cmd_train_and_export(args: argparse.Namespace) -> int:
    from . import pipeline
    r = pipeline.train_and_export(train_config_from_args(args), args.target, args.out,
                                  resume=args.resume, progress=not args.quiet, log=_log(args),
                                  max_samples=args.max_samples, overwrite=args.overwrite,
                                  nir_encoding=args.nir_encoding, nir_pooling=args.nir_pooling,
                                  **_fixed_point_args(args))
    print(f"test accuracy {r.accuracy.test:.4f}, parameters "
          f"{r.params.dense:,} -> {r.params.compact:,} after compaction")
    _print_export(r.export)
    print(f"wrote {args.out}/report.json and report.md")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    """Per target ``TARGET: ok`` or its blockers, one line each; exit 0 when every asked
    target takes the model, 1 when one does not (the check ran: not an input error)."""
    from . import pipeline
    result = pipeline.check(args.source, args.target)
    print(result)
    if result.ok:
        print(f"deployable to {', '.join(result.targets)}")
        return 0
    print(f"not deployable as written: {result.count()} blocker"
          f"{'' if result.count() == 1 else 's'}; fix each (or convert the model) and check "
          "again", file=sys.stderr)
    return 1


def cmd_synth_events(args: argparse.Namespace) -> int:
    from .data.saccade import synth_events
    counts = synth_events(args.dataset, args.data_root, args.out, args.limit_train,
                          args.limit_test, progress=not args.quiet)
    print(f"wrote {counts['train']} train and {counts['test']} test event streams under "
          f"{Path(args.out) / 'NMNIST'}; train on them with --dataset nmnist --data-root {args.out}")
    return 0


def cmd_models(_args: argparse.Namespace) -> int:
    from .zoo import ZOO
    for spec in ZOO.values():
        print(f"{spec.name:14s} {spec.kind}  {spec.description}")
    return 0


class _Parser(argparse.ArgumentParser):
    """argparse with its errors as one line (``dpap-deploy: error: ...``), exit status 2."""

    def error(self, message: str):
        self.exit(2, f"dpap-deploy: error: {message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="dpap-deploy",
        description="Train and prune spiking / artificial networks with DPAP, compact them, "
                    "and export them to neuromorphic targets.")
    parser.add_argument("--debug", action="store_true",
                        help="show the Python traceback of an unexpected error")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    p = sub.add_parser("train", help="train a model with DPAP (or --no-dpap)")
    _add_train_options(p)
    p.set_defaults(func=cmd_train)
    p = sub.add_parser("compact", help="physically remove pruned units; count params and ops")
    p.add_argument("source", metavar="RUN_DIR_OR_CHECKPOINT")
    p.add_argument("--out", required=True, help="output directory")
    _add_overwrite(p)
    _add_quiet(p)
    p.set_defaults(func=cmd_compact)
    p = sub.add_parser("export", help="compact a run and export it to a target, verified; or "
                       "run a NIR file (FILE.nir --target loihi-sim) in Lava against torch")
    p.add_argument("source", metavar="RUN_DIR_OR_CHECKPOINT_OR_NIR")
    p.add_argument("--target", required=True, choices=TARGET_CHOICES, metavar="TARGET",
                   help="%(choices)s")
    p.add_argument("--out", required=True, help="output directory")
    _add_overwrite(p)
    p.add_argument("--max-samples", "--samples", type=int, help="test samples the target runs "
                   "(default: all; 1000 for loihi-sim and netx; 100 for a NIR file)")
    p.add_argument("--time-steps", type=int, help="NIR file: time steps per sample (default: "
                   "the file's metadata, else 8)")
    p.add_argument("--input", help="NIR file: an .npz with an array x [N, ...] or [N, T, ...] "
                   "(default: random values in [0, 1))")
    p.add_argument("--dt", type=float, help="NIR file: the time step (s) its time constants were "
                   "written for (default: the file's metadata dt, else 1e-4 with a warning)")
    _add_nir_options(p)
    _add_fixed_point_options(p)
    _add_quiet(p)
    p.set_defaults(func=cmd_export)
    p = sub.add_parser("train-and-export", help="train with DPAP, compact, export, verify")
    _add_train_options(p)
    p.add_argument("--target", default="loihi-sim", choices=TARGET_CHOICES, metavar="TARGET",
                   help="%(choices)s (default loihi-sim)")
    p.add_argument("--max-samples", type=int, help="test samples the target runs")
    _add_nir_options(p)
    _add_fixed_point_options(p)
    p.set_defaults(func=cmd_train_and_export)
    p = sub.add_parser("check", help="will it deploy? every blocker of a run's or model "
                       "file's model for each target, before (or without) exporting")
    p.add_argument("source", metavar="RUN_DIR_OR_CHECKPOINT_OR_MODEL_FILE")
    p.add_argument("--target", action="append", choices=TARGET_CHOICES, metavar="TARGET",
                   help="%(choices)s; repeat for several (default: every target of the "
                        "model's kind)")
    p.set_defaults(func=cmd_check)
    from .convert_run import add_parser
    add_parser(sub)
    p = sub.add_parser("report", help="regenerate report.md and plots/ of a run directory")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--baseline", help="a --no-dpap run to plot accuracy against")
    p.set_defaults(func=cmd_report)
    p = sub.add_parser("synth-events", help="N-MNIST-style saccade events from an image dataset")
    _add_dataset(p, "fashion-mnist")
    p.set_defaults(dataset="fashion-mnist")
    p.add_argument("--data-root")
    p.add_argument("--limit-train", type=int, help="first N training images only")
    p.add_argument("--limit-test", type=int, help="first N test images only")
    p.add_argument("--out", required=True, help="ROOT: writes ROOT/NMNIST/{Train,Test}/...")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_synth_events)
    p = sub.add_parser("models", help="list the model zoo")
    p.set_defaults(func=cmd_models)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv      # accepted anywhere on the line, not only before the command
    parser = build_parser()
    args = parser.parse_args([a for a in argv if a != "--debug"])
    try:
        return args.func(args)
    except KeyboardInterrupt:
        out = getattr(args, "out", None)
        training = args.func in (cmd_train, cmd_train_and_export)
        hint = f"; the last finished epoch is saved in {out}: continue with --resume" \
            if out and training else ""
        print(f"dpap-deploy: interrupted{hint}", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - every failure ends in one line (see errors.py)
        if debug:
            raise
        lines = exc.lines() if isinstance(exc, NotDeployableError) else [one_line(exc)]
        print(f"dpap-deploy: error: {lines[0]}", *lines[1:], sep="\n", file=sys.stderr)
        return 2 if isinstance(exc, (DPAPError, OSError)) else 1


if __name__ == "__main__":
    sys.exit(main())
