"""snnTorch 1.0.0's neuron equations, as ``graph/neurons/lif_common.py`` (and each adapter's
docstring) states them, checked against snnTorch itself on random inputs: identical spikes and
identical float32 membranes, for every neuron x reset_mechanism x reset_delay. The NIR forms
(``tests/test_nir_forms.py``) rely on these equations."""
from __future__ import annotations

import pytest
import snntorch as snn
import torch

T, B, N = 24, 64, 12
MECHS = ("subtract", "zero", "none")


def _inputs(seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(T, B, N, generator=g) * 1.5 + 0.6).float()   # some steps > 2 thr


def _params(seed: int):
    g = torch.Generator().manual_seed(seed + 1)
    beta = 0.5 + 0.49 * torch.rand(N, generator=g)
    alpha = 0.5 + 0.49 * torch.rand(N, generator=g)
    thr = 0.5 + torch.rand(N, generator=g)
    return alpha, beta, thr


def _reset(mech, delay, X, R, thr, own_zero: bool, has_delay: bool):
    """``(S, U)`` from the update ``X`` and the reset flag ``R`` (lif_common's equations)."""
    if mech == "subtract":
        V = X - R * thr
    elif mech == "zero" and not own_zero:
        V = X - R * X
    else:
        V = X
    S = (V > thr).float()
    if has_delay and not delay and mech != "none":
        V = V - (S - R) * (thr if mech == "subtract" else V)
    return S, V


def _snntorch(module, x):
    """Spikes and membranes of ``module`` stepped with explicit states (zeros at first)."""
    z = torch.zeros_like(x[0])
    spk, syn, mem, inh = z, z, z, z
    S, U = [], []
    with torch.no_grad():
        for t in range(T):
            if isinstance(module, snn.RSynaptic):
                spk, syn, mem = module(x[t], spk, syn, mem)
            elif isinstance(module, snn.RLeaky):
                spk, mem = module(x[t], spk, mem)
            elif isinstance(module, snn.Synaptic):
                spk, syn, mem = module(x[t], syn, mem)
            elif isinstance(module, snn.Alpha):
                spk, syn, inh, mem = module(x[t], syn, inh, mem)
            else:
                spk, mem = module(x[t], mem)
            S.append(spk.clone())
            U.append(mem.clone())
    return torch.stack(S), torch.stack(U)


def _equations(kind, mech, delay, module, x):
    thr = module.threshold
    beta = module.beta.clamp(0, 1)
    U = syn = S = inh = torch.zeros_like(x[0])
    outS, outU = [], []
    for t in range(T):
        I = x[t]
        R = (U > thr).float()
        if kind == "Leaky":
            X = beta * ((1 - R) * U) + I if mech == "zero" else beta * U + I
        elif kind == "RLeaky":
            X = (beta * U + I) + module.recurrent(S)
        elif kind == "Synaptic":
            syn = module.alpha.clamp(0, 1) * syn + I
            X = beta * U + syn
        elif kind == "RSynaptic":
            syn = (module.alpha.clamp(0, 1) * syn + I) + module.recurrent(S)
            X = beta * U + syn
        elif kind == "Lapicque":
            Rc, C, ts = module.R, module.C, module.time_step
            X = I * Rc * (1 / (Rc * C)) * ts + (1 - ts / (Rc * C)) * U
        has_delay = kind in ("Leaky", "Synaptic", "RLeaky")    # RSynaptic ignores it
        S, U = _reset(mech, delay, X, R, thr, kind == "Leaky", has_delay)
        outS.append(S)
        outU.append(U)
    return torch.stack(outS), torch.stack(outU)


def _make(kind, mech, delay, seed):
    alpha, beta, thr = _params(seed)
    torch.manual_seed(seed)
    kw = dict(reset_mechanism=mech, threshold=thr)
    if kind == "Leaky":
        return snn.Leaky(beta=beta, reset_delay=delay, **kw)
    if kind == "Synaptic":
        return snn.Synaptic(alpha=alpha, beta=beta, reset_delay=delay, **kw)
    if kind == "RLeaky":
        return snn.RLeaky(beta=beta, linear_features=N, reset_delay=delay, **kw)
    if kind == "RSynaptic":
        return snn.RSynaptic(alpha=alpha, beta=beta, linear_features=N, reset_delay=delay, **kw)
    if kind == "Lapicque":
        # (snnTorch's Lapicque refuses a per-neuron beta: `not self.beta` on a tensor)
        return snn.Lapicque(beta=0.9, **kw) if delay else \
            snn.Lapicque(R=torch.tensor(5.1), C=torch.tensor(5e-3), time_step=1e-3, **kw)


