"""Writes the foreign NIR files of ``tests/test_nir_foreign.py`` with the real libraries.

Run by hand, not in CI (CI only reads the committed files, with our own stack)::

    python3.11 -m venv /tmp/peers && /tmp/peers/bin/pip install torch==2.13.0 sinabs norse
    /tmp/peers/bin/python tests/data/nir_foreign/make_files.py sinabs sinabs_conv norse
    .venv/bin/python tests/data/nir_foreign/make_files.py snntorch

Each network is ``Linear 16->8 -> neuron -> Linear 8->4 -> neuron`` with seeded weights. For
each writer and neuron kind ``K`` it writes, next to this script:

- ``K.nir``: the file exactly as the library's own NIR export wrote it (no ``dt``: none of
  these writers stores one);
- ``K-dt.nir``: the same graph with ``metadata["dt"]`` set to the step the writer's equations
  correspond to (``DT`` below), written with the same library's ``nir.write``;
- ``K.npz``: ``x`` (input frames ``[N, T, 16]``, ``T = 10``), ``spikes`` (the writer's own output spikes
  ``[N, T, 4]``, run in the writer on ``x``) and ``dt``.

The step each file needs (forward Euler, NIR's ``v[t] = (1 - dt/tau) v + r dt/tau I``):

- sinabs ``IAF`` (``v += I``, ``IF`` with ``r = 1``): ``dt = 1``; also a convolutional
  network (``sinabs_conv_iaf``: Conv2d, SumPool2d, Flatten);
- sinabs ``LIF`` (``v = a v + (1 - a) I``, ``a = exp(-1/tau_mem)`` with ``norm_input=True``,
  ``LIF`` with the same ``tau``, ``r = 1``): ``dt = tau (1 - exp(-1/tau))``;
- Norse ``IAFCell`` (``v += I``, ``IF`` with ``r = 1``): ``dt = 1``;
- Norse ``LIFBoxCell`` (``v += dt_n / tau_n (I - v)``, written as ``tau = dt_n tau_n``):
  ``dt = dt_n^2`` (``1e-6`` for Norse's ``dt_n = 1e-3``);
- snnTorch ``Leaky`` (``tau = dt / (1 - beta)``, ``r = tau / dt``): ``dt = 1e-4``.
"""
from __future__ import annotations

import math
import sys
from pathlib import Path

import nir
import numpy as np
import torch

HERE = Path(__file__).resolve().parent
N, T, F_IN, F_HID, F_OUT = 12, 10, 16, 8, 4
TAU_SINABS = 5.0                      # sinabs LIF tau_mem, in steps
NORSE_DT = 1e-3                       # norse.torch.to_nir's default dt


def _inputs() -> np.ndarray:
    return np.random.default_rng(0).random((N, T, F_IN)).astype(np.float32)


def _linears(gain: float) -> tuple[torch.nn.Linear, torch.nn.Linear]:
    torch.manual_seed(0)
    a, b = torch.nn.Linear(F_IN, F_HID), torch.nn.Linear(F_HID, F_OUT)
    with torch.no_grad():
        a.weight.mul_(gain)
        b.weight.mul_(gain)
    return a, b


def _save(name: str, graph, spikes: np.ndarray, x: np.ndarray, dt: float) -> None:
    nir.write(str(HERE / f"{name}.nir"), graph)
    graph.metadata = {**(graph.metadata or {}), "dt": dt}
    nir.write(str(HERE / f"{name}-dt.nir"), graph)
    np.savez(HERE / f"{name}.npz", x=x, spikes=spikes.astype(np.float32), dt=dt)
    print(f"{name}: dt {dt:.9g}, {int(spikes.sum())} output spikes")


def sinabs_files() -> None:
    import sinabs
    import sinabs.layers as sl
    from sinabs.activation import MembraneReset, SingleSpike

    x = _inputs()
    kinds = {"sinabs_iaf": (lambda: sl.IAF(spike_fn=SingleSpike, reset_fn=MembraneReset(),
                                           min_v_mem=None), 1.0, 2.0),
             "sinabs_lif": (lambda: sl.LIF(tau_mem=TAU_SINABS, norm_input=True,
                                           spike_fn=SingleSpike, reset_fn=MembraneReset()),
                            TAU_SINABS * (1 - math.exp(-1 / TAU_SINABS)), 12.0)}
    for name, (neuron, dt, gain) in kinds.items():
        a, b = _linears(gain)
        net = torch.nn.Sequential(a, neuron(), b, neuron())
        graph = sinabs.to_nir(net, torch.as_tensor(x[:1]))     # Input: [T, 16]
        for m in net:
            if hasattr(m, "reset_states"):
                m.reset_states()
        with torch.no_grad():
            spikes = net(torch.as_tensor(x)).numpy()
        _save(name, graph, spikes, x, dt)


