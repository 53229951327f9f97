"""make_deployable: max pooling over currents and neurons without an exact form are replaced
by their nearest deployable form, the DPAP masks are kept through fine-tuning, and the result
exports with identical spike trains (checked in the targets' own consumers)."""
from __future__ import annotations

import argparse

import pytest
import snntorch as snn
import torch
import torch.nn.functional as F
from snntorch import surrogate
from torch import nn

from dpap_deploy import DPAP, DPAPConfig, SurvivalParams
from dpap_deploy.convert import make_deployable
from dpap_deploy.convert_neurons import SynapticForAlpha, candidates, rebuild, \
    synaptic_for_alpha, leaky_for_lapicque
from dpap_deploy.convert_pools import PoolSwapped
from dpap_deploy.errors import DPAPError
from dpap_deploy.graph import build_graph

T = 6
AGGRESSIVE = SurvivalParams(epsilon=1.5, eta=1.0, beta=0.5, gamma=1.0, C=0.5, warmup=0)


class Tutorial6(nn.Module):
    """snnTorch tutorial 6's CSNN as it is written there (F.max_pool2d over the convolution's
    current, snn.Leaky with its default subtract reset, its own time loop), sized for 8x8."""

    def __init__(self):
        super().__init__()
        sg = surrogate.fast_sigmoid(slope=25)
        self.conv1 = nn.Conv2d(1, 8, 3, padding=1)
        self.lif1 = snn.Leaky(beta=0.9, spike_grad=sg)
        self.conv2 = nn.Conv2d(8, 16, 3, padding=1)
        self.lif2 = snn.Leaky(beta=0.9, spike_grad=sg)
        self.fc1 = nn.Linear(16 * 2 * 2, 10)
        self.lif3 = snn.Leaky(beta=0.9, spike_grad=sg)

    def forward(self, x):
        mem1, mem2, mem3 = self.lif1.init_leaky(), self.lif2.init_leaky(), self.lif3.init_leaky()
        spk_rec = []
        for _ in range(T):
            cur1 = F.max_pool2d(self.conv1(x), 2)
            spk1, mem1 = self.lif1(cur1, mem1)
            cur2 = F.max_pool2d(self.conv2(spk1), 2)
            spk2, mem2 = self.lif2(cur2, mem2)
            cur3 = self.fc1(spk2.view(x.size(0), -1))
            spk3, mem3 = self.lif3(cur3, mem3)
            spk_rec.append(spk3)
        return torch.stack(spk_rec)


def _digits():
    from sklearn.datasets import load_digits
    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16
    return x, torch.tensor(d.target)


@pytest.fixture(scope="module")
def trained():
    """Tutorial 6 trained in the user's own loop (4 epochs), then 2 epochs with DPAP."""
    torch.manual_seed(0)
    x, y = _digits()
    xtr, ytr, xte, yte = x[:600], y[:600], x[1500:1564], y[1500:1564]
    net = Tutorial6()
    opt = torch.optim.Adam(net.parameters(), 1e-2)
    dpap = None
    for epoch in range(6):
        if epoch == 4:
            dpap = DPAP(net, xtr[:2], DPAPConfig(conv=AGGRESSIVE, linear=AGGRESSIVE))
        for i in range(0, 600, 50):
            rate = net(xtr[i:i + 50]).mean(0)
            loss = ((rate - F.one_hot(ytr[i:i + 50], 10)) ** 2).sum(1).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            if dpap is not None:
                dpap.step()
        if dpap is not None:
            dpap.end_epoch()
    return net, dpap, (xtr, ytr), (xte, yte)


def _masked_zero(model, masks):
    """Every (layer, number of pruned weights, sum of |pruned weights|)."""
    mods = dict(model.named_modules())
    out = []
    for name, (syn, neu) in masks.items():
        w = mods[name].weight.detach()
        keep = (syn & neu[:, None]).reshape(syn.shape + (1,) * (w.dim() - 2)).expand_as(w)
        out.append((name, int((~keep).sum()), float(w[~keep].abs().sum())))
    return out


