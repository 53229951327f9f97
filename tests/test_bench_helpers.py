"""The benchmarks' small helpers: config merging, grid parsing, pruning window."""
import argparse
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from bench_sweep import _grid_point  # noqa: E402
from common import dpap_window, epochs_to_reach, merge_dpap_config  # noqa: E402

from dpap_deploy.dpap.config import DPAPConfig  # noqa: E402


def test_merge_keeps_the_base_per_kind_and_overrides_key_by_key():
    base = {"preset": "short", "linear": {"beta": 3, "eta": 3}, "conv": {"beta": 3}}
    merged = merge_dpap_config(base, {"linear": {"epsilon": 1.0, "eta": 5}, "rule": "hebb"})
    assert merged == {"preset": "short", "linear": {"beta": 3, "eta": 5, "epsilon": 1.0},
                      "conv": {"beta": 3}, "rule": "hebb"}
    assert base["linear"] == {"beta": 3, "eta": 3}          # the base is not changed
    cfg = DPAPConfig.from_dict(merged)
    assert (cfg.linear.epsilon, cfg.linear.eta, cfg.linear.beta, cfg.rule) == (1.0, 5, 3, "hebb")
    assert merge_dpap_config(None, {"rule": "stdp"}) == {"rule": "stdp"}


def test_grid_point_parsing():
    assert _grid_point("1.5:4") == (1.5, 4.0)
    with pytest.raises(argparse.ArgumentTypeError, match="EPSILON:ETA"):
        _grid_point("1.5")


def test_window_and_convergence():
    assert dpap_window([0, 0, 0.3, 0.5, 0.55, 0.6]) == [2, 5]
    assert epochs_to_reach([0.5, 0.7, 0.9], 0.7) == 2
    assert epochs_to_reach([0.5, 0.7], 0.9) is None


def test_plot_results_writes_a_figure_per_result(tmp_path):
    import json
    import plot_results
    res = tmp_path / "results"
    res.mkdir()
    run = lambda label, acc, rem: {"label": label, "seed": 0, "final_acc": acc[-1],  # noqa: E731
                                   "acc_curve": acc, "removed_curve": rem}
    args = {"model": "snn-digits", "dataset": "digits", "epochs": 3, "train_subset": None}
    (res / "methods_digits_snn-digits.json").write_text(json.dumps({"args": args, "runs": [
        run("dpap", [0.5, 0.8, 0.9], [0, 0.3, 0.5]), run("none", [0.5, 0.8, 0.91], [0, 0, 0])]}))
    (res / "sweep_digits_snn-digits.json").write_text(json.dumps({"args": args, "runs": [
        dict(run("none", [0.9], [0]), epsilon=None, eta=None, params_removed=0.0),
        dict(run("a", [0.89], [0.4]), epsilon=1.0, eta=13, params_removed=0.4)]}))
    assert plot_results.main(["--results", str(res), "--out", str(tmp_path / "img")]) == 0
    pngs = sorted(p.name for p in (tmp_path / "img").glob("*.png"))
    assert pngs == ["methods_digits_snn-digits.png", "sweep.png"]
    assert all((tmp_path / "img" / p).read_bytes()[:4] == b"\x89PNG" for p in pngs)
    assert plot_results.main(["--results", str(tmp_path / "missing")]) == 1


def test_peers_spike_as_our_executor_from_the_same_weights():
    """bench_peers' claim that every contender runs the same network: given our weights (made
    larger, so that every population fires), the step loop, the bare snnTorch loop and each
    installed peer (Norse, SpikingJelly) give the spike counts of our multi-step executor."""
    import importlib.util
    import bench_peers
    import torch
    from dpap_deploy.zoo import build_model
    torch.manual_seed(0)
    model, _ = build_model("snn-digits", (1, 8, 8), 10)   # the same layer types, smaller
    with torch.no_grad():
        for m in model:
            if hasattr(m, "weight"):
                m.weight.mul_(3)
    peers = {name: make for name, make in bench_peers.PEERS.items()
             if name == "snnTorch loop" or importlib.util.find_spec(name.lower())}
    agree = bench_peers.spike_agreement(model, torch.rand(6, 1, 8, 8), peers)
    assert min(agree["firing_rate"]) > 0.05, agree["firing_rate"]
    for name in [bench_peers.OUR_STEP, *peers]:
        assert agree[name] == [1.0] * 4, (name, agree[name])
