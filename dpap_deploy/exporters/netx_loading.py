"""What a netx file needs to be loaded right, written next to it.

``netx.hdf5.Network(net_config=FILE)`` defaults to ``input_message_bits=0``, which casts the
graded input to bool, and to no reset between samples: with the defaults our files produce no
output spikes. The HDF5 format cannot record these parameters, so the exporter writes them to
``NAME.json`` beside ``NAME`` (and into ``report.json``), with a minimal runnable script
``load_NAME.py`` (it finds both files in its own folder, so it runs from any working directory,
and says "no output spikes" or "tie" instead of a class when the output has none):

- ``input_message_bits = INPUT_BITS + 1``: graded input spikes ``x_q = round(x 2^INPUT_BITS)``
  are in ``[0, 2^INPUT_BITS]``, which needs ``INPUT_BITS + 1`` bits;
- ``reset_interval = T``, ``reset_offset = 1``: neuron states are reset every ``T`` steps,
  one step after the first input of a sample reaches the network, so each sample starts fresh;
- the outputs of sample ``n`` arrive at steps ``depth + n T .. depth + (n + 1) T - 1``
  (``depth`` = number of layers, one step of latency each).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..atomic import atomic_write_text

SNIPPET = '''"""Run {name} (written by dpap-deploy) in the Lava simulator on one input.

    python path/to/{script} [input.npy]   # input: float image {shape} (C, H, W) in [0, 1]

Works from any folder: {name} and {params} are read from this script's own folder. Prints
the class with the most output spikes, or says that there is none (no output spike, or a tie).
"""
import json
import sys
from pathlib import Path

import numpy as np
from lava.lib.dl.netx.hdf5 import Network
from lava.magma.core.run_conditions import RunSteps
from lava.magma.core.run_configs import Loihi2SimCfg
from lava.proc.io.sink import RingBuffer as Sink
from lava.proc.io.source import RingBuffer as Source

HERE = Path(__file__).resolve().parent
p = json.loads((HERE / "{params}").read_text())
net = Network(net_config=str(HERE / "{name}"), input_message_bits=p["input_message_bits"],
              reset_interval=p["reset_interval"], reset_offset=p["reset_offset"])
x = np.load(sys.argv[1]) if len(sys.argv) > 1 else np.zeros(p["input_shape"])
T, depth = p["time_steps"], len(net.layers)
frame = np.round(x * p["input_scale"]).astype(np.int32).transpose(2, 1, 0)   # C,H,W -> W,H,C
data = np.zeros(frame.shape + (T + depth,), dtype=np.int32)
data[..., :T] = frame[..., None]                      # the same frame at every step
src, sink = Source(data=data), Sink(shape=net.out.shape, buffer=T + depth)
src.s_out.connect(net.inp)
net.out.connect(sink.a_in)
net.run(condition=RunSteps(num_steps=T + depth), run_cfg=Loihi2SimCfg(select_tag="fixed_pt"))
spikes = sink.data.get()[:, depth:depth + T]
net.stop()
counts = (spikes != 0).sum(1)
top = np.flatnonzero(counts == counts.max())
if counts.max() == 0:
    answer = "no output spikes (no class)"
elif len(top) > 1:
    answer = "tie between classes " + ", ".join(map(str, top)) + " (no class)"
else:
    answer = "class " + str(int(top[0]))
print(answer, "spike counts", counts.tolist())
'''


def loading_parameters(input_bits: int, time_steps: int, input_shape: list[int]) -> dict[str, Any]:
    return {"input_message_bits": input_bits + 1, "reset_interval": int(time_steps),
            "reset_offset": 1, "time_steps": int(time_steps), "input_scale": 2 ** input_bits,
            "input_shape": [int(s) for s in input_shape], "output_delay_steps": "len(net.layers)",
            "note": "pass input_message_bits, reset_interval and reset_offset to "
                    "lava.lib.dl.netx.hdf5.Network: its defaults give no output spikes"}


def write_loading_files(path: Path, params: dict[str, Any]) -> list[str]:
    """``NAME.json`` (the parameters) and ``load_NAME.py`` (a runnable example) beside ``path``."""
    path = Path(path)
    pfile = path.with_name(path.name + ".json")
    script = path.with_name(f"load_{path.stem}.py")
    atomic_write_text(pfile, json.dumps(params, indent=2) + "\n")
    atomic_write_text(script, SNIPPET.format(name=path.name, params=pfile.name, script=script.name,
                                             shape=tuple(params["input_shape"])))
    return [pfile.name, script.name]
