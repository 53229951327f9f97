"""The multi-step executor against snnTorch's step loop: identical output spikes, gradients
equal up to float rounding, the same DPAP masks; the fused Leaky window against hand values."""
import copy

import pytest
import snntorch as snn
import torch
import torch.nn.functional as F
from torch import nn

from corpus_models import STYLES
from dpap_deploy.executor import MultiStep, leaky_window
from dpap_deploy.executor.run import run_window
from dpap_deploy.graph import build_graph
from dpap_deploy.neurons import rectangle
from dpap_deploy.zoo import build_model


def _pair(model, x):
    other = copy.deepcopy(model)
    return (build_graph(model, x), build_graph(other, x))


def _check(model, x, T=6, train=True, rtol=1e-4):
    model.train(train)
    g_step, g_multi = _pair(model, x)
    g_multi.model.train(train)
    a = run_window(g_step, x, T)
    b = MultiStep(g_multi).run(x, T)
    assert torch.equal(a, b), "identical output spikes"
    assert a.sum() > 0, "a test where something spikes"
    if not train:
        return
    w = torch.arange(a.shape[-1], dtype=a.dtype) + 1
    (a * w).sum().backward()
    (b * w).sum().backward()
    # Rounding is relative to the terms summed, not to a gradient that cancels (a bias before
    # a training-mode BatchNorm has a true gradient of 0): compare to the largest gradient.
    scale = max(float(p.grad.abs().max()) for p in g_step.model.parameters() if p.grad is not None)
    for (name, p1), p2 in zip(g_step.model.named_parameters(), g_multi.model.parameters()):
        assert (p1.grad is None) == (p2.grad is None), name
        if p1.grad is not None:
            assert float((p1.grad - p2.grad).abs().max()) <= rtol * scale, name


@pytest.mark.parametrize("name,shape", [("snn-digits", (1, 8, 8)), ("snn-mnist", (1, 28, 28)),
                                        ("snn-cifar10", (3, 16, 16))])
@pytest.mark.parametrize("train", [True, False])
def test_zoo_models_step_and_multistep_agree(name, shape, train):
    check_zoo_model(name, shape, train)


def check_zoo_model(name, shape, train):
    """``_check`` on a zoo model with its weights doubled (so that it fires); the model."""
    torch.manual_seed(0)
    model, _ = build_model(name, shape, 10)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(2.0)
    _check(model, torch.rand(6, *shape) * 2, train=train)
    return model


@pytest.mark.parametrize("train", [True, False])
@pytest.mark.parametrize("fuse", [True, False])
def test_channels_last_convolution_path_agrees(train, fuse, monkeypatch):
    """snn-mnist's second convolution runs channels-last (its Leaky population in memory order,
    the compiled pools converting layouts on the way): the same spikes and gradients as the
    step loop, with the compiled pools and channels-last forced on for this small batch; the
    CIFAR-10 SNN, whose convolutions feed BatchNorm and max pools, stays in the default
    layout. ``fuse``: both conv populations and their pools as one kernel (leaky_pool.py),
    or one after the other."""
    from dpap_deploy.executor import leaky_pool, multistep, native, pool
    monkeypatch.setattr(pool, "SMALL", 0)
    monkeypatch.setattr(multistep, "CHANNELS_LAST_MIN", 0)
    monkeypatch.setattr(leaky_pool, "FUSE", fuse)
    calls = []
    apply = leaky_pool.LeakyPool2x2.apply
    monkeypatch.setattr(leaky_pool.LeakyPool2x2, "apply", lambda *a: calls.append(1) or apply(*a))
    torch.manual_seed(0)
    model, _ = build_model("snn-mnist", (1, 28, 28), 10)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(2.0)
    ex = MultiStep(build_graph(model, torch.rand(2, 1, 28, 28)))
    assert len(ex.channels_last) == 2 and len(ex.pool_to_channels_last) == 1
    assert len(ex.pooled_by) == 2
    _check(model, torch.rand(6, 1, 28, 28) * 2, train=train)
    assert len(calls) == (2 if fuse and native.kernel(build=True) is not None else 0)
    cifar, _ = build_model("snn-cifar10", (3, 16, 16), 10)
    assert not MultiStep(build_graph(cifar, torch.rand(2, 3, 16, 16))).channels_last