def test_tutorial6_to_loihi_sim_and_nir(trained, tmp_path):
    net, dpap, train, test = trained
    before = {k: v.clone() for k, v in net.state_dict().items()}
    res = make_deployable(net, train[0][:2], train, targets=("loihi-sim", "nir"), dpap=dpap,
                          epochs=1, test_data=test, out=tmp_path)
    # the changes: both functional max poolings over currents, nothing else (subtract reset
    # has an exact form in both targets)
    pools = [c for c in res.changes if "F.max_pool2d" in c]
    assert len(pools) == 2 and all("F.avg_pool2d" in c and "over currents" in c for c in pools)
    thresholds = [c.split("'")[1] for c in res.changes if "threshold /" in c]
    assert thresholds == ["lif1", "lif2"] and len(res.changes) == 4, res.changes
    # the package's tracer sees the substituted op
    graph = build_graph(res.model, train[0][:2])
    pools = [n.attrs["pool"] for n in graph.nodes if n.op == "pool"]
    assert pools == ["avg", "avg"]
    assert isinstance(res.model, PoolSwapped)
    # the step loop (the model's forward under the mode) and the multi-step executor (the
    # graph) compute the same spikes
    from dpap_deploy.executor.run import outputs
    assert torch.equal(outputs(graph, test[0], T, multistep=False), outputs(graph, test[0], T))
    # the user's model is untouched
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    # masks kept: pruned weights exactly zero after fine-tuning, and there are some
    zeros = _masked_zero(res.model, res.masks)
    assert sum(n for _, n, _ in zeros) > 0, zeros
    assert all(worst == 0.0 for _, _, worst in zeros), zeros
    # fine-tuning ran and changed live weights
    assert len(res.losses) == 1
    assert not torch.equal(res.model.net.fc1.weight, net.fc1.weight)
    for acc in (res.accuracy_before, res.accuracy_converted, res.accuracy_after):
        assert 0.0 <= acc <= 1.0
    assert res.accuracy_before > 0.3         # a trained network, not a silent one
    # parity in the consumers: identical spike trains on every sample
    for target in ("loihi-sim", "nir"):
        p = res.parity[target]
        assert p["passed"] and p["n_samples"] == 32, p
        assert p["identical_spike_trains"] == 1.0, p
    assert res.passed and not res.remaining
    text = "\n".join(res.summary())
    assert "accuracy:" in text and "loihi-sim: passed" in text


def test_tutorial6_to_netx_converts_the_reset(trained, tmp_path):
    net, dpap, train, test = trained
    res = make_deployable(net, train[0][:2], train, targets=("netx",), dpap=dpap, epochs=1,
                          test_data=test, out=tmp_path)
    resets = [c for c in res.changes if "reset_mechanism='zero'" in c]
    assert sorted(c.split("'")[1] for c in resets) == ["lif1", "lif2", "lif3"], res.changes
    lifs = [m for m in res.model.modules() if isinstance(m, snn.Leaky)]
    assert [m.reset_mechanism for m in lifs] == ["zero"] * 3
    assert all(float(m.beta) == pytest.approx(0.9) for m in lifs)
    assert all(worst == 0.0 for _, _, worst in _masked_zero(res.model, res.masks))
    assert res.accuracy_after is not None and not res.remaining
    # the netx file ran in the netx loader (Lava, fixed point: its parity rule is an accuracy
    # drop, not identical spikes; 8-bit weights of a barely fine-tuned network)
    p = res.parity["netx"]
    assert "refused" not in p and p["n_samples"] == 32 and "identical_spike_trains" in p, p


