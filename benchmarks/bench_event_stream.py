"""The event data path alone (no network): memory held and samples/s of the first epoch (binning,
cache cold) and of a cached epoch, for frames binned up front into memory and for frames binned
on demand (``DPAP_EVENT_FRAMES=stream``) with 0 and 2 DataLoader workers.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_event_stream.py [--train N --test N]

The tree is Fashion-MNIST (the Debian package) turned into N-MNIST saccade events
(``write_nmnist_tree``, as ``dpap-deploy synth-events``), written once under ``--root``. Every
configuration runs in a fresh process with the cache emptied first; an "epoch" is every batch
of the training split in the (seed, epoch) order, as ``train_epoch`` receives them. Memory:
peak resident set (``VmHWM``) of the process and of each worker (forked workers share the
parent's pages, so their figures overlap the parent's), and the bytes of frames held.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from common import write_results

MODES = [("memory", 0), ("stream", 0), ("stream", 2)]
REPO = Path(__file__).resolve().parents[1]      # the children import this checkout


def _hwm_mb(pid: int | str = "self") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def child(root: str, workers: int, batch: int, T: int) -> dict:
    import torch
    from dpap_deploy.data import load_dataset
    from dpap_deploy.data.loader import EpochBatchSampler, epoch_batches, make_loader
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    d = load_dataset("nmnist", root, T)
    load_s = time.perf_counter() - t0
    held = sum(x.nbytes for x in (d.x_train, d.x_test) if isinstance(x, torch.Tensor))
    sampler = EpochBatchSampler(len(d.y_train), batch, 0)
    loader = make_loader(d.x_train, d.y_train, sampler, workers, False) if workers else None
    rates, worker_hwm = [], []
    for epoch in range(2):
        sampler.set_epoch(epoch)
        t0, n = time.perf_counter(), 0
        for x, y in epoch_batches(d.x_train, d.y_train, sampler, loader):
            n += len(y)
        rates.append(n / (time.perf_counter() - t0))
    if loader is not None:
        worker_hwm = [_hwm_mb(w.pid) for w in loader._iterator._workers]
    return {"load_s": load_s, "first_epoch_sps": rates[0], "cached_epoch_sps": rates[1],
            "frames_held_mb": held / 2**20, "peak_rss_mb": _hwm_mb(),
            "worker_peak_rss_mb": worker_hwm, "n_train": len(d.y_train)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", default="benchmarks/data/fmnist-events")
    ap.add_argument("--train", type=int, default=10000)
    ap.add_argument("--test", type=int, default=2000)
    ap.add_argument("--batch-size", type=int, default=100)
    ap.add_argument("--time-steps", type=int, default=8)
    ap.add_argument("--out", default="benchmarks/results/event_stream.json")
    ap.add_argument("--child", nargs=2, metavar=("ROOT", "WORKERS"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child[0], int(args.child[1]), args.batch_size,
                               args.time_steps)))
        return 0
    root = Path(args.root) / f"{args.train}-{args.test}"
    if not (root / "NMNIST" / "Test").exists():
        from dpap_deploy.data import load_dataset
        from dpap_deploy.data.saccade import write_nmnist_tree
        fm = load_dataset("fashion-mnist")
        for split, x, y, n in (("train", fm.x_train, fm.y_train, args.train),
                               ("test", fm.x_test, fm.y_test, args.test)):
            write_nmnist_tree(root, split, x[:n, 0].numpy(), y[:n].numpy())
    rows = []
    for mode, workers in MODES:
        shutil.rmtree(root / ".dpap-cache", ignore_errors=True)
        env = dict(os.environ, DPAP_EVENT_FRAMES=mode, OMP_NUM_THREADS="1",
                   PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
        cmd = [sys.executable, __file__, "--child", str(root), str(workers),
               "--batch-size", str(args.batch_size), "--time-steps", str(args.time_steps)]
        cold = json.loads(subprocess.run(cmd, env=env, check=True, capture_output=True,
                                         text=True).stdout.splitlines()[-1])
        warm = json.loads(subprocess.run(cmd, env=env, check=True, capture_output=True,
                                         text=True).stdout.splitlines()[-1])
        rows.append({"mode": mode, "workers": workers, "cold": cold, "warm": warm})
    print(f"N-MNIST-style events of Fashion-MNIST: {args.train} train files, T = "
          f"{args.time_steps}, batch {args.batch_size}, one thread per process; samples/s of "
          "the training split")
    print(f"{'path':8s} {'workers':>7s} {'load s':>7s} {'epoch 1':>8s} {'epoch 2':>8s} "
          f"{'rerun load':>10s} {'rerun ep 1':>10s} {'frames MB':>9s} {'peak RSS MB':>11s} "
          f"{'worker RSS MB':>13s}")
    for r in rows:
        c, w = r["cold"], r["warm"]
        print(f"{r['mode']:8s} {r['workers']:7d} {c['load_s']:7.1f} {c['first_epoch_sps']:8.0f} "
              f"{c['cached_epoch_sps']:8.0f} {w['load_s']:10.1f} {w['first_epoch_sps']:10.0f} "
              f"{c['frames_held_mb']:9.0f} {c['peak_rss_mb']:11.0f} "
              f"{'/'.join(f'{m:.0f}' for m in c['worker_peak_rss_mb']) or '-':>13s}")
    write_results(args.out, {"args": vars(args), "runs": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
