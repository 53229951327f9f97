"""The Python API refuses bad arguments with the documented ``DPAPError`` family (one line,
the offending value, what to pass instead), never with an AttributeError or KeyError from
deep inside. Each case names the exception text it must carry."""
from __future__ import annotations

import pytest
import snntorch as snn
import torch
from torch import nn

from dpap_deploy import DPAP, DPAPConfig
from dpap_deploy.compaction import compact, deployment_graph
from dpap_deploy.masks import from_dpap_state as masks_from_dpap_state
from dpap_deploy.counting import count_ops
from dpap_deploy import pipeline
from dpap_deploy.data import load_dataset
from dpap_deploy.exporters import ExportJob, export
from dpap_deploy.serialize import save_model
from dpap_deploy.errors import DPAPError
from dpap_deploy.graph import build_graph


def _net() -> nn.Sequential:
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 12),
                         snn.Leaky(beta=0.5, init_hidden=True, reset_mechanism="zero"),
                         nn.Linear(12, 3),
                         snn.Leaky(beta=0.5, init_hidden=True, output=True, reset_mechanism="zero"))


X = torch.rand(4, 1, 8, 8)

CASES = [
    ("DPAP model None", lambda: DPAP(None, X, DPAPConfig()), "got NoneType"),
    ("DPAP config list", lambda: DPAP(_net(), X, [1]), "got list"),
    ("build_graph model str", lambda: build_graph("net", X), "got str"),
    ("deployment_graph model str", lambda: deployment_graph("net", X), "got str"),
    ("compact model None", lambda: compact(None, X, None, time_steps=4), "got NoneType"),
    ("compact masks list", lambda: compact(_net(), X, [1, 2], time_steps=4), "got list"),
    ("compact masks of ints", lambda: compact(_net(), X, {"1": (1, 2)}, time_steps=4),
     "(synapses, neurons)"),
    ("masks_from_dpap_state junk", lambda: masks_from_dpap_state({"x": 1}), "'layers'"),
    ("masks_from_dpap_state None", lambda: masks_from_dpap_state(None), "got NoneType"),
    ("count_ops input None", lambda: count_ops(_net(), None, time_steps=4), "batched tensor"),
    ("load_dataset None", lambda: load_dataset(None), "got None"),
    ("load_dataset int", lambda: load_dataset(5), "got 5"),
    ("ExportJob labels short", lambda: ExportJob(_net(), "snn", X, torch.zeros(2), 4),
     "4 Tensor and 2 Tensor"),
    ("export into a file", lambda: export("nir", ExportJob(_net(), "snn", X, torch.zeros(4), 4),
                                          __file__), "is a file"),
    ("save_model unknown kind", lambda: save_model("m.pt", _net(), "xnn"), "'xnn'"),
    ("pipeline.train dict", lambda: pipeline.train({"epochs": 1}, "out"), "got dict"),
    ("pipeline.compact int", lambda: pipeline.compact(5, "out"), "got int 5"),
    ("pipeline.report None", lambda: pipeline.report(None), "got NoneType"),
]


@pytest.mark.parametrize("fn,frag", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_api_refuses_in_one_line(fn, frag):
    with pytest.raises(DPAPError) as exc:
        fn()
    msg = str(exc.value)
    assert frag in msg and "\n" not in msg, msg


def test_dpap_takes_a_table_of_options():
    """A plain table is read as DPAPConfig.from_dict (what a TOML [dpap] table holds)."""
    dpap = DPAP(_net(), X, {"linear": {"epsilon": 1.0}})
    assert dpap.config.linear.epsilon == 1.0
    assert dpap.config == DPAPConfig.from_dict({"linear": {"epsilon": 1.0}})
