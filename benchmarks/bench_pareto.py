"""Accuracy against deployed cost: compacted SynOps (SNN) or MACs (ANN), and measured
inference latency of the compacted network, for DPAP at several ``epsilon`` and each
structured baseline at the cost each DPAP run reached (the Pareto comparison of issue 12).

    .venv/bin/python benchmarks/bench_pareto.py --dataset fashion-mnist --model snn-mnist \\
        --epochs 8 --train-subset 1000 --test-subset 500 --dpap-config '{"preset": "short"}' \\
        --epsilons 1.0 1.8

Per DPAP point (the linear layers' ``epsilon`` on top of ``--dpap-config``): DPAP trains and is
compacted; the fraction of the unpruned run's cost it removed (SynOps or MACs per test sample,
after compaction) is then the target of ``l1-structured``, ``rate-structured`` and
``random-structured`` (``--prune-target-kind synops|macs``) over DPAP's pruning epochs. Every
network is compacted and counted on the test subset; latency is the median wall time of
``--latency-repeats`` evaluation passes of the compacted network over ``--latency-samples`` test
samples (batch of that size, one torch thread), interleaved across networks. ``--seeds``
repeats all of it per seed; the table and figure give each run and the mean over seeds.

Every run is trained in its own folder under ``--work-dir`` and keeps its measured row and
compacted model there: the same command run again after an interruption resumes the run it
stopped in (bit-exact, from the last finished epoch) and redoes none of the finished ones.
Writes ``benchmarks/results/pareto_<dataset>_<model>.json`` and ``docs/img/pareto_<model>.png``.
"""
from __future__ import annotations

import json
import re
import statistics
import sys
import time
from pathlib import Path

import torch

from common import (bench_parser, dpap_window, interleaved_medians, load_bench_data,
                    median, merge_dpap_config, write_results)
from dpap_deploy.atomic import atomic_write_text
from dpap_deploy.compaction import compact
from dpap_deploy.counting import count_ops
from dpap_deploy.executor.run import outputs
from dpap_deploy.graph import build_graph
from dpap_deploy.masks import from_dpap_state
from dpap_deploy.serialize import load_model, save_model
from dpap_deploy.training import TrainConfig, evaluate, train

BASELINES = ("l1-structured", "rate-structured", "random-structured")


def train_and_compact(cfg: TrainConfig, data, label: str, run_dir: Path) -> dict:
    """Train ``cfg`` in ``run_dir`` (resumed if it holds an unfinished run: an interrupted
    benchmark re-run with the same command goes on where it stopped), compact and count it. The
    measured row and the compacted model are kept there, so a finished run is not redone."""
    row_path, model_path = run_dir / "row.json", run_dir / "compacted.pt"
    x = data.x_test
    if row_path.exists() and model_path.exists():
        row = json.loads(row_path.read_text())
        small, _, _ = load_model(model_path)
        return dict(row, _graph=build_graph(small, x[:2]))
    t0 = time.perf_counter()
    run = train(cfg, run_dir, resume=True, progress=False, data=data)
    wall = time.perf_counter() - t0
    model, T = run.model.eval(), cfg.time_steps
    if run.dpap is not None:
        masks, graph = from_dpap_state(run.dpap.state_dict()), run.dpap.graph
    elif run.baseline is not None:
        masks, graph = run.baseline.masks(), run.baseline.graph
    else:
        masks, graph = None, None
    small = compact(model, x[:200], masks, time_steps=T, graph=graph)
    ops = count_ops(small.model, x, T, graph=small.graph)
    accs = [h["test_acc"] for h in run.history]
    acc = evaluate(small.model, x, data.y_test, run.kind, T, torch.device("cpu"))
    assert acc == accs[-1], (label, acc, accs[-1])      # compaction changes nothing
    row = {"label": label, "seed": cfg.seed, "kind": run.kind, "final_acc": accs[-1],
           "best_acc": max(accs), "synops": ops.total("synops"), "macs": ops.total("macs"),
           "params": sum(p.numel() for p in small.model.parameters()),
           "kept": {lp.name: len(lp.keep_out) for lp in small.plan.layers},
           "removed_curve": [h["params_removed_fraction"] for h in run.history],
           "acc_curve": accs, "train_wall_s": wall}
    save_model(model_path, small.model, run.kind)
    atomic_write_text(row_path, json.dumps(row, indent=1) + "\n")
    return dict(row, _graph=small.graph)


def measure_latency(rows: list[dict], x: torch.Tensor, T: int, repeats: int) -> None:
    torch.set_num_threads(1)
    fns = [lambda g=r["_graph"]: outputs(g, x, T, batch_size=len(x)) for r in rows]
    for f in fns:                                       # warm-up: allocations, lazy builds
        f()
    for r, times in zip(rows, interleaved_medians(fns, repeats)):
        r["latency_ms"] = 1000 * median(times)


