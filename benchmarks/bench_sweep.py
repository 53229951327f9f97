"""Pruning-rate sweep (paper Fig. 2G-I): accuracy vs fraction pruned over the linear layers'
``epsilon`` (decay value) and ``eta`` (decay rate).

    .venv/bin/python benchmarks/bench_sweep.py [--dataset digits --model snn-digits] [--quick]
    ... --dpap-config JSON --grid 1.0:4 1.5:4   (a short schedule and its own grid)

Each grid point is ``EPSILON:ETA`` for the linear layers, applied on top of ``--dpap-config``.
"""
from __future__ import annotations

import argparse
import sys

from common import (bench_parser, load_bench_data, merge_dpap_config, run_and_measure,
                    write_results)
from dpap_deploy.training import TrainConfig

GRID = [(0.5, 13), (1.0, 13), (1.5, 13), (1.8, 13), (1.5, 6), (1.5, 25)]


def _grid_point(text: str) -> tuple[float, float]:
    try:
        eps, eta = (float(v) for v in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"grid point {text!r} is not EPSILON:ETA, e.g. 1.5:4")
    return eps, eta


def main(argv=None) -> int:
    ap = bench_parser(__doc__, "15 epochs, 3 grid points", many_seeds=False)
    ap.add_argument("--grid", nargs="+", type=_grid_point, metavar="EPS:ETA",
                    help="linear (epsilon, eta) points; default: " +
                         " ".join(f"{e}:{n}" for e, n in GRID))
    args = ap.parse_args(argv)
    grid = args.grid or (GRID[1:4] if args.quick else GRID)
    epochs = 15 if args.quick else args.epochs
    data = load_bench_data(args.dataset, args.train_subset, args.test_subset, args.data_root)
    base = run_and_measure(TrainConfig(dataset=args.dataset, model=args.model, epochs=epochs,
                                       seed=args.seed, device="cpu", dpap=False), data, "none")
    rows = [dict(base, epsilon=None, eta=None)]
    for eps, eta in grid:
        cfg = TrainConfig(dataset=args.dataset, model=args.model, epochs=epochs, seed=args.seed,
                          device="cpu", dpap_config=merge_dpap_config(
                              args.dpap_config, {"linear": {"epsilon": eps, "eta": eta}}))
        rows.append(dict(run_and_measure(cfg, data, f"eps {eps} eta {eta}"), epsilon=eps, eta=eta))
        print(f"epsilon {eps:4.2f} eta {eta:4g}: removed {rows[-1]['params_removed']:.1%}, "
              f"final {rows[-1]['final_acc']:.4f}", flush=True)
    print(f"\n{args.model} on {args.dataset}, {epochs} epochs, seed {args.seed}")
    print(f"{'linear epsilon':>14s} {'eta':>4s} {'removed':>8s} {'final acc':>10s} {'best acc':>9s}")
    for r in rows:
        eps = "-" if r["epsilon"] is None else f"{r['epsilon']:.2f}"
        eta = "-" if r["eta"] is None else f"{r['eta']:g}"
        print(f"{eps:>14s} {eta:>4s} {100 * r['params_removed']:7.1f}% {100 * r['final_acc']:9.2f}% "
              f"{100 * r['best_acc']:8.2f}%")
    write_results(args.out or f"benchmarks/results/sweep_{args.dataset}_{args.model}.json",
                  {"args": vars(args), "runs": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
