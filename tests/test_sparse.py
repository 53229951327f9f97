"""Fully connected synapses over their input's nonzeros (``executor/sparse.py``): the dense
product's numbers (bit for bit where the BLAS kernel's block depth is reproduced, as on this
machine), taken only where covered, and the executor's spikes still the step loop's."""
import pytest
import snntorch as snn
import torch
from torch import nn

from dpap_deploy.executor import MultiStep, native, sparse
from dpap_deploy.graph import build_graph
from dpap_deploy.zoo import build_model

pytestmark = pytest.mark.skipif(native.kernel() is None, reason="no compiled kernel here")


def _spikes(m, k, density, gen):
    """Pooled-spike-like input: multiples of 0.25 where nonzero."""
    keep = torch.rand(m, k, generator=gen) < density
    return keep.float() * torch.randint(1, 5, (m, k), generator=gen).float() * 0.25


def _grads(fn, lin, x, g):
    lin.zero_grad()
    x = x.clone().requires_grad_()
    y = fn(x)
    y.backward(g)
    return y.detach(), x.grad, lin.weight.grad.clone(), \
        None if lin.bias is None else lin.bias.grad.clone()


@pytest.mark.parametrize("m,k,n,bias", [(800, 1960, 300, True), (96, 200, 10, False),
                                        (64, 1000, 37, True)])
@pytest.mark.parametrize("density", [0.01, 0.1, 0.19])
def test_sparse_linear_is_the_dense_product(m, k, n, bias, density, monkeypatch):
    """Output and all three gradients equal the dense layer's; where this machine's BLAS order
    is not reproduced (a narrow layer), the layer is left dense."""
    monkeypatch.setattr(sparse, "MIN_MACS", 0)
    gen = torch.Generator().manual_seed(m + k)
    lin = nn.Linear(k, n, bias=bias)
    x, g = _spikes(m, k, density, gen), torch.randn(m, n, generator=gen)
    kc, exact = sparse.block_depth(k, n, bias)
    if not exact:
        assert sparse.linear(lin, x) is None, "no sparse product that is not the dense one"
        return
    assert sparse.linear(lin, x) is not None, "the sparse path is taken"
    dense = _grads(lin, lin, x, g)
    ours = _grads(lambda t: sparse.linear(lin, t), lin, x, g)
    for name, a, b in zip(("output", "input grad", "weight grad", "bias grad"), dense, ours):
        assert (a is None and b is None) or torch.equal(a, b), name


def _cpu_vendor() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            return next((l.split(":")[1].strip() for l in fh if l.startswith("vendor_id")), "")
    except OSError:
        return ""


def test_the_wide_layers_of_the_zoo_are_reproduced_here():
    """On the CPUs the kernels were calibrated on (AMD EPYC, MKL, AVX-512) the first fully
    connected layers of the zoo's networks get their exact depth: the sparse path is in use,
    not silently off. Elsewhere MKL may sum in another order (measured on an Intel Xeon with
    AVX-512: reproduced with one thread, not with two); the calibration then keeps the layer
    dense (the same spikes, no speed-up) and this check does not apply."""
    if not torch.backends.mkl.is_available() or "AVX512" not in torch.backends.cpu.get_cpu_capability() \
            or _cpu_vendor() != "AuthenticAMD":
        pytest.skip("another BLAS kernel or CPU: the sparse path may stay off")
    assert sparse.block_depth(1960, 300, True)[1]


