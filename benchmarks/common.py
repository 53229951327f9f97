"""Shared pieces of the benchmarks."""
from __future__ import annotations

import statistics
import time
from typing import Callable

import torch.nn.functional as F

from dpap_deploy.data import Dataset, load_dataset  # noqa: F401


def digits_28(n_train: int | None = None) -> Dataset:
    """The real scikit-learn digits upsampled (bilinear) to 28x28, for the paper-sized
    networks when no 28x28 dataset is at hand. ``n_train`` repeats the training images."""
    d = load_dataset("digits")
    up = lambda x: F.interpolate(x, size=(28, 28), mode="bilinear", align_corners=False)  # noqa: E731
    x, y = up(d.x_train), d.y_train
    if n_train is not None:
        reps = -(-n_train // len(y))
        x, y = x.repeat(reps, 1, 1, 1)[:n_train], y.repeat(reps)[:n_train]
    return Dataset("digits-28", x, y, up(d.x_test), d.y_test, 10)


def interleaved_medians(fns: list[Callable[[], object]], repeats: int) -> list[list[float]]:
    """Time each function ``repeats`` times, the order rotated by one every round, so that
    each function is favoured equally by running right after itself (warm caches, allocator
    state): with two functions each does so at every other round boundary, with three or more
    none does. (Reversing the order every round, as before, let two of three functions repeat
    half the time and never the middle one: measured, 10-15% of a 3 ms inference.)"""
    times: list[list[float]] = [[] for _ in fns]
    n = len(fns)
    for r in range(repeats):
        order = [(r + k) % n for k in range(n)]
        for i in order:
            t0 = time.perf_counter()
            fns[i]()
            times[i].append(time.perf_counter() - t0)
    return times


def median(xs: list[float]) -> float:
    return statistics.median(xs)


def load_bench_data(name: str, train_subset: int | None, test_subset: int | None,
                    data_root: str | None = None, time_steps: int = 8):
    """A dataset, optionally cut to its first ``train_subset`` / ``test_subset`` samples."""
    d = load_dataset(name, data_root, time_steps)
    if train_subset:
        d.x_train, d.y_train = d.x_train[:train_subset], d.y_train[:train_subset]
    if test_subset:
        d.x_test, d.y_test = d.x_test[:test_subset], d.y_test[:test_subset]
    return d


def run_and_measure(cfg, data, label: str, synops_samples: int = 500) -> dict:
    """Train one configuration (in a temporary folder) and measure it on the test inputs:
    final / best accuracy, parameters removed, SynOps (SNN) or MACs (ANN) with non-zero
    weights, per sample, and the per-epoch accuracy curve."""
    import tempfile
    from dpap_deploy.counting import count_ops, param_counts
    from dpap_deploy.training import train
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        run = train(cfg, tmp, progress=False, data=data)
        wall = time.perf_counter() - t0
    model = run.model.eval()
    ops = count_ops(model, data.x_test[:synops_samples], run.cfg.time_steps)
    total, nonzero = param_counts(model)
    accs = [h["test_acc"] for h in run.history]
    return {"label": label, "seed": cfg.seed, "final_acc": accs[-1], "best_acc": max(accs),
            "params_removed": run.params_removed_fraction(), "params_nonzero": nonzero,
            "params_total": total, "synops": ops.total("synops"), "macs": ops.total("macs"),
            "acc_curve": accs, "removed_curve": [h["params_removed_fraction"] for h in run.history],
            "wall_s": wall}


def epochs_to_reach(curve: list[float], level: float) -> int | None:
    """First epoch (1-based) whose test accuracy reaches ``level``; None if never."""
    for i, a in enumerate(curve):
        if a >= level:
            return i + 1
    return None


def dpap_window(removed_curve: list[float]) -> list[int]:
    """Epochs in which a DPAP run did its pruning: from the first death to 90% of the final."""
    final = removed_curve[-1]
    if final <= 0:
        return [2, max(3, len(removed_curve) // 2)]
    start = next(i for i, r in enumerate(removed_curve) if r > 0)
    end = next(i for i, r in enumerate(removed_curve) if r >= 0.9 * final)
    return [start, max(end + 1, start + 1)]


def write_results(path: str, payload: dict) -> None:
    import json
    from pathlib import Path

    from dpap_deploy.atomic import atomic_write_text
    out = Path(path)
    atomic_write_text(out, json.dumps(payload, indent=2) + "\n")
    print(f"wrote {out}")


def add_dpap_config_arg(ap) -> None:
    """``--dpap-config JSON``: DPAP options, e.g. the ``short`` preset for 10-20 epoch runs."""
    import json
    ap.add_argument("--dpap-config", type=json.loads, default=None,
                    help='DPAP options as JSON, e.g. \'{"preset": "short"}\' for runs of 10-20 '
                         "epochs (the defaults are calibrated for ~60)")


def merge_dpap_config(base: dict | None, override: dict) -> dict:
    """``base`` (a ``--dpap-config``) with ``override`` on top; per-kind tables are merged key
    by key, so ``{"linear": {"eta": 4}}`` keeps the base's other linear parameters."""
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in (base or {}).items()}
    for k, v in override.items():
        out[k] = {**out.get(k, {}), **v} if isinstance(v, dict) else v
    return out


def bench_parser(doc: str, quick_help: str, many_seeds: bool = True):
    """The options the training benchmarks share: data, model, epochs, seed(s), subsets,
    ``--quick``, ``--dpap-config`` and ``--out``; a benchmark adds its own after."""
    import argparse
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--dataset", default="digits")
    ap.add_argument("--data-root")
    ap.add_argument("--model", default="snn-digits")
    ap.add_argument("--epochs", type=int, default=60)
    if many_seeds:
        ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    else:
        ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--train-subset", type=int)
    ap.add_argument("--test-subset", type=int)
    ap.add_argument("--quick", action="store_true", help=quick_help)
    add_dpap_config_arg(ap)
    ap.add_argument("--out")
    return ap
