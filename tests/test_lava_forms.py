"""snnTorch's default neurons in the Lava simulator through our own ``Population`` process:
each model is written as snnTorch users write it (defaults untouched), its NIR graph is built
here by hand in the forms of the NIR contract (reset by subtraction as LI -> Threshold ->
Scale(-threshold) on a cycle, LI readout, Linear readout, max pooling over spikes as SumPool2d
+ IF(0.5)), run in Lava, and compared with snnTorch's own step loop: identical spike trains,
graded outputs within float32 rounding."""
import nir
import numpy as np
import pytest
import snntorch as snn
import torch
from torch import nn

from dpap_deploy.errors import UnsupportedModelError
from dpap_deploy.exporters import lava_sim
from dpap_deploy.exporters.nir_to_lava import LavaNetwork, blockers

DT = 1e-4
N, T = 24, 8


def _np(t):
    return t.detach().numpy().astype(np.float32)


def _tau(beta, shape):
    """float32 ``tau = dt / (1 - beta)`` for snnTorch's float32 ``beta`` (the writers' formula)."""
    b = np.broadcast_to(np.asarray(beta, np.float32), shape).astype(np.float64)
    return (DT / (1 - b)).astype(np.float32)


def li(beta, shape):
    tau = _tau(beta, shape)
    return nir.LI(tau=tau, r=(tau.astype(np.float64) / DT).astype(np.float32),
                  v_leak=np.zeros(shape, np.float32))


def lif(beta, thr, shape):
    tau = _tau(beta, shape)
    return nir.LIF(tau=tau, r=(tau.astype(np.float64) / DT).astype(np.float32),
                   v_leak=np.zeros(shape, np.float32),
                   v_threshold=np.broadcast_to(np.float32(thr), shape).astype(np.float32),
                   v_reset=np.zeros(shape, np.float32))


def affine(fc):
    return nir.Affine(weight=_np(fc.weight), bias=_np(fc.bias))


class Net:
    """A NIR graph under construction, nodes and edges in the order the contract lists them."""

    def __init__(self, in_shape):
        self.nodes = {"input": nir.Input(np.array(in_shape))}
        self.edges, self.last = [], "input"

    def add(self, name, node, src=None):
        self.nodes[name] = node
        self.edges.append((src or self.last, name))
        self.last = name
        return name

    def subtract(self, name, shape, beta, thr=1.0, alpha=None, rec=None, reset=True, gain=None):
        """nirspec form 1 as the writer wires it: ``[P.gain ->] [P.syn ->] P -> P.spike``,
        ``[P.spike -> P.rec -> P (P.syn with a current stage)]``, ``P.spike -> P.reset -> P``
        (``reset=False``: no reset loop); continues from ``P.spike``."""
        feed = self.last
        if gain is not None:
            feed = self.add(f"{name}.gain", nir.Scale(scale=np.full(shape, gain, np.float32)), feed)
        if alpha is not None:
            feed = self.add(f"{name}.syn", li(alpha, shape), feed)
        self.add(name, li(beta, shape), feed)
        thr_a = np.broadcast_to(np.float32(thr), shape).astype(np.float32)
        spike = self.add(f"{name}.spike", nir.Threshold(threshold=thr_a))
        if rec is not None:
            self.add(f"{name}.rec", affine(rec), spike)
            self.edges.append((f"{name}.rec", f"{name}.syn" if alpha is not None else name))
        if reset:
            self.add(f"{name}.reset", nir.Scale(scale=-thr_a), spike)
            self.edges.append((f"{name}.reset", name))
        self.last = spike
        return spike

    def graph(self, out_shape):
        self.add("output", nir.Output(np.array(out_shape)))
        return nir.NIRGraph(nodes=self.nodes, edges=self.edges, metadata={"dt": DT})


def _loop(step, x):
    """snnTorch's own loop: ``T`` calls on the same input, outputs stacked ``[N, T, ...]``."""
    with torch.no_grad():
        return torch.stack([step(x) for _ in range(T)], 1).numpy()