@pytest.mark.parametrize("style", [s for s in STYLES if s.kind == "snn" and s.run.__name__ ==
                                   "_stepwise" and s.name != "zoo-sequential"],
                         ids=lambda s: s.name)
def test_corpus_models_step_and_multistep_agree(style):
    torch.manual_seed(1)
    model = style.build()
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.mul_(3.0)
    for m in model.modules():      # dropout draws its masks in another order: same law, not
        if isinstance(m, nn.Dropout):  # the same numbers; compare without it
            m.p = 0.0
    x = torch.rand(6, *style.in_shape) * 3
    g = build_graph(model, x)
    assert MultiStep.supports(g), MultiStep.unsupported(g)
    _check(model, x, train=True, rtol=1e-3)


@pytest.mark.parametrize("reset", ["zero", "subtract", "none"])
def test_fused_leaky_matches_hand_values_and_learns_beta_threshold(reset):
    """beta 0.5, threshold 1, current 0.6 every step: U = .6, .9, 1.05 (spike) then the reset."""
    n = snn.Leaky(beta=torch.tensor(0.5), threshold=torch.tensor(1.0), learn_beta=True,
                  learn_threshold=True, spike_grad=rectangle(1.0), reset_mechanism=reset)
    cur = torch.full((5, 1, 1), 0.6, requires_grad=True)
    s = leaky_window(n, cur)
    after = {"zero": 0.6, "subtract": 0.6 + 0.525 - 1.0, "none": 0.6 + 0.525}[reset]
    assert s.flatten().tolist()[:3] == [0.0, 0.0, 1.0]
    ref = snn.Leaky(beta=torch.tensor(0.5), threshold=torch.tensor(1.0), learn_beta=True,
                    learn_threshold=True, spike_grad=rectangle(1.0), reset_mechanism=reset)
    cur2 = cur.detach().clone().requires_grad_(True)
    mem, out = ref.init_leaky(), []
    for t in range(5):
        spk, mem = ref(cur2[t], mem)
        out.append(spk)
        if t == 3:
            assert float(mem) == pytest.approx(after)
    ref_s = torch.stack(out)
    assert torch.equal(s, ref_s)
    w = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0]).view(5, 1, 1)
    (s * w).sum().backward()
    (ref_s * w).sum().backward()
    assert torch.allclose(cur.grad, cur2.grad, atol=1e-6)
    assert torch.allclose(n.beta.grad, ref.beta.grad, atol=1e-6)
    assert torch.allclose(n.threshold.grad, ref.threshold.grad, atol=1e-6)


def test_looped_models_are_not_taken():
    from corpus_models import TutorialFC
    g = build_graph(TutorialFC(), torch.rand(2, 1, 8, 8))
    assert not MultiStep.supports(g) and "own time loop" in MultiStep.unsupported(g)


@pytest.mark.slow
def test_dpap_run_gives_the_same_masks_either_way(tmp_path):
    from dpap_deploy.training import TrainConfig, train
    fast = {"conv": {"epsilon": 1.0, "eta": 3.0, "beta": 2.0, "warmup": 0},
            "linear": {"epsilon": 1.5, "eta": 3.0, "beta": 2.0, "warmup": 0}}
    runs = {}
    for ex in ("step", "multistep"):
        runs[ex] = train(TrainConfig(epochs=3, dpap_config=fast, executor=ex, device="cpu"),
                         tmp_path / ex, progress=False)
    assert runs["multistep"].executor is not None and runs["step"].executor is None
    a, b = runs["step"].dpap.state_dict(), runs["multistep"].dpap.state_dict()
    dead = 0
    for la, lb in zip(a["layers"], b["layers"]):
        assert torch.equal(la["syn_alive"], lb["syn_alive"]), la["name"]
        assert torch.equal(la["neu_alive"], lb["neu_alive"]), la["name"]
        dead += int((~la["neu_alive"]).sum())
    assert dead > 0
    # Gradients differ by float rounding; Adam divides by sqrt(v), so a weight whose gradient is
    # pure rounding noise can move by up to the learning rate (5e-3) per step either way: most
    # weights stay equal, none moves apart by more than two steps' worth.
    diffs = torch.cat([(p1 - p2).abs().flatten() for p1, p2 in
                       zip(runs["step"].model.parameters(), runs["multistep"].model.parameters())])
    assert float(diffs.median()) < 1e-5 and float(diffs.max()) <= 2 * 5e-3
    acc = [[row["test_acc"] for row in runs[ex].history] for ex in ("step", "multistep")]
    assert max(abs(a - b) for a, b in zip(*acc)) <= 3 / 397, acc


