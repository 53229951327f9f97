"""netx takes what snnTorch users write where its format can hold it exactly, checked spike for
spike in the real netx loader run in Lava, and refuses the rest with every reason at once.

Exactness in fixed point needs weights the quantiser keeps exactly: every synapse's (folded)
weights are integer multiples ``n u`` of a power-of-two unit ``u`` with ``max |n| = 127``, so the
scale ``s = 254 / (127 u)`` is a power of two and ``2 round(W s / 2) = 2 n`` is exact; biases are
multiples of ``u``, inputs multiples of 1/16 (the graded input keeps 4 bits), beta = 1/2 and
T = 4, so every decayed membrane stays an integer in Lava's 2^6-scaled fixed point. The float
network and Lava then compute the same numbers, and the spike trains must be identical.
"""
from __future__ import annotations

import h5py
import numpy as np
import pytest
import snntorch as snn
import torch
import torch.nn.functional as F
from torch import nn

from dpap_deploy.errors import UnsupportedModelError
from dpap_deploy.exporters import ExportJob, export
from dpap_deploy.exporters._compare import torch_spikes
from dpap_deploy.exporters.netx_export import blockers, run_netx, write_netx
from dpap_deploy.exporters.netx_plan import plan
from dpap_deploy.graph import build_graph

T, N, U = 4, 24, 1.0 / 64


def _leaky(**kw):
    kw.setdefault("reset_mechanism", "zero")
    return snn.Leaky(beta=0.5, **kw)