def _lava(graph, x):
    return LavaNetwork(graph, T).run(x.numpy())


def _same_spikes(ref, got):
    assert got.shape == ref.shape
    assert 0.02 < ref.mean() < 0.9, f"test too weak: output activity {ref.mean():.3f}"
    assert np.array_equal(got, ref), f"{int((got != ref).sum())} of {ref.size} spikes differ"


def _seed_input(n_in):
    torch.manual_seed(0)
    return torch.rand(N, n_in) * 2


def _betas(n):
    """Per-neuron float32 decays in [0.5, 0.95) (below 0.5 NIR's float32 tau does not always
    say which float32 beta was meant: nir_neurons)."""
    return torch.rand(n) * 0.45 + 0.5


# ---- reset by subtraction --------------------------------------------------------------------

def _leaky_model():
    torch.manual_seed(1)
    fc1, fc2 = nn.Linear(10, 12), nn.Linear(12, 5)
    with torch.no_grad():
        fc2.weight.mul_(2.5)
    lif1 = snn.Leaky(beta=_betas(12), learn_beta=True)        # per-neuron, subtract (default)
    lif2 = snn.Leaky(beta=0.9)
    return fc1, lif1, fc2, lif2


def _leaky_graph(fc1, lif1, fc2, lif2):
    net = Net([10])
    net.add("fc1", affine(fc1))
    net.subtract("lif1", (12,), _np(lif1.beta))
    net.add("fc2", affine(fc2))
    net.subtract("lif2", (5,), _np(lif2.beta))
    return net.graph([5])


def _leaky_ref(fc1, lif1, fc2, lif2, x):
    for m in (lif1, lif2):
        m.reset_mem()
    return _loop(lambda x: lif2(fc2(lif1(fc1(x))[0]))[0], x)


def test_leaky_subtract_per_neuron_beta_is_snntorch():
    m = _leaky_model()
    x = _seed_input(10)
    got = _lava(_leaky_graph(*m), x)
    _same_spikes(_leaky_ref(*m, x), got)
    planned = LavaNetwork(_leaky_graph(*m), T).neuron      # one process per loop, named by
    assert {k: v["reset"] for k, v in planned.items()} == {     # its spike node
        "lif1.spike": "subtract", "lif2.spike": "subtract"}


def test_zero_reset_form_differs_so_the_comparison_can_fail():
    """The same weights with NIR's zero-reset LIF: Lava runs it, and its spikes are not
    snnTorch's subtract-reset spikes (the check above can fail)."""
    fc1, lif1, fc2, lif2 = _leaky_model()
    net = Net([10])
    net.add("fc1", affine(fc1))
    net.add("lif1", lif(_np(lif1.beta), 1.0, (12,)))
    net.add("fc2", affine(fc2))
    net.add("lif2", lif(_np(lif2.beta), 1.0, (5,)))
    x = _seed_input(10)
    got = _lava(net.graph([5]), x)
    assert not np.array_equal(got, _leaky_ref(fc1, lif1, fc2, lif2, x))


def test_synaptic_default_is_snntorch():
    torch.manual_seed(2)
    fc1, fc2 = nn.Linear(10, 12), nn.Linear(12, 5)
    syn = snn.Synaptic(alpha=0.8, beta=0.9)                  # subtract, reset_delay=True
    lif2 = snn.Leaky(beta=0.85)
    net = Net([10])
    net.add("fc1", affine(fc1))
    net.subtract("syn", (12,), _np(syn.beta), alpha=_np(syn.alpha))
    net.add("fc2", affine(fc2))
    net.subtract("lif2", (5,), _np(lif2.beta))
    x = _seed_input(10)
    syn.reset_mem()
    lif2.reset_mem()
    ref = _loop(lambda x: lif2(fc2(syn(fc1(x))[0]))[0], x)
    _same_spikes(ref, _lava(net.graph([5]), x))