@pytest.mark.slow
def test_dpap_on_the_channels_last_path_gives_the_same_masks(tmp_path, monkeypatch):
    """DPAP's traces read the spikes of a channels-last population (snn-mnist's conv2, forced on
    for this small batch): the same masks as the step loop after pruning has begun."""
    import torch.nn.functional as F
    from dpap_deploy.data import Dataset, load_dataset
    from dpap_deploy.executor import multistep, pool
    from dpap_deploy.training import TrainConfig, train
    monkeypatch.setattr(pool, "SMALL", 0)
    monkeypatch.setattr(multistep, "CHANNELS_LAST_MIN", 0)
    d = load_dataset("digits")
    up = lambda x: F.interpolate(x[:256], size=(28, 28), mode="bilinear")  # noqa: E731
    data = Dataset("digits-28", up(d.x_train), d.y_train[:256], up(d.x_test), d.y_test[:256], 10)
    fast = {"conv": {"epsilon": 1.0, "eta": 2.0, "beta": 0.6, "warmup": 0},
            "linear": {"epsilon": 1.5, "eta": 2.0, "beta": 0.6, "warmup": 0}}
    runs = {}
    for ex in ("step", "multistep"):
        runs[ex] = train(TrainConfig(model="snn-mnist", epochs=2, dpap_config=fast, executor=ex,
                                     device="cpu"), tmp_path / ex, progress=False, data=data)
    dead = 0
    for la, lb in zip(runs["step"].dpap.state_dict()["layers"],
                      runs["multistep"].dpap.state_dict()["layers"]):
        assert torch.equal(la["neu_alive"], lb["neu_alive"]), la["name"]
        assert torch.equal(la["syn_alive"], lb["syn_alive"]), la["name"]
        dead += int((~la["neu_alive"]).sum())
    assert dead > 0


