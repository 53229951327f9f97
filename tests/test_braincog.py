"""The switches to the authors' code (BrainCog's DPAP example) and the ``braincog`` preset:
each one against values computed by hand from its formula, and an exact resume."""
import math

import pytest
import torch
from torch import nn

from dpap_deploy.data import Dataset, load_dataset
from dpap_deploy.dpap import DPAP, DPAPConfig, SurvivalParams, preset
from dpap_deploy.dpap import survival
from dpap_deploy.errors import ConfigError
from dpap_deploy.neurons import lif
from dpap_deploy.train_config import TrainConfig
from dpap_deploy.training import train
from dpap_deploy.training.run import braincog_lr

f64 = torch.float64
# gamma 1, factor 1 at epoch 0 (warm-up 0): F = beta + dF, dF = 2x - 1 (+ C = 2 when >= 0)
FLAT = SurvivalParams(epsilon=1.0, eta=10.0, beta=10.0, gamma=1.0, C=2.0, warmup=0)


def _dpap(config, conv=False, **kw):
    torch.manual_seed(0)
    if conv:
        model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), lif(), nn.Flatten(),
                              nn.Linear(2 * 4 * 4, 2), lif())
        x = torch.rand(2, 1, 4, 4)
    else:
        model = nn.Sequential(nn.Linear(2, 5), lif(), nn.Linear(5, 2), lif())
        x = torch.rand(2, 2)
    cfg = DPAPConfig(conv=FLAT, linear=FLAT, **kw) if config is None else config
    return DPAP(model, x, cfg, check_deploy=False)


def _set(dp, trace, sums, alive=None):
    """Layer 0's epoch sums: ``trace_e`` and a plasticity matrix with row sums ``sums``."""
    st = dp.states[0]
    st.trace_e = torch.tensor(trace, dtype=f64)
    st.plast_e = torch.zeros_like(st.plast_e)
    st.plast_e[:, 0] = torch.tensor(sums, dtype=f64)
    if alive is not None:
        st.neu_alive = torch.tensor(alive)
    return st


# ----------------------------------------------------------------------------- decay
def test_staircase_decay_by_hand():
    # exp(-floor((epoch - 5) / 12)): 1 for epochs 5..16, e^-1 for 17..28; smooth e^-(6/12) at 11
    stair = [survival.decay_factor(e, 5, 12.0, "staircase") for e in (5, 11, 16, 17, 28, 29)]
    assert stair == pytest.approx([1, 1, 1, 0.36787944, 0.36787944, 0.13533528])
    assert survival.decay_factor(11, 5, 12.0) == pytest.approx(0.60653066)


def _death_epoch(p, epochs=200):
    F, alive = torch.full((1,), p.beta, dtype=f64), torch.tensor([True])
    for epoch in range(epochs):
        if not survival.in_warmup(epoch, p):
            F = survival.update_survival(F, torch.zeros(1, dtype=f64), alive, p, epoch)
        if survival.prune_decisions(F, alive).item():
            return epoch
    return None


def test_braincog_zero_evidence_deaths_by_hand():
    # FC (eps 1.5, beta 10, factor 1): F after epochs 5..11 = 8.49, 6.98, 5.47, 3.97, 2.47,
    # 0.96, -0.54: dies at 11. Conv (eps .65): 12 full steps leave 10(.999^12) - .65 (1-.999^12)
    # / .001 = 2.124, then -.65/e = -0.239 a step: dies at epoch 25 (reference-code.md). The
    # smooth form never kills a conv element under beta 10 (bound 8.13).
    cfg = preset("braincog")
    assert _death_epoch(cfg.linear) == 11 and _death_epoch(cfg.conv) == 25
    from dataclasses import replace
    assert _death_epoch(replace(cfg.conv, decay="smooth")) is None


# ------------------------------------------------------------- population, importance
def test_normalisation_population_by_hand():
    # D = trace * sum_j = [0, 1, 2, 3, 10], neuron 0 dead.
    # alive: min 1, p75 of [1,2,3,10] = 3 + .25 * 7 = 4.75 -> x = [., 0, .2667, .5333, 1]
    # all:   min 0, p75 of [0,1,2,3,10] = 3          -> x = [., .3333, .6667, 1, 1]
    # F = 10 + 2x - 1 (+2 when 2x >= 1); a dead element keeps its F (10)
    expect = {"alive": [10, 9, 9.533333, 12.066667, 13], "all": [10, 9.666667, 12.333333, 13, 13]}
    for pop, want in expect.items():
        dp = _dpap(None, population=pop, mask_dead_synapses_in_spine=False)
        st = _set(dp, [0, 1 / 3, 2 / 3, 1, 10 / 3], [3] * 5, [False, True, True, True, True])
        dp.end_epoch()
        assert st.F_neu.tolist() == pytest.approx(want, abs=1e-6), pop


