"""Figures for docs/results.md from the benchmarks' JSON results.

    .venv/bin/python benchmarks/plot_results.py [--results benchmarks/results] [--out docs/img]
        [--only STEM ...]   (e.g. --only methods_digits_snn-digits: only those result files)

- ``methods_<name>.png`` for every ``methods_*.json``: test accuracy per epoch of DPAP, no
  pruning, magnitude and random pruning (first seed of the file), and the fraction removed.
- ``sweep.png``: final accuracy vs fraction removed for every ``sweep_*.json``, one panel per
  file, with the unpruned run as a line (paper Fig. 2G-I).
Files that are missing are skipped; the figures written are listed.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from matplotlib.figure import Figure

from dpap_deploy.report.plots import save_figure

STYLE = {"dpap": ("C0", "-", "DPAP"), "none": ("k", "--", "no pruning"),
         "magnitude": ("C1", "-", "magnitude"), "random": ("C2", "-", "random")}


def plot_methods(result: dict, title: str, path: Path) -> Path:
    seed = result["runs"][0]["seed"]
    runs = {r["label"]: r for r in result["runs"] if r["seed"] == seed}
    fig = Figure(figsize=(6, 5.2))
    ax, bx = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [2, 1]})
    for label, (color, ls, name) in STYLE.items():
        if label not in runs:
            continue
        r = runs[label]
        epochs = range(1, len(r["acc_curve"]) + 1)
        ax.plot(epochs, [100 * a for a in r["acc_curve"]], ls, color=color,
                label=f"{name} ({100 * r['final_acc']:.2f}%)")
        bx.plot(epochs, [100 * f for f in r["removed_curve"]], ls, color=color)
    # the y range follows the last third of the epochs: random pruning's dip would flatten the rest
    last_third = [a for r in runs.values() for a in r["acc_curve"][-max(1, len(r["acc_curve"]) // 3):]]
    lo = max(100 * min(last_third) - 1, 0)
    hi = max(100 * a for r in runs.values() for a in r["acc_curve"])
    ax.set_ylim(lo, hi + 0.4 * (hi - lo))  # room for the legend above the curves
    ax.set_ylabel("test accuracy (%)")
    ax.legend(loc="upper left", ncol=2, fontsize=8)
    ax.set_title(f"{title}, seed {seed}", fontsize=10)
    bx.set_ylabel("removed (%)")
    bx.set_xlabel("epoch")
    bx.set_ylim(0, 100)
    return save_figure(fig, path)


def plot_sweeps(results: list[tuple[str, dict]], path: Path) -> Path:
    fig = Figure(figsize=(4.2 * len(results), 3.4))
    axes = fig.subplots(1, len(results), squeeze=False)
    for ax, (title, res) in zip(axes[0], results):
        base = next(r for r in res["runs"] if r["epsilon"] is None)
        pts = [r for r in res["runs"] if r["epsilon"] is not None]
        ax.axhline(100 * base["final_acc"], color="k", ls="--", lw=1, label="no pruning")
        ax.scatter([100 * r["params_removed"] for r in pts], [100 * r["final_acc"] for r in pts])
        labels: dict[tuple[float, float], list[str]] = {}   # points that coincide share a label
        for r in pts:
            xy = (round(100 * r["params_removed"], 1), round(100 * r["final_acc"], 2))
            labels.setdefault(xy, []).append(f"{r['epsilon']:g}/{r['eta']:g}")
        for xy, names in labels.items():
            ax.annotate(", ".join(names), xy, fontsize=7, xytext=(3, 3), textcoords="offset points")
        ax.set_xlabel("parameters removed (%)")
        ax.set_ylabel("final test accuracy (%)")
        ax.set_xlim(-3, 100)
        ax.set_ylim(100 * base["final_acc"] - 2, 100 * base["final_acc"] + 1.5)
        ax.set_title(title, fontsize=9)
        ax.legend(loc="lower left", fontsize=7)
    return save_figure(fig, path)


def title_of(res: dict) -> str:
    a = res["args"]
    n = f", {a['train_subset']} train" if a.get("train_subset") else ""
    return f"{a['model']} on {a['dataset']}{n}, {a['epochs']} epochs"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", default="benchmarks/results")
    ap.add_argument("--out", default="docs/img")
    ap.add_argument("--only", nargs="+", metavar="STEM",
                    help="result file names without .json; sweeps go into one figure")
    args = ap.parse_args(argv)
    src, out = Path(args.results), Path(args.out)
    if not src.is_dir():
        print(f"no results folder {src}: run the benchmarks first (see docs/results.md)")
        return 1
    keep = (lambda f: f.stem in args.only) if args.only else (lambda f: True)
    written = []
    for f in filter(keep, sorted(src.glob("methods_*.json"))):
        res = json.loads(f.read_text())
        written.append(plot_methods(res, title_of(res), out / f"{f.stem}.png"))
    sweep_files = filter(keep, sorted(src.glob("sweep_*.json")))
    sweeps = [(title_of(r).replace(", ", "\n", 1) + " (labels: linear eps/eta)", r)
              for r in (json.loads(f.read_text()) for f in sweep_files)]
    if sweeps:
        written.append(plot_sweeps(sweeps, out / "sweep.png"))
    for w in written:
        print(f"wrote {w}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