CASES = [(k, m, d) for k in ("Leaky", "Synaptic", "RLeaky", "RSynaptic", "Lapicque")
         for m in MECHS for d in (True, False)]


@pytest.mark.parametrize("kind,mech,delay", CASES)
def test_equations_match_snntorch(kind, mech, delay):
    """Lapicque has no reset_delay: ``delay`` picks its beta= form (True) or R, C form."""
    for seed in (0, 1):
        module = _make(kind, mech, delay, seed)
        x = _inputs(seed) * (4.0 if kind == "Lapicque" else 1.0)
        s_ref, u_ref = _snntorch(module, x)
        with torch.no_grad():
            s_eq, u_eq = _equations(kind, mech, delay, module, x)
        assert s_ref.sum() > 0 and (s_ref == 0).any()
        assert torch.equal(s_ref, s_eq), f"{kind} {mech} delay={delay}: spikes differ"
        assert torch.equal(u_ref, u_eq), f"{kind} {mech} delay={delay}: membranes differ"


@pytest.mark.parametrize("kind", ["Leaky", "Synaptic", "RLeaky"])
def test_zero_reset_without_delay_is_reset_to_zero(kind):
    """With ``reset_delay=False`` and ``thr >= 0`` snnTorch's zero reset never sees ``R = 1``:
    the membrane is exactly 0 after a spike and the update otherwise (NIR's reset)."""
    module = _make(kind, "zero", False, 3)
    s, u = _snntorch(module, _inputs(3))
    assert s.sum() > 0
    assert torch.equal(u[s == 1], torch.zeros_like(u[s == 1]))
    assert bool((u[s == 0] <= module.threshold.expand_as(u)[s == 0]).all())


def test_subtract_without_delay_adds_the_threshold_back():
    """The reset_delay=False quirk (issue #341): a non-spiking step right after a step whose
    stored membrane stayed above thr adds thr back, so no fixed subtraction states it."""
    module = snn.Leaky(beta=0.9, reset_delay=False)
    x = torch.tensor([[3.5], [-3.0]]).float()             # U' = 3.5 -> stored 2.5 > thr
    z = torch.zeros(1)
    s1, m1 = module(x[0], z)
    s2, m2 = module(x[1], m1)
    assert (float(s1), float(m1)) == (1.0, 2.5)
    # R = 1: U' = 0.9 * 2.5 - 3 - 1 = -1.75, no spike, then U = U' + thr
    assert float(s2) == 0.0 and abs(float(m2) - (0.9 * 2.5 - 3.0)) < 1e-6


def test_rsynaptic_ignores_reset_delay_false():
    """RSynaptic's reset_delay=False correction assigns locals (issue #364's family): the
    states follow the reset_delay=True equations; with init_hidden=True the call fails."""
    a = _make("RSynaptic", "subtract", False, 5)
    b = _make("RSynaptic", "subtract", True, 5)
    b.load_state_dict(a.state_dict())
    x = _inputs(5)
    sa, ua = _snntorch(a, x)
    sb, ub = _snntorch(b, x)
    assert torch.equal(sa, sb) and torch.equal(ua, ub)
    c = snn.RSynaptic(alpha=0.9, beta=0.8, linear_features=N, reset_delay=False, init_hidden=True)
    with pytest.raises(TypeError):
        c(x[0])


@pytest.mark.parametrize("mech", ["zero", "subtract"])
def test_alpha_equations(mech):
    """Alpha (no export: its equations are stated for DPAP and the refusal)."""
    module = snn.Alpha(alpha=0.9, beta=0.8, reset_mechanism=mech)
    x = _inputs(7)
    s_ref, u_ref = _snntorch(module, x)
    a, b, thr = module.alpha.clamp(0, 1), module.beta.clamp(0, 1), module.threshold
    tau = torch.log(a) / (torch.log(b) - torch.log(a)) + 1
    exc = inh = U = torch.zeros_like(x[0])
    S_, U_ = [], []
    for t in range(T):
        R = (U > thr).float()
        e, i = a * exc + x[t], b * inh - x[t]
        m = tau * (e + i)
        if mech == "zero":
            e, i, m = e - e * R, i - i * R, m - m * R
        else:
            e, i, m = e - thr * R, i - (b * inh - x[t]) * R, m - (-inh) * R
        exc, inh, U = e, i, m
        S_.append((U > thr).float())
        U_.append(U)
    assert s_ref.sum() > 0
    assert torch.equal(s_ref, torch.stack(S_)) and torch.equal(u_ref, torch.stack(U_))
