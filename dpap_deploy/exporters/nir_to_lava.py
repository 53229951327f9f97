"""A NIR graph as a Lava process graph, run in the Lava simulator (floating point, or with
``run_fixed`` in Lava's bit-accurate fixed-point models: the integers ``lava_fixed``
plans, which its torch emulation computes bit for bit).

The graph's semantics are those of ``nir_topology`` (summed fan-in, recurrent edges deliver the
previous step) and its neurons those of ``nir_neurons``; ``nir_torch.run_reference`` runs the
same graph in torch to check the Lava run against.

Mapping (layouts: ``lava_layout``):

- ``Conv2d`` -> ``lava.proc.conv.process.Conv``, weight ``(C_out, C_in, H, W)`` transposed to
  ``(C_out, W, H, C_in)`` and spatially flipped (Lava convolves, torch correlates); ``Conv1d`` is
  the same on a one-row image. Biases become the ``bias_mant`` of the neurons they feed.
- ``Affine`` / ``Linear`` -> ``Dense``, or ``Sparse`` (CSR) when the weight has zeros; columns
  permuted from torch's flattening order to Lava's.
- ``AvgPool2d`` / ``SumPool2d`` -> their own depthwise ``Conv`` (``groups = C``, a
  ``k x k`` kernel of ``1/k^2`` or ``1``) whose graded output feeds the next stage: the deployed
  synapse count stays near the compacted network's instead of copying every weight of the next
  layer over the pooling window.
- ``Flatten`` -> a reshape of the port; ``Input`` / ``Output`` inside the graph pass through.
- ``LIF`` / ``CubaLIF`` / ``IF`` with one decay per population -> ``LIFReset`` (CUBA):
  ``u[t] = u (1-du) + a_in``, ``v[t] = v (1-dv) + u + bias``, spike when ``v > vth``, then
  ``v = 0``. ``LIF``: ``du = 1``, ``dv = 1 - beta``; ``CubaLIF``: ``du = 1 - alpha``; ``IF``:
  ``du = 1, dv = 0``. Input gains ``g`` scale the rows of the synapses feeding the neuron;
  ``v_leak`` is a bias (``lava_neuron_plan``).
- Our own ``Population`` process (``lava_neurons/process.py``; which nodes: ``lava_groups``):
  the reset by subtraction ``[Scale ->] [LI ->] LI -> Threshold -> Scale(-thr)`` back to the LI
  (snnTorch's default Leaky / Synaptic / RLeaky / Lapicque), an LI with a Threshold and no
  reset, an ``LI`` (graded output), a ``LIF`` / ``CubaLIF`` / ``IF`` whose decay or threshold
  differs between neurons or whose gain meets an input without weights, and a biased
  ``Affine`` feeding ``Output`` (the bias added by a ``beta = 0`` integrator). Every constant
  per neuron; spikes leave by ``s_out``, graded voltages (a membrane read by the graph) by
  ``v_out``. It resets per sample like ``LIFReset`` (below).
- Several edges into one node: a Lava ``InPort`` sums its connections (a ``Relay`` where no
  process stands).

**Time.** Every Conv / Dense / Sparse delays by one step; neurons and relays do not. A node's
*depth* is the number of steps its output lags the input stream; where branches of different
depth meet, the shorter ones get a ``Relay`` delay line. A recurrent edge must arrive one step
late (NIR: the previous step), which a ``Relay`` on it arranges and gates to zero at each
sample's first step. Samples run back to back, ``T`` steps each; a neuron of depth ``d``
resets at Lava's step ``(d + 1) mod T`` (``reset_interval = T``), and the output of input step
``i`` is read from the sink at index ``i + depth(Output)``.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import nir
import numpy as np

from ..errors import UnsupportedModelError
from ..graph.nir_neurons import NEURONS
from ..lava_compat import import_lava_runtime
from .lava_groups import Group, Membrane, collapse, stand_in
from .lava_layout import Layout, stream
from .lava_neuron_plan import NEURON_NODES, NeuronPlan, _pair, refuse as _refuse
from .lava_process import lava_run
from .nir_topology import DT, topology  # noqa: F401  (DT: public name, kept)
from .nir_torch import NIRTorch, input_shape

MESSAGE_BITS = 24   # graded (non-binary) messages into a synapse
SYNAPSES = (nir.Conv1d, nir.Conv2d, nir.Affine, nir.Linear, nir.AvgPool2d, nir.SumPool2d)
PASS = (nir.Input, nir.Output, nir.Flatten)
HINTS = {"Scale": "fold the scale into the preceding weights (a Scale is taken only as the "
                  "-threshold of a reset loop)",
         "Threshold": "use an IF or LIF node, or an LI in a reset loop (LI -> Threshold -> "
                      "Scale(-threshold) back to the LI)",
         "Delay": "remove the delay"}
OWN = (Group, Membrane)                 # our Population process (lava_groups)
KNOWN = SYNAPSES + PASS + NEURONS + (nir.Threshold, nir.Scale)   # taken by the shape pass


@dataclass
class LavaLayer:
    name: str
    kind: str          # conv / dense / sparse / pool / lif / cubalif / if / relay / population-*
    shape: tuple       # output shape in Lava order


def input_schedule(x: np.ndarray, time_steps: int, extra_steps: int, dtype=np.float64,
                   sample_ndim: int | None = None) -> np.ndarray:
    """RingBuffer data in Lava order for static inputs ``[N, *sample]`` or frames
    ``[N, T, *sample]`` (``lava_layout.stream`` for any NIR input). ``sample_ndim``: the rank of
    one step's input (the network's input port); without it a 5-d input is image frames and
    anything else static, which misreads flat frames ``[N, T, F]``."""
    nd = sample_ndim if sample_ndim is not None else (3 if x.ndim == 5 else x.ndim - 1)
    return stream(Layout(tuple(x.shape[x.ndim - nd:])), x, time_steps,
                  extra_steps).astype(dtype)


class LavaNetwork(NeuronPlan):
    """Builds the processes; ``run(x)`` returns the Output node's values ``[N, T, ...]``."""

    def __init__(self, graph: nir.NIRGraph, time_steps: int, dt: float | None = None,
                 problems: list[str] | None = None):
        """``dt``: the step NIR's time constants are discretised with (None: the graph's
        metadata ``dt``, else ``nir_topology.DT``). ``problems``: a list that collects every
        planning refusal instead of raising the first (:func:`blockers`)."""
        self.graph, self.T, self.problems = graph, int(time_steps), problems
        self.fixed = None       # lava_fixed.FixedNetwork: run_fixed's integers
        if self.T < 1:
            raise UnsupportedModelError(f"time_steps={time_steps}: give a positive number of steps")
        self.top = collapse(topology(graph, dt), problems)
        self.dt = self.top.dt
        self.in_shape = input_shape(self.top)
        self.torch_shapes = NIRTorch(stand_in(self.top, KNOWN)).shapes(self.in_shape)
        self.layers: list[LavaLayer] = []
        self._plan()
        self.synapses = self._count_synapses()

    # ---- planning (no Lava): layouts, depths, neuron constants, refusals -------------------
    def _plan(self):
        top = self.top
        self.layout, self.depth, self.graded = {}, {}, {}
        for name in top.order:
            node, ins = top.nodes[name], top.inputs[name]
            shape = self.torch_shapes[name]
            if name == top.source:
                self.layout[name], self.depth[name], self.graded[name] = Layout(shape), 0, True
                continue
            d_in = max((self.depth[u] for u in ins), default=0)
            self.depth[name] = d_in + (1 if isinstance(node, SYNAPSES) else 0)
            lay = Layout(shape) if isinstance(node, SYNAPSES) else self.layout[ins[0]]
            self.layout[name] = lay                 # a synapse's own; others: the input's
            self.graded[name] = getattr(node, "graded", False) or \
                not isinstance(node, NEURON_NODES) and (
                    isinstance(node, SYNAPSES) or len(ins) + len(top.back[name]) > 1
                    or any(self.graded[u] for u in ins))
            with self._check():
                if not isinstance(node, SYNAPSES + PASS + NEURON_NODES + OWN):
                    _refuse(name, node, "has no Lava mapping here (Conv1d, Conv2d, Affine, "
                            "Linear, AvgPool2d, SumPool2d, Flatten, LIF, CubaLIF, IF, LI, and LI "
                            "-> Threshold -> Scale(-threshold) -> LI as a reset by subtraction)",
                            HINTS.get(type(node).__name__, "replace it"))
                in_shape = self.layout[ins[0]].torch_shape
                if isinstance(node, (nir.Affine, nir.Linear)) and len(in_shape) != 1:
                    _refuse(name, node, f"gets a {in_shape} tensor", "flatten it first")
                if isinstance(getattr(node, "padding", None), str):
                    _refuse(name, node, f"has padding {node.padding!r}", "give the padding as "
                            "integers")
                if isinstance(node, nir.Flatten):
                    if len(shape) != 1:
                        _refuse(name, node, f"flattens to {shape}", "flatten every dimension "
                                "(start_dim 0, end_dim -1 without the batch)")
                    self.layout[name] = lay.flattened()
        for v in top.order:
            with self._check():
                self._check_sum_and_loops(v)
        self._plan_neurons()

    def _check_sum_and_loops(self, v):
        top = self.top
        perms = {None if self.layout[u].perm is None else self.layout[u].perm.tobytes()
                 for u in top.inputs[v] + top.back[v]}
        if len(perms) > 1:
            _refuse(v, top.nodes[v], "sums a flattened map with a vector in another element "
                    "order", "put a Linear after the Flatten, before the sum")
        for u in top.back[v]:
            if self._d_in(v) - self.depth[u] + 1 < 0:
                _refuse(v, top.nodes[v], f"closes a loop from {u!r} through "
                        f"{self.depth[u] - self._d_in(v)} Lava synapse stages, which NIR "
                        "delays by one step", "keep one weight (Linear / Affine) per "
                        "recurrent loop")

    @contextmanager
    def _check(self):
        """Planning refusals: raised, or (``problems`` given) listed and the planning goes on."""
        try:
            yield
        except UnsupportedModelError as exc:
            if self.problems is None:
                raise
            if str(exc) not in self.problems:
                self.problems.append(str(exc))

    def _count_synapses(self) -> int:
        """Weights the Lava network holds: non-zero weights plus ``C k^2`` per pool."""
        n = 0
        for name in self.top.order:
            node = self.top.nodes[name]
            if isinstance(node, (nir.AvgPool2d, nir.SumPool2d)):
                k = _pair(node.kernel_size)
                n += self.layout[self.top.inputs[name][0]].torch_shape[0] * k[0] * k[1]
            elif isinstance(node, SYNAPSES):
                n += int(np.count_nonzero(node.weight))
        return n

    def _d_in(self, name) -> int:
        return max((self.depth[u] for u in self.top.inputs[name]), default=self.depth[name])

    def _alias(self, name) -> bool:
        """A pass-through node with one feed-forward input: it stands for that input."""
        top = self.top
        return (isinstance(top.nodes[name], PASS) and name != top.source
                and len(top.inputs[name]) == 1 and not top.back[name])

    def _feeders(self, name) -> list[str]:
        """The nodes whose values reach ``name``'s input, looking through pass-throughs."""
        out = []
        for u in self.top.inputs[name] + self.top.back[name]:
            out += self._feeders(u) if self._alias(u) else [u]
        return out

    def _fed(self, name) -> list[str]:
        """The nodes that receive ``name``'s values, looking through pass-throughs."""
        out = []
        for c in self.top.consumers(name):
            out += self._fed(c) if self._alias(c) and c != self.top.sink else [c]
        return out

    # ---- building the Lava processes -------------------------------------------------------
    def _synapse(self, name, node, lava):
        """The Lava process of a weight or pooling node; returns it. In fixed point
        (``self.fixed``) the weights are its integers (row scales and gains folded in) and a
        ``Dense`` / ``Sparse`` gets its ``weight_exp``."""
        ins = self.top.inputs[name] + self.top.back[name]
        # spikes travel as bits; graded values, and spikes summed from several edges, need more
        bits = MESSAGE_BITS if len(ins) > 1 or any(self.graded[u] for u in ins) else 0
        in_lay = self.layout[ins[0]]
        fixed = self.fixed.lava.get(name) if self.fixed is not None else None
        scale = None if fixed else self.row_scale.get(name, [None])[0]
        dtype = np.int32 if self.fixed is not None else np.float64
        if isinstance(node, (nir.Affine, nir.Linear)):
            w = np.asarray(node.weight if fixed is None else fixed["weight"], np.float64)
            if in_lay.perm is not None:
                w = w[:, in_lay.perm]
            if scale is not None:
                w = w * scale.reshape(-1, 1)
            w = w.astype(dtype)
            extra = {} if fixed is None else {"weight_exp": int(fixed["exp"])}
            if (w == 0).any():
                from scipy.sparse import csr_matrix
                self.layers.append(LavaLayer(name, "sparse", (w.shape[0],)))
                return lava.Sparse(weights=csr_matrix(w), num_message_bits=bits, **extra)
            self.layers.append(LavaLayer(name, "dense", (w.shape[0],)))
            return lava.Dense(weights=w, num_message_bits=bits, **extra)
        conv1d = isinstance(node, nir.Conv1d)
        if isinstance(node, (nir.AvgPool2d, nir.SumPool2d)):
            k, st, pad = (_pair(getattr(node, a)) for a in ("kernel_size", "stride", "padding"))
            c = in_lay.torch_shape[0]
            value = 1.0 if isinstance(node, nir.SumPool2d) or self.fixed is not None \
                else 1.0 / (k[0] * k[1])          # fixed point: a sum (its scale says k^2)
            w = np.full((c, k[1], k[0], 1), value)          # depthwise: one kernel per channel
            groups, dil, kind = c, (1, 1), "pool"
        else:
            w = np.asarray(node.weight if fixed is None else fixed["weight"], np.float64)
            if conv1d:                                       # (C_out, C_in, K) as a 1 x K image
                w = w[:, :, None, :]
            st, pad, dil = (_pair(getattr(node, a), (0 if a == "padding" else 1) if conv1d else None)
                            for a in ("stride", "padding", "dilation"))
            groups, kind = int(node.groups), "conv"
            w = w.transpose(0, 3, 2, 1)[:, ::-1, ::-1, :]   # (C_out, W, H, C_in), flipped
            if scale is not None:
                w = w * scale.reshape(scale.shape[0], -1)[:, :1, None, None]
        w = np.ascontiguousarray(w).astype(dtype)
        p = lava.Conv(weight=w, input_shape=in_lay.shape, stride=(st[1], st[0]),
                      padding=(pad[1], pad[0]), dilation=(dil[1], dil[0]), groups=groups,
                      num_message_bits=bits)
        if tuple(p.a_out.shape) != self.layout[name].shape:
            _refuse(name, node, f"gives Lava shape {tuple(p.a_out.shape)} where the graph has "
                    f"{self.layout[name].shape}", "check its padding and stride")
        self.layers.append(LavaLayer(name, kind, tuple(p.a_out.shape)))
        return p

    def _neuron_process(self, name, node, shape, reset_offset):
        """The Lava process of a neuron node (our ``Population`` for a :class:`Group`, else
        ``LIFReset``), with its float constants or (``self.fixed``) its integers."""
        from lava.proc.lif.process import LIFReset

        from .lava_neurons.process import Population
        c, T, lay = self.neuron[name], self.T, self.layout[name]
        q = self.fixed.lava[name] if self.fixed is not None else None
        L = (lambda a: np.ascontiguousarray(lay.to_lava(a))) if q is not None else None
        if isinstance(node, Group):
            kw = dict(du=c["du"], dv=c["dv"], vth=c["vth"], gain=c["gain"], bias_u=c["bias_u"],
                      bias_mant=c["bias"]) if q is None else \
                dict(du=L(q["du"]), dv=L(q["dv"]), vth=L(q["vth"]), bias_u=L(q["bias_u"]),
                     bias_mant=L(q["bias_mant"]), bias_exp=L(q["bias_exp"]))
            self.layers.append(LavaLayer(name, f"population-{c['reset']}", shape))
            return Population(shape, reset_mode=c["reset"], reset_interval=T,
                              reset_offset=reset_offset, **kw)
        kw = dict(du=c["du"], dv=c["dv"], vth=c["vth"],
                  bias_mant=np.ascontiguousarray(c["bias"])) if q is None else \
            dict(du=int(q["du"].flat[0]) - 1, dv=int(q["dv"].flat[0]), vth=int(q["vth"].flat[0]),
                 bias_mant=L(q["bias_mant"]).astype(np.int32),
                 bias_exp=L(q["bias_exp"]).astype(np.int32))
        self.layers.append(LavaLayer(name, c["kind"].lower(), shape))
        return LIFReset(shape=shape, reset_interval=T, reset_offset=reset_offset, **kw)

    def _build(self, data: np.ndarray, total: int):
        import_lava_runtime()
        from types import SimpleNamespace

        from lava.proc.conv.process import Conv
        from lava.proc.dense.process import Dense
        from lava.proc.io.sink import RingBuffer as Sink
        from lava.proc.io.source import RingBuffer as Source
        from lava.proc.sparse.process import Sparse

        from .lava_relay.process import Relay
        lava = SimpleNamespace(Conv=Conv, Dense=Dense, Sparse=Sparse)
        top, T = self.top, self.T
        self.layers = []
        out_port, in_port, procs = {}, {}, {}
        src = Source(data=data)
        out_port[top.source] = src.s_out
        for name in top.order:
            node = top.nodes[name]
            if name == top.source:
                continue
            ins = top.inputs[name] + top.back[name]
            if isinstance(node, SYNAPSES):
                p = self._synapse(name, node, lava)
                in_port[name], out_port[name] = p.s_in, p.a_out
            elif isinstance(node, (Group,) + NEURONS):
                p = self._neuron_process(name, node, self.layout[name].shape,
                                         (self.depth[name] + 1) % T)
                procs[name] = p
                in_port[name] = p.a_in
                out_port[name] = p.v_out if self.neuron[name].get("out") == "v" else p.s_out
            elif isinstance(node, Membrane):
                out_port[name] = procs[node.group].v_out
            elif len(ins) == 1 and not top.back[name]:          # pass-through: the same port
                port = out_port[ins[0]]
                out_port[name] = port.flatten() if isinstance(node, nir.Flatten) \
                    and len(self.layout[ins[0]].torch_shape) != 1 else port
            else:                                               # a sum where no process stands
                shape = self.layout[ins[0]].shape
                r = Relay(shape)
                self.layers.append(LavaLayer(name, "relay", shape))
                in_port[name] = r.a_in
                out_port[name] = r.s_out.flatten() if isinstance(node, nir.Flatten) else r.s_out
        for v in top.order:                                     # edges, with delays
            if v not in in_port:
                continue
            d_in = self._d_in(v)
            for u, back in [(u, False) for u in top.inputs[v]] + [(u, True) for u in top.back[v]]:
                lag = d_in - self.depth[u] + (1 if back else 0)
                port = out_port[u]
                gain = 1 if self.fixed is None else self.fixed.gains.get((u, v), 1)
                if lag or back or gain != 1:
                    shape = tuple(port.shape)
                    r = Relay(shape, delay=lag, gate_interval=T if back else 0,
                              gate_offset=(d_in + 1) % T, gain=gain)
                    self.layers.append(LavaLayer(f"{u}->{v}", "relay", shape))
                    port.connect(r.a_in)
                    port = r.s_out
                port.connect(in_port[v])
        sink = Sink(shape=tuple(out_port[top.sink].shape), buffer=total)
        out_port[top.sink].connect(sink.a_in)
        return src, sink

    def run(self, x: np.ndarray, select_tag: str = "floating_pt", log=None) -> np.ndarray:
        """``x``: torch-layout inputs ``[N, ...]`` (repeated every step) or frames
        ``[N, T, ...]``; returns the Output node's values ``[N, T, ...]``. ``log``: a callable
        told how far the run is, every ``PROGRESS_SAMPLES`` samples (the run then goes in
        pieces, which Lava continues where the last one stopped); ``None``: one run, silent.
        ``select_tag="fixed_pt"``: :meth:`run_fixed` (its integers: the output as integers)."""
        from lava.magma.core.run_configs import Loihi2SimCfg

        import_lava_runtime()
        if select_tag == "fixed_pt" and self.fixed is None:
            self.fixed_point(x)
        fixed = self.fixed if select_tag == "fixed_pt" else None
        n, lag = len(x), self.depth[self.top.sink]
        data = stream(self.layout[self.top.source], x if fixed is None else fixed.inputs(x),
                      self.T, lag)
        total = data.shape[-1]
        keep, self.fixed = self.fixed, fixed
        try:
            src, sink = self._build(data if fixed is None else data.astype(np.int32), total)
        finally:
            self.fixed = keep
        cfg = Loihi2SimCfg(select_tag=select_tag)
        out = lava_run(src, lambda: _run_steps(src, cfg, total, self.T, log),
                       lambda: sink.data.get())
        steps = self.layout[self.top.sink].from_lava(out[..., lag:lag + n * self.T])
        return steps.reshape((n, self.T) + steps.shape[1:])

    def fixed_point(self, x_cal: np.ndarray, input_bits: int | None = None):
        """Plan the network in fixed point (``lava_fixed``), calibrated on the float
        samples ``x_cal``; :meth:`run` with ``select_tag="fixed_pt"`` then runs these integers
        and ``self.fixed.run(x)`` emulates them. Returns the plan."""
        from .lava_fixed import fixed_network
        self.fixed = fixed_network(self, x_cal, input_bits)
        return self.fixed

    def run_fixed(self, x: np.ndarray, log=None) -> np.ndarray:
        """The Output's integers ``[N, T, ...]`` from Lava's fixed-point models."""
        return self.run(x, "fixed_pt", log)


