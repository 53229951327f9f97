"""The paired experiment: unpruned vs our DPAP vs the authors' DPAP vs L1-structured, converged.

    .venv/bin/python benchmarks/bench_paired.py                  # the experiment (long)
    .venv/bin/python benchmarks/bench_paired.py --report         # table, intervals, plots
    .venv/bin/python benchmarks/bench_paired.py --smoke          # 2 epochs, subsets, /tmp CSV
    ... --ablation     # also the braincog preset with each switch set back to ours
    ... --device cuda --runs /scratch/paired    # on a GPU machine; rows say which device

The paper's MNIST SNN (``snn-mnist``, T = 8) on Fashion-MNIST. Arms: ``unpruned``, ``dpap``
(our DPAP, ``--ours`` options, default the ``default`` preset), ``braincog`` (the authors'
code, ``preset("braincog")``) and ``l1`` (L1-structured, cut to the ``braincog`` run's
fraction of parameters removed after compaction (the baseline's own count), same seed, pruning over the epochs in which that run pruned:
first death to 90% of its final fraction). Every arm uses the authors' optimizer and schedule
(``optimizer="braincog"``: AdamW, lr 2.44e-4, weight decay 0.01, batch 50, 5 warm-up epochs,
cosine to 1e-5) and, per seed, the same initial weights and data order (``TrainConfig.seed``
seeds both; the CSV's ``init_digest`` shows it).

Each finished run appends one row to the CSV (written whole, atomically): final and best-epoch
test accuracy, parameters removed (masked parameters over all; ``params_removed_compact``:
those the compacted network no longer holds, dead units' outgoing weights too), SynOps removed
(synaptic events landing on removed weights, over all events of the same network), SynOps per
test sample, device, wall time (the epochs' own, summed across resumes), commit and the
per-epoch curves. A rerun skips the rows already there (same arm, seed, epochs, subsets); a
run interrupted mid-way resumes from its checkpoint in ``--runs``. ``--report`` reads the CSV
only (rows from several machines mix), and says
"partial" while rows are missing.
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import math
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from common import dpap_window  # noqa: E402
from dpap_deploy.atomic import atomic_write_text  # noqa: E402
from dpap_deploy.errors import DPAPError  # noqa: E402

ARMS = ("unpruned", "dpap", "braincog", "l1")
# Ablation: the braincog preset with one switch set back to this project's choice.
SWITCHES = {
    "mask_timing": {"mask_timing": "step"}, "accumulation": {"accumulation": "epoch"},
    "population": {"population": "alive"}, "importance": {"importance": "product"},
    "decay": {"conv": {"decay": "smooth"}, "linear": {"decay": "smooth"}},
    "warmup": {"conv": {"warmup": 2}, "linear": {"warmup": 2}},
    "spine": {"mask_dead_synapses_in_spine": True}, "conv_kernels": {"prune_conv_kernels": True},
    "zero_range": {"zero_range": "skip"},
}
COLUMNS = ("arm", "seed", "epochs", "train_subset", "test_subset", "final_acc", "best_acc",
           "best_epoch", "params_removed", "params_removed_compact", "synops_removed", "synops", "synops_dense",
           "params_nonzero", "kept", "prune_target", "init_digest", "device", "wall_s",
           "commit", "dpap_config", "test_acc_curve", "removed_curve")
PAIRS = (("dpap", "unpruned"), ("braincog", "unpruned"), ("l1", "unpruned"),
         ("braincog", "dpap"), ("braincog", "l1"))


def parse(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--csv", help="rows (default benchmarks/results/paired.csv; "
                                  "/tmp/paired_smoke.csv with --smoke)")
    ap.add_argument("--runs", help="run folders, kept for resuming (default runs/paired)")
    ap.add_argument("--epochs", type=int, default=60)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--arms", nargs="+", default=list(ARMS), help=f"from {', '.join(ARMS)}")
    ap.add_argument("--ablation", action="store_true",
                    help="also braincog with each switch set back to ours: " + ", ".join(SWITCHES))
    ap.add_argument("--ours", type=json.loads, default={"preset": "default"},
                    help="DPAP options of arm dpap as JSON (default the default preset)")
    ap.add_argument("--dataset", default="fashion-mnist")
    ap.add_argument("--data-root")
    ap.add_argument("--model", default="snn-mnist")
    ap.add_argument("--time-steps", type=int, default=8)
    ap.add_argument("--train-subset", type=int, default=0, help="first N training images (0: all)")
    ap.add_argument("--test-subset", type=int, default=0, help="first N test images (0: all)")
    ap.add_argument("--synops-samples", type=int, default=1000)
    ap.add_argument("--device", default="auto", help="auto, cpu or cuda")
    ap.add_argument("--lr", type=float, help="peak learning rate (default the authors' 2.44e-4)")
    ap.add_argument("--smoke", action="store_true",
                    help="validate fast: 3 epochs, 500/200 images, lr 5e-3, braincog warm-up 0 and beta 1, "
                         "/tmp CSV and runs")
    ap.add_argument("--report", action="store_true", help="read the CSV: table, plots")
    ap.add_argument("--plots", help="folder for the figures (default: the CSV's folder)")
    args = ap.parse_args(argv)
    if args.smoke:
        args.epochs, args.train_subset, args.test_subset = min(args.epochs, 3), \
            args.train_subset or 500, args.test_subset or 200
        args.lr = args.lr or 5e-3
        args.csv, args.runs = args.csv or "/tmp/paired_smoke.csv", args.runs or "/tmp/paired_smoke_runs"
        args.synops_samples = min(args.synops_samples, 100)
    args.csv = Path(args.csv or ROOT / "benchmarks/results/paired.csv")
    args.runs = Path(args.runs or ROOT / "runs/paired")
    bad = [a for a in args.arms if a not in ARMS]
    if bad:
        ap.error(f"unknown arm {bad[0]!r}: choose from {', '.join(ARMS)}")
    if args.ablation:
        args.arms = list(args.arms) + [f"braincog-{s}" for s in SWITCHES]
    return args


# -------------------------------------------------------------------------- the CSV
def read_rows(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return list(csv.DictReader(io.StringIO(path.read_text())))


def append_row(path: Path, row: dict) -> None:
    """The CSV with one more row, written whole: a crash leaves the old file or the new one."""
    rows = read_rows(path) + [{k: row.get(k, "") for k in COLUMNS}]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=COLUMNS, extrasaction="ignore")
    w.writeheader()
    w.writerows(rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, buf.getvalue())


def _key(r: dict) -> tuple:
    return (r["arm"], int(r["seed"]), int(r["epochs"]), int(r["train_subset"] or 0),
            int(r["test_subset"] or 0))


# ---------------------------------------------------------------------------- a run
def arm_dpap(arm: str, args) -> dict | None:
    """The DPAP options of an arm (None: no DPAP)."""
    if arm in ("unpruned", "l1"):
        return None
    if arm == "dpap":
        return dict(args.ours)
    table: dict = {"preset": "braincog"}
    if arm.startswith("braincog-"):
        table.update(SWITCHES[arm.removeprefix("braincog-")])
    if args.smoke:     # prune within the smoke run's few epochs
        table = {**table, **{k: {**table.get(k, {}), "warmup": 0, "beta": 1.0}
                             for k in ("conv", "linear")}}
    return table


def train_config(arm: str, seed: int, args, target: float | None, window=None):
    from dpap_deploy.train_config import TrainConfig
    table = arm_dpap(arm, args)
    kw = dict(dataset=args.dataset, model=args.model, epochs=args.epochs,
              time_steps=args.time_steps, seed=seed, device=args.device, optimizer="braincog",
              lr=args.lr)
    if table is not None:
        kw["dpap_config"] = table
    else:
        kw["no_dpap"] = True
    if arm == "l1":
        kw.update(baseline="l1-structured", prune_target=target, prune_target_kind="params",
                  prune_window=window)
    return TrainConfig.from_file(None, **kw)


def init_digest(model_name: str, data, seed: int) -> str:
    """The initial weights of every arm of a seed (build_run seeds then builds the model)."""
    from dpap_deploy.training.run import seed_everything
    from dpap_deploy.zoo import build_model
    seed_everything(seed)
    model, _ = build_model(model_name, data.input_shape, data.n_classes)
    h = hashlib.sha256()
    for v in model.state_dict().values():
        h.update(v.detach().cpu().numpy().tobytes())
    return h.hexdigest()[:12]


def run_arm(arm: str, seed: int, args, data, target: float | None, window=None) -> dict:
    import torch
    from dpap_deploy.compaction import compact
    from dpap_deploy.counting import count_ops, param_counts
    from dpap_deploy.trained import load_trained
    from dpap_deploy.training import train
    cfg = train_config(arm, seed, args, target, window)
    folder = args.runs / f"{arm}-seed{seed}-e{args.epochs}-n{args.train_subset}-{args.test_subset}"
    run = train(cfg, folder, resume=folder.exists(), progress=False, data=data,
                log=lambda m: print(f"  {arm} seed {seed}: {m}", flush=True))
    wall = sum(h["wall_time_s"] for h in run.history)     # every epoch, across resumes
    model = run.model.eval()
    x = data.x_test[:args.synops_samples].to(run.device)
    ops = count_ops(model, x, cfg.time_steps)
    trained = load_trained(folder)
    small = compact(trained.model.cpu(), x[:200].cpu(), trained.masks,     # on the CPU
                    time_steps=cfg.time_steps, register=False).model
    total = param_counts(model)[0]
    accs = [h["test_acc"] for h in run.history]
    best = max(range(len(accs)), key=accs.__getitem__)
    kept = "; ".join(f"{s['name']} {s['neurons_kept']}/{s['neurons_total']}"
                     for s in run.layer_stats())
    dev = torch.cuda.get_device_name(run.device) if run.device.type == "cuda" else "cpu"
    return {"arm": arm, "seed": seed, "epochs": args.epochs, "train_subset": args.train_subset,
            "test_subset": args.test_subset, "final_acc": accs[-1], "best_acc": accs[best],
            "best_epoch": best + 1, "params_removed": round(run.params_removed_fraction(), 6),
            "params_removed_compact": round(1 - param_counts(small)[1] / total, 6),
            "synops_removed": round(1 - ops.total("synops") / ops.total("synops_dense"), 6)
            if ops.total("synops_dense") else 0.0,
            "synops": round(ops.total("synops"), 1), "synops_dense": round(ops.total("synops_dense"), 1),
            "params_nonzero": param_counts(model)[1], "kept": kept,
            "prune_target": "" if target is None else round(target, 6),
            "init_digest": init_digest(args.model, data, seed), "device": dev,
            "wall_s": round(wall, 1), "commit": _commit(),
            "dpap_config": json.dumps(arm_dpap(arm, args)) if arm_dpap(arm, args) else "",
            "test_acc_curve": ";".join(f"{a:.4f}" for a in accs),
            "removed_curve": ";".join(f"{h['params_removed_fraction']:.4f}" for h in run.history)}


def _commit() -> str:
    try:
        out = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--",
                                "dpap_deploy"], capture_output=True, text=True).stdout.strip()
        return out + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def load_data(args):
    from dpap_deploy.data import load_dataset
    d = load_dataset(args.dataset, args.data_root, args.time_steps)
    if args.train_subset:
        d.x_train, d.y_train = d.x_train[:args.train_subset], d.y_train[:args.train_subset]
    if args.test_subset:
        d.x_test, d.y_test = d.x_test[:args.test_subset], d.y_test[:args.test_subset]
    return d


def experiment(args) -> None:
    data = load_data(args)
    for seed in args.seeds:
        for arm in args.arms:
            done = {_key(r): r for r in read_rows(args.csv)}
            key = (arm, seed, args.epochs, args.train_subset, args.test_subset)
            if key in done:
                print(f"{arm} seed {seed}: in {args.csv}, skipped", flush=True)
                continue
            target = window = None
            if arm == "l1":
                ref = done.get(("braincog", seed) + key[2:])
                if ref is None:
                    raise DPAPError(f"arm l1 seed {seed} is cut to the braincog run's fraction: "
                                    "run arm braincog of that seed first")
                target = float(ref["params_removed_compact"])
                if not 0 < target < 1:
                    raise DPAPError(f"the braincog run of seed {seed} removed {target:.1%}; "
                                    "l1 needs a fraction in (0, 1): train longer")
                window = dpap_window([float(v) for v in ref["removed_curve"].split(";")])
            row = run_arm(arm, seed, args, data, target, window)
            append_row(args.csv, row)
            print(f"{arm} seed {seed}: final {row['final_acc']:.4f} best {row['best_acc']:.4f} "
                  f"(epoch {row['best_epoch']}) removed {row['params_removed']:.1%} params, "
                  f"{row['synops_removed']:.1%} SynOps; {row['device']}, {row['wall_s']} s",
                  flush=True)


# ---------------------------------------------------------------------------- report
def interval(deltas: list[float]) -> tuple[float, float | None]:
    """Mean and the half-width of its 95% interval (t distribution, n - 1 degrees)."""
    from scipy import stats
    m = statistics.fmean(deltas)
    if len(deltas) < 2:
        return m, None
    return m, stats.t.ppf(0.975, len(deltas) - 1) * statistics.stdev(deltas) / math.sqrt(len(deltas))


def late_gain(curve: list[float], span: int = 10, width: int = 5) -> float | None:
    """How much a run still gained at its end, in points: the mean test accuracy of the last
    ``width`` epochs minus that of the ``width`` epochs ``span`` epochs earlier (averaging
    evens out the epoch-to-epoch noise). Near 0: converged; None: the run is too short."""
    if len(curve) < span + width:
        return None
    return 100 * (statistics.fmean(curve[-width:]) - statistics.fmean(curve[-span - width:-span]))


def report(args) -> str:
    rows = [r for r in read_rows(args.csv) if _key(r)[2:] ==
            (args.epochs, args.train_subset, args.test_subset)]
    if not rows:
        raise DPAPError(f"{args.csv} has no row for {args.epochs} epochs, subsets "
                        f"{args.train_subset}/{args.test_subset}")
    by = {(r["arm"], int(r["seed"])): r for r in rows}
    arms = [a for a in args.arms if any(k[0] == a for k in by)]
    seeds = sorted({k[1] for k in by})
    missing = [f"{a}/{s}" for a in args.arms for s in args.seeds if (a, s) not in by]
    lines = [f"{args.model} on {args.dataset}, {args.epochs} epochs, seeds "
             f"{', '.join(map(str, seeds))}, from {args.csv}"
             + (f"; PARTIAL: missing {', '.join(missing)}" if missing else "; complete"), "",
             "| arm | seeds | final acc | best acc (epoch) | last-10 gain | params removed (masked) "
             "| (compacted) | SynOps removed | SynOps / sample | devices |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for a in arms:
        rs = [by[(a, s)] for s in seeds if (a, s) in by]

        def ms(col, pct=True):
            v = [float(r[col]) * (100 if pct else 1) for r in rs]
            sd = statistics.stdev(v) if len(v) > 1 else 0.0
            return f"{statistics.fmean(v):.2f} +- {sd:.2f}" if pct else f"{statistics.fmean(v):,.0f}"
        epochs = ", ".join(r["best_epoch"] for r in rs)
        gains = [late_gain([float(v) for v in r["test_acc_curve"].split(";")]) for r in rs]
        gain = ("n/a" if None in gains else
                f"{statistics.fmean(gains):+.2f} (max {max(gains, key=abs):+.2f})")
        lines.append(f"| {a} | {len(rs)} | {ms('final_acc')} | {ms('best_acc')} ({epochs}) | "
                     f"{gain} | {ms('params_removed')} | {ms('params_removed_compact')} | {ms('synops_removed')} | {ms('synops', False)} | "
                     f"{', '.join(sorted({r['device'] for r in rs}))} |")
    lines += ["", "last-10 gain: mean test accuracy of the last 5 epochs minus that of the 5 "
              "epochs 10 before (points; mean over seeds, and the largest): near 0 once a run "
              "has converged."]
    lines += ["", "Paired differences (points; mean and 95% interval, t over seeds):", "",
              "| pair | n | final acc | best acc | per seed (best) |", "|---|---|---|---|---|"]
    for a, b in PAIRS + tuple((x, "braincog") for x in arms if x.startswith("braincog-")):
        common = [s for s in seeds if (a, s) in by and (b, s) in by]
        if not common:
            continue
        cells = []
        for col in ("final_acc", "best_acc"):
            d = [100 * (float(by[(a, s)][col]) - float(by[(b, s)][col])) for s in common]
            m, h = interval(d)
            cells.append(f"{m:+.2f}" + (f" [{m - h:+.2f}, {m + h:+.2f}]" if h is not None else ""))
        per = ", ".join(f"{100 * (float(by[(a, s)]['best_acc']) - float(by[(b, s)]['best_acc'])):+.2f}"
                        for s in common)
        lines.append(f"| {a} - {b} | {len(common)} | {cells[0]} | {cells[1]} | {per} |")
    plots(args, by, arms, seeds)
    return "\n".join(lines)


def plots(args, by: dict, arms: list[str], seeds: list[int]) -> None:
    from matplotlib.figure import Figure
    out = Path(args.plots) if args.plots else args.csv.parent
    stem = args.csv.stem
    out.mkdir(parents=True, exist_ok=True)
    fig = Figure(figsize=(6, 4.5))
    ax = fig.add_subplot()
    for i, a in enumerate(arms):
        rs = [by[(a, s)] for s in seeds if (a, s) in by]
        c = f"C{i}"
        ax.scatter([float(r["synops"]) for r in rs], [100 * float(r["best_acc"]) for r in rs],
                   color=c, label=f"{a} (best epoch)")
        ax.scatter([float(r["synops"]) for r in rs], [100 * float(r["final_acc"]) for r in rs],
                   facecolors="none", edgecolors=c, label=f"{a} (final)")
    ax.set_xlabel("SynOps per test sample")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"{args.model}, {args.dataset}, {args.epochs} epochs")
    ax.legend(fontsize=7)
    fig.savefig(out / f"{stem}_synops.png", dpi=120, bbox_inches="tight")
    # test accuracy per epoch (y zoomed on where the runs settle: the first epochs, silent
    # under the lr warm-up, would flatten the rest) and the fraction removed
    fig = Figure(figsize=(7, 6.5))
    ax, ax2 = fig.subplots(2, 1, sharex=True, height_ratios=(2, 1))
    late = []
    for i, a in enumerate(arms):
        for j, s in enumerate(s for s in seeds if (a, s) in by):
            curve = [100 * float(v) for v in by[(a, s)]["test_acc_curve"].split(";")]
            removed = [100 * float(v) for v in by[(a, s)]["removed_curve"].split(";")]
            ax.plot(range(1, len(curve) + 1), curve, color=f"C{i}", lw=1,
                    label=a if j == 0 else None)
            ax2.plot(range(1, len(removed) + 1), removed, color=f"C{i}", lw=1)
            late += curve[len(curve) // 4:]
    if late:
        ax.set_ylim(min(late) - 1, max(late) + 0.5)
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"{args.model}, {args.dataset}: every seed's curve")
    ax.legend(fontsize=7)
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("params removed (%)")
    fig.savefig(out / f"{stem}_curves.png", dpi=120, bbox_inches="tight")
    print(f"wrote {out / f'{stem}_synops.png'} and {out / f'{stem}_curves.png'}")


def main(argv=None) -> int:
    args = parse(argv)
    try:
        if args.report:
            print(report(args))
        else:
            experiment(args)
    except DPAPError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
