"""Any NIR graph in Lava: the torch reference (nir_torch) against hand-computed values and
snnTorch, then Lava against the reference on graphs written as other tools write them."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nir
import numpy as np
import pytest
import snntorch as snn
import torch
from torch import nn

import nir_graphs as G
from dpap_deploy.errors import ParityError, UnsupportedModelError
from dpap_deploy.exporters.lava_process import descendants
from dpap_deploy.exporters.nir_file import run_nir_file
from dpap_deploy.exporters.nir_to_lava import LavaNetwork
from dpap_deploy.exporters.nir_torch import run_reference
from dpap_deploy.graph import reset_states

ENV = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]),
       "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _chain(neuron, n_in=3):
    w = np.eye(n_in, dtype=np.float32)
    return G.graph({"input": nir.Input(np.array([n_in])), "w": nir.Linear(weight=w),
                    "n": neuron, "output": nir.Output(np.array([n_in]))},
                   [("input", "w"), ("w", "n"), ("n", "output")])


def test_reference_lif_cubalif_if_by_hand():
    # LIF beta 0.5, vth 1, input 0.6: v = 0.6, 0.9, 1.05 (spike, v = 0), 0.6, ...
    out = run_reference(_chain(G.lif((1,), 0.5), 1), np.array([[0.6]], np.float32), 4)
    assert out[0, :, 0].tolist() == [0, 0, 1, 0]
    # CubaLIF alpha 0.5, beta 0.5, x = 1: I = 1, 1.5, 1.75; v = 1 (not > 1), 2 (spike, v = 0),
    # then 0.5 * 0 + 1.75
    out = run_reference(_chain(G.cuba((1,), 0.5, 0.5), 1), np.array([[1.0]], np.float32), 3)
    assert out[0, :, 0].tolist() == [0, 1, 1]
    out = run_reference(_chain(G.cuba((1,), 0.5, 0.5, vth=1.8), 1), np.array([[1.0]], np.float32), 3)
    assert out[0, :, 0].tolist() == [0, 1, 0]
    # IF: v = 0.4, 0.8, 1.2 (spike), 0.4
    out = run_reference(_chain(G.if_((1,)), 1), np.array([[0.4]], np.float32), 4)
    assert out[0, :, 0].tolist() == [0, 0, 1, 0]


def test_reference_recurrent_edge_delivers_the_previous_step():
    # one neuron, self-excitation 2 through a recurrent Linear, input 1.1 at step 0 only
    g = G.graph({"input": nir.Input(np.array([1])), "w": nir.Linear(weight=np.eye(1, dtype=np.float32)),
                 "n": G.if_((1,)), "rec": nir.Linear(weight=np.full((1, 1), 2, np.float32)),
                 "output": nir.Output(np.array([1]))},
                [("input", "w"), ("w", "n"), ("n", "rec"), ("rec", "n"), ("n", "output")])
    x = np.zeros((1, 4, 1), np.float32)
    x[0, 0] = 1.1
    # step 0: v = 1.1 spike; step 1: v = 0 + 2 (previous spike) spike; and so on
    assert run_reference(g, x, 4)[0, :, 0].tolist() == [1, 1, 1, 1]
    x[0, 0] = 0.9
    assert run_reference(g, x, 4)[0, :, 0].tolist() == [0, 0, 0, 0]


@pytest.mark.parametrize("beta", [0.2, 0.5, 0.9, 0.95, 0.123])
def test_reference_reproduces_snntorch_leaky_spikes_exactly(beta):
    torch.manual_seed(0)
    fc = nn.Linear(30, 20)
    leaky = snn.Leaky(beta=beta, threshold=0.5, reset_mechanism="zero", init_hidden=True)
    x = torch.rand(100, 30)
    with torch.no_grad():
        ref = torch.stack([leaky(fc(x)) for _ in range(25)], 1).numpy()
    g = G.graph({"input": nir.Input(np.array([30])),
                 "fc": nir.Affine(weight=fc.weight.detach().numpy(), bias=fc.bias.detach().numpy()),
                 "lif": G.lif((20,), beta, 0.5), "output": nir.Output(np.array([20]))},
                [("input", "fc"), ("fc", "lif"), ("lif", "output")])
    got = run_reference(g, x.numpy(), 25)
    assert 0.05 < ref.mean() < 0.95 and np.array_equal(got, ref)


@pytest.mark.parametrize("build", ["residual", "cuba_if_avgpool", "conv1d_recurrent"])
def test_lava_runs_hand_written_graphs_with_identical_spikes(build):
    g = getattr(G, build)(np.random.default_rng(0))
    net = LavaNetwork(g, 8)
    x = np.random.default_rng(1).uniform(0, 1.5, (24,) + net.in_shape).astype(np.float32)
    ref = run_reference(g, x, 8)
    got = net.run(x)
    assert ref.sum(axis=(1, 2)).min() > 0                 # every sample has output spikes
    assert np.array_equal(got, ref)
    kinds = {l.kind for l in net.layers}
    expected = {"residual": {"conv", "pool", "relay", "dense"},
                "cuba_if_avgpool": {"cubalif", "if", "pool"},
                "conv1d_recurrent": {"relay", "dense", "conv"}}[build]
    assert expected <= kinds
    # pooling as its own stage: the Lava network holds the file's weights plus C k^2 per pool
    pools = {"residual": 4 * 4, "cuba_if_avgpool": 3 * 4, "conv1d_recurrent": 0}[build]
    from dpap_deploy.exporters.nir_file import nir_synapses_all
    assert net.synapses == nir_synapses_all(g) + pools


def test_state_carried_across_samples_would_show():
    """Lava runs the samples back to back; the identical spikes above hold only because the
    recurrent edge is gated at each sample's start: carrying the state over does change them."""
    g = G.conv1d_recurrent(np.random.default_rng(0))
    x = np.random.default_rng(1).uniform(0, 1.5, (24, 2, 16)).astype(np.float32)
    one_by_one = np.concatenate([run_reference(g, x[i:i + 1], 8) for i in range(len(x))])
    assert np.array_equal(run_reference(g, x, 8), one_by_one)
    # a run of all samples as one long sequence (state carried over) differs from per-sample runs
    frames = np.repeat(x[:, None], 8, axis=1).reshape(1, 24 * 8, 2, 16)
    carried = run_reference(g, frames, 24 * 8).reshape(24, 8, -1)
    assert not np.array_equal(carried, one_by_one)


