"""Every DPAP equation against values computed by hand on tiny tensors."""
import math

import pytest
import torch

from dpap_deploy.dpap import plasticity, survival
from dpap_deploy.dpap.config import SurvivalParams
from dpap_deploy.dpap.importance import normalize, spine_importance
from dpap_deploy.dpap.traces import population_activity, update_trace

f64 = torch.float64


def t(x):
    return torch.tensor(x, dtype=f64)


# ---------------------------------------------------------------- traces (Eq 5, 6, 18, 19)
def test_spiking_trace_linear_eq5():
    # o = 1, 0, 1, 1 with tau = 0.5: S = 1, 0.5, 1.25, 1.625
    S = None
    for o, want in zip([1.0, 0.0, 1.0, 1.0], [1.0, 0.5, 1.25, 1.625]):
        S = update_trace(S, t([[o]]), 0.5)
        assert S.item() == pytest.approx(want)


def test_spiking_trace_conv_sums_positions_eq6():
    # channel 0 spikes at 3 of 4 positions, channel 1 at 1; two steps, tau 0.5
    o1 = t([[[[1, 1], [1, 0]], [[0, 0], [0, 1]]]])
    o2 = t([[[[0, 0], [0, 0]], [[1, 1], [0, 0]]]])
    assert population_activity(o1).tolist() == [[3.0, 1.0]]
    S = update_trace(None, population_activity(o1), 0.5)
    S = update_trace(S, population_activity(o2), 0.5)
    assert S.tolist() == [[1.5, 2.5]]  # [0.5*3 + 0, 0.5*1 + 2]


def test_ann_trace_is_summed_relu_output_eq19():
    relu_out = t([[[[0.0, 2.0], [1.5, 0.0]]]])
    assert population_activity(relu_out).tolist() == [[3.5]]


# ---------------------------------------------------------------- plasticity (Eq 7, 8)
def test_bcm_batch_eq7():
    s_pre = t([[1, 2], [0, 1]])
    s_post = t([[2], [1]])
    theta = t([0.5])
    # n0: 2*(2-0.5)=3, n1: 1*(1-0.5)=0.5 -> BCM[0, j] = 3*pre[0, j] + 0.5*pre[1, j]
    assert plasticity.bcm(s_pre, s_post, theta).tolist() == [[3.0, 6.5]]


def test_bcm_ltd_below_threshold():
    # post trace below theta gives a negative (LTD) value
    assert plasticity.bcm(t([[2.0]]), t([[1.0]]), t([3.0])).item() == -4.0  # 2*1*(1-3)


def test_hebb():
    assert plasticity.hebb(t([[1, 2], [0, 1]]), t([[2], [1]])).tolist() == [[2.0, 5.0]]


def test_stdp_step():
    o_pre, o_post = t([[1.0, 0.0]]), t([[1.0]])
    s_pre = t([[1.5, 0.5]])          # pre trace including this step
    s_post_before = t([[2.0]])       # post trace before this step
    # LTP: 1*[1.5, 0.5]; LTD: 2*[1, 0] -> [-0.5, 0.5]
    assert plasticity.stdp_step(o_pre, o_post, s_pre, s_post_before).tolist() == [[-0.5, 0.5]]
    assert plasticity.stdp_step(o_pre, o_post, s_pre, None).tolist() == [[1.5, 0.5]]


def test_threshold_running_mean_eq8():
    theta = t([0.0, 0.0])
    theta = plasticity.update_threshold(theta, t([[1, 4], [2, 0]]), 1)   # mean [1.5, 2]
    assert theta.tolist() == [1.5, 2.0]
    theta = plasticity.update_threshold(theta, t([[3.5, 1.0]]), 2)       # (1.5+3.5)/2, (2+1)/2
    assert theta.tolist() == [2.5, 1.5]
    with pytest.raises(ValueError):
        plasticity.update_threshold(theta, t([[1.0, 1.0]]), 0)


# ------------------------------------------------------- spine importance, normalisation
def test_spine_importance_eq11():
    # D = trace_e * row sums of BCM_e: [2*(1+2), 3*(3-1)]
    assert spine_importance(t([2, 3]), t([[1, 2], [3, -1]])).tolist() == [6.0, 6.0]


def test_normalize_p75_over_alive():
    x = t([0, 1, 2, 3, 4])
    alive = torch.ones(5, dtype=torch.bool)
    # min 0, p75 = 3 -> x/3 clipped
    assert normalize(x, alive).tolist() == pytest.approx([0, 1 / 3, 2 / 3, 1, 1])
    alive[4] = False
    # alive [0,1,2,3]: p75 = 2 + 0.25*1 = 2.25
    assert normalize(x, alive).tolist() == pytest.approx([0, 1 / 2.25, 2 / 2.25, 1, 1])


def test_normalize_minmax_and_negative_values():
    x = t([-2, 0, 6])
    assert normalize(x, torch.ones(3, dtype=torch.bool), "minmax").tolist() == \
        pytest.approx([0, 0.25, 1])


