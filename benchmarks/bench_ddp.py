"""Training throughput (samples/s) with 1 and 2 data-parallel processes side by side, and with
one GPU when CUDA is present.

    .venv/bin/python benchmarks/bench_ddp.py [--quick] [--model M] [--batch-size B] [--out FILE]

Each configuration runs in fresh processes started like torchrun's (the environment torchrun
sets, gloo on CPU): every process builds the same run and trains whole epochs (DPAP active,
global batch ``B`` cut into one slice per process); the figure is the training samples of an
epoch over the median epoch time, evaluation and process start excluded. Every process gets
``--threads`` torch threads (default 1).

On a 2-core machine the 2 processes share the cores the 1 process has, so the comparison shows
the cost of data parallelism (all-reduces of gradients and DPAP sums, duplicated Python work),
not a speed-up; the speed-up comes from one process per GPU (or per machine).
"""
from __future__ import annotations

import argparse
import os
import socket
import statistics
import sys
import time

import torch
import torch.multiprocessing as mp

from common import write_results

PRIME = {"conv": {"warmup": 0}, "linear": {"warmup": 0}}


def _rank(rank: int, world: int, port: int, args: dict, queue) -> None:
    os.environ.update({"RANK": str(rank), "WORLD_SIZE": str(world), "LOCAL_RANK": str(rank),
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    torch.set_num_threads(args["threads"])
    from dpap_deploy import distributed
    from dpap_deploy.data import load_dataset
    from dpap_deploy.training import TrainConfig, build_run, train_epoch

    d = distributed.setup(args["device"])
    data = load_dataset(args["dataset"])
    if args["train_subset"]:
        data.x_train, data.y_train = data.x_train[:args["train_subset"]], data.y_train[:args["train_subset"]]
    run = build_run(TrainConfig(dataset=args["dataset"], model=args["model"],
                                batch_size=args["batch_size"], epochs=100, device=args["device"],
                                dpap_config=PRIME, workers=args["workers"]), data)
    times = []
    for e in range(args["epochs"] + 1):          # the first epoch warms up (allocator, workers)
        d.barrier()
        if run.device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        train_epoch(run, progress=False)
        run.dpap.end_epoch()
        if run.device.type == "cuda":
            torch.cuda.synchronize()
        d.barrier()
        run.history.append({})                   # advance the epoch (the order depends on it)
        if e:
            times.append(time.perf_counter() - t0)
    if d.is_main:
        queue.put({"processes": world, "device": str(run.device), "epoch_s": times,
                   "samples_per_s": len(data.y_train) / statistics.median(times)})
    distributed.shutdown()


def measure(world: int, args: dict) -> dict:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    procs = [ctx.Process(target=_rank, args=(r, world, port, args, queue)) for r in range(world)]
    for p in procs:
        p.start()
    result = queue.get(timeout=1800)
    for p in procs:
        p.join()
    return result


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="one timed epoch on 600 samples")
    ap.add_argument("--dataset", default="digits")
    ap.add_argument("--model", default="snn-digits")
    ap.add_argument("--batch-size", type=int, default=100, help="global batch")
    ap.add_argument("--workers", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1, help="torch threads per process")
    ap.add_argument("--out", default="benchmarks/results/ddp.json")
    a = ap.parse_args(argv)
    args = {"dataset": a.dataset, "model": a.model, "batch_size": a.batch_size,
            "workers": a.workers, "threads": a.threads, "epochs": 1 if a.quick else 3,
            "train_subset": 600 if a.quick else None, "device": "cpu"}
    rows = [measure(1, args), measure(2, args)]
    if torch.cuda.is_available():
        rows.append(measure(1, dict(args, device="cuda")))
    print(f"{'processes':>9s} {'device':>8s} {'samples/s':>10s}  (global batch {a.batch_size}, "
          f"{a.model}, {os.cpu_count()} CPU cores, {a.threads} thread(s) per process)")
    for r in rows:
        print(f"{r['processes']:9d} {r['device']:>8s} {r['samples_per_s']:10.1f}")
    if os.cpu_count() and os.cpu_count() <= 2:
        print("note: the processes share this machine's cores: this shows the overhead of data "
              "parallelism, not a speed-up")
    write_results(a.out, {"args": args, "cpu_cores": os.cpu_count(), "results": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
