"""``Relay``: a graded pass-through with an optional delay line and a per-sample gate.

    s_out[t] = 0                       if (t mod gate_interval) == gate_offset   (t: Lava's step)
             = gain a_in[t - delay]    otherwise

An ``InPort`` sums all its connections, so a relay also sums branches that meet where no
neuron or synapse stands. ``delay`` steps equalise the Lava delays of branches; the gate zeroes a
recurrent edge at each sample's first step (NIR delivers zeros there). ``gain``: an integer
weight of the edge in fixed point (spikes summed into a current with a scale, ``fixed_point``);
1 otherwise. Floating point, and integers in fixed point (the same model).
This file imports nothing from its package: Lava's compiler also executes it standalone.
"""
from collections import deque

import numpy as np
from lava.magma.core.decorator import implements, requires, tag
from lava.magma.core.model.py.model import PyLoihiProcessModel
from lava.magma.core.model.py.ports import PyInPort, PyOutPort
from lava.magma.core.model.py.type import LavaPyType
from lava.magma.core.process.ports.ports import InPort, OutPort
from lava.magma.core.process.process import AbstractProcess
from lava.magma.core.resources import CPU
from lava.magma.core.sync.protocols.loihi_protocol import LoihiProtocol


class Relay(AbstractProcess):
    def __init__(self, shape, delay: int = 0, gate_interval: int = 0, gate_offset: int = 0,
                 gain: int = 1):
        super().__init__(shape=tuple(shape), delay=int(delay), gate_interval=int(gate_interval),
                         gate_offset=int(gate_offset), gain=int(gain))
        self.a_in = InPort(shape=tuple(shape))
        self.s_out = OutPort(shape=tuple(shape))


class _RelayModel(PyLoihiProcessModel):
    def __init__(self, proc_params):
        super().__init__(proc_params)
        self.delay = proc_params["delay"]
        self.interval = proc_params["gate_interval"]
        self.offset = proc_params["gate_offset"]
        self.gain = proc_params.get("gain", 1)
        shape = proc_params["shape"]
        self.line = deque(np.zeros(shape) for _ in range(self.delay))

    def _gate(self, x):
        if self.interval and self.time_step % self.interval == self.offset:
            return np.zeros_like(x)
        return x if self.gain == 1 else x * self.gain

    def run_spk(self):
        if self.delay:                       # send first: a delayed relay may close a loop
            self.s_out.send(self._gate(self.line.popleft()))
            self.line.append(self.a_in.recv())
        else:
            self.s_out.send(self._gate(self.a_in.recv()))


@implements(proc=Relay, protocol=LoihiProtocol)
@requires(CPU)
@tag("floating_pt")
class PyRelayModelFloat(_RelayModel):
    a_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, float)
    s_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, float)


@implements(proc=Relay, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt")
class PyRelayModelFixed(_RelayModel):
    a_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, np.int32, precision=24)
    s_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, np.int32, precision=24)
