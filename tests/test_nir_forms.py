"""The NIR forms of snnTorch's neurons, readouts and max pooling (docs/nir-compat.md): a small
snnTorch model written as users write it -> ``to_nir`` -> ``nir.write`` -> ``nir.read`` -> the
torch reference of NIR graphs gives snnTorch's own spikes (and graded readout values) over two
input windows; what has no exact form is refused in one line naming the option."""
from __future__ import annotations

import nir
import numpy as np
import pytest
import snntorch as snn
import torch
import torch.nn.functional as F
from torch import nn

from dpap_deploy.errors import UnsupportedModelError
from dpap_deploy.exporters import nir_export
from dpap_deploy.exporters._compare import graded_parity, graded_passed
from dpap_deploy.exporters.nir_graph import to_nir
from dpap_deploy.exporters.nir_torch import run_reference
from dpap_deploy.graph import build_graph

T = 8


class Net(nn.Module):
    """fc -> neuron -> fc -> neuron, snnTorch's tutorial style (its own time loop, states from
    ``reset_mem``); ``make(n)`` builds a neuron of ``n`` units; the output is the record of
    ``record`` ("spk" or "mem") of the last neuron, or of the last ``Linear`` (``readout=
    "linear"``: no second neuron)."""

    def __init__(self, make, record="spk", readout="neuron", n_in=6, hidden=16, n_out=4):
        super().__init__()
        self.fc1, self.lif1 = nn.Linear(n_in, hidden), make(hidden)
        self.fc2 = nn.Linear(hidden, n_out)
        self.lif2 = make(n_out) if readout == "neuron" else None
        self.record = record

    def forward(self, x):
        s1 = self.lif1.reset_mem()
        s2 = self.lif2.reset_mem() if self.lif2 is not None else None
        rec = []
        for _ in range(T):
            o1 = self.lif1(self.fc1(x), *_state(s1))
            s1 = o1[1:] if not isinstance(self.lif1, (snn.RLeaky, snn.RSynaptic)) else o1
            cur = self.fc2(o1[0])
            if self.lif2 is None:
                rec.append(cur)
                continue
            o2 = self.lif2(cur, *_state(s2))
            s2 = o2[1:] if not isinstance(self.lif2, (snn.RLeaky, snn.RSynaptic)) else o2
            rec.append(o2[0] if self.record == "spk" else o2[-1])
        return torch.stack(rec)


def _state(s):
    return s if isinstance(s, tuple) else (s,)


def _inputs(seed, n=48, shape=(6,)):
    g = torch.Generator().manual_seed(seed)
    return torch.rand((n,) + shape, generator=g) * 2.0


def _boost(net, seed):
    torch.manual_seed(seed)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, (nn.Linear, nn.Conv2d)) and m is not getattr(net, "fc1", None):
                m.weight.mul_(2.0)
    return net.eval()


def _roundtrip(net, tmp_path, shape=(6,), windows=(11, 12), **kw):
    """snnTorch's output and the NIR file's, window by window: list of (ref, got)."""
    x0 = _inputs(windows[0], shape=shape)
    graph = build_graph(net, x0[:2])
    path = tmp_path / "net.nir"
    nir.write(path, to_nir(graph, time_steps=T, **kw))
    back = nir.read(path)
    pairs = []
    for seed in windows:
        x = _inputs(seed, shape=shape)
        with torch.no_grad():
            ref = net(x).transpose(0, 1).reshape(len(x), T, -1).numpy()
        got = run_reference(back, x.numpy(), T)
        pairs.append((ref, got.reshape(len(x), T, -1)))
    return graph, back, pairs


def _assert_identical(pairs, graded=False):
    for ref, got in pairs:
        if not graded:
            assert 0 < ref.sum() < ref.size, "the test needs spikes and silence"
        assert np.array_equal(ref, got), f"{int((ref != got).sum())} of {ref.size} values differ"