@pytest.mark.parametrize("reset", ["zero", "subtract", "none"])
@pytest.mark.parametrize("static", [False, True])
def test_compiled_kernel_and_torch_path_agree(monkeypatch, reset, static):
    """The compiled kernel (when it builds here) and the torch-operation path: identical spikes,
    the same gradients up to float rounding, for every reset and for a static current."""
    from dpap_deploy.executor import native
    if native.kernel(build=True) is None:
        pytest.skip(f"no compiled kernel here: {native.error}")
    torch.manual_seed(0)
    cur = (torch.rand(6, 4, 3, 5) if not static else torch.rand(4, 3, 5)) * 0.9
    results = []
    for use_native in (True, False):
        monkeypatch.setenv("DPAP_DEPLOY_NATIVE", "1" if use_native else "0")
        n = snn.Leaky(beta=torch.tensor(0.7), threshold=torch.tensor(1.0), learn_beta=True,
                      learn_threshold=True, spike_grad=rectangle(1.0), reset_mechanism=reset)
        c = cur.clone().requires_grad_(True)
        s = leaky_window(n, c, steps=6 if static else None)
        (s * torch.linspace(1, 2, s.numel()).view_as(s)).sum().backward()
        results.append((s, c.grad, n.beta.grad, n.threshold.grad))
    (s1, g1, b1, t1), (s2, g2, b2, t2) = results
    assert torch.equal(s1, s2) and s1.sum() > 0
    assert torch.allclose(g1, g2, atol=1e-5)
    assert torch.allclose(b1, b2, rtol=1e-4, atol=1e-5) and torch.allclose(t1, t2, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("reset", ["zero", "subtract", "none"])
@pytest.mark.parametrize("static", [False, True])
def test_compiled_kernel_byte_code_backward(monkeypatch, reset, static):
    """The common case (rectangle surrogate, beta and threshold fixed) keeps one byte per neuron
    and step instead of U: gradients bit-identical to the kernel's U path, equal to the torch
    path up to rounding; without autograd the forward keeps nothing and spikes are unchanged."""
    from dpap_deploy.executor import lif, native
    if native.kernel(build=True) is None:
        pytest.skip(f"no compiled kernel here: {native.error}")
    torch.manual_seed(1)
    cur = (torch.rand(6, 4, 3, 5) if not static else torch.rand(4, 3, 5)) * 0.9
    g_out = torch.randn((6,) + tuple(cur.shape[-3:]))
    results = []
    for use_native, coded in ((True, True), (True, False), (False, False)):
        monkeypatch.setenv("DPAP_DEPLOY_NATIVE", "1" if use_native else "0")
        monkeypatch.setattr(lif, "CODED", coded)
        n = snn.Leaky(beta=0.7, threshold=1.0, spike_grad=rectangle(1.0), reset_mechanism=reset)
        c = cur.clone().requires_grad_(True)
        s = leaky_window(n, c, steps=6 if static else None)
        s.backward(g_out.expand_as(s))
        with torch.no_grad():
            s0 = leaky_window(n, cur, steps=6 if static else None)
        results.append((s, c.grad, s0))
    (s1, g1, n1), (s2, g2, n2), (s3, g3, n3) = results
    assert torch.equal(s1, s2) and torch.equal(s1, s3) and s1.sum() > 0
    assert torch.equal(n1, s1) and torch.equal(n3, s1)
    assert torch.equal(g1, g2) and (g1 != 0).sum() > g1.numel() // 4
    assert torch.allclose(g1, g3, atol=1e-5)


@pytest.mark.parametrize("reset", ["zero", "subtract", "none"])
@pytest.mark.parametrize("static", [True, False])
@pytest.mark.parametrize("in_cl,out_cl", [(False, False), (True, False), (True, True),
                                          (False, True)])
@pytest.mark.parametrize("spikes", [False, True])
def test_leaky_and_its_pool_in_one_kernel(reset, static, in_cl, out_cl, spikes, monkeypatch):
    """A Leaky window and its 2x2 average pool as one compiled operation: pooled outputs, the
    spikes (when asked for, for DPAP's traces) and the current's gradient bit-identical to
    the window then the pool, for both layouts in and out and every reset."""
    from dpap_deploy.executor import leaky_pool, native, pool
    if native.kernel(build=True) is None:
        pytest.skip(f"no compiled kernel here: {native.error}")
    monkeypatch.setattr(pool, "SMALL", 0)
    torch.manual_seed(2)
    T, shape = 5, (3, 4, 6, 10)
    cur = torch.randn(shape if static else (T,) + shape) * 0.6 + 0.3
    if in_cl:
        cur = (cur.contiguous(memory_format=torch.channels_last) if static else
               cur.permute(0, 1, 3, 4, 2).contiguous().permute(0, 1, 4, 2, 3))
    g_out = torch.randn(T, 3, 4, 3, 5)
    n = snn.Leaky(beta=0.8, threshold=0.5, spike_grad=rectangle(1.0), reset_mechanism=reset)
    runs = []
    for fused in (True, False):
        c = cur.detach().clone(memory_format=torch.preserve_format).requires_grad_(True)
        if fused:
            pooled, s = leaky_pool.leaky_pool(n, c, T if static else None, out_cl, spikes)
            cl = pooled.reshape((-1,) + pooled.shape[2:]).is_contiguous(
                memory_format=torch.channels_last)
            assert cl == out_cl and (s is not None) == spikes
        else:
            s = leaky_window(n, c, T if static else None)
            pooled = pool.avg_pool_2x2(s.reshape((-1,) + s.shape[2:])).reshape(g_out.shape)
        pooled.backward(g_out)
        runs.append((pooled, s, c.grad))
    (p1, s1, g1), (p2, s2, g2) = runs
    assert torch.equal(p1, p2) and 0 < float(p1.mean()) < 1
    assert not spikes or torch.equal(s1, s2)
    assert torch.equal(g1, g2) and (g1 != 0).float().mean() > 0.3


def test_leaky_and_pool_kernel_declines_what_it_does_not_cover(monkeypatch):
    """Odd map sizes, a learned beta and a surrogate other than the rectangle go the two-step
    way (``None``)."""
    from dpap_deploy.executor import leaky_pool, pool
    monkeypatch.setattr(pool, "SMALL", 0)
    odd = torch.rand(2, 3, 5, 6)
    n = snn.Leaky(beta=0.8, spike_grad=rectangle(1.0))
    assert leaky_pool.leaky_pool(n, odd, 4, False, False) is None
    learned = snn.Leaky(beta=torch.tensor(0.8), learn_beta=True, spike_grad=rectangle(1.0))
    assert leaky_pool.leaky_pool(learned, torch.rand(2, 3, 4, 6), 4, False, False) is None
    sigmoid = snn.Leaky(beta=0.8)
    assert leaky_pool.leaky_pool(sigmoid, torch.rand(2, 3, 4, 6), 4, False, False) is None


def test_event_frames_one_per_step_agree():
    """Frames ``[B, T, C, H, W]`` to a one-call-one-step model: frame t at step t, both ways."""
    torch.manual_seed(0)
    model, _ = build_model("snn-digits", (2, 8, 8), 10)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(2.5)
    x = (torch.rand(4, 5, 2, 8, 8) > 0.6).float()
    g_step, g_multi = _pair(model, x)
    assert g_step.input_shape == (2, 8, 8) and g_step.nodes[1].inputs == [0]
    a = run_window(g_step, x, 99)
    b = MultiStep(g_multi).run(x, 99)
    assert a.shape[0] == 5 and torch.equal(a, b) and a.sum() > 0


@pytest.mark.parametrize("compiled", [True, False])
@pytest.mark.parametrize("shape", [(3, 4, 8, 8), (2, 3, 7, 9), (2, 2, 28, 28), (5, 7, 9)])
def test_two_by_two_pool_equals_avg_pool2d_values_and_gradients(shape, compiled, monkeypatch):
    """The executor's 2x2 average pool (compiled kernel, or strided slices without it) against
    F.avg_pool2d, bit for bit, on spikes and on real values; odd edges get no output and a
    zero gradient."""
    import torch.nn.functional as F
    from dpap_deploy.executor import native
    from dpap_deploy.executor import pool
    monkeypatch.setattr(pool, "SMALL", 0)       # these small maps take the fast path too
    if not compiled:
        monkeypatch.setenv("DPAP_DEPLOY_NATIVE", "0")
    assert (native.kernel(build=True) is not None) == (compiled and native.error is None)
    from dpap_deploy.executor.pool import avg_pool_2x2, is_2x2
    gen = torch.Generator().manual_seed(sum(shape))
    for x in ((torch.rand(shape, generator=gen) > 0.7).float(),
              torch.randn(shape, generator=gen) * 3):
        a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
        ya, yb = F.avg_pool2d(a, 2), avg_pool_2x2(b)
        g = torch.randn(ya.shape, generator=gen)
        ya.backward(g)
        yb.backward(g)
        assert torch.equal(ya, yb) and torch.equal(a.grad, b.grad)
    attrs = {"pool": "avg", "dims": 2, "kernel": (2, 2), "stride": (2, 2), "padding": (0, 0),
             "ceil_mode": False, "exact": True}
    assert is_2x2(attrs) and not is_2x2({**attrs, "ceil_mode": True}) and \
        not is_2x2({**attrs, "stride": (1, 1)}) and not is_2x2({**attrs, "pool": "max"})


def test_a_pool_with_its_own_divisor_runs_as_the_step_loop():
    """The executor's pools take every option the graph records (kernel, stride, padding,
    ceil_mode, count_include_pad, divisor_override, dilation): a pool whose divisor is not the
    plain mean gives the step loop's spikes."""
    from dpap_deploy.executor.run import outputs
    from dpap_deploy.neurons import lif
    torch.manual_seed(1)
    x = torch.rand(4, 1, 8, 8)
    plain = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), lif(), nn.AvgPool2d(2), nn.Flatten(),
                          nn.Linear(32, 3), lif())
    with torch.no_grad():
        plain[4].weight.mul_(3.0)
        plain[4].bias.fill_(0.4)
    odd = copy.deepcopy(plain)
    odd[2] = nn.AvgPool2d(2, divisor_override=3)
    for m in (plain, odd):
        g = build_graph(m.eval(), x)
        assert MultiStep.supports(g)
        fast, slow = outputs(g, x, 6), outputs(g, x, 6, multistep=False)
        assert torch.equal(fast, slow)
    from dpap_deploy.executor.multistep import _pool_fn      # the divisor reaches the pool
    pool = next(n for n in build_graph(odd, x).nodes if n.op == "pool")
    t = torch.rand(2, 2, 8, 8)
    assert torch.equal(_pool_fn(pool.attrs)(t), F.avg_pool2d(t, 2, divisor_override=3))


