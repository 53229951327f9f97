"""Pruning-rate sweep (paper Fig. 2G-I): accuracy vs fraction pruned over the linear layers'
``epsilon`` (decay value) and ``eta`` (decay rate).

    .venv/bin/python benchmarks/bench_sweep.py [--dataset digits --model snn-digits] [--quick]
"""
from __future__ import annotations

import argparse
import sys

from common import load_bench_data, run_and_measure, write_results
from dpap_deploy.training import TrainConfig

GRID = [(0.5, 13), (1.0, 13), (1.5, 13), (1.8, 13), (1.5, 6), (1.5, 25)]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="digits")
    ap.add_argument("--model", default="snn-digits")
    ap.add_argument("--epochs", type=int, default=60)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--train-subset", type=int)
    ap.add_argument("--test-subset", type=int)
    ap.add_argument("--quick", action="store_true", help="15 epochs, 3 grid points")
    ap.add_argument("--out")
    args = ap.parse_args(argv)
    grid = GRID[1:4] if args.quick else GRID
    epochs = 15 if args.quick else args.epochs
    data = load_bench_data(args.dataset, args.train_subset, args.test_subset)
    base = run_and_measure(TrainConfig(dataset=args.dataset, model=args.model, epochs=epochs,
                                       seed=args.seed, device="cpu", dpap=False), data, "none")
    rows = [dict(base, epsilon=None, eta=None)]
    for eps, eta in grid:
        cfg = TrainConfig(dataset=args.dataset, model=args.model, epochs=epochs, seed=args.seed,
                          device="cpu", dpap_config={"linear": {"epsilon": eps, "eta": eta}})
        rows.append(dict(run_and_measure(cfg, data, f"eps {eps} eta {eta}"), epsilon=eps, eta=eta))
        print(f"epsilon {eps:4.2f} eta {eta:3d}: removed {rows[-1]['params_removed']:.1%}, "
              f"final {rows[-1]['final_acc']:.4f}", flush=True)
    print(f"\n{args.model} on {args.dataset}, {epochs} epochs, seed {args.seed}")
    print(f"{'linear epsilon':>14s} {'eta':>4s} {'removed':>8s} {'final acc':>10s} {'best acc':>9s}")
    for r in rows:
        eps = "-" if r["epsilon"] is None else f"{r['epsilon']:.2f}"
        eta = "-" if r["eta"] is None else str(r["eta"])
        print(f"{eps:>14s} {eta:>4s} {100 * r['params_removed']:7.1f}% {100 * r['final_acc']:9.2f}% "
              f"{100 * r['best_acc']:8.2f}%")
    write_results(args.out or f"benchmarks/results/sweep_{args.dataset}_{args.model}.json",
                  {"args": vars(args), "runs": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