NEURONS = {
    "leaky": lambda **k: (lambda n: snn.Leaky(beta=0.9, **k)),
    "synaptic": lambda **k: (lambda n: snn.Synaptic(alpha=0.8, beta=0.9, **k)),
    "rleaky": lambda **k: (lambda n: snn.RLeaky(beta=0.9, linear_features=n, **k)),
    "rleaky-v": lambda **k: (lambda n: snn.RLeaky(beta=0.9, all_to_all=False, V=0.5, **k)),
    "rsynaptic": lambda **k: (lambda n: snn.RSynaptic(alpha=0.8, beta=0.9, linear_features=n, **k)),
    "lapicque": lambda **k: (lambda n: snn.Lapicque(beta=0.9, **{a: v for a, v in k.items()
                                                                if a != "reset_delay"})),
    # snnTorch's Lapicque docstring: R, C and time_step: ((I R) k) ts, three roundings
    "lapicque-rc": lambda **k: (lambda n: snn.Lapicque(R=5.1, C=5e-3, time_step=1e-3, **{
        a: v for a, v in k.items() if a != "reset_delay"})),
}
EXACT = [(k, m, d) for k in NEURONS for m, d in
         (("subtract", True), ("none", True), ("none", False), ("zero", False), ("zero", True))
         if not (m == "zero" and (k in ("rsynaptic", "lapicque", "lapicque-rc")
                                  or (d and k in ("synaptic", "rleaky", "rleaky-v"))))
         # RSynaptic with reset_delay=False fails in snnTorch on the zero-size state
         # reset_mem() gives (its correction divides the *argument* spk); its equations are the
         # reset_delay=True ones (tests/test_snntorch_semantics.py)
         and not (k in ("rsynaptic", "lapicque", "lapicque-rc") and not d)]


def _net(kind, record="spk", **kw):
    torch.manual_seed(0)
    net = _boost(Net(NEURONS[kind](**kw), record=record), 0)
    if kind.startswith("lapicque"):    # its input gain is ~0.1 (beta = 0.9), ~0.04 (R, C)
        with torch.no_grad():
            net.fc1.weight.mul_(8.0)
            net.fc2.weight.mul_(8.0)
    return net


@pytest.mark.parametrize("kind,mech,delay", EXACT)
def test_exact_forms_spike_for_spike(kind, mech, delay, tmp_path):
    net = _net(kind, reset_mechanism=mech, reset_delay=delay)
    graph, back, pairs = _roundtrip(net, tmp_path)
    _assert_identical(pairs)
    roles = {n.metadata.get("dpap_role") for n in back.nodes.values() if n.metadata}
    if mech != "zero":
        assert {"mem", "spike"} <= roles and (("reset" in roles) == (mech == "subtract"))
        assert not any(isinstance(n, (nir.LIF, nir.CubaLIF)) for n in back.nodes.values())


@pytest.mark.parametrize("kind", ["leaky", "synaptic", "rleaky", "rsynaptic", "lapicque",
                                  "lapicque-rc"])
def test_membranes_bit_for_bit(kind, tmp_path):
    """The output neuron's membrane (subtract reset) read from its LI: the file computes
    snnTorch's float32 operations in snnTorch's order, so every value is the same float (a
    gain multiplied in another order, a decay off by one unit in the last place, would not)."""
    torch.manual_seed(0)
    net = _net(kind, record="mem")
    _, back, pairs = _roundtrip(net, tmp_path)
    _assert_identical(pairs, graded=True)
    if kind == "lapicque-rc":
        chain = [k for k, v in back.nodes.items() if (v.metadata or {}).get("dpap_role") == "gain"]
        assert len(chain) == 6          # R, 1/(R C), time_step for each of the two layers