@pytest.mark.parametrize("shape", [(3, 4, 8, 8), (2, 3, 7, 9), (2, 5, 28, 28)])
@pytest.mark.parametrize("in_cl", [False, True])
@pytest.mark.parametrize("out_cl", [False, True])
def test_two_by_two_pool_between_layouts(shape, in_cl, out_cl, monkeypatch):
    """The compiled pool from and to channels-last maps (and a gradient in either layout):
    bit-identical values and gradients to F.avg_pool2d, the output in the layout asked for."""
    import torch.nn.functional as F
    from dpap_deploy.executor import native, pool
    if native.kernel(build=True) is None:
        pytest.skip(f"no compiled kernel here: {native.error}")
    monkeypatch.setattr(pool, "SMALL", 0)
    cl = torch.channels_last
    gen = torch.Generator().manual_seed(sum(shape) + 2 * in_cl + out_cl)
    for x in ((torch.rand(shape, generator=gen) > 0.7).float(),
              torch.randn(shape, generator=gen) * 3):
        x = x.contiguous(memory_format=cl) if in_cl else x
        a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
        ya, yb = F.avg_pool2d(a, 2), pool.avg_pool_2x2(b, channels_last=out_cl)
        assert yb.is_contiguous(memory_format=cl if out_cl else torch.contiguous_format)
        for g_cl in (False, True):
            g = torch.randn(ya.shape, generator=gen)
            g = g.contiguous(memory_format=cl) if g_cl else g
            ga, = torch.autograd.grad(ya, a, g, retain_graph=True)
            gb, = torch.autograd.grad(yb, b, g, retain_graph=True)
            assert torch.equal(ga, gb) and gb.is_contiguous(
                memory_format=cl if in_cl else torch.contiguous_format)
        assert torch.equal(ya, yb)


