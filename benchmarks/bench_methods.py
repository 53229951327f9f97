"""DPAP vs no pruning vs magnitude pruning vs random pruning, same epochs and seeds; and
convergence (epochs to reach the no-pruning run's best accuracy).

    .venv/bin/python benchmarks/bench_methods.py --dataset digits --model snn-digits
    .venv/bin/python benchmarks/bench_methods.py --dataset fashion-mnist --model ann-lenet \\
        --epochs 15 --dpap-config '{"preset": "short"}'
    .venv/bin/python benchmarks/bench_methods.py --dataset fashion-mnist --model snn-mnist \\
        --train-subset 20000 --epochs 12 --dpap-config '{"preset": "short"}'
    ... --quick   (1 seed, few epochs: a smoke run)

For each seed: DPAP first; its final fraction of removed parameters is the target of the
baselines, and the epochs in which it pruned (first death to 90% of the final) are their
pruning window (global L1 magnitude, gradual cubic schedule; random, same schedule). Every run
uses the same data order, initial weights and optimizer. Reported per method: final and best
test accuracy, parameters removed, non-zero parameters, SynOps (SNN) or MACs (ANN) per test
sample with non-zero weights, and epochs to reach the no-pruning run's best accuracy.
"""
from __future__ import annotations

import statistics
import sys

from common import (bench_parser, dpap_window, epochs_to_reach, load_bench_data,
                    run_and_measure, write_results)
from dpap_deploy.training import TrainConfig

METHODS = ("dpap", "none", "magnitude", "random")


def main(argv=None) -> int:
    ap = bench_parser(__doc__, "1 seed, 15 epochs, small subsets")
    ap.add_argument("--batch-size", type=int, default=64)
    args = ap.parse_args(argv)
    if args.quick:
        args.seeds, args.epochs = args.seeds[:1], 15
        args.train_subset, args.test_subset = args.train_subset or 2000, args.test_subset or 500
    data = load_bench_data(args.dataset, args.train_subset, args.test_subset, args.data_root)
    base = dict(dataset=args.dataset, model=args.model, epochs=args.epochs,
                batch_size=args.batch_size, device="cpu")
    rows = []
    for seed in args.seeds:
        dp = run_and_measure(TrainConfig(**base, seed=seed, dpap_config=args.dpap_config), data, "dpap")
        target, window = dp["params_removed"], dpap_window(dp["removed_curve"])
        runs = {"dpap": dp, "none": run_and_measure(TrainConfig(**base, seed=seed, dpap=False), data, "none")}
        for m in ("magnitude", "random"):
            runs[m] = run_and_measure(TrainConfig(**base, seed=seed, dpap=False, baseline=m,
                                                  prune_target=target, prune_window=window), data, m)
        best_none = runs["none"]["best_acc"]
        for r in runs.values():
            r["epochs_to_baseline_best"] = epochs_to_reach(r["acc_curve"], best_none)
            r["prune_window"] = window
            rows.append(r)
        print(f"seed {seed}: " + ", ".join(f"{m} {runs[m]['final_acc']:.4f}" for m in METHODS), flush=True)
    ops_key = "synops" if args.model.startswith("snn") else "macs"
    print(f"\n{args.model} on {args.dataset} ({len(data.y_train)} train / {len(data.y_test)} test, "
          f"{args.epochs} epochs, seeds {args.seeds})")
    print(f"{'method':10s} {'final acc':>10s} {'best acc':>9s} {'removed':>8s} {'nonzero':>9s} "
          f"{ops_key + '/sample':>14s} {'epochs to base best':>20s}")
    summary = {}
    for m in METHODS:
        rs = [r for r in rows if r["label"] == m]
        mean = lambda k: statistics.mean(r[k] for r in rs)  # noqa: E731
        reach = [r["epochs_to_baseline_best"] for r in rs]
        summary[m] = {k: mean(k) for k in ("final_acc", "best_acc", "params_removed",
                                           "params_nonzero", ops_key)}
        summary[m]["epochs_to_baseline_best"] = reach
        print(f"{m:10s} {100 * mean('final_acc'):9.2f}% {100 * mean('best_acc'):8.2f}% "
              f"{100 * mean('params_removed'):7.1f}% {mean('params_nonzero'):9,.0f} "
              f"{mean(ops_key):14,.0f} {str(reach):>20s}")
    write_results(args.out or f"benchmarks/results/methods_{args.dataset}_{args.model}.json",
                  {"args": vars(args), "summary": summary, "runs": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