def test_rleaky_default_is_snntorch():
    torch.manual_seed(3)
    fc1, fc2 = nn.Linear(10, 12), nn.Linear(12, 5)
    rlif = snn.RLeaky(beta=0.9, linear_features=12)          # subtract, all-to-all, biased
    lif2 = snn.Leaky(beta=0.85)
    net = Net([10])
    net.add("fc1", affine(fc1))
    net.subtract("rlif", (12,), _np(rlif.beta), rec=rlif.recurrent)
    net.add("fc2", affine(fc2))
    net.subtract("lif2", (5,), _np(lif2.beta))
    x = _seed_input(10)
    rlif.reset_mem()
    lif2.reset_mem()
    ref = _loop(lambda x: lif2(fc2(rlif(fc1(x))[0]))[0], x)
    _same_spikes(ref, _lava(net.graph([5]), x))


def test_rsynaptic_default_is_snntorch():
    torch.manual_seed(9)
    fc1, fc2 = nn.Linear(10, 12), nn.Linear(12, 5)
    rsyn = snn.RSynaptic(alpha=0.7, beta=0.9, linear_features=12)   # recurrent into the current
    lif2 = snn.Leaky(beta=0.85)
    net = Net([10])
    net.add("fc1", affine(fc1))
    net.subtract("rsyn", (12,), _np(rsyn.beta), alpha=_np(rsyn.alpha), rec=rsyn.recurrent)
    net.add("fc2", affine(fc2))
    net.subtract("lif2", (5,), _np(lif2.beta))
    x = _seed_input(10)
    rsyn.reset_mem()
    lif2.reset_mem()
    ref = _loop(lambda x: lif2(fc2(rsyn(fc1(x))[0]))[0], x)
    _same_spikes(ref, _lava(net.graph([5]), x))


def test_lapicque_default_is_snntorch():
    """``mem = I R (1/(R C)) ts + (1 - ts/(R C)) mem - reset thr`` with R = 1, ts = 1 (the beta=
    form): decay and gain as snnTorch computes them in float32, the gain a Scale before P."""
    torch.manual_seed(10)
    fc1, fc2 = nn.Linear(10, 12), nn.Linear(12, 5)
    with torch.no_grad():                             # the gain is 1/C = 0.105
        fc1.weight.mul_(8)
        fc2.weight.mul_(4)
    lap = snn.Lapicque(beta=0.9)
    lif2 = snn.Leaky(beta=0.85)
    r, c, ts = lap.R, lap.C, lap.time_step
    decay = _np(1 - (ts / (r * c)))
    gain = _np(r * (1 / (r * c)) * ts)
    assert float(gain) != 1.0
    net = Net([10])
    net.add("fc1", affine(fc1))
    net.subtract("lap", (12,), decay, gain=gain)
    net.add("fc2", affine(fc2))
    net.subtract("lif2", (5,), _np(lif2.beta))
    x = _seed_input(10)
    lap.reset_mem()
    lif2.reset_mem()
    ref = _loop(lambda x: lif2(fc2(lap(fc1(x))[0]))[0], x)
    _same_spikes(ref, _lava(net.graph([5]), x))


def test_no_reset_hidden_leaky_is_snntorch():
    torch.manual_seed(11)
    fc1, fc2 = nn.Linear(10, 12), nn.Linear(12, 5)
    with torch.no_grad():
        fc1.weight.mul_(0.7)
        fc2.weight.mul_(2)
    lif1 = snn.Leaky(beta=0.7, reset_mechanism="none")
    lif2 = snn.Leaky(beta=0.85)
    net = Net([10])
    net.add("fc1", affine(fc1))
    net.subtract("lif1", (12,), _np(lif1.beta), reset=False)
    net.add("fc2", affine(fc2))
    net.subtract("lif2", (5,), _np(lif2.beta))
    x = _seed_input(10)
    lif1.reset_mem()
    lif2.reset_mem()
    ref = _loop(lambda x: lif2(fc2(lif1(fc1(x))[0]))[0], x)
    lava = LavaNetwork(net.graph([5]), T)
    assert lava.neuron["lif1.spike"]["reset"] == "none"
    _same_spikes(ref, lava.run(x.numpy()))


