"""DPAP attached to real models: hand-computed accumulators, survival values and prune decisions
flowing through the forward hooks, for linear and conv layers, SNN and ANN."""
import pytest
import torch
from torch import nn

from dpap_deploy.dpap import DPAP, DPAPConfig, SurvivalParams
from dpap_deploy.errors import ConfigError, UnsupportedModelError, DPAPError
from dpap_deploy.executor.run import run_window
from dpap_deploy.graph import graph_of
from dpap_deploy.neurons import lif

LIN = SurvivalParams(epsilon=1.5, eta=10.0, beta=1.0, gamma=0.999, C=2.0, warmup=0)
CONV = SurvivalParams(epsilon=1.5, eta=10.0, beta=1.0, gamma=0.999, C=5.0, warmup=0)
CFG = DPAPConfig(conv=CONV, linear=LIN)

X45 = torch.tensor([[0.45]])      # one sample, one input current


def _set(linear: nn.Module, w, b=None):
    with torch.no_grad():
        linear.weight.copy_(torch.tensor(w, dtype=torch.float32).reshape(linear.weight.shape))
        if linear.bias is not None:
            linear.bias.copy_(torch.tensor(b if b is not None else [0.0] * linear.weight.shape[0]))


def _ann_2x2():
    model = nn.Sequential(nn.Linear(2, 2), nn.ReLU(), nn.Linear(2, 2))
    _set(model[0], [[1, 0], [0, 1]])
    return model


X = torch.tensor([[1.0, 2.0], [3.0, 0.0]])


def _ann_after_one_batch(cfg=CFG):
    """The 2x2 ANN with DPAP attached, after one training batch of X."""
    model = _ann_2x2()
    dp = DPAP(model, X, cfg)
    model.train()
    model(X)
    dp.step()
    return model, dp


def test_ann_linear_batch_accumulators_and_threshold():
    model, dp = _ann_after_one_batch()
    st = dp.states[0]
    # post = relu(I x) = x; BCM = (post^2)^T @ x = [[1, 9], [4, 0]] @ [[1, 2], [3, 0]]
    assert st.plast_e.tolist() == [[28.0, 2.0], [4.0, 8.0]]
    assert st.trace_e.tolist() == [4.0, 2.0]
    assert st.theta.tolist() == [2.0, 1.0]          # mean post trace, Num = 1
    # second batch: theta = [2, 1] is used first, then updated
    model(X)
    dp.step()
    # post*(post-theta) = [[-1, 2], [3, 0]] -> rows: i0 = -1*[1,2] + 3*[3,0]; i1 = 2*[1,2]
    assert st.plast_e.tolist() == [[36.0, 0.0], [6.0, 12.0]]
    assert st.theta.tolist() == [2.0, 1.0]          # ([2,1]*1 + [2,1]) / 2
    assert st.trace_e.tolist() == [8.0, 4.0]
    assert dp.num_batches == 2


def test_ann_linear_end_of_epoch_survival_and_pruning():
    model, dp = _ann_after_one_batch()
    # the optimizer moved the weights after the traces were taken
    _set(model[0], [[1, 0.5], [0.25, 1]], [0.3, 0.7])
    died = dp.end_epoch()
    st = dp.states[0]
    # synapses: values [28,2,4,8], min 2, p75 = 13 -> norm [1, 0, 2/11, 6/11]
    # delta = 2n - 1.5; dF = delta + 2 if delta >= 0; F = 0.999*1 + dF
    want_syn = [0.999 + 2.5, 0.999 - 1.5, 0.999 + 4 / 11 - 1.5, 0.999 + 12 / 11 - 1.5]
    assert st.F_syn.flatten().tolist() == pytest.approx(want_syn)
    # neurons: D = trace * rowsum = [4*30, 2*12] = [120, 24]; p75 = 96 -> norm [1, 0]
    assert st.F_neu.tolist() == pytest.approx([0.999 + 2.5, 0.999 - 1.5])
    assert st.syn_alive.tolist() == [[True, False], [False, True]]
    assert st.neu_alive.tolist() == [True, False]
    assert died["0"] == {"synapses": 2, "neurons": 1}
    assert st.neu_pruned_epoch.tolist() == [-1, 0]
    # masks applied: synapse (0,1) and all of neuron 1 (weights and bias) are zero
    assert model[0].weight.tolist() == [[1.0, 0.0], [0.0, 0.0]]
    assert model[0].bias.tolist() == pytest.approx([0.3, 0.0])
    # accumulators reset for the next epoch; the output layer is never touched
    assert st.plast_e.abs().sum() == 0 and st.trace_e.abs().sum() == 0
    assert dp.states[1].neu_alive.all() and dp.states[1].syn_alive.all()


