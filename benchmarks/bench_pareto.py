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
samples (batch of that size, one torch thread), interleaved across networks. Writes
``benchmarks/results/pareto_<dataset>_<model>.json`` and ``docs/img/pareto_<model>.png``.
"""
from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import torch

from common import (bench_parser, dpap_window, interleaved_medians, load_bench_data,
                    median, merge_dpap_config, write_results)
from dpap_deploy.compaction import compact, masks_from_dpap_state
from dpap_deploy.counting import count_ops
from dpap_deploy.graph import outputs
from dpap_deploy.training import TrainConfig, evaluate, train

BASELINES = ("l1-structured", "rate-structured", "random-structured")


def train_and_compact(cfg: TrainConfig, data, label: str) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        run = train(cfg, tmp, progress=False, data=data)
        wall = time.perf_counter() - t0
    model, T, x = run.model.eval(), cfg.time_steps, data.x_test
    if run.dpap is not None:
        masks, graph = masks_from_dpap_state(run.dpap.state_dict()), run.dpap.graph
    elif run.baseline is not None:
        masks, graph = run.baseline.masks(), run.baseline.graph
    else:
        masks, graph = None, None
    small = compact(model, x[:200], masks, time_steps=T, graph=graph)
    ops = count_ops(small.model, x, T, graph=small.graph)
    accs = [h["test_acc"] for h in run.history]
    acc = evaluate(small.model, x, data.y_test, run.kind, T, torch.device("cpu"))
    assert acc == accs[-1], (label, acc, accs[-1])      # compaction changes nothing
    return {"label": label, "kind": run.kind, "final_acc": accs[-1], "best_acc": max(accs),
            "synops": ops.total("synops"), "macs": ops.total("macs"),
            "params": sum(p.numel() for p in small.model.parameters()),
            "kept": {lp.name: len(lp.keep_out) for lp in small.plan.layers},
            "removed_curve": [h["params_removed_fraction"] for h in run.history],
            "acc_curve": accs, "train_wall_s": wall, "_graph": small.graph}


def measure_latency(rows: list[dict], x: torch.Tensor, T: int, repeats: int) -> None:
    torch.set_num_threads(1)
    fns = [lambda g=r["_graph"]: outputs(g, x, T, batch_size=len(x)) for r in rows]
    for f in fns:                                       # warm-up: allocations, lazy builds
        f()
    for r, times in zip(rows, interleaved_medians(fns, repeats)):
        r["latency_ms"] = 1000 * median(times)


def plot(rows: list[dict], cost: str, title: str, path) -> None:
    from matplotlib.figure import Figure
    from dpap_deploy.report.plots import save_figure
    fig = Figure(figsize=(10, 4))
    axes = fig.subplots(1, 2, sharey=True)
    styles = {"none": ("k", "*"), "dpap": ("C0", "o"), "l1-structured": ("C1", "s"),
              "rate-structured": ("C2", "^"), "random-structured": ("C3", "v")}
    for ax, key, xlabel in ((axes[0], cost, f"compacted {cost} / sample"),
                            (axes[1], "latency_ms", "latency of the compacted network (ms)")):
        for method, (color, marker) in styles.items():
            pts = sorted((r[key], 100 * r["final_acc"]) for r in rows if r["method"] == method)
            if pts:
                ax.plot(*zip(*pts), marker=marker, color=color, ls="-" if len(pts) > 1 else "",
                        label=method)
        front, best = [], -1.0                          # Pareto front over all networks
        for c, a in sorted((r[key], 100 * r["final_acc"]) for r in rows):
            if a > best:
                front.append((c, a))
                best = a
        ax.step(*zip(*front), where="post", color="0.6", lw=3, alpha=0.4, zorder=0,
                label="Pareto front")
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("test accuracy (%)")
    axes[0].legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    save_figure(fig, path)


def main(argv=None) -> int:
    ap = bench_parser(__doc__, "6 epochs, 600 / 300 samples, epsilons 1.0 1.8", many_seeds=False)
    ap.add_argument("--epsilons", type=float, nargs="+", default=[1.0, 1.5, 1.8])
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--latency-samples", type=int, default=256)
    ap.add_argument("--latency-repeats", type=int, default=5)
    ap.add_argument("--figure")
    args = ap.parse_args(argv)
    if args.quick:
        args.epochs, args.train_subset, args.test_subset = 6, 600, 300
        args.epsilons = [1.0, 1.8]
    data = load_bench_data(args.dataset, args.train_subset, args.test_subset, args.data_root)
    base = dict(dataset=args.dataset, model=args.model, epochs=args.epochs, seed=args.seed,
                batch_size=args.batch_size, device="cpu")
    none = dict(train_and_compact(TrainConfig(**base, dpap=False), data, "none"), method="none")
    cost = "synops" if none["kind"] == "snn" else "macs"
    rows = [none]
    print(f"none: acc {none['final_acc']:.4f}, {cost} {none[cost]:,.0f}", flush=True)
    for eps in args.epsilons:
        cfg = TrainConfig(**base, dpap_config=merge_dpap_config(
            args.dpap_config, {"linear": {"epsilon": eps}}))
        dp = dict(train_and_compact(cfg, data, f"dpap eps {eps:g}"), method="dpap", epsilon=eps)
        target = max(0.0, 1 - dp[cost] / none[cost])
        window = dpap_window(dp["removed_curve"])
        rows.append(dp)
        print(f"dpap eps {eps:g}: acc {dp['final_acc']:.4f}, {cost} {dp[cost]:,.0f} "
              f"({target:.1%} removed), kept {dp['kept']}", flush=True)
        for b in BASELINES:
            cfg = TrainConfig(**base, dpap=False, baseline=b, prune_target=round(target, 4),
                              prune_target_kind=cost, prune_window=window)
            r = dict(train_and_compact(cfg, data, f"{b} @ eps {eps:g}"), method=b,
                     epsilon=eps, target=target)
            rows.append(r)
            print(f"  {b}: acc {r['final_acc']:.4f}, {cost} {r[cost]:,.0f}, kept {r['kept']}",
                  flush=True)
    measure_latency(rows, data.x_test[:args.latency_samples], TrainConfig(**base).time_steps,
                    args.latency_repeats)
    print(f"\n{args.model} on {args.dataset} ({len(data.y_train)} train / {len(data.y_test)} "
          f"test, {args.epochs} epochs, seed {args.seed})")
    print(f"{'network':28s} {'acc':>7s} {cost + '/sample':>16s} {'params':>9s} {'latency ms':>11s}")
    for r in rows:
        print(f"{r['label']:28s} {100 * r['final_acc']:6.2f}% {r[cost]:16,.0f} {r['params']:9,d} "
              f"{r['latency_ms']:11.1f}")
    title = (f"{args.model}, {args.dataset} ({len(data.y_train)} train / {len(data.y_test)} test, "
             f"{args.epochs} epochs, seed {args.seed})")
    plot(rows, cost, title, Path(args.figure or f"docs/img/pareto_{args.model}.png"))
    for r in rows:
        r.pop("_graph")
    write_results(args.out or f"benchmarks/results/pareto_{args.dataset}_{args.model}.json",
                  {"args": vars(args), "cost": cost, "runs": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