def test_membrane_readout_of_a_subtract_leaky_is_snntorch_mem():
    """The output layer keeps snnTorch's default subtract reset and the model returns its
    membrane: Output reads P (the LI) while the reset loop stays."""
    torch.manual_seed(12)
    fc1, fc2 = nn.Linear(10, 12), nn.Linear(12, 4)
    with torch.no_grad():
        fc2.weight.mul_(3)
    lif1, lif2 = snn.Leaky(beta=0.9), snn.Leaky(beta=0.8)
    net = Net([10])
    net.add("fc1", affine(fc1))
    net.subtract("lif1", (12,), _np(lif1.beta))
    net.add("fc2", affine(fc2))
    net.subtract("lif2", (4,), _np(lif2.beta))
    net.last = "lif2"                                  # Output <- the membrane LI
    x = _seed_input(10)
    lif1.reset_mem()
    lif2.reset_mem()
    spikes = []

    def step(x):
        spk, mem = lif2(fc2(lif1(fc1(x))[0]))
        spikes.append(spk)
        return mem
    ref = _loop(step, x)
    assert torch.stack(spikes).mean() > 0.05           # the reset acts
    _close(ref, _lava(net.graph([4]), x))


# ---- per-neuron LIF (zero reset), readouts ---------------------------------------------------

def test_per_neuron_beta_and_threshold_zero_reset_is_snntorch():
    torch.manual_seed(4)
    fc1 = nn.Linear(10, 12)
    thr = torch.rand(12) * 0.5 + 0.75
    lif1 = snn.Leaky(beta=_betas(12), threshold=thr, learn_beta=True, learn_threshold=True,
                     reset_mechanism="zero")
    net = Net([10])
    net.add("fc1", affine(fc1))
    net.add("lif1", lif(_np(lif1.beta), _np(lif1.threshold), (12,)))
    x = _seed_input(10)
    lif1.reset_mem()
    ref = _loop(lambda x: lif1(fc1(x))[0], x)
    lava = LavaNetwork(net.graph([12]), T)
    assert lava.neuron["lif1"]["own"]
    _same_spikes(ref, lava.run(x.numpy()))


def _close(ref, got):
    """Graded values: float32 sums in another order, a few units in the last place."""
    assert got.shape == ref.shape and np.abs(ref).max() > 0.1
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5 * np.abs(ref).max())


def test_leaky_integrator_readout_returns_snntorch_mem():
    torch.manual_seed(5)
    fc1, fc2 = nn.Linear(10, 12), nn.Linear(12, 4)
    lif1 = snn.Leaky(beta=0.9)
    li_out = snn.Leaky(beta=0.8, reset_mechanism="none")
    net = Net([10])
    net.add("fc1", affine(fc1))
    net.subtract("lif1", (12,), _np(lif1.beta))
    net.add("fc2", affine(fc2))
    net.add("readout", li(_np(li_out.beta), (4,)))
    x = _seed_input(10)
    lif1.reset_mem()
    li_out.reset_mem()
    ref = _loop(lambda x: li_out(fc2(lif1(fc1(x))[0]))[1], x)
    _close(ref, _lava(net.graph([4]), x))


def test_linear_readout_returns_snntorch_current():
    torch.manual_seed(6)
    fc1, fc2 = nn.Linear(10, 12), nn.Linear(12, 4)
    lif1 = snn.Leaky(beta=0.9)
    net = Net([10])
    net.add("fc1", affine(fc1))
    net.subtract("lif1", (12,), _np(lif1.beta))
    net.add("fc2", affine(fc2))
    x = _seed_input(10)
    lif1.reset_mem()
    ref = _loop(lambda x: fc2(lif1(fc1(x))[0]), x)
    got = _lava(net.graph([4]), x)
    _close(ref, got)
    _close(ref.sum(1), got.sum(1))                    # what the user sums over time