def _own_loop(make, init, call):
    """A tutorial-5-style two-layer network of ``make()`` neurons in its own time loop."""
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1, self.lif1 = nn.Linear(64, 32), make()
            self.fc2, self.lif2 = nn.Linear(32, 10), make()

        def forward(self, x):
            s1, s2, rec = init(self.lif1), init(self.lif2), []
            for _ in range(T):
                out1 = call(self.lif1, self.fc1(x.flatten(1)), s1)
                out2 = call(self.lif2, self.fc2(out1[0]), s2)
                s1, s2 = out1[1:], out2[1:]
                rec.append(out2[0])
            return torch.stack(rec)
    torch.manual_seed(0)
    return Net()


@pytest.mark.parametrize("style", ["alpha", "synaptic-zero-delayed"])
def test_neurons_without_exact_form_convert_and_export_exactly(style, tmp_path):
    """snn.Alpha, and snn.Synaptic(reset_mechanism='zero') with its default reset_delay=True,
    each called as the tutorials call them: converted for loihi-sim, identical spikes there."""
    if style == "alpha":
        net = _own_loop(lambda: snn.Alpha(alpha=0.9, beta=0.8, threshold=0.5),
                        lambda m: m.init_alpha(), lambda m, cur, st: m(cur, *st))
        gone = snn.Alpha
    else:
        net = _own_loop(lambda: snn.Synaptic(alpha=0.8, beta=0.9, reset_mechanism="zero"),
                        lambda m: m.init_synaptic(), lambda m, cur, st: m(cur, *st))
        gone = None
    x, y = _digits()
    res = make_deployable(net, x[:2], (x[:128], y[:128]), targets=("loihi-sim",), epochs=1,
                          test_data=(x[1500:1532], y[1500:1532]), max_samples=16,
                          out=tmp_path)
    assert sorted(c.split("'")[1] for c in res.changes) == ["lif1", "lif2"], res.changes
    for m in (res.model.lif1, res.model.lif2):
        if gone is not None:
            assert not isinstance(m, gone)
        else:
            assert not (isinstance(m, snn.Synaptic) and m.reset_delay)
    p = res.parity["loihi-sim"]
    assert p["passed"] and p["identical_spike_trains"] == 1.0, p


def test_functional_pool_mode_computes_average_and_tracer_sees_it():
    x = torch.randn(3, 2, 6, 6)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.conv2 = nn.Conv2d(2, 2, 1), nn.Conv2d(2, 2, 1)
            self.lif = snn.Leaky(beta=0.5, init_hidden=True)

        def forward(self, x):
            return self.lif(F.max_pool2d(self.conv(x), 2) +
                            F.max_pool2d(self.conv2(x), kernel_size=3, stride=2, padding=1))

    inner = Net()
    torch.manual_seed(0)
    wrapped = PoolSwapped(inner, (True, False))
    with torch.no_grad():
        want = F.avg_pool2d(inner.conv(x), 2) + F.max_pool2d(inner.conv2(x), 3, 2, 1)
        got = []
        h = inner.lif.register_forward_pre_hook(lambda m, a: got.append(a[0]))
        wrapped(x)
        h.remove()
    assert torch.equal(got[0], want)
    pools = [n for n in build_graph(wrapped, x[:2]).nodes if n.op == "pool"]
    assert [p.attrs["pool"] for p in pools] == ["avg", "max"]
    assert pools[0].attrs["kernel"] == (2, 2) and pools[1].attrs["stride"] == (2, 2)


