"""A NIR file written by another tool, run in the Lava simulator and checked against torch.

    python examples/nir_file_to_lava.py [OUT_DIR]

The graph is written with ``nir``'s own dataclasses, as sinabs, Norse, Rockpool or snnTorch
write theirs (shapes without the batch, ``dt`` in the metadata): a small spiking residual
network with a current-based (CubaLIF) stage, sum pooling and an integrate-and-fire readout.
``run_nir_file`` runs it in Lava (pooling as its own stage) and in the torch reference, and
writes ``report.json`` / ``report.md``. The same from the command line:

    dpap-deploy export OUT_DIR/net.nir --target loihi-sim --out OUT_DIR/lava
"""
import sys
import tempfile
from pathlib import Path

import nir
import numpy as np

from dpap_deploy.exporters.nir_file import run_nir_file

DT = 1e-4                       # the step NIR's continuous time constants are discretised with
rng = np.random.default_rng(0)


def conv(c_out, c_in, k, pad, scale):
    w = rng.standard_normal((c_out, c_in, k, k)) * scale / np.sqrt(c_in * k * k)
    return nir.Conv2d(input_shape=None, weight=w.astype(np.float32), stride=1, padding=pad,
                      dilation=1, groups=1, bias=np.zeros(c_out, np.float32))


def full(shape, v):
    return np.full(shape, v, np.float32)


def lif(shape, beta):           # v[t] = beta v[t-1] + I[t], spike above 1, reset to 0
    tau = DT / (1 - beta)
    return nir.LIF(tau=full(shape, tau), r=full(shape, tau / DT), v_leak=full(shape, 0),
                   v_threshold=full(shape, 1.0), v_reset=full(shape, 0))


def cuba(shape, alpha, beta):   # I[t] = alpha I[t-1] + x[t]; v[t] = beta v[t-1] + I[t]
    ts, tm = DT / (1 - alpha), DT / (1 - beta)
    return nir.CubaLIF(tau_syn=full(shape, ts), tau_mem=full(shape, tm), r=full(shape, tm / DT),
                       w_in=full(shape, ts / DT), v_leak=full(shape, 0), v_threshold=full(shape, 1.0),
                       v_reset=full(shape, 0))


def build() -> nir.NIRGraph:
    nodes = {
        "input": nir.Input(input_type=np.array([1, 12, 12])),
        "conv1": conv(4, 1, 3, 1, 3.0), "lif1": lif((4, 12, 12), 0.8),
        "conv2": conv(4, 4, 3, 1, 3.0), "syn2": cuba((4, 12, 12), 0.5, 0.8),
        "pool": nir.SumPool2d(kernel_size=np.array([3, 3]), stride=np.array([3, 3]),
                              padding=np.array([0, 0])),
        "flat": nir.Flatten(input_type={"input": np.array([4, 4, 4])}, start_dim=0, end_dim=-1),
        "fc": nir.Linear(weight=(rng.standard_normal((10, 64)) * 0.5).astype(np.float32)),
        "readout": nir.IF(r=full((10,), 1 / DT), v_threshold=full((10,), 2.0), v_reset=full((10,), 0)),
        "output": nir.Output(output_type=np.array([10])),
    }
    edges = [("input", "conv1"), ("conv1", "lif1"), ("lif1", "conv2"), ("conv2", "syn2"),
             ("syn2", "pool"), ("lif1", "pool"),          # residual: both branches summed
             ("pool", "flat"), ("flat", "fc"), ("fc", "readout"), ("readout", "output")]
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata={"dt": DT, "time_steps": 10})


def main(out: Path) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    nir.write(str(out / "net.nir"), build())
    report = run_nir_file(out / "net.nir", out / "lava", samples=50)["export"]
    p = report["parity"]
    print(f"{out / 'net.nir'}: {p['n_samples']} samples x {report['time_steps']} steps in Lava; "
          f"agreement {p['agreement']:.0%}, identical spike trains {p['identical_spike_trains']:.0%}; "
          f"synapses: {report['synapses_nir']} in the file, {report['synapses_lava']} in Lava; "
          f"dt {report['dt']:g} s ({report['dt_source']}; a file without one: dt=...)")
    return report


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp(prefix="nir-lava-")))