# ---- max pooling over spikes -----------------------------------------------------------------

@pytest.mark.parametrize("encoding", ["gain", "unit-r"])
def test_max_pool_over_spikes_is_snntorch(encoding):
    """``SumPool2d`` + ``IF(v_threshold 0.5)`` (``"unit-r"``: ``r = 1``, threshold ``dt/2``)."""
    torch.manual_seed(7)
    conv = nn.Conv2d(1, 3, 3)
    lif1 = snn.Leaky(beta=0.9)
    pool = nn.MaxPool2d(2)
    fc = nn.Linear(3 * 3 * 3, 5)
    with torch.no_grad():
        fc.weight.mul_(3)
    lif2 = snn.Leaky(beta=0.85)
    net = Net([1, 8, 8])
    net.add("conv", nir.Conv2d(input_shape=(8, 8), weight=_np(conv.weight), stride=1, padding=0,
                               dilation=1, groups=1, bias=_np(conv.bias)))
    net.subtract("lif1", (3, 6, 6), _np(lif1.beta))
    net.add("pool", nir.SumPool2d(kernel_size=np.array([2, 2]), stride=np.array([2, 2]),
                                  padding=np.array([0, 0])))
    shape = (3, 3, 3)
    r, vth = (1 / DT, 0.5) if encoding == "gain" else (1.0, DT / 2)
    net.add("pool.any", nir.IF(r=np.full(shape, r, np.float32),
                               v_threshold=np.full(shape, vth, np.float32),
                               v_reset=np.zeros(shape, np.float32)))
    net.add("flat", nir.Flatten(input_type={"input": np.array(shape)}, start_dim=0, end_dim=-1))
    net.add("fc", affine(fc))
    net.subtract("lif2", (5,), _np(lif2.beta))
    torch.manual_seed(8)
    x = torch.rand(N, 1, 8, 8) * 2
    lif1.reset_mem()
    lif2.reset_mem()

    def step(x):
        s = pool(lif1(conv(x))[0])
        return lif2(fc(s.flatten(1)))[0]
    _same_spikes(_loop(step, x), _lava(net.graph([5]), x))


# ---- refusals without running Lava -----------------------------------------------------------

def test_blockers_list_every_refusal_and_accept_the_forms():
    m = _leaky_model()
    assert blockers(_leaky_graph(*m), T) == []
    net = Net([10])
    net.add("fc1", affine(m[0]))
    net.subtract("lif1", (12,), 0.9, thr=1.0)
    net.nodes["lif1.reset"] = nir.Scale(scale=np.full(12, -0.5, np.float32))   # not -thr
    net.add("delay", nir.Delay(delay=np.ones(12, np.float32)))
    g = net.graph([12])
    found = blockers(g, T)
    assert len(found) == 2, found
    assert "lif1.reset" in found[0] and "Scale(-threshold)" in found[0]
    assert "'delay'" in found[1] and "remove the delay" in found[1]
    with pytest.raises(UnsupportedModelError, match="lif1.reset"):
        LavaNetwork(g, T)
    # a refusal the Lava build used to find first (string padding), and a lone Threshold
    net = Net([1, 6, 6])
    net.add("conv", nir.Conv2d(input_shape=(6, 6), weight=np.ones((2, 1, 3, 3), np.float32),
                               stride=1, padding="same", dilation=1, groups=1,
                               bias=np.zeros(2, np.float32)))
    net.add("spike", nir.Threshold(threshold=np.ones((2, 6, 6), np.float32)))
    found = blockers(net.graph([2, 6, 6]), T)
    assert len(found) == 2, found
    assert "'conv'" in found[0] and "padding 'same'" in found[0]
    assert "'spike' (Threshold)" in found[1] and "reset loop" in found[1]