@pytest.mark.parametrize("static", [False, True])
@pytest.mark.parametrize("learn", [False, True])
def test_leaky_window_on_a_channels_last_current(static, learn):
    """A channels-last current runs in its memory order: the same spikes and gradients as the
    contiguous one, in its layout (no copy), for the byte-code and the U-keeping backward."""
    torch.manual_seed(3)
    shape = (4, 6, 5, 7) if static else (5, 4, 6, 5, 7)
    cur = torch.rand(shape) * 0.9
    lay = cur.permute(0, 2, 3, 1) if static else cur.permute(0, 1, 3, 4, 2)
    lay = lay.contiguous().permute(0, 3, 1, 2) if static else lay.contiguous().permute(0, 1, 4, 2, 3)
    assert torch.equal(lay, cur) and not lay.is_contiguous()
    out = []
    for c in (cur, lay):
        n = snn.Leaky(beta=0.8, threshold=1.0, spike_grad=rectangle(1.0), learn_beta=learn)
        c = c.clone(memory_format=torch.preserve_format).requires_grad_(True)
        s = leaky_window(n, c, steps=5 if static else None)
        g = torch.linspace(-1, 1, s.numel()).view(s.shape)
        s.backward(g)
        out.append((s, c.grad, s.stride()))
    (s1, g1, _), (s2, g2, st2) = out
    assert torch.equal(s1, s2) and s1.sum() > 0 and torch.equal(g1, g2)
    from dpap_deploy.executor import native
    if native.kernel(build=True) is not None:
        assert s2.permute(0, 1, 3, 4, 2).is_contiguous()     # kept in the current's layout