def group_key(r: dict) -> str:
    """The point a run belongs to across seeds: its method and, for DPAP and the baselines
    matched to it, the DPAP ``epsilon``."""
    return r["method"] if r.get("epsilon") is None else f"{r['method']} @ eps {r['epsilon']:g}"


def summarize(rows: list[dict], cost: str) -> list[dict]:
    """Mean and spread over seeds per point (method, epsilon), in the order first seen."""
    groups: dict[str, list[dict]] = {}
    for r in rows:
        groups.setdefault(group_key(r), []).append(r)
    none_acc = {r["seed"]: 100 * r["final_acc"] for r in rows if r["method"] == "none"}
    out = []
    for key, rs in groups.items():
        accs = [100 * r["final_acc"] for r in rs]
        # against the unpruned run of the same seed (same initial weights and data order)
        paired = [a - none_acc[r["seed"]] for a, r in zip(accs, rs) if r["seed"] in none_acc]
        out.append({"point": key, "method": rs[0]["method"], "seeds": len(rs),
                    "acc_mean": statistics.fmean(accs),
                    "acc_sd": statistics.stdev(accs) if len(rs) > 1 else 0.0,
                    "acc_min": min(accs), "acc_max": max(accs),
                    "vs_none_mean": statistics.fmean(paired) if paired else None,
                    "vs_none": paired,
                    cost: statistics.fmean(r[cost] for r in rs),
                    "params": statistics.fmean(r["params"] for r in rs),
                    "latency_ms": statistics.fmean(r["latency_ms"] for r in rs),
                    "kept": {n: statistics.fmean(r["kept"][n] for r in rs) for n in rs[0]["kept"]}})
    return out


def plot(rows: list[dict], summary: list[dict], cost: str, title: str, path) -> None:
    """Each run as a faint point, the mean over seeds per point with its standard deviation,
    and the Pareto front over the means."""
    from matplotlib.figure import Figure
    from dpap_deploy.report.plots import save_figure
    fig = Figure(figsize=(10, 4))
    axes = fig.subplots(1, 2, sharey=True)
    styles = {"none": ("k", "*"), "dpap": ("C0", "o"), "l1-structured": ("C1", "s"),
              "rate-structured": ("C2", "^"), "random-structured": ("C3", "v")}
    for ax, key, xlabel in ((axes[0], cost, f"compacted {cost} / sample"),
                            (axes[1], "latency_ms", "latency of the compacted network (ms)")):
        for method, (color, marker) in styles.items():
            runs = [r for r in rows if r["method"] == method]
            if runs:
                ax.scatter([r[key] for r in runs], [100 * r["final_acc"] for r in runs],
                           color=color, marker=marker, alpha=0.25, s=18)
            pts = sorted((m[key], m["acc_mean"], m["acc_sd"]) for m in summary
                         if m["method"] == method)
            if pts:
                xs, ys, sds = zip(*pts)
                ax.errorbar(xs, ys, yerr=sds, marker=marker, color=color, capsize=3,
                            ls="-" if len(pts) > 1 else "", label=method)
        front, best = [], -1.0                          # Pareto front over the means
        for c, a in sorted((m[key], m["acc_mean"]) for m in summary):
            if a > best:
                front.append((c, a))
                best = a
        ax.step(*zip(*front), where="post", color="0.6", lw=3, alpha=0.4, zorder=0,
                label="Pareto front (means)")
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("test accuracy (%)")
    axes[0].legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    save_figure(fig, path)


def markdown(summary: list[dict], cost: str) -> str:
    """The per-point means as a docs/results.md table."""
    none = next((m for m in summary if m["method"] == "none"), None)
    names = list(summary[0]["kept"]) if summary else []
    lines = [f"| network | seeds | acc mean ± sd (min-max) | acc vs none, per seed (points) "
             f"| {cost}/sample (compacted) | vs none | params (compacted) "
             f"| kept {' / '.join(names)} | latency ms |",
             "|---|---|---|---|---|---|---|---|---|"]
    for m in summary:
        rel = f"{100 * m[cost] / none[cost]:.1f}%" if none else ""
        kept = " / ".join(f"{v:g}" if v == int(v) else f"{v:.1f}" for v in m["kept"].values())
        lines.append(f"| {m['point']} | {m['seeds']} | {m['acc_mean']:.2f}% ± {m['acc_sd']:.2f} "
                     f"({m['acc_min']:.2f}-{m['acc_max']:.2f}) | "
                     f"{' / '.join(f'{d:+.2f}' for d in m['vs_none'])} | {m[cost]:,.0f} | {rel} "
                     f"| {m['params']:,.0f} | {kept} | {m['latency_ms']:.1f} |")
    return "\n".join(lines)


def slug(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "-", label).strip("-")