@pytest.mark.parametrize("make,wide", [
    (lambda n: snn.Leaky(beta=0.05 + 0.45 * torch.rand(n, generator=torch.Generator()
                                                         .manual_seed(n)), learn_beta=True), True),
    (lambda n: snn.Synaptic(alpha=0.3, beta=0.2), False),    # short decimals: float32 suffices
    (lambda n: snn.Lapicque(beta=0.5), True),          # its decay is 1 - log 2 = 0.3068...
], ids=["leaky-per-neuron", "synaptic", "lapicque"])
def test_decays_below_one_half(make, wide, tmp_path):
    """Below 0.5 several float32 decays share one float32 tau: the LI then stores a float64
    tau, which the readers take as it is; the membranes are snnTorch's bit for bit."""
    torch.manual_seed(0)
    net = _boost(Net(make, record="mem"), 0)
    with torch.no_grad():
        net.fc1.weight.mul_(4.0)
    _, back, pairs = _roundtrip(net, tmp_path)
    _assert_identical(pairs, graded=True)
    assert back.nodes["lif2"].tau.dtype == (np.float64 if wide else np.float32)


def test_per_neuron_beta_and_threshold(tmp_path):
    def make(n):
        g = torch.Generator().manual_seed(n)
        return snn.Leaky(beta=0.5 + 0.45 * torch.rand(n, generator=g), learn_beta=True,
                         threshold=0.5 + torch.rand(n, generator=g), learn_threshold=True)
    net = _boost(Net(make), 1)
    _, back, pairs = _roundtrip(net, tmp_path)
    _assert_identical(pairs)
    assert back.nodes["lif1_spike"].threshold.shape == (16,)


def test_leaky_integrator_readout(tmp_path):
    """``snn.Leaky(reset_mechanism="none")`` whose membrane is the output: ``LI -> Output``,
    the membrane value for value."""
    def make(n):
        return snn.Leaky(beta=0.9, reset_mechanism="none") if n == 4 else snn.Leaky(beta=0.9)
    net = _boost(Net(make, record="mem"), 2)
    graph, back, pairs = _roundtrip(net, tmp_path)
    assert graph.readout == "membrane"
    assert [s for s, d in back.edges if d == "output"] == ["lif2"]
    assert isinstance(back.nodes["lif2"], nir.LI)
    _assert_identical(pairs, graded=True)
    ref, got = pairs[0]
    par = graded_parity(ref, got, np.zeros(len(ref), int), T)
    assert graded_passed(par) and par["max_abs_diff"] == 0.0


def test_subtract_membrane_readout(tmp_path):
    """A default (subtract) Leaky whose membrane is the output: the LI's state is that
    membrane, the reset cycle stays."""
    net = _boost(Net(lambda n: snn.Leaky(beta=0.9), record="mem"), 3)
    graph, back, pairs = _roundtrip(net, tmp_path)
    assert graph.readout == "membrane"
    _assert_identical(pairs, graded=True)


def test_linear_readout(tmp_path):
    """Spiking hidden layer, ``nn.Linear`` output (the user sums it over time): Affine ->
    Output, graded values per step."""
    net = _boost(Net(lambda n: snn.Leaky(beta=0.9), readout="linear"), 4)
    graph, back, pairs = _roundtrip(net, tmp_path)
    assert graph.readout == "current"
    assert [s for s, d in back.edges if d == "output"] == ["fc2"]
    _assert_identical(pairs, graded=True)


class PoolNet(nn.Module):
    """Conv -> Leaky -> max pool over spikes -> Linear -> Leaky (tutorial 7's layer order with
    the pool after the neuron); ``functional``: ``F.max_pool2d``."""

    def __init__(self, functional=False, padding=0, mech="subtract"):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.lif1 = snn.Leaky(beta=0.9, reset_mechanism=mech)
        self.pool = nn.MaxPool2d(2, padding=padding)
        self.functional, self.padding = functional, padding
        side = 8 // 2 + padding
        self.fc = nn.Linear(4 * side * side, 3)
        self.lif2 = snn.Leaky(beta=0.9, reset_mechanism=mech)

    def forward(self, x):
        m1, m2 = self.lif1.reset_mem(), self.lif2.reset_mem()
        rec = []
        for _ in range(T):
            s1, m1 = self.lif1(self.conv(x), m1)
            p = F.max_pool2d(s1, 2, padding=self.padding) if self.functional else self.pool(s1)
            s2, m2 = self.lif2(self.fc(p.flatten(1)), m2)
            rec.append(s2)
        return torch.stack(rec)