PROGRESS_SAMPLES = 100      # a progress line per this many samples of a logged Lava run


def _run_steps(process, cfg, total: int, T: int, log) -> None:
    """Run ``total`` steps: at once, or in pieces of ``PROGRESS_SAMPLES * T`` steps with a
    line after each (the same steps, so the same outputs: tested)."""
    from lava.magma.core.run_conditions import RunSteps
    piece = total if log is None else PROGRESS_SAMPLES * T
    done = 0
    while done < total:
        k = min(piece, total - done)
        process.run(condition=RunSteps(num_steps=k), run_cfg=cfg)
        done += k
        if log is not None:
            log(f"lava: {done:,}/{total:,} steps ({done // T:,} samples)")


def blockers(nir_graph: nir.NIRGraph, time_steps: int, dt: float | None = None) -> list[str]:
    """Every reason the Lava mapping refuses ``nir_graph``, one line each, found by planning
    the network (no Lava process is built or run). A graph whose structure cannot be read
    (no single Input / Output, an unreachable node, a node the shape pass cannot take) gives
    that one reason; otherwise each node's refusals are listed. Empty: Lava takes it."""
    problems: list[str] = []
    try:
        LavaNetwork(nir_graph, time_steps, dt, problems=problems)
    except UnsupportedModelError as exc:
        problems.append(str(exc))
    return problems