def main(argv=None) -> int:
    ap = bench_parser(__doc__, "6 epochs, 600 / 300 samples, epsilons 1.0 1.8, seed 0")
    ap.add_argument("--epsilons", type=float, nargs="+", default=[1.0, 1.5, 1.8])
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--latency-samples", type=int, default=256)
    ap.add_argument("--latency-repeats", type=int, default=5)
    ap.add_argument("--work-dir", help="where the runs are kept (default: "
                    "benchmarks/results/pareto_runs/<dataset>_<model>_<epochs>ep[_<subsets>]); "
                    "the same command run again resumes them")
    ap.add_argument("--figure")
    args = ap.parse_args(argv)
    if args.quick:
        args.epochs, args.train_subset, args.test_subset = 6, 600, 300
        args.epsilons, args.seeds = [1.0, 1.8], [0]
    data = load_bench_data(args.dataset, args.train_subset, args.test_subset, args.data_root)
    size = f"_{args.train_subset or 'all'}-{args.test_subset or 'all'}" \
        if args.train_subset or args.test_subset else ""
    work = Path(args.work_dir or f"benchmarks/results/pareto_runs/"
                f"{args.dataset}_{args.model}_{args.epochs}ep{size}")
    rows, cost = [], None
    for seed in args.seeds:
        base = dict(dataset=args.dataset, model=args.model, epochs=args.epochs, seed=seed,
                    batch_size=args.batch_size, device="cpu")
        none = dict(train_and_compact(TrainConfig(**base, dpap=False), data, "none",
                                      work / f"s{seed}" / "none"), method="none")
        cost = "synops" if none["kind"] == "snn" else "macs"
        rows.append(none)
        print(f"seed {seed} none: acc {none['final_acc']:.4f}, {cost} {none[cost]:,.0f}",
              flush=True)
        for eps in args.epsilons:
            label = f"dpap eps {eps:g}"
            cfg = TrainConfig(**base, dpap_config=merge_dpap_config(
                args.dpap_config, {"linear": {"epsilon": eps}}))
            dp = dict(train_and_compact(cfg, data, label, work / f"s{seed}" / slug(label)),
                      method="dpap", epsilon=eps)
            target = max(0.0, 1 - dp[cost] / none[cost])
            window = dpap_window(dp["removed_curve"])
            rows.append(dp)
            print(f"seed {seed} {label}: acc {dp['final_acc']:.4f}, {cost} {dp[cost]:,.0f} "
                  f"({target:.1%} removed), kept {dp['kept']}", flush=True)
            if target <= 0:
                print(f"  seed {seed}: DPAP removed no {cost} at eps {eps:g}: no baseline target",
                      flush=True)
                continue
            for b in BASELINES:
                cfg = TrainConfig(**base, dpap=False, baseline=b, prune_target=round(target, 4),
                                  prune_target_kind=cost, prune_window=window)
                label = f"{b} @ eps {eps:g}"
                r = dict(train_and_compact(cfg, data, label, work / f"s{seed}" / slug(label)),
                         method=b, epsilon=eps, target=target)
                rows.append(r)
                print(f"  seed {seed} {b}: acc {r['final_acc']:.4f}, {cost} {r[cost]:,.0f}, "
                      f"kept {r['kept']}", flush=True)
    measure_latency(rows, data.x_test[:args.latency_samples], TrainConfig(**base).time_steps,
                    args.latency_repeats)
    summary = summarize(rows, cost)
    print(f"\n{args.model} on {args.dataset} ({len(data.y_train)} train / {len(data.y_test)} "
          f"test, {args.epochs} epochs, seeds {' '.join(map(str, args.seeds))})")
    print(f"{'network':28s} {'seed':>4s} {'acc':>7s} {cost + '/sample':>16s} {'params':>9s} "
          f"{'latency ms':>11s}  kept")
    for r in rows:
        print(f"{r['label']:28s} {r['seed']:4d} {100 * r['final_acc']:6.2f}% {r[cost]:16,.0f} "
              f"{r['params']:9,d} {r['latency_ms']:11.1f}  {list(r['kept'].values())}")
    print(f"\n{'point (mean over seeds)':28s} {'acc':>7s} {'sd':>5s} {cost + '/sample':>16s} "
          f"{'params':>9s} {'latency ms':>11s}  kept")
    for m in summary:
        kept = " / ".join(f"{v:.1f}" for v in m["kept"].values())
        print(f"{m['point']:28s} {m['acc_mean']:6.2f}% {m['acc_sd']:5.2f} {m[cost]:16,.0f} "
              f"{m['params']:9,.0f} {m['latency_ms']:11.1f}  {kept}")
    print("\n" + markdown(summary, cost))
    title = (f"{args.model}, {args.dataset} ({len(data.y_train)} train / {len(data.y_test)} test, "
             f"{args.epochs} epochs, seeds {', '.join(map(str, args.seeds))})")
    plot(rows, summary, cost, title, Path(args.figure or f"docs/img/pareto_{args.model}.png"))
    for r in rows:
        r.pop("_graph")
    write_results(args.out or f"benchmarks/results/pareto_{args.dataset}_{args.model}.json",
                  {"args": vars(args), "cost": cost, "runs": rows, "summary": summary})
    return 0


if __name__ == "__main__":
    sys.exit(main())