@pytest.mark.parametrize("functional,padding,encoding", [(False, 0, "gain"), (True, 1, "gain"),
                                                         (False, 0, "unit-r")])
def test_max_pool_over_spikes(functional, padding, encoding, tmp_path):
    torch.manual_seed(5)       # unit-r takes zero-reset neurons (LIF) only
    net = _boost(PoolNet(functional, padding, "zero" if encoding == "unit-r" else "subtract"), 5)
    with torch.no_grad():
        net.conv.weight.mul_(3.0)
    graph, back, pairs = _roundtrip(net, tmp_path, shape=(1, 8, 8), encoding=encoding)
    pools = [k for k, v in back.nodes.items() if isinstance(v, nir.SumPool2d)]
    assert len(pools) == 1 and isinstance(back.nodes[pools[0] + "_any"], nir.IF)
    _assert_identical(pairs)
    assert any(0 < p.sum() for p, _ in pairs)


def _refusal(net, shape=(6,), **kw) -> str:
    graph = build_graph(net, _inputs(0, shape=shape)[:2])
    with pytest.raises(UnsupportedModelError) as exc:
        to_nir(graph, time_steps=T, **kw)
    msg = str(exc.value)
    assert "\n" not in msg
    assert msg in " ".join(nir_export.blockers(graph, T, **kw)) or \
        any(b in msg for b in nir_export.blockers(graph, T, **kw))
    return msg


@pytest.mark.parametrize("make,words", [
    (lambda n: snn.Leaky(beta=0.9, reset_delay=False), ("reset_delay=False", "reset_delay=True")),
    (lambda n: snn.Synaptic(alpha=0.8, beta=0.9, reset_mechanism="zero"),
     ("reset_mechanism='zero'", "reset_delay=True", "reset_delay=False")),
    (lambda n: snn.RLeaky(beta=0.9, linear_features=n, reset_mechanism="zero"),
     ("reset_delay=True",)),
    (lambda n: snn.RSynaptic(alpha=0.8, beta=0.9, linear_features=n, reset_mechanism="zero"),
     ("reset_mechanism='zero'", "subtract")),
    (lambda n: snn.Lapicque(beta=0.9, reset_mechanism="zero"),
     ("reset_mechanism='zero'", "subtract")),
    (lambda n: snn.Alpha(alpha=0.9, beta=0.8), ("snn.Alpha", "snn.Synaptic", "make_deployable")),
    (lambda n: snn.Leaky(beta=1.0), ("beta=1", "reset_mechanism='zero'")),
    (lambda n: snn.Leaky(beta=0.9, graded_spikes_factor=2.0), ("graded_spikes_factor=2",)),
])
def test_refusals_name_the_option(make, words):
    msg = _refusal(Net(make))
    for w in words:
        assert w in msg, msg


@pytest.mark.parametrize("kind", ["leaky", "synaptic", "rleaky", "rsynaptic", "lapicque",
                                  "lapicque-rc"])
def test_unit_r_li_forms_read_back_the_same_spikes(kind, tmp_path):
    """``"unit-r"``: LIs with ``r = 1``, reset ``Scale(-thr / g)``, feeding weights (and the
    recurrent one) times ``1 / (g g_syn)``: snnTorch's spikes again (to float32 rounding of
    ``g (W x / g)``, like the LIF's unit-r)."""
    _, back, pairs = _roundtrip(_net(kind), tmp_path, encoding="unit-r")
    _assert_identical(pairs)
    assert back.metadata["neuron_encoding"] == "unit-r"
    assert np.all(back.nodes["lif1"].r == 1.0)


