"""Plasticity rules are objects in one table: a new rule is one class in one file."""
import pytest
import torch
from torch import nn

from dpap_deploy.dpap import DPAP, DPAPConfig
from dpap_deploy.dpap.rules import RULES, PlasticityRule, register
from dpap_deploy.errors import ConfigError
from dpap_deploy.executor.run import run_window
from dpap_deploy.graph import graph_of
from dpap_deploy.neurons import lif

from test_dpap_hooks import CONV, LIN, X, _ann_after_one_batch

X45 = torch.tensor([[0.45]])      # one sample, one input current


class SpikeCount(PlasticityRule):
    """A rule written outside the package: the number of steps at which pre and post fired
    together (needs time), with an ``on_step`` accumulator like STDP's."""
    name = "coincidence"
    needs_time = True

    def on_step(self, rec, o_post):
        term = o_post.T @ rec.o_pre
        rec.acc = term if rec.acc is None else rec.acc + term

    def measure(self, rec, theta):
        return rec.acc


@pytest.fixture
def coincidence():
    register(SpikeCount)
    yield RULES["coincidence"]
    del RULES["coincidence"]


def test_the_rules_that_come_with_the_package():
    assert list(RULES) == ["bcm", "hebb", "stdp"]
    assert [r.needs_time for r in RULES.values()] == [False, False, True]


def test_a_rule_added_in_one_place_feeds_dpap(coincidence):
    model = nn.Sequential(nn.Linear(1, 1), lif(), nn.Linear(1, 1), lif())
    with torch.no_grad():
        model[0].weight.fill_(1.0)
        model[0].bias.zero_()
    dp = DPAP(model, torch.zeros(1, 1), DPAPConfig(conv=CONV, linear=LIN, rule="coincidence"))
    assert dp.rule is coincidence
    model.train()
    with torch.no_grad():                                      # not recorded by DPAP
        spikes = run_window(graph_of(model[:2], X45), X45, 4)  # what layer 0 emits
    run_window(graph_of(model, X45), X45, 4)
    dp.step()
    # pre (the input current 0.45) is active at every step, post fires at steps 2 and 4:
    # two coincidences, each 0.45 (pre activity) x 1 (a spike)
    assert spikes.flatten().tolist() == [0.0, 1.0, 0.0, 1.0]
    assert dp.states[0].plast_e.item() == pytest.approx(2 * 0.45)
    with pytest.raises(ConfigError, match="'coincidence' needs spike timing.*'bcm' or 'hebb'"):
        DPAP(nn.Sequential(nn.Linear(2, 2), nn.ReLU(), nn.Linear(2, 2)), X,
             DPAPConfig(rule="coincidence"))


def test_an_unknown_rule_is_one_line_naming_the_table(coincidence):
    with pytest.raises(ConfigError) as err:
        DPAPConfig(rule="ojas")
    msg = str(err.value)
    assert "'ojas'" in msg and "bcm, hebb, stdp, coincidence" in msg and "\n" not in msg


def test_hebb_through_the_table_is_the_equation():
    _, dp = _ann_after_one_batch(DPAPConfig(conv=CONV, linear=LIN, rule="hebb"))
    assert dp.rule is RULES["hebb"]
    assert dp.states[0].plast_e.tolist() == [[1 + 9.0, 2.0], [2.0, 4.0]]