def test_lava_refusals_are_one_line():
    g = _chain(G.lif((3,), 0.8))
    g.nodes["n"].v_reset[:] = 0.5
    with pytest.raises(UnsupportedModelError, match=r"'n' \(LIF\) resets to v_reset=0.5.*v_reset = 0"):
        LavaNetwork(g, 4)
    g = _chain(G.lif((3,), 0.8))
    g.nodes["n"].tau[1] *= 2        # per-neuron decay: runs as our Population process
    assert LavaNetwork(g, 4).neuron["n"]["own"]
    g = _chain(nir.Threshold(threshold=np.ones(3, np.float32)))
    with pytest.raises(UnsupportedModelError, match="'n' \\(Threshold\\) has no Lava mapping"):
        LavaNetwork(g, 4)


def test_per_neuron_threshold_and_gain_are_scaled_into_the_weights():
    rng = np.random.default_rng(3)
    node = G.lif((6,), 0.8)
    node.v_threshold[:] = rng.uniform(0.5, 2, 6).astype(np.float32)
    node.r[:] *= 1.5                                        # input gain 1.5
    g = G.graph({"input": nir.Input(np.array([5])),
                 "fc": nir.Affine(weight=rng.standard_normal((6, 5)).astype(np.float32),
                                  bias=np.full(6, 0.1, np.float32)),
                 "n": node, "output": nir.Output(np.array([6]))},
                [("input", "fc"), ("fc", "n"), ("n", "output")])
    x = rng.uniform(0, 1, (40, 5)).astype(np.float32)
    ref = run_reference(g, x, 8)
    got = LavaNetwork(g, 8).run(x)
    assert ref.mean() > 0.05
    # float64 v/vth in Lava against float32 v in torch: equal unless v is within rounding of vth
    assert (got == ref).mean() >= 0.999


