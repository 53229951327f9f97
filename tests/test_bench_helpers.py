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
