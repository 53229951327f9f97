"""``Population``: a current-based LIF population whose every constant is per neuron, with a
choice of reset, for the NIR forms Lava's ``LIF`` / ``LIFReset`` cannot hold (one ``du``/``dv``
per process, reset to zero only).

Per Lava step ``t`` (``time_step``), element-wise, in float32 (snnTorch's arithmetic):

    if t mod reset_interval == reset_offset:   u = v = s = 0        (a new sample starts)
    u[t] = (1 - du) u[t-1] + gain (a_in[t] + bias_u)                  (current)
    v[t] = (1 - dv) v[t-1] + u[t] + bias_mant                         (voltage)
           - vth s[t-1]                       reset_mode "subtract" (snnTorch's reset_delay)
    s[t] = v[t] > vth
    v[t] = 0 where s[t]                       reset_mode "zero" ("none": no reset)
    s_out[t] = s[t]   (spikes)     v_out[t] = v[t] after the reset (graded: an integrator's value)

``1 - du`` and ``1 - dv`` are taken in float64 from the float64 ``du``/``dv`` (exact for
``du = 1 - alpha`` with a float32 ``alpha``), then rounded to float32: they are snnTorch's
``alpha``/``beta`` bit for bit. Adding a zero bias or subtracting ``vth * 0`` changes no bit, so
with ``bias_mant = 0`` and ``gain = 1`` (a product by 1 is exact) ``v[t]`` is snnTorch's
``(beta mem + syn) - reset thr`` for the input ``syn = alpha syn + (W x + b)``. ``bias_u``
carries the synapse biases (snnTorch adds them to the input current ``W x + b``), ``gain`` an
input gain (NIR's ``r dt / tau``, a ``Scale`` before the neuron), ``bias_mant`` a constant
voltage drive (NIR's ``v_leak``), as Lava's LIF adds ``bias_mant`` to ``v``. What can differ
from snnTorch is ``W x`` itself: Lava's ``Dense`` sums in float64 (rounded once to float32
here), torch in float32, so a membrane within a rounding of the threshold may decide
otherwise. The variables are named as in Lava's LIF so that a fixed-point model can be added
beside this one.

**Fixed point** (``select_tag="fixed_pt"``, :class:`PyPopulationModelFixed`): Lava's
bit-accurate LIF arithmetic (``lava.proc.lif.models.PyLifModelBitAcc``) with every constant
per neuron, the integer forms of ``dpap_deploy.fixed_point`` and its emulation
(``fixed_point/emulate.py``, equal bit for bit): ``du``, ``dv`` effective 12-bit decays
(0..4096: ``x (4096 - d)`` truncated toward zero after ``>> 12``; no Loihi-1 offset), ``a_in``
shifted left by 6, ``bias_u`` (integer) added to ``u`` (the sum in int32, then wrapped at 24
bits as Lava's is),
``bias_mant << bias_exp`` to ``v`` (clipped to 24 bits), ``vth << 6`` the threshold (``2^17``:
never), ``gain`` unused (folded into the weights). This file imports nothing from its package:
Lava's compiler also executes it standalone.
"""
import numpy as np
from lava.magma.core.decorator import implements, requires, tag
from lava.magma.core.model.py.model import PyLoihiProcessModel
from lava.magma.core.model.py.ports import PyInPort, PyOutPort
from lava.magma.core.model.py.type import LavaPyType
from lava.magma.core.process.ports.ports import InPort, OutPort
from lava.magma.core.process.process import AbstractProcess
from lava.magma.core.process.variable import Var
from lava.magma.core.resources import CPU
from lava.magma.core.sync.protocols.loihi_protocol import LoihiProtocol

RESET_MODES = ("zero", "subtract", "none")


class Population(AbstractProcess):
    """``shape``: Lava's; ``du``, ``dv``, ``vth``, ``gain``, ``bias_u``, ``bias_mant``: scalars or
    arrays of ``shape``; ``reset_mode``: ``RESET_MODES``; state is zeroed every
    ``reset_interval`` steps at ``reset_offset`` (interval 0: never)."""

    def __init__(self, shape, du, dv, vth, gain=1.0, bias_u=0.0, bias_mant=0.0, reset_mode="zero",
                 reset_interval: int = 0, reset_offset: int = 0, bias_exp=0):
        if reset_mode not in RESET_MODES:
            raise ValueError(f"reset_mode {reset_mode!r}: choose one of {RESET_MODES}")
        shape = tuple(int(s) for s in shape)
        super().__init__(shape=shape, reset_mode=reset_mode, reset_interval=int(reset_interval),
                         reset_offset=int(reset_offset))

        def full(a):
            return np.ascontiguousarray(np.broadcast_to(np.asarray(a, np.float64), shape))

        self.a_in = InPort(shape=shape)
        self.s_out = OutPort(shape=shape)
        self.v_out = OutPort(shape=shape)
        self.u = Var(shape=shape, init=np.zeros(shape))
        self.v = Var(shape=shape, init=np.zeros(shape))
        self.s = Var(shape=shape, init=np.zeros(shape))      # the previous step's spikes
        self.du = Var(shape=shape, init=full(du))
        self.dv = Var(shape=shape, init=full(dv))
        self.vth = Var(shape=shape, init=full(vth))
        self.gain = Var(shape=shape, init=full(gain))
        self.bias_u = Var(shape=shape, init=full(bias_u))
        self.bias_mant = Var(shape=shape, init=full(bias_mant))
        self.bias_exp = Var(shape=shape, init=full(bias_exp))