def sinabs_conv_file() -> None:
    """``Conv2d 2->4 (3x3, pad 1) -> IAF -> SumPool2d 2 -> Flatten -> Linear 64->4 -> IAF`` on
    ``2 x 8 x 8`` frames, with sinabs's Squeeze layers (time folded into the batch)."""
    import sinabs
    import sinabs.layers as sl
    from sinabs.activation import MembraneReset, SingleSpike

    x = np.random.default_rng(1).random((N, T, 2, 8, 8)).astype(np.float32)
    iaf = lambda: sl.IAFSqueeze(num_timesteps=T, spike_fn=SingleSpike,  # noqa: E731
                                reset_fn=MembraneReset(), min_v_mem=None)
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(2, 4, 3, padding=1), iaf(), sl.SumPool2d(2),
                              torch.nn.Flatten(), torch.nn.Linear(64, F_OUT), iaf())
    with torch.no_grad():
        net[0].weight.mul_(3)
        net[4].weight.mul_(2)
    graph = sinabs.to_nir(net, torch.as_tensor(x[0]))          # [T, 2, 8, 8]: T is the batch
    # sinabs 3.1.3 leaves Conv2d.input_shape and the types of the nodes it has no shape for
    # None, which nir.write cannot store: filled in with the shapes the network computes
    graph.nodes["0"].input_shape = (8, 8)
    for name, (i, o) in {"0": ([2, 8, 8], [4, 8, 8]), "2": ([4, 8, 8], [4, 4, 4]),
                         "3": ([4, 4, 4], [64])}.items():
        graph.nodes[name].input_type = {"input": np.array(i)}
        graph.nodes[name].output_type = {"output": np.array(o)}
    for m in net:
        if hasattr(m, "reset_states"):
            m.reset_states()
    with torch.no_grad():
        spikes = net(torch.as_tensor(x).reshape(N * T, 2, 8, 8)).reshape(N, T, F_OUT).numpy()
    _save("sinabs_conv_iaf", graph, spikes, x, 1.0)


def norse_files() -> None:
    import norse.torch as norse

    x = _inputs()
    kinds = {"norse_iaf": (norse.IAFCell, 1.0, 2.0), "norse_lif": (norse.LIFBoxCell, NORSE_DT ** 2, 20.0)}
    for name, (cell, dt, gain) in kinds.items():
        a, b = _linears(gain)
        net = norse.SequentialState(a, cell(), b, cell())
        graph = norse.to_nir(net, torch.as_tensor(x[:1, 0]))    # Input: [1, 16]
        state, out = None, []
        with torch.no_grad():
            for t in range(T):
                z, state = net(torch.as_tensor(x[:, t]), state)
                out.append(z)
        _save(name, graph, torch.stack(out, 1).numpy(), x, dt)


def snntorch_files() -> None:
    import snntorch as snn
    from snntorch.export_nir import export_to_nir

    x = _inputs()
    a, b = _linears(3.0)
    leaky = lambda n, beta: snn.Leaky(beta=torch.full((n,), beta), init_hidden=True,  # noqa: E731
                                      threshold=torch.ones(n), reset_mechanism="zero")
    net = torch.nn.Sequential(a, leaky(F_HID, 0.9), b, leaky(F_OUT, 0.8))   # scalar beta: its
    # export writes shape () parameters and then fails its own type check
    graph = export_to_nir(net, torch.as_tensor(x[:1, 0]), ignore_dims=[0])
    for m in net:
        if hasattr(m, "reset_hidden"):
            m.reset_hidden()
    with torch.no_grad():
        spikes = torch.stack([net(torch.as_tensor(x[:, t])) for t in range(T)], 1).numpy()
    _save("snntorch_leaky", graph, spikes, x, 1e-4)


if __name__ == "__main__":
    writers = {"sinabs": sinabs_files, "sinabs_conv": sinabs_conv_file, "norse": norse_files,
               "snntorch": snntorch_files}
    for w in sys.argv[1:] or writers:
        writers[w]()
