"""Fixed point: the torch emulation (dpap_deploy.fixed_point) against Lava's own bit-accurate
models (Loihi2SimCfg(select_tag="fixed_pt")), spike for spike and value for value."""
import numpy as np
import pytest
import torch

from dpap_deploy.errors import UnsupportedModelError
from dpap_deploy.fixed_point import emulate as E
from dpap_deploy.fixed_point import quantize as Q


def _lava_chain(spikes, m, exp, lif_kw, steps):
    """Source -> Dense(m, weight_exp) -> LIFReset in Lava fixed point: the LIF's spikes
    ``[n_out, steps]`` and its final current and voltage."""
    from dpap_deploy.exporters.lava_process import lava_run
    from dpap_deploy.lava_compat import import_lava_runtime
    import_lava_runtime()
    from lava.magma.core.run_conditions import RunSteps
    from lava.magma.core.run_configs import Loihi2SimCfg
    from lava.proc.dense.process import Dense
    from lava.proc.io.sink import RingBuffer as Sink
    from lava.proc.io.source import RingBuffer as Source
    from lava.proc.lif.process import LIFReset
    src = Source(data=spikes.astype(np.int32))
    dense = Dense(weights=m.astype(np.int32), weight_exp=exp, num_message_bits=0)
    lif = LIFReset(shape=(m.shape[0],), reset_interval=steps + 10, reset_offset=1, **lif_kw)
    sink = Sink(shape=(m.shape[0],), buffer=steps)
    src.s_out.connect(dense.s_in)
    dense.a_out.connect(lif.a_in)
    lif.s_out.connect(sink.a_in)
    cfg = Loihi2SimCfg(select_tag="fixed_pt")
    return lava_run(src, lambda: src.run(condition=RunSteps(num_steps=steps), run_cfg=cfg),
                    lambda: (sink.data.get(), lif.u.get(), lif.v.get()))


def _emulate_chain(spikes, m, exp, n: E.Neurons, steps):
    syn = E.Synapse("dense", torch.as_tensor(m, dtype=torch.float64), exp)
    u = v = s = torch.zeros(1, m.shape[0], dtype=torch.float64)
    a = torch.zeros_like(u)                     # Lava's Dense delivers the previous step
    out = []
    for t in range(steps):
        u, v, s = E.neuron_step(n, u, v, s, a)
        out.append(s[0].numpy())
        a = E.synapse(syn, torch.as_tensor(spikes[:, t], dtype=torch.float64)[None])
    return np.stack(out, -1), u[0].numpy(), v[0].numpy()


CASES = {   # du, dv (Lava's parameters), vth, weight_exp, bias exponent
    "leaky": (4095, 410, 300, 0, 3),          # du 4095 + 1: no current memory
    "cuba": (2047, 205, 900, -2, 0),          # a current decaying by half, a right shift
    "if-left-shift": (4095, 0, 2000, 2, 6),
}


@pytest.fixture(scope="module")
def chains():
    """The three neuron settings, 40 steps of random spikes into 30 neurons each, in Lava."""
    rng = np.random.default_rng(0)
    out = {}
    for name, (du, dv, vth, exp, bexp) in CASES.items():
        w = rng.normal(0, 1, (30, 20))
        m, _, _ = Q.weights("w", w, 254 / np.abs(w).max(), conv=False)
        spikes = (rng.random((20, 40)) < 0.4).astype(np.int32)
        bias = rng.integers(-300, 300, 30)
        kw = dict(du=du, dv=dv, vth=vth, bias_mant=bias, bias_exp=np.full(30, bexp))
        out[name] = (spikes, m, exp, kw, _lava_chain(spikes, m, exp, kw, 40))
    return out


@pytest.mark.parametrize("case", list(CASES))
def test_emulation_equals_lava_lif_and_dense_fixed_point(chains, case):
    spikes, m, exp, kw, lava = chains[case]
    n = E.Neurons(du=torch.tensor(kw["du"] + 1.0), dv=torch.tensor(float(kw["dv"])),
                  vth=torch.tensor(float(kw["vth"])),
                  bias=torch.as_tensor(kw["bias_mant"] * 2.0 ** kw["bias_exp"]),
                  bias_u=torch.tensor(0.0))
    got = _emulate_chain(spikes, m, exp, n, 40)
    assert 0 < lava[0].sum() < lava[0].size      # spikes and silences both occur
    for a, b in zip(got, lava):                  # spikes, then the final u and v
        assert np.array_equal(a, b)


