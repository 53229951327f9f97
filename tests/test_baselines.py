"""The pruning baselines: schedule, selection, target fraction, masks that hold."""
import pytest
import torch
from torch import nn

from dpap_deploy.baselines import GradualPruner
from dpap_deploy.masks import removed_fraction
from dpap_deploy.errors import ConfigError


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(10, 20), nn.ReLU(), nn.Linear(20, 3))


def test_cubic_schedule_reaches_the_target_fraction_of_all_parameters():
    m = _model()
    total = sum(p.numel() for p in m.parameters())          # 220 + 63
    pr = GradualPruner(m, torch.zeros(1, 10), "magnitude", target=0.5, start_epoch=0, end_epoch=4)
    assert pr.final_sparsity == pytest.approx(0.5 * total / 200)   # pool: the hidden weights
    assert [round(pr.sparsity_at(e), 4) for e in range(5)] == \
        [round(pr.final_sparsity * (1 - (1 - p) ** 3), 4) for p in (0.25, 0.5, 0.75, 1.0, 1.0)]
    for _ in range(5):
        pr.end_epoch()
    removed = sum(int((~mk).sum()) for mk in pr.masks)
    assert removed == round(pr.final_sparsity * 200)
    assert removed_fraction(pr.layer_stats(), total) == pytest.approx(0.5, abs=1 / total)


def test_magnitude_removes_the_smallest_weights_and_masks_hold():
    m = _model()
    w0 = m[0].weight.detach().abs().flatten().clone()
    pr = GradualPruner(m, torch.zeros(1, 10), "magnitude", target=0.3, start_epoch=0, end_epoch=1)
    pr.end_epoch()
    dead = ~pr.masks[0].flatten()
    assert w0[dead].max() <= w0[~dead].min()
    opt = torch.optim.Adam(m.parameters(), 0.1)
    for _ in range(3):
        m(torch.randn(4, 10)).sum().backward()
        assert (m[0].weight.grad.flatten()[dead] == 0).all()
        opt.step()
        pr.step()
        opt.zero_grad()
    assert (m[0].weight.detach().flatten()[dead] == 0).all()


def test_random_baseline_is_seeded_and_validated():
    a = GradualPruner(_model(), torch.zeros(1, 10), "random", 0.4, 0, 2, seed=5)
    b = GradualPruner(_model(), torch.zeros(1, 10), "random", 0.4, 0, 2, seed=5)
    for _ in range(3):
        a.end_epoch()
        b.end_epoch()
    assert torch.equal(a.masks[0], b.masks[0])
    with pytest.raises(ConfigError):
        GradualPruner(_model(), torch.zeros(1, 10), "lottery", 0.4, 0, 2)
    with pytest.raises(ConfigError):
        GradualPruner(_model(), torch.zeros(1, 10), "random", 1.2, 0, 2)