def test_minmax_product_importance_by_hand():
    # trace [1,2,3,4,5], sum_j [5,1,4,2,3]
    # product: D = [5,2,12,8,15], min 2, p75 12 -> x = [.3, 0, 1, .6, 1]
    # minmax-product: [1,0,.75,.25,.5] * [0,.25,.5,.75,1] = [0,0,.375,.1875,.5], p75 .375
    #   -> x = [0, 0, 1, .5, 1]
    expect = {"product": [9.6, 9, 13, 12.2, 13], "minmax-product": [9, 9, 13, 12, 13]}
    for imp, want in expect.items():
        dp = _dpap(None, importance=imp, population="all")
        st = _set(dp, [1, 2, 3, 4, 5], [5, 1, 4, 2, 3])
        dp.end_epoch()
        assert st.F_neu.tolist() == pytest.approx(want, abs=1e-6), imp


def test_zero_range_skip_or_half_by_hand():
    # trace constant: minmax(trace) has no range. skip: that factor is 0, D = 0, no update (F
    # stays beta = 10). half: D = minmax([5,1,4,2,3]) * .5 = [.5,0,.375,.125,.25], min 0, p75
    # .375 -> x = [1, 0, 1, 1/3, 2/3] -> dF = 2x - 1 (+2 when >= 0) -> F = 10 + dF
    want = {"skip": [10] * 5, "half": [13, 9, 13, 10 - 1 / 3, 12 + 1 / 3]}
    for zr, f in want.items():
        dp = _dpap(None, importance="minmax-product", population="all", zero_range=zr)
        st = _set(dp, [2] * 5, [5, 1, 4, 2, 3])
        dp.end_epoch()
        assert st.F_neu.tolist() == pytest.approx(f, abs=1e-6), zr
    # raw product, every D equal: skip leaves F; half normalises to .5 -> dF = 0 + 2 -> 12
    for zr, f in (("skip", 10), ("half", 12)):
        dp = _dpap(None, zero_range=zr)
        st = _set(dp, [1] * 5, [3] * 5)
        dp.end_epoch()
        assert st.F_neu.tolist() == pytest.approx([f] * 5, abs=1e-6), zr
    assert preset("braincog").zero_range == "half" and DPAPConfig().zero_range == "skip"
    with pytest.raises(ConfigError, match="zero_range"):
        DPAPConfig(zero_range="zero")


def test_braincog_weight_decay_spares_biases():
    # timm's create_optimizer (the authors'): decay on weights, none on biases. One AdamW step
    # with zero gradients moves only the decay: w -> w (1 - lr wd), the bias stays.
    from dpap_deploy.training.run import make_optimizer
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), lif(), nn.Linear(4, 2), lif())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = TrainConfig.from_file(None, optimizer="braincog", lr=0.1, epochs=10)
    opt, _ = make_optimizer(cfg, model, torch.device("cpu"))
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    lr0 = braincog_lr(0, 0.1, 10)
    for k, v in model.state_dict().items():
        if k.endswith("weight"):
            torch.testing.assert_close(v, before[k] * (1 - lr0 * 0.01), rtol=0, atol=1e-9)
        elif k.endswith("bias"):
            assert torch.equal(v, before[k]), k


def test_conv_kernels_kept_when_switched_off():
    for on in (True, False):
        dp = _dpap(None, conv=True, prune_conv_kernels=on)
        st = dp.states[0]
        st.plast_e = torch.tensor([[1.0, 0.0]], dtype=f64).T.repeat(1, 1)   # [2, 1]
        st.trace_e = torch.tensor([1.0, 2.0], dtype=f64)
        dp.end_epoch()
        # synapses: min 0, p75 of [1, 0] = .75 -> x = [1, 0] -> F = [13, 9]
        assert st.F_syn.flatten().tolist() == ([13, 9] if on else [10, 10])