def test_this_machine_reproduces_the_blas_order_and_a_wrong_depth_is_caught(monkeypatch):
    """The calibration finds a depth that gives the dense bits here; a neighbouring depth does
    not (the bit-for-bit check above can fail)."""
    monkeypatch.setattr(sparse, "MIN_MACS", 0)
    kc, exact = sparse.block_depth(1960, 300, True)
    if not exact:
        pytest.skip("this BLAS sums in an order the kernel does not reproduce")
    gen = torch.Generator().manual_seed(1)
    lin = nn.Linear(1960, 300)
    x = _spikes(800, 1960, 0.1, gen)
    assert torch.equal(sparse.linear(lin, x), lin(x))
    monkeypatch.setitem(sparse._depths, (1960, 300, True), (kc // 2 if kc > 64 else kc * 2, True))
    assert not torch.equal(sparse.linear(lin, x), lin(x))


def test_what_it_does_not_cover_runs_the_layer(monkeypatch):
    monkeypatch.setattr(sparse, "MIN_MACS", 0)
    gen = torch.Generator().manual_seed(2)
    lin = nn.Linear(300, 20)
    assert sparse.linear(lin, _spikes(64, 300, 0.5, gen)) is None, "too dense"
    assert sparse.linear(lin.double(), _spikes(64, 300, 0.05, gen).double()) is None, "float64"
    assert sparse.linear(lin.float(), _spikes(64, 300, 0.05, gen).view(8, 8, 300)) is None, "3-D"
    monkeypatch.setattr(sparse, "SPARSE", False)
    assert sparse.linear(lin, _spikes(64, 300, 0.05, gen)) is None, "switched off"


def _count_sparse_calls(monkeypatch, fn=sparse.SparseLinear) -> list:
    calls = []
    real = fn.apply
    monkeypatch.setattr(fn, "apply", lambda *a: calls.append(1) or real(*a))
    return calls


@pytest.mark.parametrize("name,shape", [("snn-mnist", (1, 28, 28)), ("snn-cifar10", (3, 16, 16))])
@pytest.mark.parametrize("train", [True, False])
def test_zoo_models_agree_with_the_step_loop_on_the_sparse_path(name, shape, train, monkeypatch):
    """With the sparse products forced on for this small batch (and snn-mnist's second
    convolution on its channels-last path): the step loop's spikes, gradients to rounding."""
    from dpap_deploy.executor import multistep, pool
    from test_executor import check_zoo_model
    monkeypatch.setattr(sparse, "MIN_MACS", 0)
    monkeypatch.setattr(sparse, "MAX_DENSITY", 1.0)     # these inputs fire a lot
    monkeypatch.setattr(sparse, "MAX_CONV_DENSITY", 1.0)
    monkeypatch.setattr(pool, "SMALL", 0)
    monkeypatch.setattr(multistep, "CHANNELS_LAST_MIN", 0)
    calls = _count_sparse_calls(monkeypatch)
    conv_calls = _count_sparse_calls(monkeypatch, sparse.SparseConv2d)
    model = check_zoo_model(name, shape, train)
    fcs = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if any(sparse.block_depth(m.in_features, m.out_features, True)[1] for m in fcs):
        assert calls, "a fully connected layer ran over nonzeros"
    if name == "snn-mnist" and sparse.conv_exact(model[3])[0]:
        assert conv_calls == [1], "the second convolution's forward ran over nonzeros"


def test_a_users_hook_keeps_the_module_call(monkeypatch):
    """A forward hook of the user's on a fully connected synapse still runs: that layer is
    called as written, not replaced by the sparse product."""
    monkeypatch.setattr(sparse, "MIN_MACS", 0)
    monkeypatch.setattr(sparse, "MAX_DENSITY", 1.0)
    calls = _count_sparse_calls(monkeypatch)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(400, 300), snn.Leaky(0.9, init_hidden=True),
                          nn.Linear(300, 300), snn.Leaky(0.9, init_hidden=True, output=True))
    if not sparse.block_depth(300, 300, True)[1]:
        pytest.skip("this BLAS's order is not reproduced for these layers")
    with torch.no_grad():
        model[1].weight.mul_(4)
    seen = []
    model[1].register_forward_hook(lambda *_: seen.append(1))
    x = (torch.rand(8, 1, 20, 20) < 0.1).float()
    MultiStep(build_graph(model, x)).run(x, 5)
    assert seen == [1], "the hook ran once, on the whole window"
    assert len(calls) == 1, "the other fully connected layer ran over nonzeros"


def test_dpap_hooks_stand_aside_only_inside_a_window():
    from dpap_deploy.dpap import DPAP
    torch.manual_seed(0)
    model, _ = build_model("snn-digits", (1, 8, 8), 10)
    x = torch.rand(4, 1, 8, 8)
    dpap = DPAP(model, x)
    fc = [m for m in model.modules() if isinstance(m, nn.Linear)][0]
    assert not sparse.hooks_allow(fc, dpap), "outside a window DPAP's hooks record"
    with dpap.windows():
        assert sparse.hooks_allow(fc, dpap)
        fc.register_forward_hook(lambda *_: None)
        assert not sparse.hooks_allow(fc, dpap), "a hook that is not DPAP's"
    dpap.detach()


@pytest.mark.parametrize("c,o,ks,pad,bias", [(15, 40, 3, 1, True), (16, 32, 3, 1, False),
                                              (3, 8, 5, 2, True), (6, 20, (3, 1), (1, 0), True),
                                              (4, 7, 3, 0, True)])
@pytest.mark.parametrize("density", [0.02, 0.12])
def test_sparse_convolution_is_the_dense_one(c, o, ks, pad, bias, density, monkeypatch):
    """Output and gradients equal to the dense convolution's where this machine's order is
    reproduced (checked once per configuration), else the layer is left dense."""
    monkeypatch.setattr(sparse, "MIN_MACS", 0)
    gen = torch.Generator().manual_seed(c * o)
    conv = nn.Conv2d(c, o, ks, padding=pad, bias=bias)
    shape = (24, c, 11, 12)
    x = ((torch.rand(shape, generator=gen) < density).float() *
         torch.randint(1, 5, shape, generator=gen) * 0.25).contiguous(memory_format=torch.channels_last)
    if not sparse.conv_exact(conv)[0]:
        assert sparse.conv2d(conv, x) is None
        return
    x.requires_grad_()
    dense, ours = conv(x), sparse.conv2d(conv, x)
    assert ours is not None and torch.equal(dense, ours)
    assert ours.is_contiguous(memory_format=torch.channels_last)
    g = torch.randn(dense.shape, generator=gen)
    params = [x, conv.weight] + ([conv.bias] if bias else [])
    for i, (a, b) in enumerate(zip(torch.autograd.grad(dense, params, g),
                                   torch.autograd.grad(ours, params, g))):
        if i == 2 and sparse.conv_exact(conv)[1]:    # the bias gradient: a sum of P*OH*OW
            n = g.numel() // g.shape[1]                 # terms in another order than oneDNN's
            assert float((a - b).abs().max()) <= n * 2 ** -23 * float(g.abs().max()) * 2
        else:
            assert torch.equal(a, b), ("input", "weight", "bias")[i]


def test_the_convolution_check_sees_another_order():
    """The bit-for-bit check can fail: the same convolution with its rows of taps visited in
    the opposite order (input and kernel flipped upside down, the output flipped back) is equal
    only to rounding, not bit for bit."""
    from dpap_deploy.executor.sparse import _conv, _kernel, _rows
    conv = nn.Conv2d(15, 40, 3, padding=1)
    if not sparse.conv_exact(conv)[0]:
        pytest.skip("this machine's convolution order is not reproduced")
    gen = torch.Generator().manual_seed(3)
    x = ((torch.rand(32, 15, 14, 14, generator=gen) < 0.12).float() *
         torch.randint(1, 5, (32, 15, 14, 14), generator=gen) * 0.25)
    k = _kernel()
    cl = lambda t: t.contiguous(memory_format=torch.channels_last)  # noqa: E731
    with torch.no_grad():
        dense = conv(cl(x))
        same = _conv(k, _rows(k, cl(x), 1.0), x.shape, conv.weight, conv.bias, (1, 1))
        flipped = _conv(k, _rows(k, cl(x.flip(2)), 1.0), x.shape, conv.weight.flip(2), conv.bias,
                        (1, 1)).flip(2)
    assert torch.equal(same, dense)
    assert not torch.equal(flipped, dense)
    assert float((flipped - dense).abs().max()) < 1e-5