def test_weights_are_the_grid_lava_keeps():
    """Lava's Dense clips and truncates its weights at the first step: ours it leaves as they
    are (mixed signs: even values in [-256, 254]; one sign: 0..255)."""
    from lava.utils.weightutils import clip_weights, determine_sign_mode, truncate_weights
    rng = np.random.default_rng(1)
    for w in (rng.normal(0, 1, (8, 9)), np.abs(rng.normal(0, 1, (8, 9))),
              -np.abs(rng.normal(0, 1, (8, 9)))):
        m, e, clipped = Q.weights("w", w, 300.0, conv=False)
        mode = determine_sign_mode(m)
        kept = truncate_weights(clip_weights(m, mode, num_bits=8), mode, 8)
        assert np.array_equal(kept, m) and clipped == 0
        assert np.allclose(m * 2.0 ** e, 300.0 * w, atol=2 ** e * (1 if w.min() * w.max() < 0
                                                                      else 0.5))


def test_rounding_steps_by_hand():
    # the docstring's worked example: u = 3840, v = 3840, 7295 (spike, 0), 3840
    n = E.Neurons(torch.tensor(4096.), torch.tensor(410.), torch.tensor(100.), torch.tensor(0.),
                  torch.tensor(0.))
    u = v = s = torch.zeros(1)
    seen = []
    for _ in range(3):
        u, v, s = E.neuron_step(n, u, v, s, torch.tensor([60.]))
        seen.append((u.item(), v.item(), s.item()))
    assert seen == [(3840, 3840, 0), (3840, 0, 1), (3840, 3840, 0)]
    # decays truncate toward zero on both signs; right shifts floor; the 24-bit wrap
    assert E.decay(torch.tensor([-3840., 3840.]), 410).tolist() == [-3455, 3455]
    assert E.shift(torch.tensor([-5., 5.]), -1).tolist() == [-3, 2]
    assert E.wrap_current(torch.tensor([2. ** 23 + 5, -2. ** 23])).tolist() == [-2 ** 23 + 5, 2 ** 23]


def test_refusals_name_the_layer_and_value():
    with pytest.raises(UnsupportedModelError, match="layer 'fc'.*threshold mantissa"):
        Q.threshold("fc", np.array([3.0]), 1e5)
    with pytest.raises(UnsupportedModelError, match="layer 'fc'.*bias"):
        Q.bias("fc", np.array([1e4]), 100.0)
    with pytest.raises(UnsupportedModelError, match="layer 'fc'.*rounds every weight to 0"):
        Q.weights("fc", np.full((2, 2), 1e-4), 1.0, conv=True)


def test_graded_dense_sums_wrap_in_int32_as_lava_does():
    """A graded input (24-bit values) into a Dense sums in int32: where the sum leaves 32 bits
    Lava wraps it, before the exponent's right shift, and so does the emulation."""
    from dpap_deploy.exporters.lava_process import lava_run
    from dpap_deploy.lava_compat import import_lava_runtime
    import_lava_runtime()
    from lava.magma.core.run_conditions import RunSteps
    from lava.magma.core.run_configs import Loihi2SimCfg
    from lava.proc.dense.process import Dense
    from lava.proc.io.sink import RingBuffer as Sink
    from lava.proc.io.source import RingBuffer as Source
    rng = np.random.default_rng(3)
    x = rng.integers(-2 ** 23 + 1, 2 ** 23, (20, 4)).astype(np.int32)
    m, _, _ = Q.weights("w", rng.normal(0, 1, (6, 20)), 100.0, conv=False)
    src, sink = Source(data=x), Sink(shape=(6,), buffer=5)
    dense = Dense(weights=m.astype(np.int32), weight_exp=-3, num_message_bits=24)
    src.s_out.connect(dense.s_in)
    dense.a_out.connect(sink.a_in)
    cfg = Loihi2SimCfg(select_tag="fixed_pt")
    lava = lava_run(src, lambda: src.run(condition=RunSteps(num_steps=5), run_cfg=cfg),
                    lambda: sink.data.get())[:, 1:]            # Dense delivers a step later
    syn = E.Synapse("dense", torch.as_tensor(m, dtype=torch.float64), -3)
    got = E.synapse(syn, torch.as_tensor(x.T, dtype=torch.float64)).numpy().T
    exact = np.floor((m @ x.astype(np.float64)) / 8)
    assert np.any(np.abs(exact) >= 2 ** 28)                   # sums beyond int32 occur
    assert np.array_equal(got, lava)