# ------------------------------------------------------------------------ accumulation
def _one_window(dp):
    # pre [1, 0] at both steps; post [1, 0] then [1, 1]; tau .5:
    # S_pre = [1.5, 0], S_post = [1.5, 1]; theta 0: BCM[i] = S_post[i]^2 S_pre
    dp.model.train()
    post = torch.zeros(2, 1, 5)
    post[0, 0, 0] = post[1, 0, 0] = post[1, 0, 1] = 1
    dp.window(0, torch.tensor([[1.0, 0.0]]), True, post, 2)
    dp.step()


def test_cumulative_sums_from_epoch_zero_by_hand():
    p = SurvivalParams(epsilon=1.0, eta=10.0, warmup=2)
    want = [[3.375, 0], [1.5, 0]] + [[0, 0]] * 3
    for acc in ("epoch", "cumulative"):
        dp = _dpap(DPAPConfig(conv=p, linear=p, accumulation=acc))
        _one_window(dp)                          # epoch 0: warm-up
        st = dp.states[0]
        got = st.plast_e.tolist(), st.trace_e.tolist()
        if acc == "epoch":                       # nothing summed in the warm-up
            assert got == ([[0, 0]] * 5, [0] * 5)
        else:
            assert got == (want, [1.5, 1, 0, 0, 0])
        dp.end_epoch()
        dp.end_epoch()                           # epoch 1 ends: still warm-up, nothing reset
        _one_window(dp)                          # epoch 2; theta = [1.5, 1]: BCM 0 for both
        assert st.plast_e.tolist() == (want if acc == "cumulative" else [[0, 0]] * 5)
        assert st.trace_e.tolist() == ([3, 2, 0, 0, 0] if acc == "cumulative" else [1.5, 1, 0, 0, 0])
        dp.end_epoch()
        kept = st.trace_e.tolist()
        assert kept == ([3, 2, 0, 0, 0] if acc == "cumulative" else [0] * 5)


# ------------------------------------------------------------------------- mask timing
def _train_step(dp):
    model = dp.model
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    x = torch.ones(4, 2)
    out = sum(model(x) for _ in range(3))
    out = out + model[0].weight.sum()            # every weight of layer 0 gets a gradient
    opt.zero_grad()
    out.sum().backward()
    grad = model[0].weight.grad[0].clone()
    opt.step()
    for m in model.modules():
        if hasattr(m, "reset_mem"):
            m.reset_mem()
    dp.step()
    return grad


def test_mask_timing_step_vs_epoch():
    for timing in ("step", "epoch"):
        dp = _dpap(None, mask_timing=timing)
        st = dp.states[0]
        st.neu_alive[0] = False
        dp._refresh_masks(0)
        w = dp.model[0].weight
        assert w[0].abs().sum() == 0 and dp.model[0].bias[0] == 0
        grad = _train_step(dp)
        if timing == "step":                     # hard: no gradient, weights stay zero
            assert grad.abs().sum() == 0 and w[0].abs().sum() == 0
        else:                                    # soft: trains and regrows ...
            assert grad.abs().sum() > 0 and w[0].abs().sum() > 0
        dp.end_epoch()                           # ... until the epoch's mask
        assert w[0].abs().sum() == 0
        assert (dp.model[0].weight[1:] != 0).any()


# ------------------------------------------------------------------- config, optimizer
def test_switches_refuse_bad_values_in_one_line():
    for name in ("mask_timing", "accumulation", "population", "importance"):
        with pytest.raises(ConfigError, match=f"invalid DPAP hyperparameter {name}='x': choose"):
            DPAPConfig(**{name: "x"})
    with pytest.raises(ConfigError, match="decay='x'"):
        SurvivalParams(epsilon=1.0, eta=1.0, decay="x")
    with pytest.raises(ConfigError, match="invalid optimizer 'sgd'"):
        TrainConfig(optimizer="sgd")


def test_braincog_preset_and_its_spelling():
    cfg = preset("braincog")
    assert (cfg.conv.epsilon, cfg.conv.eta, cfg.conv.beta, cfg.conv.C, cfg.conv.warmup) == \
        (0.65, 12.0, 10.0, 5.0, 5)
    assert (cfg.linear.epsilon, cfg.linear.eta, cfg.linear.beta, cfg.linear.C) == (1.5, 13.0, 10.0, 2.0)
    spelled = {"mask_timing": "epoch", "accumulation": "cumulative", "population": "all",
               "importance": "minmax-product", "mask_dead_synapses_in_spine": False,
               "prune_conv_kernels": False, "zero_range": "half",
               "conv": {"beta": 10.0, "warmup": 5, "decay": "staircase"},
               "linear": {"warmup": 5, "decay": "staircase"}}
    assert DPAPConfig.from_dict(spelled) == cfg == DPAPConfig.from_dict({"preset": "braincog"})
    # the defaults are unchanged
    d = DPAPConfig()
    assert (d.mask_timing, d.accumulation, d.population, d.importance, d.conv.decay) == \
        ("step", "epoch", "alive", "product", "smooth")


