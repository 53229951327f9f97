"""The event pipeline: Fashion-MNIST turned into N-MNIST-style saccade events, read by tonic,
binned into T frames, and the paper's SNN (34x34x2 input) trained with and without DPAP.

    .venv/bin/python benchmarks/bench_events.py [--train N --test N --epochs E] [--quick]

Events are written once under ``--root`` (default ``benchmarks/data/fmnist-events``) and
reused; binned frames are cached there too.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from common import add_dpap_config_arg, run_and_measure, write_results
from dpap_deploy.data import load_dataset
from dpap_deploy.data.saccade import write_nmnist_tree
from dpap_deploy.training import TrainConfig


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", default="benchmarks/data/fmnist-events")
    ap.add_argument("--train", type=int, default=10000)
    ap.add_argument("--test", type=int, default=2000)
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="2000/500 samples, 12 epochs")
    add_dpap_config_arg(ap)
    ap.add_argument("--out")
    args = ap.parse_args(argv)
    if args.quick:
        args.train, args.test, args.epochs = 2000, 500, 12
    root = Path(args.root) / f"{args.train}-{args.test}"
    t0 = time.perf_counter()
    if not (root / "NMNIST" / "Test").exists():
        fm = load_dataset("fashion-mnist")
        write_nmnist_tree(root, "train", fm.x_train[:args.train, 0].numpy(), fm.y_train[:args.train].numpy())
        write_nmnist_tree(root, "test", fm.x_test[:args.test, 0].numpy(), fm.y_test[:args.test].numpy())
    synth_s = time.perf_counter() - t0
    data = load_dataset("nmnist", str(root), 8)
    rows = []
    for dpap in (True, False):
        cfg = TrainConfig(dataset="nmnist", data_root=str(root), model="snn-mnist", epochs=args.epochs,
                          batch_size=64, seed=args.seed, device="cpu", dpap=dpap,
                          dpap_config=args.dpap_config if dpap else None)
        rows.append(run_and_measure(cfg, data, "dpap" if dpap else "none"))
        print(f"{rows[-1]['label']}: final {rows[-1]['final_acc']:.4f}, removed "
              f"{rows[-1]['params_removed']:.1%}, {rows[-1]['wall_s']:.0f}s", flush=True)
    print(f"\nsnn-mnist on saccade events of Fashion-MNIST ({args.train} train / {args.test} test, "
          f"T = 8 bins, {args.epochs} epochs); event synthesis {synth_s:.0f}s")
    print(f"{'method':6s} {'final acc':>10s} {'best acc':>9s} {'removed':>8s} {'SynOps/sample':>14s}")
    for r in rows:
        print(f"{r['label']:6s} {100 * r['final_acc']:9.2f}% {100 * r['best_acc']:8.2f}% "
              f"{100 * r['params_removed']:7.1f}% {r['synops']:14,.0f}")
    write_results(args.out or "benchmarks/results/events_fmnist.json",
                  {"args": vars(args), "synthesis_s": synth_s, "runs": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