@pytest.mark.filterwarnings("ignore:Inhibition")
def test_blockers_list_everything():
    net = Net(lambda n: snn.Leaky(beta=0.9, reset_delay=False) if n == 16 else
              snn.Alpha(alpha=0.9, beta=0.8))
    b = nir_export.blockers(build_graph(net, _inputs(0)[:2]), T)
    assert len(b) == 2 and "'lif1'" in b[0] and "'lif2'" in b[1] and "snn.Alpha" in b[1]
    net = Net(lambda n: snn.Leaky(beta=0.9, reset_delay=False, graded_spikes_factor=2.0,
                                  inhibition=n == 4))
    b = nir_export.blockers(build_graph(net, _inputs(0)[:2]), T)
    assert len(b) == 5, b       # every reason of every neuron, not the first one
    assert sum("reset_delay=False" in x for x in b) == 2 and sum("inhibition" in x for x in b) == 1


def test_recurrent_edge_is_added_before_the_reset():
    """snnTorch computes ((beta U + I) + V S[t-1]) - thr S[t-1]: the file lists the recurrent
    edge into the membrane before the reset edge, and the reference adds them in that order."""
    net = _net("rleaky")
    nir_graph = to_nir(build_graph(net, _inputs(0)[:2]), time_steps=T)
    into = [s for s, d in nir_graph.edges if d == "lif1"]
    assert into == ["fc1", "lif1_rec", "lif1_reset"]


def test_graded_parity_fails_on_constant_or_far_outputs():
    rng = np.random.default_rng(0)
    ref = rng.normal(size=(16, T, 4)).astype(np.float32)
    y = ref.sum(1).argmax(1)
    assert graded_passed(graded_parity(ref, ref.copy(), y, T))
    near = ref + np.float32(1e-7)
    assert graded_passed(graded_parity(ref, near, y, T))
    far = ref.copy()
    far[3, 2, 1] += 1e-3
    par = graded_parity(ref, far, y, T)
    assert not graded_passed(par) and par["within_tolerance"] == 15 / 16
    zero = np.zeros_like(ref)
    par = graded_parity(zero, zero, y, T)
    assert not graded_passed(par) and "constant output" in par["failure"]


class CurrentPool(nn.Module):
    """Tutorial 6: ``F.max_pool2d(self.conv1(x), 2)`` -- max pooling over currents."""

    def __init__(self):
        super().__init__()
        self.conv1, self.lif1 = nn.Conv2d(1, 4, 3, padding=1), snn.Leaky(beta=0.9)
        self.fc, self.lif2 = nn.Linear(64, 3), snn.Leaky(beta=0.9)

    def forward(self, x):
        m1, m2 = self.lif1.reset_mem(), self.lif2.reset_mem()
        rec = []
        for _ in range(T):
            s1, m1 = self.lif1(F.max_pool2d(self.conv1(x), 2), m1)
            s2, m2 = self.lif2(self.fc(s1.flatten(1)), m2)
            rec.append(s2)
        return torch.stack(rec)


def test_max_pool_over_currents_refused():
    msg = _refusal(CurrentPool(), shape=(1, 8, 8))
    assert "max pooling over currents" in msg and "make_deployable" in msg


def test_reset_mechanism_set_after_construction_refused():
    """snnTorch binds its update at construction: assigning reset_mechanism later changes the
    flag only, so the flag is not what it computes."""
    net = Net(lambda n: snn.Leaky(beta=0.9))
    net.lif1.reset_mechanism = "zero"
    msg = _refusal(net)
    assert "set after it was built" in msg and "'subtract'" in msg


def test_zero_reset_membrane_readout_refused():
    msg = _refusal(Net(lambda n: snn.Leaky(beta=0.9, reset_mechanism="zero"), record="mem"))
    assert "membrane" in msg and "reset_mechanism='none'" in msg