def test_snntorch_export_to_nir_runs_in_lava(tmp_path):
    """A graph written by snnTorch's own exporter (platform.md's workarounds: ignore_dims=[0],
    beta and threshold given per neuron), read back from the file, run in Lava."""
    from snntorch.export_nir import export_to_nir
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), snn.Leaky(beta=torch.full((4, 8, 8), 0.8),
                                                                   threshold=torch.full((4, 8, 8), 0.5),
                                                                   init_hidden=True, reset_mechanism="zero"),
                        nn.AvgPool2d((2, 2), (2, 2)), nn.Flatten(), nn.Linear(64, 10),
                        snn.Leaky(beta=torch.full((10,), 0.9), threshold=torch.full((10,), 0.5),
                                  init_hidden=True, reset_mechanism="zero"))
    with torch.no_grad():
        net[0].weight.mul_(3)
        net[4].weight.mul_(3)
    x = torch.rand(40, 1, 8, 8)
    graph = export_to_nir(net, x[:1], ignore_dims=[0])
    nir.write(str(tmp_path / "snntorch.nir"), graph)
    reset_states(net)
    with torch.no_grad():
        spikes = torch.stack([net(x) for _ in range(8)], 1).numpy()
    back = nir.read(str(tmp_path / "snntorch.nir"))
    ref = run_reference(back, x.numpy(), 8)
    assert spikes.sum() > 0 and np.array_equal(ref, spikes)       # snnTorch's own spikes
    report = run_nir_file(tmp_path / "snntorch.nir", tmp_path / "out", 8, 40,
                          _npz(tmp_path, x.numpy()))
    e = report["export"]
    assert e["passed"] and e["parity"]["identical_spike_trains"] == 1.0
    assert "pool" in " ".join(e["lava_layers"])


def _npz(tmp_path, x):
    np.savez(tmp_path / "x.npz", x=x)
    return tmp_path / "x.npz"


def test_cli_runs_a_nir_file_and_fails_on_parity(tmp_path):
    nir.write(str(tmp_path / "g.nir"), G.cuba_if_avgpool(np.random.default_rng(0)))
    r = subprocess.run([sys.executable, "-m", "dpap_deploy", "export", str(tmp_path / "g.nir"),
                        "--target", "loihi-sim", "--out", str(tmp_path / "o"), "--samples", "30",
                        "--time-steps", "6"], capture_output=True, text=True, env=ENV, timeout=300)
    assert r.returncode == 0, r.stderr
    rep = json.loads((tmp_path / "o/report.json").read_text())["export"]
    assert rep["parity"]["n_samples"] == 30 and rep["time_steps"] == 6 and rep["passed"]
    assert (tmp_path / "o/report.md").read_text().startswith("# NIR file in the Lava simulator")
    r = subprocess.run([sys.executable, "-m", "dpap_deploy", "export", str(tmp_path / "g.nir"),
                        "--target", "netx", "--out", str(tmp_path / "o")], capture_output=True,
                       text=True, env=ENV, timeout=300)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "--target loihi-sim" in r.stderr


