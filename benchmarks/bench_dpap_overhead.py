"""Training-epoch time with and without DPAP, side by side in one run, on the same data.

    .venv/bin/python benchmarks/bench_dpap_overhead.py [--quick] [--out FILE]

For each model, two runs are built from the same seed (same initial weights, same batches):
a baseline and a DPAP run whose bookkeeping is fully active (warm-up 0, and one priming epoch
so that masks exist and are re-applied after every step). Epochs are then timed alternately,
baseline and DPAP, and the ratio of the medians is reported. A DPAP epoch includes its
``end_epoch`` (survival update and pruning); neither includes the test evaluation.

Data: real images. The 28x28 networks (the paper's MNIST SNN and LeNet) get the
scikit-learn digits upsampled to 28x28 (bilinear): timing depends on tensor shapes, not on
the pixels; the 8x8 defaults get the digits as they are.
"""
from __future__ import annotations

import argparse
import sys
import time

import torch

from common import digits_28, interleaved_medians, median, write_results
from dpap_deploy.data import Dataset, load_dataset
from dpap_deploy.training import TrainConfig, build_run, train_epoch

ACTIVE = {"conv": {"warmup": 0}, "linear": {"warmup": 0}}
PRIME = {"conv": {"warmup": 0, "beta": 0.5, "eta": 2.0}, "linear": {"warmup": 0, "beta": 0.5, "eta": 2.0}}


def time_epoch(run) -> float:
    t0 = time.perf_counter()
    train_epoch(run, progress=False)
    if run.dpap is not None:
        run.dpap.end_epoch()
    run.history.append({})   # advance the epoch counter (shuffling depends on it)
    return time.perf_counter() - t0


def bench(model: str, data: Dataset, batch_size: int, repeats: int) -> dict:
    base = build_run(TrainConfig(model=model, batch_size=batch_size, epochs=100, dpap=False,
                                 device="cpu"), data)
    dp = build_run(TrainConfig(model=model, batch_size=batch_size, epochs=100, dpap=True,
                               device="cpu", dpap_config=PRIME), data)
    time_epoch(base)                       # warm-up of both (allocator, caches)
    time_epoch(dp)                         # priming epoch: prunes, so masks are active
    dp.dpap.config = type(dp.dpap.config).from_dict(ACTIVE)  # realistic survival parameters
    stats = dp.dpap.layer_stats()
    tb, td = interleaved_medians([lambda: time_epoch(base), lambda: time_epoch(dp)], repeats)
    mb, md = median(tb), median(td)
    return {"model": model, "input": list(data.input_shape), "samples_per_epoch": len(data.y_train),
            "batch_size": batch_size, "repeats": repeats,
            "epoch_s_baseline": tb, "epoch_s_dpap": td,
            "median_s_baseline": mb, "median_s_dpap": md, "ratio": md / mb,
            "masked_layers": sum(s["neurons_kept"] < s["neurons_total"]
                                 or s["synapses_kept"] < s["synapses_total"] for s in stats)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer samples and repeats (smoke run)")
    ap.add_argument("--out", default="benchmarks/results/dpap_overhead.json")
    args = ap.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    n28, reps = (300, 3) if args.quick else (2000, 5)
    digits = load_dataset("digits")
    cases = [("snn-mnist", digits_28(n28), 100), ("ann-lenet", digits_28(n28 * 4), 100),
             ("snn-digits", digits, 64), ("ann-digits", digits, 64)]
    results = []
    print(f"{'model':12s} {'input':>10s} {'samples':>8s} {'baseline s':>11s} {'DPAP s':>8s} "
          f"{'ratio':>6s}", flush=True)
    for model, data, bs in cases:
        r = bench(model, data, bs, reps)
        results.append(r)
        print(f"{model:12s} {'x'.join(map(str, r['input'])):>10s} {r['samples_per_epoch']:8d} "
              f"{r['median_s_baseline']:11.3f} {r['median_s_dpap']:8.3f} {r['ratio']:6.3f}",
              flush=True)
    write_results(args.out, {"torch_threads": torch.get_num_threads(), "results": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