def test_model_graph_blockers():
    """``lava_sim.blockers`` on a model graph: none for snnTorch's defaults (subtract reset,
    Synaptic, RLeaky, per-neuron beta), the NIR writer's line for what has no form (Alpha)."""
    from dpap_deploy.graph import build_graph
    x = _seed_input(10)
    for kind in ("leaky", "synaptic", "rleaky", "leaky-per-neuron"):
        graph = build_graph(OwnLoop(MAKERS[kind]()).eval(), x[:2])
        assert lava_sim.blockers(graph, T) == [], kind
    alpha = OwnLoop(lambda n: snn.Alpha(alpha=0.9, beta=0.8)).eval()
    found = lava_sim.blockers(build_graph(alpha, x[:2]), T)
    assert len(found) >= 1 and all("Alpha" in f and "\n" not in f for f in found), found


# ---- end to end: snnTorch model -> the NIR writer (to_nir) -> nir.write / nir.read -> Lava ------

class OwnLoop(nn.Module):
    """fc -> neuron -> fc [-> neuron], snnTorch's tutorial style (its own time loop, states
    from ``reset_mem``); the output is the last neuron's ``record`` ("spk" / "mem") or, with
    ``readout="linear"``, the last Linear's current."""

    def __init__(self, make, record="spk", readout="neuron", last=None, n_in=10, hidden=12,
                 n_out=5):
        super().__init__()
        self.fc1, self.lif1 = nn.Linear(n_in, hidden), make(hidden)
        self.fc2 = nn.Linear(hidden, n_out)
        self.lif2 = (last or make)(n_out) if readout == "neuron" else None
        self.record = record

    def forward(self, x):
        s1 = self.lif1.reset_mem()
        s2 = self.lif2.reset_mem() if self.lif2 is not None else None
        rec = []
        for _ in range(T):
            o1 = self.lif1(self.fc1(x), *_state(s1))
            s1 = o1 if isinstance(self.lif1, (snn.RLeaky, snn.RSynaptic)) else o1[1:]
            cur = self.fc2(o1[0])
            if self.lif2 is None:
                rec.append(cur)
                continue
            o2 = self.lif2(cur, *_state(s2))
            s2 = o2 if isinstance(self.lif2, (snn.RLeaky, snn.RSynaptic)) else o2[1:]
            rec.append(o2[0] if self.record == "spk" else o2[-1])
        return torch.stack(rec)


def _state(s):
    return s if isinstance(s, tuple) else (s,)


def _written(net, x, tmp_path, **kw):
    """snnTorch's output ``[N, T, ...]`` and the written, read-back NIR graph's Lava run."""
    from dpap_deploy.exporters.nir_graph import to_nir
    from dpap_deploy.graph import build_graph
    net.eval()
    nir.write(tmp_path / "net.nir", to_nir(build_graph(net, x[:2]), time_steps=T, **kw))
    back = nir.read(tmp_path / "net.nir")
    with torch.no_grad():
        ref = net(x).transpose(0, 1).numpy()
    return ref, LavaNetwork(back, T).run(x.numpy()).reshape(ref.shape)


MAKERS = {
    "leaky": lambda **k: (lambda n: snn.Leaky(beta=0.9, **k)),
    "leaky-per-neuron": lambda **k: (lambda n: snn.Leaky(beta=_betas(n), learn_beta=True,
                                                         threshold=torch.rand(n) * 0.5 + 0.75,
                                                         learn_threshold=True, **k)),
    "synaptic": lambda **k: (lambda n: snn.Synaptic(alpha=0.8, beta=0.9, **k)),
    "rleaky": lambda **k: (lambda n: snn.RLeaky(beta=0.9, linear_features=n, **k)),
    "rleaky-v": lambda **k: (lambda n: snn.RLeaky(beta=0.9, all_to_all=False, V=0.5, **k)),
    "rsynaptic": lambda **k: (lambda n: snn.RSynaptic(alpha=0.8, beta=0.9, linear_features=n, **k)),
    "lapicque": lambda **k: (lambda n: snn.Lapicque(beta=0.9, **k)),
}


@pytest.mark.parametrize("kind,mech", [(k, "subtract") for k in MAKERS] + [
    ("leaky", "none"), ("synaptic", "none"), ("leaky-per-neuron", "zero")])