def test_parity_failure_raises_after_writing_the_report(tmp_path, monkeypatch):
    from dpap_deploy.exporters import nir_file
    nir.write(str(tmp_path / "g.nir"), G.residual(np.random.default_rng(0)))
    real = nir_file.run_reference
    monkeypatch.setattr(nir_file, "run_reference", lambda g, x, t: 1 - real(g, x, t))  # injected error
    with pytest.raises(ParityError, match="parity check failed"):
        run_nir_file(tmp_path / "g.nir", tmp_path / "o", samples=10)
    assert json.loads((tmp_path / "o/report.json").read_text())["export"]["passed"] is False


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _sigint_default():
    """The child gets SIGINT's default action, as from a terminal. A test runner started in
    the background of a non-interactive shell (``nohup pytest &``) ignores SIGINT, every child
    inherits that, and Python then keeps ignoring it, which is right for the product and
    wrong for a test of Ctrl-C."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _start_long_lava_run(tmp_path):
    nir.write(str(tmp_path / "g.nir"), G.cuba_if_avgpool(np.random.default_rng(0)))
    p = subprocess.Popen([sys.executable, "-m", "dpap_deploy", "export", str(tmp_path / "g.nir"),
                          "--target", "loihi-sim", "--out", str(tmp_path / "o"), "--samples",
                          "20000"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env=ENV, start_new_session=True, preexec_fn=_sigint_default)
    t0 = time.time()
    while len(descendants(p.pid)) < 5 and time.time() - t0 < 120:
        time.sleep(0.2)
    time.sleep(1.0)                             # the run is under way
    kids = descendants(p.pid)
    assert len(kids) >= 5 and p.poll() is None
    return p, kids


def test_kill_9_of_the_parent_leaves_no_lava_process(tmp_path):
    p, kids = _start_long_lava_run(tmp_path)
    os.kill(p.pid, signal.SIGKILL)
    p.communicate(timeout=30)
    deadline = time.time() + 10
    while any(_alive(k) for k in kids) and time.time() < deadline:
        time.sleep(0.2)
    assert [k for k in kids if _alive(k)] == []


def test_ctrl_c_to_the_process_group_exits_130_within_5_s(tmp_path):
    p, kids = _start_long_lava_run(tmp_path)
    t0 = time.time()
    os.killpg(p.pid, signal.SIGINT)
    _, err = p.communicate(timeout=30)
    assert time.time() - t0 < 5 and p.returncode == 130
    assert err.strip().splitlines() == ["dpap-deploy: interrupted"]
    time.sleep(0.5)
    assert [k for k in kids if _alive(k)] == []


def test_ctrl_c_taken_by_one_of_lavas_threads_still_ends_the_run(tmp_path):
    """The kernel may hand a process's SIGINT to any of its threads. Sent to a thread other
    than the main one (which sleeps in Lava's lock wait), such as Lava's channel threads, it
    used to leave the export running until the whole Lava run ended; now it exits 130 within
    5 s."""
    import ctypes
    p, kids = _start_long_lava_run(tmp_path)
    helpers = [int(t) for t in os.listdir(f"/proc/{p.pid}/task") if int(t) != p.pid]
    assert helpers, "Lava runs helper threads in the parent"
    t0 = time.time()
    tgkill = 234 if os.uname().machine == "x86_64" else 131       # aarch64
    assert ctypes.CDLL(None, use_errno=True).syscall(tgkill, p.pid, helpers[-1],
                                                      signal.SIGINT) == 0
    try:
        _, err = p.communicate(timeout=30)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
    assert time.time() - t0 < 5 and p.returncode == 130, (time.time() - t0, p.returncode)
    assert err.strip().splitlines() == ["dpap-deploy: interrupted"]
    time.sleep(0.5)
    assert [k for k in kids if _alive(k)] == []


def test_snntorch_synaptic_and_rleaky_zero_reset_are_not_nir_neurons():
    """snnTorch's Synaptic(reset_mechanism="zero") zeroes the whole membrane step after a spike
    (that step's input is lost); NIR's CubaLIF only sets v = v_reset. A writer mapping one to
    the other changes the spikes: here [0, 1, 0, 1] against NIR's [0, 1, 1, ...]."""
    syn = snn.Synaptic(alpha=0.5, beta=0.5, threshold=1.0, reset_mechanism="zero", init_hidden=True)
    with torch.no_grad():
        theirs = [float(syn(torch.ones(1, 1))) for _ in range(4)]
    ours = run_reference(_chain(G.cuba((1,), 0.5, 0.5), 1), np.ones((1, 1), np.float32), 4)
    assert theirs == [0, 1, 0, 1] and ours[0, :3, 0].tolist() == [0, 1, 1]
    # RLeaky's zero reset does the same (mem = f(input) - reset * f(input)); Leaky's does not
    rleaky = snn.RLeaky(beta=0.5, threshold=1.0, linear_features=1, reset_mechanism="zero",
                        init_hidden=True)
    with torch.no_grad():
        rleaky.recurrent.weight.zero_()
        rleaky.recurrent.bias.zero_()
        theirs = [float(rleaky(torch.ones(1, 1))) for _ in range(5)]
    ours = run_reference(_chain(G.lif((1,), 0.5), 1), np.ones((1, 1), np.float32), 5)
    assert theirs == [0, 1, 0, 0, 1] and ours[0, :, 0].tolist() == [0, 1, 0, 1, 0]


def test_snntorch_rleaky_export_runs_in_lava_like_the_reference(tmp_path):
    """snnTorch writes RLeaky as a recurrent LIF + Affine (with the recurrent bias); Lava gives
    the reference's spikes. (Not snnTorch's own: its zero reset differs, test above.)"""
    from snntorch.export_nir import export_to_nir
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(20, 16), snn.RLeaky(beta=torch.full((16,), 0.8),
                                                      threshold=torch.full((16,), 0.5),
                                                      linear_features=16, init_hidden=True,
                                                      reset_mechanism="zero"),
                        nn.Linear(16, 5), snn.Leaky(beta=torch.full((5,), 0.9),
                                                    threshold=torch.full((5,), 0.5),
                                                    init_hidden=True, reset_mechanism="zero"))
    with torch.no_grad():
        net[0].weight.mul_(2)
        net[1].recurrent.weight.mul_(2)
    nir.write(str(tmp_path / "r.nir"), export_to_nir(net, torch.rand(1, 20), ignore_dims=[0]))
    g = nir.read(str(tmp_path / "r.nir"))
    assert any(isinstance(n, nir.Affine) and n.weight.shape == (16, 16) for n in g.nodes.values())
    x = np.random.default_rng(0).random((30, 20)).astype(np.float32)
    ref = run_reference(g, x, 10)
    assert ref.mean() > 0.05 and np.array_equal(LavaNetwork(g, 10).run(x), ref)


def test_neuron_after_a_flatten_keeps_lava_element_order():
    """Conv -> Flatten -> LIF (a threshold per channel) -> Linear: the LIF works on the conv map
    in Lava's (w, h, c) order, its parameters and the next weight's columns must follow."""
    rng = np.random.default_rng(5)
    node = G.lif((48,), 0.7)
    node.v_threshold[:] = np.repeat([0.6, 1.2], 24)          # torch order: channel-major
    g = G.graph({"input": nir.Input(np.array([2, 4, 6])),
                 "c": nir.Conv2d(input_shape=(4, 6), weight=np.abs(rng.standard_normal((2, 2, 1, 1)) * 2).astype(np.float32),
                                 stride=1, padding=0, dilation=1, groups=1,
                                 bias=np.array([0.2, -0.1], np.float32)),
                 "flat": nir.Flatten(input_type={"input": np.array([2, 4, 6])}, start_dim=0, end_dim=-1),
                 "n": node, "fc": nir.Linear(weight=rng.standard_normal((5, 48)).astype(np.float32)),
                 "n2": G.if_((5,)), "output": nir.Output(np.array([5]))},
                [("input", "c"), ("c", "flat"), ("flat", "n"), ("n", "fc"), ("fc", "n2"), ("n2", "output")])
    x = rng.uniform(0, 1, (30, 2, 4, 6)).astype(np.float32)
    ref = run_reference(g, x, 6)
    got = LavaNetwork(g, 6).run(x)
    assert ref.mean() > 0.05 and (got == ref).mean() >= 0.999
