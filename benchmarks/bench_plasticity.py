"""Plasticity ablation (paper Fig. 4H): DPAP with BCM (default) vs Hebb vs STDP as the
synaptic importance, same settings and seeds; accuracy and fraction pruned.

    .venv/bin/python benchmarks/bench_plasticity.py [--dataset digits --model snn-digits] [--quick]
"""
from __future__ import annotations

import statistics
import sys

from common import (bench_parser, load_bench_data, merge_dpap_config, run_and_measure,
                    write_results)
from dpap_deploy.dpap.rules import RULES
from dpap_deploy.training import TrainConfig


def main(argv=None) -> int:
    ap = bench_parser(__doc__, "1 seed, 15 epochs")
    args = ap.parse_args(argv)
    seeds, epochs = (args.seeds[:1], 15) if args.quick else (args.seeds, args.epochs)
    data = load_bench_data(args.dataset, args.train_subset, args.test_subset, args.data_root)
    rows = []
    rules = [r for r in RULES if not (RULES[r].needs_time and args.model.startswith("ann"))]
    for rule in rules:
        for seed in seeds:
            cfg = TrainConfig(dataset=args.dataset, model=args.model, epochs=epochs, seed=seed,
                              device="cpu", dpap_config=merge_dpap_config(args.dpap_config, {"rule": rule}))
            rows.append(dict(run_and_measure(cfg, data, rule), rule=rule))
            print(f"{rule} seed {seed}: final {rows[-1]['final_acc']:.4f}, removed "
                  f"{rows[-1]['params_removed']:.1%}, {rows[-1]['wall_s']:.0f}s", flush=True)
    print(f"\n{args.model} on {args.dataset}, {epochs} epochs, seeds {seeds}")
    print(f"{'rule':6s} {'final acc':>10s} {'best acc':>9s} {'removed':>8s} {'s/run':>6s}")
    for rule in rules:
        rs = [r for r in rows if r["rule"] == rule]
        m = lambda k: statistics.mean(r[k] for r in rs)  # noqa: E731
        print(f"{rule:6s} {100 * m('final_acc'):9.2f}% {100 * m('best_acc'):8.2f}% "
              f"{100 * m('params_removed'):7.1f}% {m('wall_s'):6.0f}")
    write_results(args.out or f"benchmarks/results/plasticity_{args.dataset}_{args.model}.json",
                  {"args": vars(args), "runs": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
