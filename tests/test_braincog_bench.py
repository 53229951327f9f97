"""benchmarks/bench_paired.py without training: its CSV (one row appended at a time, skipped
on a rerun), the paired intervals by hand, "partial" while rows are missing."""
import importlib.util
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"


@pytest.fixture(scope="module")
def bench():
    sys.path.insert(0, str(BENCH))
    spec = importlib.util.spec_from_file_location("bench_paired", BENCH / "bench_paired.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _row(arm, seed, best, final=None, synops=1e6):
    return {"arm": arm, "seed": seed, "epochs": 60, "train_subset": 0, "test_subset": 0,
            "final_acc": final if final is not None else best, "best_acc": best,
            "best_epoch": 50, "params_removed": 0.5, "params_removed_compact": 0.6,
            "synops_removed": 0.4, "synops": synops, "device": "cpu",
            "test_acc_curve": f"0.5;{best}", "removed_curve": "0;0.5"}


def test_interval_by_hand(bench):
    # deltas 8, 7: mean 7.5, sd 0.7071, se 0.5, t(0.975, 1) = 12.7062 -> half-width 6.3531
    m, h = bench.interval([8.0, 7.0])
    assert m == 7.5 and h == pytest.approx(6.3531, abs=1e-4)
    # 1, 2, 3: sd 1, se 0.5774, t(0.975, 2) = 4.3027 -> 2.4841
    assert bench.interval([1.0, 2.0, 3.0])[1] == pytest.approx(2.4841, abs=1e-4)
    assert bench.interval([1.0]) == (1.0, None)


def test_late_gain_by_hand(bench):
    # 15 epochs: the first five at 80%, five at 90% (ignored), the last five at 85%, 86%, ...
    curve = [0.80] * 5 + [0.90] * 5 + [0.85, 0.86, 0.87, 0.88, 0.89]
    assert bench.late_gain(curve) == pytest.approx(7.0)        # mean 87% - 80%
    assert bench.late_gain([0.9] * 30) == pytest.approx(0.0)
    assert bench.late_gain(curve[1:]) is None                     # 14 epochs: too short


def test_report_states_convergence(bench, tmp_path):
    csv = tmp_path / "paired.csv"
    args = bench.parse(["--csv", str(csv), "--seeds", "0", "1", "--report", "--arms",
                        "unpruned", "--plots", str(tmp_path)])
    for seed, late in ((0, 0.80), (1, 0.86)):       # seed 1 still climbing: +6 points
        row = _row("unpruned", seed, 0.86)
        row["test_acc_curve"] = ";".join(["0.8"] * 15 + [str(late)] * 5)
        bench.append_row(csv, row)
    line = next(l for l in bench.report(args).splitlines() if l.startswith("| unpruned "))
    assert "| +3.00 (max +6.00) |" in line and "(50, 50)" in line


def test_rows_append_and_report_partial_then_complete(bench, tmp_path):
    csv = tmp_path / "paired.csv"
    args = bench.parse(["--csv", str(csv), "--seeds", "0", "1", "--report",
                        "--plots", str(tmp_path)])
    accs = {"unpruned": (0.90, 0.88), "dpap": (0.89, 0.86), "braincog": (0.91, 0.90),
            "l1": (0.88, 0.87)}
    for arm, (a0, a1) in accs.items():
        bench.append_row(csv, _row(arm, 0, a0))
    assert len(bench.read_rows(csv)) == 4
    text = bench.report(args)
    assert "PARTIAL: missing unpruned/1, dpap/1, braincog/1, l1/1" in text
    for arm, (a0, a1) in accs.items():
        bench.append_row(csv, _row(arm, 1, a1))
    text = bench.report(args)
    assert "; complete" in text
    # braincog - dpap: +2.00 and +4.00 points: mean 3, half-width 12.7062 * 1.4142 / 1.4142
    line = next(l for l in text.splitlines() if l.startswith("| braincog - dpap "))
    assert "+3.00 [-9.71, +15.71]" in line and "+2.00, +4.00" in line
    assert (tmp_path / "paired_synops.png").stat().st_size > 0
    assert (tmp_path / "paired_curves.png").stat().st_size > 0
    # a rerun skips what is there: the key of every row is found
    keys = {bench._key(r) for r in bench.read_rows(csv)}
    assert ("l1", 1, 60, 0, 0) in keys and len(keys) == 8


def test_arms_and_their_options(bench):
    args = bench.parse(["--ablation"])
    assert args.arms[:4] == ["unpruned", "dpap", "braincog", "l1"]
    assert bench.arm_dpap("braincog-decay", args) == {
        "preset": "braincog", "conv": {"decay": "smooth"}, "linear": {"decay": "smooth"}}
    assert bench.arm_dpap("unpruned", args) is None
    cfg = bench.train_config("braincog", 2, args, None)
    assert (cfg.optimizer, cfg.lr, cfg.batch_size, cfg.seed, cfg.epochs) == \
        ("braincog", 5e-3 * 50 / 1024, 50, 2, 60)
    l1 = bench.train_config("l1", 2, args, 0.6, [5, 20])
    assert (l1.dpap, l1.baseline, l1.prune_target, l1.prune_window) == \
        (False, "l1-structured", 0.6, [5, 20])
