"""Conv-channel pruning calibration: per-layer kept units and accuracy over the conv layers'
initial survival value ``beta`` (the other parameters from ``--dpap-config``, e.g. the short
preset), against the same run without pruning.

    .venv/bin/python benchmarks/bench_conv_calibration.py --dataset fashion-mnist \\
        --data-root /usr/share/datasets/fashion-mnist --model snn-mnist --epochs 12 \\
        --train-subset 2000 --test-subset 1000 --dpap-config '{"preset": "short"}' \\
        --conv-beta 3 1.5 1.0

Kept units are given twice: under DPAP's masks, and after compaction (derived deaths removed).
"""
from __future__ import annotations

import sys
import tempfile

from common import bench_parser, load_bench_data, merge_dpap_config, write_results
from dpap_deploy.compaction import compact
from dpap_deploy.masks import from_dpap_state
from dpap_deploy.training import TrainConfig, train


def measure(cfg: TrainConfig, data, label: str) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        run = train(cfg, tmp, progress=False, data=data)
    accs = [h["test_acc"] for h in run.history]
    row = {"label": label, "final_acc": accs[-1], "best_acc": max(accs),
           "params_removed": run.params_removed_fraction(), "acc_curve": accs,
           "layers": {s["name"]: [s["neurons_kept"], s["neurons_total"]] for s in run.layer_stats()}}
    if run.dpap is not None:
        x = data.x_test[:200]
        small = compact(run.model.eval(), x, from_dpap_state(run.dpap.state_dict()),
                        time_steps=cfg.time_steps, graph=run.dpap.graph)
        row["compacted"] = {lp.name: len(lp.keep_out) for lp in small.plan.layers}
    return row


def main(argv=None) -> int:
    ap = bench_parser(__doc__, "8 epochs, 1000 samples", many_seeds=False)
    ap.add_argument("--conv-beta", type=float, nargs="+", default=[3.0, 1.5, 1.0])
    args = ap.parse_args(argv)
    if args.quick:
        args.epochs, args.train_subset, args.test_subset = 8, 1000, 500
    data = load_bench_data(args.dataset, args.train_subset, args.test_subset, args.data_root)
    base = dict(dataset=args.dataset, model=args.model, epochs=args.epochs, seed=args.seed,
                device="cpu")
    rows = [measure(TrainConfig(**base, dpap=False), data, "none")]
    print(f"none: {rows[0]['final_acc']:.4f}", flush=True)
    for beta in args.conv_beta:
        cfg = TrainConfig(**base, dpap_config=merge_dpap_config(args.dpap_config,
                                                                 {"conv": {"beta": beta}}))
        rows.append(dict(measure(cfg, data, f"conv beta {beta:g}"), conv_beta=beta))
        print(f"conv beta {beta:g}: final {rows[-1]['final_acc']:.4f}, removed "
              f"{rows[-1]['params_removed']:.1%}, kept {rows[-1]['layers']}, compacted "
              f"{rows[-1]['compacted']}", flush=True)
    write_results(args.out or f"benchmarks/results/conv_calibration_{args.dataset}_{args.model}.json",
                  {"args": vars(args), "runs": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