def test_braincog_optimizer_and_schedule_by_hand():
    c = TrainConfig.from_file(None, optimizer="braincog", epochs=10)
    assert (c.lr, c.batch_size) == (5e-3 * 50 / 1024, 50)
    assert TrainConfig.from_file(None, optimizer="braincog", lr=1e-3).lr == 1e-3
    assert (TrainConfig().optimizer, TrainConfig().lr, TrainConfig().batch_size) == ("adam", 5e-3, 64)
    # warm-up: 1e-6 + e (lr - 1e-6) / 5; then 1e-5 + (lr - 1e-5)(1 + cos(pi e / E)) / 2
    lr = 1e-3
    assert braincog_lr(0, lr, 10) == 1e-6
    assert braincog_lr(2, lr, 10) == pytest.approx(1e-6 + 2 * 0.999e-3 / 5)
    assert braincog_lr(5, lr, 10) == pytest.approx(1e-5 + 0.99e-3 * 0.5)
    assert braincog_lr(10, lr, 10) == pytest.approx(1e-5)


@pytest.fixture(scope="module")
def digits():
    d = load_dataset("digits")
    return Dataset("digits", d.x_train[:320], d.y_train[:320], d.x_test[:100], d.y_test[:100], 10)


def test_braincog_run_resumes_bit_exact(tmp_path, digits):
    # the braincog switches, pruning from epoch 0 so that soft masks, regrowth and cumulative
    # sums cross the interruption
    fast = {"preset": "braincog", "conv": {"warmup": 0, "beta": 1.0, "epsilon": 1.5, "eta": 3.0},
            "linear": {"warmup": 0, "beta": 1.0, "eta": 3.0}}
    cfg = TrainConfig(epochs=3, batch_size=32, dpap_config=fast, seed=1, optimizer="braincog",
                      lr=0.05)
    full = train(cfg, tmp_path / "full", progress=False, data=digits)

    def stop(msg):
        if msg.startswith("epoch   2/"):
            raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "cut", progress=False, data=digits, log=stop)
    resumed = train(cfg, tmp_path / "cut", resume=True, progress=False, data=digits)
    assert isinstance(full.optimizer, torch.optim.AdamW)
    for (k, a), (_, b) in zip(full.model.state_dict().items(), resumed.model.state_dict().items()):
        assert torch.equal(a, b), k
    assert any(not st.neu_alive.all() for st in full.dpap.states)
    for sa, sb in zip(full.dpap.states, resumed.dpap.states):
        for k in ("syn_alive", "neu_alive", "F_syn", "F_neu", "plast_e", "trace_e", "theta"):
            assert torch.equal(getattr(sa, k), getattr(sb, k)), k
    assert any(st.plast_e.abs().sum() > 0 for st in full.dpap.states)   # never reset
    assert [h["test_acc"] for h in full.history] == [h["test_acc"] for h in resumed.history]
    assert math.isclose(full.history[-1]["lr"], resumed.history[-1]["lr"])
    # each history row holds the rate its epoch trained at (epoch 1: the warm-up's 1e-6)
    assert [h["lr"] for h in full.history] == pytest.approx([braincog_lr(e, 0.05, 3)
                                                             for e in range(3)])


def test_cli_options_reach_the_run_config():
    from dpap_deploy.cli import build_parser, train_config_from_args
    args = build_parser().parse_args(["train", "--out", "x", "--preset", "braincog",
                                      "--optimizer", "braincog", "--epochs", "7"])
    cfg = train_config_from_args(args)
    assert (cfg.optimizer, cfg.lr, cfg.batch_size, cfg.dpap_config) == \
        ("braincog", 5e-3 * 50 / 1024, 50, {"preset": "braincog"})
    assert train_config_from_args(build_parser().parse_args(
        ["train", "--out", "x"])).optimizer == "adam"