def test_written_snntorch_defaults_run_in_lava_spike_for_spike(kind, mech, tmp_path):
    torch.manual_seed(20)
    net = OwnLoop(MAKERS[kind](reset_mechanism=mech))
    with torch.no_grad():
        net.fc2.weight.mul_(3.0)
        if kind == "lapicque":              # its input gain is 1/C ~ 0.1 for beta = 0.9
            net.fc1.weight.mul_(8.0)
            net.fc2.weight.mul_(3.0)
    ref, got = _written(net, _seed_input(10), tmp_path)
    _same_spikes(ref, got)


@pytest.mark.parametrize("readout", ["li", "linear", "membrane"])
def test_written_readouts_run_in_lava(readout, tmp_path):
    torch.manual_seed(21)
    kw = dict(li=dict(record="mem", last=lambda n: snn.Leaky(beta=0.8, reset_mechanism="none")),
              linear=dict(readout="linear"), membrane=dict(record="mem"))[readout]
    net = OwnLoop(lambda n: snn.Leaky(beta=0.9), **kw)
    with torch.no_grad():
        net.fc2.weight.mul_(3.0)
    ref, got = _written(net, _seed_input(10), tmp_path)
    _close(ref, got)


class PoolLoop(nn.Module):
    """Conv -> Leaky -> max pool over spikes -> Linear -> Leaky (tutorial 7's order with the
    pool after the neuron)."""

    def __init__(self, mech):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.lif1 = snn.Leaky(beta=0.9, reset_mechanism=mech)
        self.pool = nn.MaxPool2d(2)
        self.fc, self.lif2 = nn.Linear(4 * 4 * 4, 3), snn.Leaky(beta=0.9, reset_mechanism=mech)

    def forward(self, x):
        m1, m2 = self.lif1.reset_mem(), self.lif2.reset_mem()
        rec = []
        for _ in range(T):
            s1, m1 = self.lif1(self.conv(x), m1)
            s2, m2 = self.lif2(self.fc(self.pool(s1).flatten(1)), m2)
            rec.append(s2)
        return torch.stack(rec)


@pytest.mark.parametrize("encoding,mech", [("gain", "subtract"), ("unit-r", "zero")])
def test_written_max_pool_over_spikes_runs_in_lava(encoding, mech, tmp_path):
    torch.manual_seed(22)
    net = PoolLoop(mech)
    with torch.no_grad():
        net.conv.weight.mul_(3.0)
        net.fc.weight.mul_(2.0)
    torch.manual_seed(23)
    ref, got = _written(net, torch.rand(N, 1, 8, 8) * 2, tmp_path, encoding=encoding)
    _same_spikes(ref, got)


@pytest.mark.parametrize("readout", ["spikes", "li", "linear"])
def test_loihi_sim_export_of_an_own_loop_model(readout, tmp_path):
    """The target itself (write the NIR file, read it, run Lava, compare with the model): a
    spike output by spike agreement, a graded readout within float32 rounding."""
    from dpap_deploy.exporters import export
    from dpap_deploy.exporters.base import ExportJob
    torch.manual_seed(24)
    li = dict(record="mem", last=lambda n: snn.Leaky(beta=0.8, reset_mechanism="none"))
    kw = dict(spikes={}, li=li, linear=dict(readout="linear"))[readout]
    net = OwnLoop(lambda n: snn.Leaky(beta=0.9), **kw).eval()
    with torch.no_grad():
        net.fc2.weight.mul_(3.0)
    x = _seed_input(10)
    y = torch.randint(0, 5, (N,))
    res = export("loihi-sim", ExportJob(net, "snn", x, y, T), tmp_path)
    assert res.passed and res.parity["n_samples"] == N, res.parity
    if readout == "spikes":
        assert res.parity["identical_spike_trains"] == 1.0
    else:
        assert res.parity["within_tolerance"] == 1.0 and res.parity["readout"] == "graded"
    assert any("population" in layer for layer in res.details["lava_layers"])