def test_normalize_no_evidence_returns_none():
    x = t([1, 1, 1, 1, 5])  # p75 == min == 1
    assert normalize(x, torch.ones(5, dtype=torch.bool)) is None
    assert normalize(x, torch.zeros(5, dtype=torch.bool)) is None


def test_quantile_fallback_matches_torch(monkeypatch):
    from dpap_deploy.dpap import importance
    x = torch.randn(1001, dtype=f64)
    ref = normalize(x, torch.ones_like(x, dtype=torch.bool))
    monkeypatch.setattr(importance, "_TORCH_QUANTILE_MAX", 10)
    assert torch.allclose(normalize(x, torch.ones_like(x, dtype=torch.bool)), ref)


# --------------------------------------------------------------- survival (Eq 12-17)
def test_delta_and_increment_eq12_to_15():
    delta = survival.survival_delta(t([0.0, 0.5, 1.0]), 0.65)
    assert delta.tolist() == pytest.approx([-0.65, 0.35, 1.35])
    assert survival.survival_increment(delta, 2.0).tolist() == pytest.approx([-0.65, 2.35, 3.35])
    # delta exactly 0 counts as non-negative and gets the bonus
    assert survival.survival_increment(t([0.0]), 5.0).tolist() == [5.0]


def test_survival_update_eq16_17():
    p = SurvivalParams(epsilon=0.65, eta=13.0, beta=10.0, gamma=0.999, C=2.0, warmup=2)
    F = torch.full((3,), 10.0, dtype=f64)
    alive = torch.tensor([True, True, False])
    norm = t([0.0, 1.0, 0.0])
    # epoch == warmup: factor 1; F = 9.99 + dF; dead element unchanged
    F1 = survival.update_survival(F, norm, alive, p, epoch=2)
    assert F1.tolist() == pytest.approx([9.99 - 0.65, 9.99 + 1.35 + 2.0, 10.0])
    # 13 epochs after warm-up: factor exp(-1)
    F2 = survival.update_survival(F, norm, alive, p, epoch=15)
    assert F2[0].item() == pytest.approx(9.99 - 0.65 * math.exp(-1))
    assert survival.decay_factor(15, 2, 13.0) == pytest.approx(math.exp(-1))


def test_prune_decisions():
    F = t([-0.1, 0.0, 3.0, -5.0])
    alive = torch.tensor([True, True, True, False])
    assert survival.prune_decisions(F, alive).tolist() == [True, False, False, False]


def test_warmup():
    p = SurvivalParams(epsilon=1.0, eta=1.0, warmup=3)
    assert [survival.in_warmup(e, p) for e in range(5)] == [True, True, True, False, False]


def _epochs_to_death_at_zero_importance(p: SurvivalParams, epochs: int = 200):
    """Drive Eq 12-17 with the worst evidence (normalised importance 0 every epoch)."""
    F, alive = torch.full((1,), p.beta, dtype=f64), torch.tensor([True])
    for epoch in range(epochs):
        if not survival.in_warmup(epoch, p):
            F = survival.update_survival(F, t([0.0]), alive, p, epoch)
        if survival.prune_decisions(F, alive).item():
            return epoch
    return None


@pytest.mark.parametrize("name,conv_dies,linear_dies", [
    ("default", 14, 10), ("conv-pruning", 14, 10), ("ann", 22, 18), ("short", 5, 4),
    ("keep-conv", None, 10), ("short-keep-conv", None, 4), ("minmax", None, 7)])
def test_preset_claims_with_zero_evidence(name, conv_dies, linear_dies):
    # docs/method.md: with normalised importance 0 every epoch, a conv channel dies at epoch
    # conv_dies (None: never, the keep-whole presets), a linear neuron at linear_dies
    from dpap_deploy.dpap.config import preset
    cfg = preset(name)
    assert _epochs_to_death_at_zero_importance(cfg.conv) == conv_dies
    assert _epochs_to_death_at_zero_importance(cfg.linear) == linear_dies


def test_conv_beta_bounds_by_hand():
    # the largest possible loss of a conv value is epsilon / (1 - e^(-1/eta)) (gamma = 1):
    # keep-whole betas exceed it, the pruning betas are ~0.65 of it
    from dpap_deploy.dpap import config
    loss = lambda eta: 0.65 / (1 - math.exp(-1 / eta))  # noqa: E731
    assert loss(12) == pytest.approx(8.1295, abs=1e-4) and loss(3) == pytest.approx(2.2930, abs=1e-4)
    assert config.KEEP_CONV_BETA > loss(12) and config.SHORT_KEEP_CONV_BETA > loss(3)
    assert config.CONV_BETA / loss(12) == pytest.approx(config.SHORT_CONV_BETA / loss(3), abs=0.01)


def test_short_preset_equals_its_json_spelling():
    from dpap_deploy.dpap.config import DPAPConfig, preset
    spelled = {"conv": {"warmup": 2, "beta": 1.5, "eta": 3}, "linear": {"warmup": 2, "beta": 3, "eta": 3}}
    assert DPAPConfig.from_dict(spelled) == preset("short") == DPAPConfig.from_dict({"preset": "short"})