def _input(n=N, shape=(1, 10, 10), seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.round(torch.rand(n, *shape, generator=g) * 16) / 16


@torch.no_grad()
def _grid(layer: nn.Module, unit: float, seed: int, spread: int = 8, single: bool = False,
          even_rows=None):
    """Weights ``n unit`` (``|n| <= spread``, one entry 127) and biases ``k unit / 8``.
    ``single``: output 0 holds only the 127 (so a folded 2x2 mean of it stays 127 u)."""
    g = torch.Generator().manual_seed(seed)
    n = torch.randint(-spread, spread + 1, layer.weight.shape, generator=g)
    if single:
        n[0] = 0
    if even_rows is not None:
        n[even_rows] = 2 * (n[even_rows] // 2)
    n.view(-1)[0] = 127
    layer.weight.copy_(n.double() * unit)
    layer.bias.copy_(torch.randint(-8, 9, layer.bias.shape, generator=g).double() * unit / 8)


class _Pooled(nn.Module):
    """``self.pool(s, 2)``: ``F.avg_pool2d`` / ``F.max_pool2d`` (kind "avg-fn", "max-fn") or a
    registered ``nn.AvgPool2d(2)`` / ``nn.MaxPool2d(2)`` module ("avg-mod", "max-mod")."""

    def __init__(self, kind: str):
        super().__init__()
        self.kind = kind
        if kind.endswith("mod"):
            self.pool_mod = nn.AvgPool2d(2) if kind.startswith("avg") else nn.MaxPool2d(2)

    def pool(self, s, k):
        if self.kind.endswith("mod"):
            return self.pool_mod(s)
        return (F.avg_pool2d if self.kind.startswith("avg") else F.max_pool2d)(s, k)


class CurrentPool(_Pooled):
    """Tutorial 6's shape with average pooling over currents: ``pool(conv(x))`` -> neuron."""

    def __init__(self, pool="avg-fn"):
        super().__init__(pool)
        self.conv1 = nn.Conv2d(1, 4, 3)
        self.lif1, self.fc, self.lif2 = _leaky(), nn.Linear(64, 10), _leaky()
        _grid(self.conv1, 4 * U, 1, single=True)     # the 2x2 mean makes it n u, max 127 u
        _grid(self.fc, U, 2, spread=48)

    def forward(self, x):
        m1, m2, out = self.lif1.init_leaky(), self.lif2.init_leaky(), []
        for _ in range(T):
            s1, m1 = self.lif1(self.pool(self.conv1(x), 2), m1)
            s2, m2 = self.lif2(self.fc(s1.flatten(1)), m2)
            out.append(s2)
        return torch.stack(out)


class SpikePool(_Pooled):
    """Pooling over spikes, then a padded conv (``to_fc=False``) or a Linear; the output
    neurons have thresholds 1 and 2 (per neuron, folded into the weights' rows)."""

    def __init__(self, pool="avg-fn", to_fc: bool = False):
        super().__init__(pool)
        self.to_fc, avg = to_fc, pool.startswith("avg")
        self.conv1, self.lif1 = nn.Conv2d(1, 4, 3), _leaky(reset_delay=False)
        self.conv2, self.lif2 = nn.Conv2d(4, 4, 3, padding=1), _leaky()
        self.fc = nn.Linear(64, 10)
        self.lif3 = _leaky(threshold=torch.tensor([1.0, 2.0] * 5))
        fold = 4 * U if avg else U            # a folded 2x2 mean divides by 4
        _grid(self.conv1, U, 3)
        _grid(self.conv2, fold if not to_fc else U, 4, spread=16)
        _grid(self.fc, fold if to_fc else U, 5, spread=48, even_rows=slice(1, None, 2))

    def forward(self, x):
        m1, m2, m3, out = (self.lif1.init_leaky(), self.lif2.init_leaky(),
                           self.lif3.init_leaky(), [])
        for _ in range(T):
            s1, m1 = self.lif1(self.conv1(x), m1)
            p = self.pool(s1, 2)
            if not self.to_fc:
                p, m2 = self.lif2(self.conv2(p), m2)
            s3, m3 = self.lif3(self.fc(p.flatten(1)), m3)
            out.append(s3)
        return torch.stack(out)


class SynapticNet(_Pooled):
    """``snn.Synaptic`` with a zero reset right after the spike (``reset_delay=False``) and
    bias-free synapses: netx's CUBA neuron with current memory; max pooling over its spikes."""

    def __init__(self):
        super().__init__("max-fn")
        self.conv1, self.fc = nn.Conv2d(1, 4, 3, bias=False), nn.Linear(64, 10, bias=False)
        self.lif1, self.lif2 = (snn.Synaptic(alpha=0.5, beta=0.5, reset_mechanism="zero",
                                             reset_delay=False) for _ in range(2))
        for i, layer in enumerate((self.conv1, self.fc)):
            layer.bias = nn.Parameter(torch.zeros(layer.weight.shape[0]))
            _grid(layer, U, 6 + i, spread=24)
            layer.bias = None

    def forward(self, x):
        (s1, m1), (s2, m2) = self.lif1.init_synaptic(), self.lif2.init_synaptic()
        out = []
        for _ in range(T):
            p1, s1, m1 = self.lif1(self.conv1(x), s1, m1)
            p2, s2, m2 = self.lif2(self.fc(self.pool(p1, 2).flatten(1)), s2, m2)
            out.append(p2)
        return torch.stack(out)


class Conv1dNet(nn.Module):
    """1-D maps: ``Conv1d`` -> Leaky -> ``F.avg_pool1d`` (folded into the next conv) -> padded
    ``Conv1d`` -> Leaky -> ``F.max_pool1d`` over spikes -> Linear -> Leaky."""

    def __init__(self):
        super().__init__()
        self.conv1, self.lif1 = nn.Conv1d(2, 4, 3), _leaky()
        self.conv2, self.lif2 = nn.Conv1d(4, 4, 3, padding=1), _leaky()
        self.fc, self.lif3 = nn.Linear(4 * 3, 10), _leaky()
        _grid(self.conv1, U, 11, spread=24)
        _grid(self.conv2, 2 * U, 12, spread=40)      # the 2-wide mean halves it: n u, max 127 u
        _grid(self.fc, U, 13, spread=64)

    def forward(self, x):
        m1, m2, m3, out = self.lif1.init_leaky(), self.lif2.init_leaky(), self.lif3.init_leaky(), []
        for _ in range(T):
            s1, m1 = self.lif1(self.conv1(x), m1)
            s2, m2 = self.lif2(self.conv2(F.avg_pool1d(s1, 2)), m2)
            s3, m3 = self.lif3(self.fc(F.max_pool1d(s2, 2).flatten(1)), m3)
            out.append(s3)
        return torch.stack(out)


def _lava_vs_torch(model, path, x=None):
    """The netx file of ``model`` run by the netx loader in Lava, and the torch spikes."""
    x = _input() if x is None else x
    graph = build_graph(model.eval(), x[:2])
    quant = write_netx(graph, x, path, T)
    got = run_netx(path, x.reshape(len(x), *quant["input_shape"]).numpy(), T)
    ref = torch_spikes(graph, x, T)
    return ref, got, quant


def _file(path) -> dict[str, np.ndarray]:
    out = {}
    with h5py.File(path) as f:
        f.visititems(lambda k, v: out.__setitem__(k, v[()]) if isinstance(v, h5py.Dataset)
                     else None)
    return out


def _same_file(a, b) -> bool:
    fa, fb = _file(a), _file(b)
    return fa.keys() == fb.keys() and all(np.array_equal(fa[k], fb[k]) for k in fa)


def _hidden_active(model, x) -> float:
    """Fraction of the first layer's neurons that spike at least once (a silent network would
    make every comparison pass)."""
    rec = []
    h = model.lif1.register_forward_hook(lambda m, i, o: rec.append(o[0]))
    with torch.no_grad():
        model(x)
    h.remove()
    return float((torch.stack(rec).sum(0) > 0).float().mean())


# ------------------------------------------------------------------ exact forms, in Lava
def test_functional_avg_pool_over_currents_is_exact_and_the_same_file_as_the_module(tmp_path):
    fn, mod = CurrentPool("avg-fn"), CurrentPool("avg-mod")
    ref, got, quant = _lava_vs_torch(fn, tmp_path / "fn.net")
    assert quant["layers"][0]["pools_folded"] == ["avg_pool2d_1"]
    assert 0.1 < _hidden_active(fn, _input()) and ref.sum() > 0 and 0 < ref.mean() < 0.9
    assert np.array_equal(ref, got), f"{(ref != got).sum()} of {ref.size} spikes differ"
    # the module form, traced as a pool node with a module, gives the same file
    mod.load_state_dict(fn.state_dict())
    write_netx(build_graph(mod.eval(), _input()[:2]), _input(), tmp_path / "mod.net", T)
    assert _same_file(tmp_path / "fn.net", tmp_path / "mod.net")


@pytest.mark.parametrize("to_fc", [False, True], ids=["into-conv", "into-linear"])
def test_functional_avg_pool_over_spikes_is_exact_and_the_same_file_as_the_module(tmp_path,
                                                                                  to_fc):
    fn, mod = SpikePool("avg-fn", to_fc), SpikePool("avg-mod", to_fc)
    ref, got, quant = _lava_vs_torch(fn, tmp_path / "fn.net")
    assert quant["layers"][1]["pools_folded"] == ["avg_pool2d_1"]
    assert 0.1 < _hidden_active(fn, _input()) and ref.sum() > 0 and 0 < ref.mean() < 0.9
    assert np.array_equal(ref, got), f"{(ref != got).sum()} of {ref.size} spikes differ"
    mod.load_state_dict(fn.state_dict())
    write_netx(build_graph(mod.eval(), _input()[:2]), _input(), tmp_path / "mod.net", T)
    assert _same_file(tmp_path / "fn.net", tmp_path / "mod.net")


@pytest.mark.parametrize("kind", ["functional", "module"])
def test_max_pool_over_spikes_is_a_netx_layer_exact_in_lava(tmp_path, kind):
    model = SpikePool("max-fn" if kind == "functional" else "max-mod")
    ref, got, _ = _lava_vs_torch(model, tmp_path / "n.net")
    f = _file(tmp_path / "n.net")
    types = [f[f"layer/{i}/type"].decode() for i in range(6)]
    assert types == ["input", "conv", "conv", "conv", "flatten", "dense"]
    assert f["layer/2/groups"] == 4 and (f["layer/2/weight"] == 254).all()   # depthwise, unit
    assert f["layer/2/neuron/vThMant"] == 127 and f["layer/2/neuron/vDecay"] == 4096
    assert 0.1 < _hidden_active(model, _input()) and ref.sum() > 0 and 0 < ref.mean() < 0.9
    assert np.array_equal(ref, got), f"{(ref != got).sum()} of {ref.size} spikes differ"


def test_conv1d_and_1d_pools_are_exact_as_1_by_k_conv_layers(tmp_path):
    model, x = Conv1dNet(), _input(N, (2, 14))
    ref, got, quant = _lava_vs_torch(model, tmp_path / "n.net", x)
    f = _file(tmp_path / "n.net")
    assert list(f["layer/0/shape"]) == [2, 1, 14] and quant["input_shape"] == [2, 1, 14]
    assert f["layer/1/weight"].shape == (4, 2, 1, 3) and list(f["layer/2/stride"]) == [1, 2]
    assert 0.1 < _hidden_active(model, x) and ref.sum() > 0 and 0 < ref.mean() < 0.9
    assert np.array_equal(ref, got), f"{(ref != got).sum()} of {ref.size} spikes differ"


def test_synaptic_with_zero_reset_after_the_spike_is_exact_with_current_memory(tmp_path):
    model = SynapticNet()
    ref, got, _ = _lava_vs_torch(model, tmp_path / "n.net")
    f = _file(tmp_path / "n.net")
    assert [int(f[f"layer/{i}/neuron/iDecay"]) for i in (1, 2, 4)] == [2048, 4096, 2048]
    assert 0.1 < _hidden_active(model, _input()) and ref.sum() > 0 and 0 < ref.mean() < 0.9
    assert np.array_equal(ref, got), f"{(ref != got).sum()} of {ref.size} spikes differ"


@pytest.mark.parametrize("build,deploy", [(lambda: SpikePool("avg-fn"), False),
                                          (lambda: CurrentPool("avg-mod"), False),
                                          (lambda: SpikePool("max-mod", to_fc=False), True)],
                         ids=["functional-over-spikes", "module-over-currents",
                              "compaction-deploy-maxpool"])
def test_export_api_takes_pool_models_spike_for_spike(tmp_path, build, deploy):
    """Through ``export``: the job folds BatchNorm only and netx folds the pools itself, or
    the job holds compaction's folded ``deploy`` network (module average pools folded)."""
    from dpap_deploy.compaction import fold_for_deployment
    x, model = _input(16), build().eval()
    folded = fold_for_deployment(model, x, time_steps=T)[0] if deploy else None
    job = ExportJob(model, "snn", x, torch.zeros(len(x), dtype=torch.long), T, deploy=folded)
    res = export("netx", job, tmp_path)
    assert res.parity["identical_spike_trains"] == 1.0 and res.parity["n_samples"] == 16


@torch.no_grad()
def _float_netx(layers, x):
    """The netx layers in float64, as the loader's CUBA neuron computes them:
    ``u[t] = alpha u[t-1] + W x[t]``, ``v[t] = beta (1 - s[t-1]) v[t-1] + u[t] + b``,
    ``s[t] = v[t] > threshold``; returns each layer's input currents ``W x + b``
    ``[T, B, ...]`` and the output spikes."""
    state, cur_rec, out = {}, {}, []
    for _ in range(T):
        h = x.double()
        if layers[0].kind == "conv":
            h = h.reshape(len(x), *layers[0].in_shape)       # a 1-D map (C, L) as (C, 1, L)
        for i, la in enumerate(layers):
            if la.kind == "flatten":
                h = h.flatten(1)
                continue
            cur = (F.conv2d(h, la.weight, la.bias, la.stride, la.padding, la.dilation, la.groups)
                   if la.kind == "conv" else F.linear(h, la.weight, la.bias))
            u, v, s = state.get(i, (0.0, 0.0, 0.0))
            bias = la.bias.view(-1, *([1] * (cur.dim() - 2)))
            u = la.alpha * u + cur - bias
            v = la.beta * (1 - s) * v + u + bias
            s = (v > la.threshold).double()
            state[i] = (u, v, s)
            cur_rec.setdefault(i, []).append(cur)
            h = s
        out.append(h)
    return {i: torch.stack(c) for i, c in cur_rec.items()}, torch.stack(out)


@pytest.mark.parametrize("build", [lambda: CurrentPool("avg-fn"), lambda: SpikePool("avg-fn"),
                                   lambda: SpikePool("avg-mod", to_fc=True),
                                   lambda: SpikePool("max-fn"), SynapticNet, Conv1dNet],
                         ids=["avg-currents", "avg-spikes-conv", "avg-spikes-linear", "max-spikes",
                              "synaptic", "conv1d"])
def test_the_netx_layers_compute_the_torch_currents_and_spikes(build):
    """Before quantisation: every layer's current, times its neurons' thresholds, is the
    current snnTorch's neuron receives, step by step, and the output spikes are the same."""
    model = build().eval()
    x = _input(8, (2, 14)) if isinstance(model, Conv1dNet) else _input(8)
    layers, reasons = plan(build_graph(model, x[:2]))
    assert reasons == []
    seen: dict[nn.Module, list[torch.Tensor]] = {}
    hooks = [la.neuron.register_forward_pre_hook(
        lambda m, a: seen.setdefault(m, []).append(a[0].double())) for la in layers if la.neuron]
    with torch.no_grad():
        ref = model(x)
    for h in hooks:
        h.remove()
    currents, out = _float_netx(layers, x)
    assert torch.equal(out, ref.double()) and ref.sum() > 0
    for i, la in enumerate(layers):
        if la.neuron is None:
            continue
        shape = (1, 1, -1) + (1,) * (currents[i].dim() - 3)
        thr = torch.as_tensor(1.0 / la.row_scale).view(shape)
        want = torch.stack(seen[la.neuron])
        torch.testing.assert_close((currents[i] * thr).reshape(want.shape), want,
                                   rtol=0, atol=1e-6)


class _PoolAfter(nn.Module):
    """``F.avg_pool2d(conv(x), k, stride)`` -> Leaky -> Linear -> Leaky, random weights."""

    def __init__(self, conv, k, stride, size):
        super().__init__()
        self.conv, self.k, self.stride, self.lif1 = conv, k, stride, _leaky()
        with torch.no_grad():
            n = F.avg_pool2d(conv(torch.zeros(1, 1, size, size)), k, stride).numel()
        self.fc, self.lif2 = nn.Linear(n, 10), _leaky()

    def forward(self, x):
        m1, m2, out = self.lif1.init_leaky(), self.lif2.init_leaky(), []
        for _ in range(T):
            s1, m1 = self.lif1(F.avg_pool2d(self.conv(x), self.k, self.stride), m1)
            s2, m2 = self.lif2(self.fc(s1.flatten(1)), m2)
            out.append(s2)
        return torch.stack(out)


@pytest.mark.parametrize("conv,k,stride,size", [
    (nn.Conv2d(1, 3, 3, padding=1), 2, 2, 9), (nn.Conv2d(1, 3, 3, stride=2), 2, 2, 11),
    (nn.Conv2d(1, 3, (3, 2), padding=(1, 0)), 3, 2, 10), (nn.Conv2d(1, 3, 3), (2, 3), (1, 2), 12)],
    ids=["padded", "strided", "overlapping", "rectangular"])
def test_pool_over_currents_composes_exactly_with_any_conv(conv, k, stride, size):
    """The composed convolution gives the neuron the current snnTorch gives it (float32
    rounding), for padded and strided convs and overlapping or rectangular pools."""
    torch.manual_seed(0)
    model, x = _PoolAfter(conv, k, stride, size).eval(), torch.rand(4, 1, size, size)
    layers, reasons = plan(build_graph(model, x[:2]))
    assert reasons == [] and layers[0].pooled == ["avg_pool2d_1"]
    seen = []
    h = model.lif1.register_forward_pre_hook(lambda m, a: seen.append(a[0].double()))
    with torch.no_grad():
        model(x)
    h.remove()
    currents, _ = _float_netx(layers, x)
    torch.testing.assert_close(currents[0], torch.stack(seen), rtol=0, atol=1e-6)


# ------------------------------------------------------------------ refusals, each its reason
class Any(nn.Module):
    """``conv -> [pool] -> neuron -> flatten -> fc -> [readout]``, own time loop."""

    def __init__(self, neuron=None, readout="leaky", conv1d=False, pool=None, return_mem=False,
                 conv=None):
        super().__init__()
        self.conv = conv or (nn.Conv1d(1, 4, 3) if conv1d else nn.Conv2d(1, 4, 3))
        self.n1 = neuron if neuron is not None else _leaky()
        feats = 4 * 8 if conv1d else (4 * 4 * 4 if pool else 4 * 8 * 8) \
            if conv is None else 4 * 10 * 10
        self.fc = nn.Linear(feats, 10)
        self.n2 = {"leaky": _leaky(), "none": None,
                   "li": snn.Leaky(beta=0.5, reset_mechanism="none")}.get(readout, readout)
        self.pool, self.return_mem = pool, return_mem

    def forward(self, x):
        out = []
        x = x[:, :, 0] if isinstance(self.conv, nn.Conv1d) else x
        for _ in range(T):
            cur = self.conv(x)
            cur = self.pool(cur, 2) if self.pool == F.max_pool2d else cur
            s = self.n1(cur)
            s = s[0] if isinstance(s, tuple) else s
            y = self.fc(s.flatten(1))
            if self.n2 is not None:
                y = self.n2(y)
                y = y[1] if self.return_mem else (y[0] if isinstance(y, tuple) else y)
            out.append(y)
        return torch.stack(out)


def _blockers(model):
    return blockers(build_graph(model, _input(2)), T)


REFUSALS = {
    "conv-padding-mode": (lambda: Any(conv=nn.Conv2d(1, 4, 3, padding=1, padding_mode="reflect")),
                          ["Conv2d 'conv'", "padding_mode='reflect'", "padding_mode='zeros'"]),
    "synaptic": (lambda: Any(snn.Synaptic(alpha=0.9, beta=0.8)),
                 ["Synaptic 'n1'", "reset_mechanism='subtract'", "resets its membrane to zero"]),
    "synaptic-bias": (lambda: Any(snn.Synaptic(alpha=0.9, beta=0.8, reset_mechanism="zero",
                                               reset_delay=False)),
                      ["Synaptic 'n1' follows 'conv'", "has a bias", "bias=False"]),
    "synaptic-per-neuron-alpha": (lambda: Any(snn.Synaptic(alpha=torch.rand(4, 8, 8), beta=0.8,
                                                           reset_mechanism="zero",
                                                           reset_delay=False, learn_alpha=True)),
                                  ["per-neuron alpha", "current decay (iDecay)"]),
    "synaptic-reset-delay": (lambda: Any(snn.Synaptic(alpha=0.9, beta=0.8,
                                                      reset_mechanism="zero")),
                             ["reset_delay=True", "drops that step's input",
                              "reset_delay=False"]),
    "rleaky": (lambda: Any(readout=snn.RLeaky(beta=0.5, linear_features=10)),
               ["RLeaky 'n2'", "recurrent weight V", "'dense_rec'", "first step of the next",
                "reset_mechanism='subtract'"]),
    "alpha": (lambda: Any(snn.Alpha(alpha=0.9, beta=0.8)),
              ["snn.Alpha 'n1'", "no netx equivalent"]),
    "lapicque": (lambda: Any(snn.Lapicque(beta=0.9)),
                 ["snn.Lapicque 'n1'", "reset_mechanism='subtract'", "1 - dt/(R C)"]),
    "lapicque-zero": (lambda: Any(snn.Lapicque(beta=0.9, reset_mechanism="zero")),
                      ["snn.Lapicque 'n1'", "dropping that step's input", "dt/C"]),
    "subtract": (lambda: Any(snn.Leaky(beta=0.5)),
                 ["Leaky 'n1'", "reset_mechanism='subtract'", "resets its membrane to zero",
                  "make_deployable"]),
    "per-neuron-beta": (lambda: Any(snn.Leaky(beta=torch.rand(4, 8, 8), learn_beta=True,
                                              reset_mechanism="zero")),
                        ["Leaky 'n1'", "per-neuron beta", "one membrane decay"]),
    "threshold-within-channel": (lambda: Any(snn.Leaky(beta=0.5, reset_mechanism="zero",
                                                       threshold=torch.rand(4, 8, 8) + 0.5)),
                                 ["threshold that varies within a channel"]),
    "max-pool-over-currents": (lambda: Any(pool=F.max_pool2d),
                               ["max pooling 'max_pool2d", "graded current", "after the neuron",
                                "make_deployable"]),
    "linear-readout": (lambda: Any(readout="none"),
                       ["'fc' is a Linear readout", "outputs spikes only"]),
    "leaky-integrator-readout": (lambda: Any(readout="li", return_mem=True),
                                 ["reset_mechanism='none'", "membrane of 'n2'",
                                  "leaky-integrator readout"]),
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_each_refusal_names_its_reason_and_fix(case):
    build, words = REFUSALS[case]
    lines = _blockers(build())
    assert lines, f"{case}: netx took it"
    text = " | ".join(lines)
    for w in words:
        assert w in text, f"{case}: {w!r} not in {text!r}"
    if case in ("conv-padding-mode", "synaptic", "synaptic-bias", "rleaky"):   # no pool advice
        assert "MaxPool" not in text and "AvgPool" not in text and "pooling" not in text
    assert all("\n" not in line for line in lines)


def test_blockers_lists_every_reason_at_once_and_export_refuses_with_all(tmp_path):
    """Tutorial 6 as written (max pooling over currents, subtract reset) and a Linear readout:
    every blocker in one call, and the writer's one-line refusal names them all."""
    model = Any(snn.Leaky(beta=0.5), readout="none", pool=F.max_pool2d)
    lines = _blockers(model)
    assert len(lines) == 3, lines
    assert "max pooling" in lines[0] and "reset_mechanism='subtract'" in lines[1] \
        and "Linear readout" in lines[2]
    with pytest.raises(UnsupportedModelError) as e:
        write_netx(build_graph(model, _input(2)), _input(4), tmp_path / "n.net", T)
    msg = str(e.value)
    assert "3 reasons" in msg and "\n" not in msg and all(line in msg for line in lines)
    assert not (tmp_path / "n.net").exists()


def test_what_netx_takes_has_no_blocker():
    for model in (CurrentPool("avg-fn"), CurrentPool("avg-mod"), SpikePool("max-fn"),
                  SpikePool("max-mod"), SpikePool("avg-mod", to_fc=True), Any(conv1d=True)):
        assert _blockers(model) == []


# ------------------------------------------------------------ the emulation is Lava's netx
class OffGrid(nn.Module):
    """Weights, biases, decays and thresholds off every grid (fixed point differs from float):
    a Leaky, average pooling over spikes, a Synaptic with current memory, max pooling over
    spikes and per-neuron thresholds."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(5)
        self.conv1, self.lif1 = nn.Conv2d(1, 4, 3), snn.Leaky(beta=0.83, reset_mechanism="zero")
        self.conv2 = nn.Conv2d(4, 6, 3, padding=1, bias=False)
        self.lif2 = snn.Synaptic(alpha=0.71, beta=0.87, reset_mechanism="zero", reset_delay=False)
        self.fc = nn.Linear(24, 10)
        self.lif3 = snn.Leaky(beta=0.9, reset_mechanism="zero",
                              threshold=torch.linspace(0.7, 1.3, 10))
        with torch.no_grad():
            for p in self.parameters():
                p.mul_(2.5)

    def forward(self, x):
        m1, m3, out = self.lif1.init_leaky(), self.lif3.init_leaky(), []
        c2, m2 = self.lif2.init_synaptic()
        for _ in range(8):
            s1, m1 = self.lif1(self.conv1(x), m1)
            s2, c2, m2 = self.lif2(self.conv2(F.avg_pool2d(s1, 2)), c2, m2)
            s3, m3 = self.lif3(self.fc(F.max_pool2d(s2, 2).flatten(1)), m3)
            out.append(s3)
        return torch.stack(out)


def test_the_emulation_computes_what_lava_runs_from_the_file_bit_for_bit(tmp_path):
    from dpap_deploy.exporters.netx_export import emulate, quantise
    model, x = OffGrid().eval(), torch.rand(12, 1, 10, 10)
    graph = build_graph(model, x[:2])
    seq = quantise(graph, x, 8)
    stats = [{} for _ in seq]
    quant = write_netx(graph, x, tmp_path / "n.net", 8, seq)
    got = run_netx(tmp_path / "n.net", x.reshape(12, *quant["input_shape"]).numpy(), 8)
    emu = emulate(seq, x.numpy(), 8, stats=stats)
    assert 0.05 < got.mean() < 0.9                       # the output is neither silent nor full
    assert np.array_equal(emu, got), f"{(emu != got).sum()} of {got.size} spikes differ"
    # ...while float torch differs: the rounding matters on these samples
    assert not np.array_equal(torch_spikes(graph, x, 8), got)
    assert all(set(s) == {"u_wrapped", "v_clipped"} for s in stats if s)