@implements(proc=Population, protocol=LoihiProtocol)
@requires(CPU)
@tag("floating_pt")
class PyPopulationModelFloat(PyLoihiProcessModel):
    a_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, float)
    s_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, float)
    v_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, float)
    u: np.ndarray = LavaPyType(np.ndarray, float)
    v: np.ndarray = LavaPyType(np.ndarray, float)
    s: np.ndarray = LavaPyType(np.ndarray, float)
    du: np.ndarray = LavaPyType(np.ndarray, float)
    dv: np.ndarray = LavaPyType(np.ndarray, float)
    vth: np.ndarray = LavaPyType(np.ndarray, float)
    gain: np.ndarray = LavaPyType(np.ndarray, float)
    bias_u: np.ndarray = LavaPyType(np.ndarray, float)
    bias_mant: np.ndarray = LavaPyType(np.ndarray, float)
    bias_exp: np.ndarray = LavaPyType(np.ndarray, float)

    def __init__(self, proc_params):
        super().__init__(proc_params)
        self.mode = proc_params["reset_mode"]
        self.interval = proc_params["reset_interval"]
        self.offset = proc_params["reset_offset"] % self.interval if self.interval else 0

    def run_spk(self):
        f32 = np.float32
        a_in = self.a_in.recv().astype(f32)
        if self.interval and self.time_step % self.interval == self.offset:
            self.u[:] = 0
            self.v[:] = 0
            self.s[:] = 0
        drive = self.gain.astype(f32) * (a_in + self.bias_u.astype(f32))
        u = (1.0 - self.du).astype(f32) * self.u.astype(f32) + drive
        v = (1.0 - self.dv).astype(f32) * self.v.astype(f32) + u + self.bias_mant.astype(f32)
        vth = self.vth.astype(f32)
        if self.mode == "subtract":
            v = v - vth * self.s.astype(f32)
        spk = v > vth
        if self.mode == "zero":
            v = np.where(spk, f32(0), v)
        self.u[:] = u
        self.v[:] = v
        self.s[:] = spk
        self.s_out.send(spk.astype(np.float64))
        self.v_out.send(self.v.copy())


@implements(proc=Population, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt")
class PyPopulationModelFixed(PyLoihiProcessModel):
    a_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, np.int32, precision=24)
    s_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, np.int32, precision=24)
    v_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, np.int32, precision=24)
    u: np.ndarray = LavaPyType(np.ndarray, np.int64)
    v: np.ndarray = LavaPyType(np.ndarray, np.int64)
    s: np.ndarray = LavaPyType(np.ndarray, np.int64)
    du: np.ndarray = LavaPyType(np.ndarray, np.int64)
    dv: np.ndarray = LavaPyType(np.ndarray, np.int64)
    vth: np.ndarray = LavaPyType(np.ndarray, np.int64)
    gain: np.ndarray = LavaPyType(np.ndarray, float)
    bias_u: np.ndarray = LavaPyType(np.ndarray, np.int64)
    bias_mant: np.ndarray = LavaPyType(np.ndarray, np.int64)
    bias_exp: np.ndarray = LavaPyType(np.ndarray, np.int64)

    MAX = 2 ** 23

    def __init__(self, proc_params):
        super().__init__(proc_params)
        self.mode = proc_params["reset_mode"]
        self.interval = proc_params["reset_interval"]
        self.offset = proc_params["reset_offset"] % self.interval if self.interval else 0

    @staticmethod
    def _decay(x, d):
        p = x.astype(np.int64) * (4096 - d)
        return np.sign(p) * np.right_shift(np.abs(p), 12)

    def run_spk(self):
        a_in = self.a_in.recv().astype(np.int32)
        if self.interval and self.time_step % self.interval == self.offset:
            self.u[:] = 0
            self.v[:] = 0
            self.s[:] = 0
        m = self.MAX            # the current's sum in int32, as Lava's LIF computes it
        u = (self._decay(self.u, self.du).astype(np.int32) + np.left_shift(a_in, 6)) \
            + self.bias_u.astype(np.int32)
        u = u.astype(np.int64)
        wrapped = np.where(u > m, u - 2 * m, u)
        u = np.where(wrapped <= -m, u + 2 * m, wrapped)
        vth = np.left_shift(self.vth, 6)
        v = self._decay(self.v, self.dv) + u + np.left_shift(self.bias_mant, self.bias_exp)
        if self.mode == "subtract":
            v = v - vth * self.s
        v = np.clip(v, -m + 1, m - 1)
        spk = v > vth
        if self.mode == "zero":
            v = np.where(spk, 0, v)
        self.u[:] = u
        self.v[:] = v
        self.s[:] = spk
        self.s_out.send(spk.astype(np.int32))
        self.v_out.send(v.astype(np.int32))
