"""Float -> post-training quantised -> quantization-aware fine-tuned, on Lava's fixed point (netx).

    .venv/bin/python benchmarks/bench_fixed_point.py                       # the default run
    .venv/bin/python benchmarks/bench_fixed_point.py --setup fashion      # paper's SNN, F-MNIST

``default``: ``dpap-deploy train`` with every default (digits, snn-digits, 60 epochs), then two
netx exports of the run: without fine-tuning (post-training quantisation) and with
``fine_tune=2`` (``qat.py``, the whole training set). Each export runs the file in Lava's
fixed-point models and reports the decisions that agree with float torch, the identical spike
trains, and the torch emulation's identity with Lava (docs/deploy.md).

``fashion``: the paper's MNIST SNN (``snn-mnist``) trained on Fashion-MNIST with DPAP (``--preset
short``, 6 epochs by default), its netx export on 1,000 test samples, then ``qat.fine_tune`` of
the deployment network on a 6,000-image subset of the training set for one epoch (the whole set
takes about an hour an epoch on 2 CPU cores), measured on the same 1,000 test samples.

A run folder already trained under ``--root`` is reused. Writes
``benchmarks/results/fixed_point_<setup>.json``.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_results  # noqa: E402

from dpap_deploy import pipeline  # noqa: E402
from dpap_deploy.train_config import TrainConfig  # noqa: E402


def export_figures(root: Path, run: Path, fine_tune: int, max_samples: int | None) -> dict:
    out = root / f"netx-ft{fine_tune}"
    t = time.perf_counter()
    pipeline.export(run, "netx", out, fine_tune=fine_tune, overwrite=True, max_samples=max_samples)
    rep = json.loads((out / "report.json").read_text())
    parity = rep["export"]["parity"]
    return {"fine_tune_epochs": fine_tune, "wall_s": round(time.perf_counter() - t, 1),
            "accuracy_fixed": rep["export"]["accuracy"],
            "accuracy_float": parity.get("accuracy_float"),
            "decisions_agree": parity["agreement"],
            "identical_spike_trains": parity["identical_spike_trains"],
            "emulation_identical": parity.get("emulation_identical"),
            "n_samples": parity["n_samples"], "qat": rep.get("qat")}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--setup", choices=("default", "fashion"), default="default")
    ap.add_argument("--root", type=Path, default=None,
                    help="work folder (default runs/bench-fixed-point-<setup>)")
    ap.add_argument("--epochs", type=int, default=6, help="fashion: training epochs")
    ap.add_argument("--qat-train", type=int, default=6000, help="fashion: QAT training images")
    ap.add_argument("--test", type=int, default=1000, help="fashion: test samples")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    root = args.root or Path(f"runs/bench-fixed-point-{args.setup}")
    run = root / "run"
    if args.setup == "default":
        cfg = TrainConfig.from_file(None)
    else:
        cfg = TrainConfig.from_file(None, dataset="fashion-mnist", model="snn-mnist",
                                    epochs=args.epochs, preset="short")
    t = time.perf_counter()
    if not (run / "checkpoint.pt").exists():
        pipeline.train(cfg, run, progress=False)
    result = {"setup": args.setup, "train_wall_s": round(time.perf_counter() - t, 1),
              "config": {"dataset": cfg.dataset, "model": cfg.model, "epochs": cfg.epochs}}
    if args.setup == "default":
        result["exports"] = [export_figures(root, run, ft, None) for ft in (0, 2)]
    else:
        import torch

        from dpap_deploy.data import load_dataset
        from dpap_deploy.qat import fine_tune
        from dpap_deploy.serialize import load_model
        result["exports"] = [export_figures(root, run, 0, args.test)]
        model, _, meta = load_model(root / "netx-ft0" / "deploy.pt")
        d = load_dataset("fashion-mnist")
        pick = torch.randperm(len(d.y_train), generator=torch.Generator().manual_seed(0))
        pick = pick[:args.qat_train]
        t = time.perf_counter()
        tuned = fine_tune(model, (d.x_train[pick], d.y_train[pick]),
                          (d.x_test[:args.test], d.y_test[:args.test]), meta["time_steps"],
                          epochs=1, log=print)
        result["qat_subset"] = {**tuned.section(), "wall_s": round(time.perf_counter() - t, 1)}
    print(json.dumps(result, indent=1))
    write_results(args.out or f"benchmarks/results/fixed_point_{args.setup}.json", result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