def test_threshold_behind_a_replaced_pool_is_scaled_by_the_current_ratio():
    """g = mean(relu(maxpool(I))) / mean(relu(avgpool(I))) on the training inputs, by hand."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.MaxPool2d(2),
                        snn.Leaky(beta=0.9, threshold=0.7, init_hidden=True), nn.Flatten(),
                        nn.Linear(64, 10), snn.Leaky(beta=0.9, init_hidden=True))
    x, y = _digits()
    res = make_deployable(net, x[:2], (x[:300], y[:300]), targets=("nir",), epochs=0,
                          time_steps=3, max_samples=4)
    with torch.no_grad():
        cur = net[0](x[:256])
        g = float(F.max_pool2d(cur, 2).clamp(min=0).mean() /
                  F.avg_pool2d(cur, 2).clamp(min=0).mean())
    assert 1.0 < g < 4.0
    assert isinstance(res.model[1], nn.AvgPool2d)
    assert float(res.model[2].threshold) == pytest.approx(0.7 / g, rel=1e-5)
    assert float(net[2].threshold) == pytest.approx(0.7)           # the user's model as it was
    assert float(res.model[5].threshold) == pytest.approx(1.0)     # no pool before it


def test_kept_pool_modules_do_not_shift_the_functional_calls():
    """A max pooling module kept (over spikes) before the functional one replaced: the mode
    counts only the functional call."""
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(1, 2, 3, padding=1)
            self.lif1 = snn.Leaky(0.5, threshold=0.05, init_hidden=True)
            self.pool = nn.MaxPool2d(2)
            self.conv2, self.lif2 = nn.Conv2d(2, 3, 3, padding=1), snn.Leaky(0.5, init_hidden=True)

        def forward(self, x):
            return self.lif2(F.max_pool2d(self.conv2(self.pool(self.lif1(self.conv1(x)))), 2))

    torch.manual_seed(0)
    net, x = Net(), 3 * torch.rand(4, 1, 8, 8)
    wrapped = PoolSwapped(net, (True,))
    pools = [n for n in build_graph(wrapped, x[:2]).nodes if n.op == "pool"]
    assert [(p.module is not None, p.attrs["pool"]) for p in pools] == [(True, "max"),
                                                                         (False, "avg")]
    seen = {}
    h1 = net.lif1.register_forward_hook(lambda m, a, out: seen.update(spk=out))
    h2 = net.lif2.register_forward_pre_hook(lambda m, a: seen.update(cur=a[0]))
    with torch.no_grad():
        wrapped(x)
        want = F.avg_pool2d(net.conv2(F.max_pool2d(seen["spk"], 2)), 2)
    h1.remove(), h2.remove()
    assert 0.05 < float(seen["spk"].mean()) < 0.95         # max and average pooling differ
    assert torch.equal(seen["cur"], want)


def test_alpha_to_synaptic_is_the_same_membrane_one_step_earlier():
    """tau (alpha - beta) U_syn[t] = U_alpha[t + 1] without spikes, against snnTorch."""
    torch.manual_seed(0)
    alpha = snn.Alpha(alpha=0.9, beta=0.8, threshold=1e9)
    syn = synaptic_for_alpha(alpha)
    assert isinstance(syn, SynapticForAlpha) and syn.reset_mechanism == "zero"
    assert not syn.reset_delay
    cur = torch.randn(12, 4, 5)
    e, i, m = alpha.init_alpha()
    s1, m1 = syn.init_synaptic()
    dummy = torch.zeros(0)
    ua, us = [], []
    for t in range(12):
        _, e, i, m = alpha(cur[t], e, i, m)
        _, s1, dummy, m1 = syn(cur[t], s1, dummy, m1)
        ua.append(m)
        us.append(m1)
    a, b = torch.tensor(0.9), torch.tensor(0.8)
    tau = torch.log(a) / (torch.log(b) - torch.log(a)) + 1
    gain = float(tau * (a - b))
    assert float(syn.threshold) == pytest.approx(1e9 / gain, rel=1e-6)
    torch.testing.assert_close(torch.stack(us[:-1]) * gain, torch.stack(ua[1:]),
                               rtol=1e-5, atol=1e-5)


def test_lapicque_to_leaky_holds_the_membrane_scaled():
    torch.manual_seed(0)
    lap = snn.Lapicque(R=5.0, C=2.0, time_step=0.5, threshold=0.3, reset_mechanism="subtract")
    leaky = leaky_for_lapicque(lap, "subtract")
    assert isinstance(leaky, snn.Leaky) and leaky.reset_mechanism == "subtract"
    gain = 0.5 / 2.0
    assert float(leaky.beta) == pytest.approx(1 - 0.5 / 10.0)
    assert float(leaky.threshold) == pytest.approx(0.3 / gain)
    cur = torch.rand(20, 3, 4)
    m1, m2 = lap.init_lapicque(), leaky.init_lapicque()     # called as the Lapicque was
    for t in range(20):
        s1, m1 = lap(cur[t], m1)
        s2, m2 = leaky(cur[t], m2)
        assert torch.equal(s1, s2)
        torch.testing.assert_close(m2 * gain, m1, rtol=1e-5, atol=1e-6)


def test_rebuild_carries_parameters_over():
    sg = surrogate.fast_sigmoid(slope=25)
    old = snn.Synaptic(alpha=torch.rand(4), beta=0.7, threshold=0.4, spike_grad=sg,
                       learn_beta=True, init_hidden=True)
    new = rebuild(old, snn.Synaptic, reset_mechanism="zero", reset_delay=False)
    assert new.reset_mechanism == "zero" and not new.reset_delay
    assert isinstance(new.beta, nn.Parameter) and not isinstance(new.alpha, nn.Parameter)
    assert torch.equal(new.alpha, old.alpha) and float(new.threshold) == pytest.approx(0.4)
    assert new.spike_grad is sg and new.init_hidden
    assert [w for w, _ in candidates(old)][0].endswith("reset_delay=False)")
    # the last candidate has no synaptic current; with init_hidden=True it is a plain Leaky
    leaky = candidates(old)[-1][1]()
    assert type(leaky) is snn.Leaky and leaky.reset_mechanism == "zero"
    assert torch.equal(leaky.beta, old.beta.detach())
    torch.testing.assert_close(leaky.threshold, 0.4 * (1 - old.alpha))
    # called as the Synaptic was (its own loop): spk, syn, mem = lif(cur, syn, mem)
    own = snn.Synaptic(alpha=0.8, beta=0.7, threshold=0.4)
    shim = candidates(own)[-1][1]()
    syn, mem = shim.init_synaptic()
    spk, syn, mem = shim(torch.ones(2, 3), syn, mem)
    assert torch.equal(mem, torch.ones(2, 3)) and torch.equal(syn, torch.zeros(2, 3))


def test_refusals_are_one_line(trained):
    net, _, train, _ = trained
    ann = nn.Sequential(nn.Flatten(), nn.Linear(64, 10), nn.ReLU())
    cases = [(dict(model=ann), "spiking"), (dict(targets=("onnx",)), "onnx"),
             (dict(epochs=-1), "epochs"), (dict(targets=("lava",)), "lava")]
    for over, word in cases:
        kw = dict(model=net, targets=("nir",), epochs=0)
        kw.update(over)
        model = kw.pop("model")
        with pytest.raises(DPAPError) as err:
            make_deployable(model, train[0][:2], train, **kw)
        assert word in str(err.value) and "\n" not in str(err.value)


def test_run_folder_record_round_trip():
    """A run folder's model (nn.Sequential) with a max pooling over currents: the record says
    which module became an average pooling, and applying it to the model rebuilt from its
    name gives the converted model."""
    from dpap_deploy.convert_run import apply_conversion, conversion_record
    from dpap_deploy.neurons import lif

    def build():
        torch.manual_seed(0)
        return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.MaxPool2d(2), lif(),
                             nn.Flatten(), nn.Linear(64, 10), lif())
    x, y = _digits()
    model = build()
    res = make_deployable(model, x[:2], (x[:64], y[:64]), targets=("netx",), epochs=0,
                          time_steps=4, max_samples=8)
    assert any("'1' nn.MaxPool2d" in c for c in res.changes), res.changes
    record = conversion_record(model, res.model)
    assert record == [{"module": "1", "op": "avg_pool"}]
    again = apply_conversion(build(), record)
    assert isinstance(again[1], nn.AvgPool2d) and again[1].kernel_size == 2
    again.load_state_dict(res.model.state_dict())
    assert torch.equal(again(x[:8]), res.model(x[:8]))


def test_cli_route_writes_a_run_that_compact_takes(tmp_path, capsys):
    from dpap_deploy import TrainConfig, pipeline
    from dpap_deploy.convert_run import add_parser, run_command
    run, new = tmp_path / "run", tmp_path / "new"
    pipeline.train(TrainConfig(model="snn-digits", dataset="digits", epochs=1, time_steps=4),
                   run, progress=False)
    parser = argparse.ArgumentParser(prog="dpap-deploy")
    add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["make-deployable", str(run), "--target", "loihi-sim", "--out",
                              str(new), "--epochs", "1", "--max-samples", "16"])
    assert run_command(args) == 0
    text = capsys.readouterr().out
    assert "changed: nothing" in text and "accuracy:" in text and "loihi-sim: passed" in text
    rep = pipeline.compact(new, tmp_path / "small")
    assert rep.source_run
    with pytest.raises(DPAPError, match="already holds a run"):
        run_command(args)


def test_blockers_without_the_deployability_check(trained, monkeypatch):
    """Where dpap_deploy.deployability is absent, the targets' own blockers (or a dry build)
    name the same operations."""
    import importlib
    from dpap_deploy import convert_check
    net, _, train, _ = trained
    graph = build_graph(net, train[0][:2])
    with_check = convert_check.target_blockers(net, graph, train[0][:2], ["nir"], T)
    real = importlib.import_module

    def no_check(name, package=None):
        if name == ".deployability":
            raise ImportError(name)
        return real(name, package)
    monkeypatch.setattr(convert_check.importlib, "import_module", no_check)
    without = convert_check.target_blockers(net, graph, train[0][:2], ["nir"], T)
    named = {graph.nodes[i].name for line in without["nir"]
             for i in convert_check.named_nodes(graph, line)}
    assert "max_pool2d_1" in named
    assert named <= {graph.nodes[i].name for line in with_check["nir"]
                     for i in convert_check.named_nodes(graph, line)}


def test_cli_route_with_a_replaced_pool_reads_back_converted_or_refuses(tmp_path, monkeypatch,
                                                                         capsys):
    """A zoo-style model with a max pooling over currents: the new run folder reads back as
    the converted model (the run loader applies the conversion record), or, where the loader
    does not apply it, the command refuses in one line and keeps no run files."""
    from dpap_deploy import TrainConfig, pipeline, zoo
    from dpap_deploy.convert_run import add_parser, run_command
    from dpap_deploy.neurons import lif
    from dpap_deploy.runfolder import run_files
    from dpap_deploy.trained import load_trained

    def build(in_shape, n_classes):
        return nn.Sequential(nn.Conv2d(in_shape[0], 8, 3, padding=1), nn.MaxPool2d(2), lif(),
                             nn.Flatten(), nn.Linear(8 * 4 * 4, n_classes), lif())
    monkeypatch.setitem(zoo.ZOO, "snn-maxpool-test",
                        zoo.ModelSpec("snn-maxpool-test", "snn", build, "max pool over currents"))
    run, new = tmp_path / "run", tmp_path / "new"
    pipeline.train(TrainConfig(model="snn-maxpool-test", dataset="digits", epochs=1,
                               time_steps=4), run, progress=False)
    parser = argparse.ArgumentParser(prog="dpap-deploy")
    add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["make-deployable", str(run), "--target", "nir", "--out", str(new),
                              "--epochs", "1", "--max-samples", "8"])
    try:
        status = run_command(args)
    except DPAPError as exc:
        assert "conversion record" in str(exc) and "\n" not in str(exc)
        assert run_files(new) == []
        return
    assert status == 0
    assert "'1' nn.MaxPool2d" in capsys.readouterr().out
    back = load_trained(new)
    assert isinstance(back.model[1], nn.AvgPool2d)
    pipeline.compact(new, tmp_path / "small")     # deploy.pt folds the pool into the conv
    from dpap_deploy.serialize import load_model
    deploy = load_model(tmp_path / "small" / "deploy.pt")[0]
    assert isinstance(deploy[1], nn.Identity) and deploy[0].stride == (2, 2)