def test_snn_linear_lif_trace_through_hooks():
    model = nn.Sequential(nn.Linear(1, 1), lif(), nn.Linear(1, 1), lif())
    _set(model[0], [[1.0]])
    dp = DPAP(model, torch.zeros(1, 1), CFG)
    model.train()
    spikes = []
    model[1].register_forward_hook(lambda m, i, o: spikes.append(float(o.detach())))
    run_window(graph_of(model, X45), X45, 4)
    # u = 0.45, 0.09+0.45 = 0.54 (spike), 0 + 0.45, 0.54 (spike)
    assert spikes == [0.0, 1.0, 0.0, 1.0]
    dp.step()
    st = dp.states[0]
    s_post = 1.25                        # 0 -> 1 -> 0.5 -> 1.25
    s_pre = 0.45 * (1 + 0.5 + 0.25 + 0.125)  # the input current, traced the same way
    assert st.trace_e.item() == pytest.approx(s_post)
    assert st.plast_e.item() == pytest.approx(s_pre * s_post * (s_post - 0.0))
    assert st.theta.item() == pytest.approx(s_post)


def test_conv_kernel_level_bcm_and_bn_pruning():
    model = nn.Sequential(nn.Conv2d(2, 2, 1, bias=False), nn.BatchNorm2d(2), nn.ReLU(),
                          nn.Flatten(), nn.Linear(8, 2))
    _set(model[0], [[1, 0], [0, -1]])
    x = torch.tensor([[[[1.0, 2.0], [0.0, 3.0]], [[1.0, 1.0], [1.0, 1.0]]]])
    dp = DPAP(model, x, CFG)
    model.eval()          # BN as identity-like with running stats (0 mean, 1 var)
    dp.model.training = True   # record traces, keep BN in eval behaviour
    model[0].training = model[2].training = True
    model(x)
    dp.step()
    st = dp.states[0]
    # BN(eval) scales by 1/sqrt(1+eps): post ch0 = 6/sqrt(1+1e-5), ch1 = relu(-1)*... = 0
    k = 1 / (1 + 1e-5) ** 0.5
    pre = [6.0, 4.0]
    assert st.plast_e.flatten().tolist() == pytest.approx(
        [(6 * k) ** 2 * pre[0], (6 * k) ** 2 * pre[1], 0.0, 0.0])
    assert st.plast_e.shape == (2, 2)   # one value per kernel (channel pair)
    dp.end_epoch()
    # channel 1 never fired: D = 0 < D of channel 0, so it decays below zero and dies
    assert st.neu_alive.tolist() == [True, False]
    bn = model[1]
    assert bn.weight[1].item() == 0.0 and bn.bias[1].item() == 0.0
    assert model[0].weight[1].abs().sum().item() == 0.0


def test_gradients_of_pruned_parameters_are_masked():
    model, dp = _ann_after_one_batch()
    dp.end_epoch()
    model(X).sum().backward()
    g = model[0].weight.grad
    assert g[1].abs().sum() == 0 and g[0, 1] == 0 and g[0, 0] != 0
    assert model[0].bias.grad[1] == 0


def test_eval_mode_records_nothing():
    model = _ann_2x2()
    dp = DPAP(model, X, CFG)
    model.eval()
    model(X)
    dp.step()
    assert dp.num_batches == 0 and dp.states[0].plast_e.abs().sum() == 0


def test_hebb_and_stdp_rules():
    model, dp = _ann_after_one_batch(DPAPConfig(conv=CONV, linear=LIN, rule="hebb"))
    assert dp.states[0].plast_e.tolist() == [[1 + 9.0, 2.0], [2.0, 4.0]]  # post^T @ pre
    with pytest.raises(ConfigError, match="stdp"):
        DPAP(_ann_2x2(), X, DPAPConfig(rule="stdp"))
    snn_model = nn.Sequential(nn.Linear(1, 1), lif(), nn.Linear(1, 1), lif())
    _set(snn_model[0], [[1.0]])
    dp = DPAP(snn_model, torch.zeros(1, 1), DPAPConfig(conv=CONV, linear=LIN, rule="stdp"))
    snn_model.train()
    run_window(graph_of(snn_model, X45), X45, 4)
    dp.step()
    # pre current 0.45 every step; post spikes at t=2 and t=4
    # S_pre: .45, .675, .7875, .84375; S_post before each step: 0, 0, 1, .5
    # LTP: o_post * S_pre = .675 + .84375; LTD: S_post_before * o_pre = (1 + .5) * .45
    assert dp.states[0].plast_e.item() == pytest.approx(0.675 + 0.84375 - 1.5 * 0.45)


def test_unsupported_layers_and_shapes_are_named():
    with pytest.raises(UnsupportedModelError, match="Conv3d.*'0'"):
        DPAP(nn.Sequential(nn.Conv3d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(12, 2)),
             torch.zeros(1, 1, 3, 3, 4))
    with pytest.raises(UnsupportedModelError, match="no spiking neuron"):
        DPAP(nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2), lif()), torch.zeros(1, 4))
    with pytest.raises(UnsupportedModelError, match="grouped convolution '0'"):
        DPAP(nn.Sequential(nn.Conv2d(2, 2, 3, groups=2), nn.ReLU(), nn.Flatten(),
                           nn.Linear(2, 2)), torch.zeros(1, 2, 3, 3))
    with pytest.raises(DPAPError, match=r"input of shape \(5,\)"):
        DPAP(nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2)), torch.zeros(1, 5))
