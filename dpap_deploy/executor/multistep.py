"""Multi-step execution of a model graph: a whole time window per layer instead of a step loop.

A value flowing through the graph is either *static* (``[B, ...]``, the same at every step: the
directly encoded input and what stateless layers make of it) or a *sequence* (``[T, B, ...]``).
- Stateless layers (synapses, pooling, flatten, dropout, element-wise activations, ``+``,
  ``torch.cat``) run once: on a static value as it is (so the first synaptic layer of a
  directly encoded network runs once, not ``T`` times), on a sequence folded to ``[T*B, ...]``.
- ``snn.Leaky`` populations run their whole window in one autograd operation (``lif.py``);
  other neuron types (``Synaptic``, ``RLeaky``, ...) step through the window with their own
  module, so everything the graph can hold still runs. A population read only by a 2x2
  average pool runs with it as one operation (``leaky_pool.py``).
- BatchNorm in training mode normalises each step's batch on its own, as the step loop does.
- On the CPU, in float32, the fused Leaky windows and 2x2 pools of a training step run compiled
  kernels (``native.py``, built on the first such step); everything else, and CUDA tensors,
  runs torch operations (the Leaky window as its torch path in ``lif.py``, a loop over the
  window of element-wise operations; not tested on a GPU here).
The result equals the snnTorch step loop: identical spikes, gradients equal up to float
rounding (tests). Models whose forward runs its own time loop are not run here: they keep
running as written (``MultiStep.supports`` says which).

DPAP's traces: the executor calls ``observer.window(layer, pre, post)`` for every tracked layer
with its pre-synaptic input and its spikes over the window, where the step loop fired DPAP's
hooks once per step (``dpap.pruner.DPAP.window``).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..graph import ModelGraph
from ..graph.model_graph import (ADD, CAT, ELEMENTWISE, FLATTEN, INPUT, NEURON, NORM, OUTPUT,
                                 PASS, POOL, SYNAPSE)
from ..graph.state import reset_states
from ..graph.time_axis import window_steps
from .leaky_pool import leaky_pool
from .lif import fusable, leaky_window
from .pool import avg_pool_2x2, is_2x2


CHANNELS_LAST = True        # False: every layer in torch's default layout (A/B, tests)
# ... for folded inputs of at least this many elements: below it oneDNN's layout conversions
# cost little (snn-digits' [T*B, 16, 4, 4]) and the default layout is kept
CHANNELS_LAST_MIN = 1 << 20


class _Seq:
    """A value over the window: ``[T, B, ...]``."""

    __slots__ = ("t",)

    def __init__(self, t: torch.Tensor):
        self.t = t


def _fold(fn, v, T: int):
    """Apply a stateless ``fn`` to a static tensor or to a sequence folded into the batch."""
    if isinstance(v, _Seq):
        x = v.t
        y = fn(x.reshape((x.shape[0] * x.shape[1],) + x.shape[2:]))
        return _Seq(y.reshape((x.shape[0], x.shape[1]) + y.shape[1:]))
    return fn(v)


def _large_cpu_seq(v, shrink: int = 1) -> bool:
    """A sequence on the CPU of at least CHANNELS_LAST_MIN elements (after a pool that divides
    its size by ``shrink``)."""
    return isinstance(v, _Seq) and v.t.device.type == "cpu" and \
        v.t.numel() // shrink >= CHANNELS_LAST_MIN


def _as_seq(v, T: int) -> torch.Tensor:
    return v.t if isinstance(v, _Seq) else v.unsqueeze(0).expand((T,) + v.shape)


def _pool_fn(attrs: dict, channels_last: bool = False):
    if is_2x2(attrs):
        return lambda x: avg_pool_2x2(x, channels_last)
    kind, dims = attrs["pool"], attrs["dims"]
    fn = {("avg", 1): F.avg_pool1d, ("avg", 2): F.avg_pool2d,
          ("max", 1): F.max_pool1d, ("max", 2): F.max_pool2d}[(kind, dims)]
    kw = dict(kernel_size=attrs["kernel"], stride=attrs["stride"], padding=attrs["padding"],
              ceil_mode=attrs["ceil_mode"])
    if kind == "max":
        kw["dilation"] = attrs.get("dilation", 1)
    else:
        kw["count_include_pad"] = attrs.get("count_include_pad", True)
        if attrs.get("divisor_override") is not None and dims == 2:
            kw["divisor_override"] = attrs["divisor_override"]
    return lambda x: fn(x, **kw)


_ACTS = {"relu": torch.relu, "relu_": torch.relu, "sigmoid": torch.sigmoid, "tanh": torch.tanh,
         "gelu": F.gelu, "silu": F.silu, "elu": F.elu, "leaky_relu": F.leaky_relu,
         "relu6": F.relu6, "hardtanh": F.hardtanh, "softplus": F.softplus}


class MultiStep:
    """Runs ``graph`` a window at a time; ``MultiStep.supports(graph)`` says whether it can."""

    def __init__(self, graph: ModelGraph, checked: bool = False):
        why = None if checked else self.unsupported(graph)
        if why:
            raise ValueError(f"the multi-step executor cannot run this model: {why}")
        self.graph = graph
        self.layer_of_neuron = {l.neuron_node: i for i, l in enumerate(graph.layers)}
        # which populations run as one fused window: decided once, not per batch
        self.fused = {n.id for n in graph.nodes if n.op == NEURON and fusable(n.module)}
        # 2-D convolutions run channels-last on CPU when their input is a sequence (folded
        # [T*B, C, H, W]): oneDNN then skips its layout conversions (snn-mnist's second conv,
        # forward and backward, 38 -> 27 ms; outputs bit-identical). Only where what follows
        # computes the same numbers in that layout: a fused Leaky population (run in memory
        # order), then 2x2 average pools or synapses. Not before BatchNorm or a max pool: a max
        # pool over binary spikes has ties everywhere, and its channels-last kernel passes the
        # gradient to another of the tied inputs than the step loop's does.
        users: dict[int, list[int]] = {}
        for n in graph.nodes:
            for i in n.inputs:
                users.setdefault(i, []).append(n.id)
        node = {n.id: n for n in graph.nodes}

        def layout_safe(nid: int) -> bool:
            n = node[nid]
            return n.op == SYNAPSE or (n.op == POOL and is_2x2(n.attrs))

        self.channels_last = {
            n.id for n in graph.nodes
            if CHANNELS_LAST and n.op == SYNAPSE and type(n.module) is nn.Conv2d and users.get(n.id)
            and all(u in self.fused and users.get(u) and all(layout_safe(v) for v in users[u])
                    for u in users[n.id])}
        self.pool_to_channels_last = {n.id for n in graph.nodes if n.op == POOL and users.get(n.id)
                                      and all(u in self.channels_last for u in users[n.id])}
        # a fused population read only by a 2x2 average pool: both in one kernel where it
        # covers the case (leaky_pool.py); {population: pool}
        only = {i: node[u[0]] for i, u in users.items() if len(u) == 1}
        self.pooled_by = {i: r.id for i, r in only.items()
                          if i in self.fused and r.op == POOL and is_2x2(r.attrs)}

    @staticmethod
    def unsupported(graph: ModelGraph) -> str | None:
        if graph.kind != "snn":
            return "it is not a spiking network"
        if graph.steps_per_call != 1:
            return "its forward runs its own time loop (it keeps running as written)"
        if graph.readout != "spikes":
            # a graded readout (membrane, a synapse's current) computed over the folded window
            # may round differently from the step loop's per-step products
            return f"its readout is graded ({graph.readout}), not spikes"
        if graph.time_axis == 0:
            return "its input is time first ([T, B, ...])"
        if graph.input_indexed:       # the graph takes x[...] for the whole input
            return "its forward indexes its input"
        for n in graph.nodes:
            if n.op == ELEMENTWISE and n.attrs.get("fn") not in _ACTS:
                return f"operation '{n.attrs.get('fn')}' at '{n.name}'"
            if n.op == CAT and n.attrs.get("dim", 1) in (0, -len(n.out_shape) - 1):
                return f"'{n.name}' concatenates along the batch"
            if n.op == NEURON and n.adapter.kind != "snn":
                return f"'{n.name}' is not a spiking neuron"
        return None

    @classmethod
    def supports(cls, graph: ModelGraph) -> bool:
        return cls.unsupported(graph) is None

    def run(self, x: torch.Tensor, time_steps: int, observer=None) -> torch.Tensor:
        """Output spikes ``[T, B, ...]`` for a static input ``[B, ...]`` over ``time_steps``
        steps, or event frames ``[B, T, ...]`` (one per step)."""
        g = self.graph
        frames = x.dim() == len(g.input_shape) + 2
        T = window_steps(g, x, time_steps)
        reset_states(g.model)
        val: dict[int, object] = {}
        for n in g.nodes:
            ins = [val[i] for i in n.inputs]
            if n.op == INPUT:
                val[n.id] = _Seq(x.transpose(0, 1)) if frames else x
            elif n.op == SYNAPSE:
                fn = n.module
                if n.id in self.channels_last and _large_cpu_seq(ins[0]):
                    fn = lambda t, m=n.module: m(  # noqa: E731
                        t.contiguous(memory_format=torch.channels_last))
                val[n.id] = _fold(fn, ins[0], T)
            elif n.op == NORM:
                val[n.id] = self._norm(n.module, ins[0], T)
            elif n.op == NEURON:
                val[n.id] = self._neuron(n, ins[0], T, val, observer is not None
                                         and n.id in self.layer_of_neuron)
            elif n.op == POOL and n.id in val:      # made with its population (_neuron)
                pass
            elif n.op == POOL:
                to_cl = n.id in self.pool_to_channels_last and _large_cpu_seq(ins[0], 4)
                val[n.id] = _fold(_pool_fn(n.attrs, to_cl), ins[0], T)
            elif n.op == FLATTEN:
                val[n.id] = _fold(lambda t: t.flatten(1), ins[0], T)
            elif n.op == PASS:
                fn = n.module if n.module is not None else self._functional_dropout(n)
                val[n.id] = _fold(fn, ins[0], T)
            elif n.op == ELEMENTWISE:
                val[n.id] = _fold(_ACTS[n.attrs["fn"]], ins[0], T)
            elif n.op == ADD:
                a, b = ins
                if isinstance(a, _Seq) or isinstance(b, _Seq):
                    val[n.id] = _Seq(_as_seq(a, T) + _as_seq(b, T))
                else:
                    val[n.id] = a + b
            elif n.op == CAT:
                dim = n.attrs.get("dim", 1)
                if any(isinstance(v, _Seq) for v in ins):
                    d = dim + 1 if dim >= 0 else dim
                    val[n.id] = _Seq(torch.cat([_as_seq(v, T) for v in ins], dim=d))
                else:
                    val[n.id] = torch.cat(ins, dim=dim)
            elif n.op == OUTPUT:
                val[n.id] = ins[0]
            if observer is not None and n.op == NEURON and n.id in self.layer_of_neuron:
                i = self.layer_of_neuron[n.id]
                layer = g.layers[i]
                pre = val[g.nodes[layer.node].inputs[0]]
                static = not isinstance(pre, _Seq)
                observer.window(i, pre if static else pre.t, static, val[n.id].t, T)
        reset_states(g.model)
        out = val[g.output]
        return _as_seq(out, T)

    def _functional_dropout(self, n):
        p = float(n.attrs.get("p", 0.5))
        return lambda t: F.dropout(t, p, training=self.graph.model.training)

    @staticmethod
    def _norm(bn: nn.Module, v, T: int):
        if isinstance(v, _Seq) and bn.training:
            return _Seq(torch.stack([bn(v.t[t]) for t in range(T)]))
        if not isinstance(v, _Seq) and bn.training:    # the step loop normalises T times
            outs = [bn(v) for _ in range(T)]
            return _Seq(torch.stack(outs))
        return _fold(bn, v, T)

    def _neuron(self, n, v, T: int, val: dict, observed: bool) -> _Seq | None:
        """The population's spikes; with its 2x2 pool fused, the pool's output goes into
        ``val`` and the spikes are made only when ``observed`` (else ``None``)."""
        m = n.module
        pool = self.pooled_by.get(n.id)
        if pool is not None:
            static = not isinstance(v, _Seq)
            to_cl = pool in self.pool_to_channels_last and _large_cpu_seq(_Seq(_as_seq(v, T)), 4)
            r = leaky_pool(m, v if static else v.t, T if static else None, to_cl, observed)
            if r is not None:
                val[pool] = _Seq(r[0])
                return None if r[1] is None else _Seq(r[1])
        if n.id in self.fused:
            if isinstance(v, _Seq):
                return _Seq(leaky_window(m, v.t))
            return _Seq(leaky_window(m, v, steps=T))
        seq = _as_seq(v, T)
        out = []
        for t in range(T):
            o = m(seq[t])
            out.append(n.adapter.spikes(o))
        return _Seq(torch.stack(out))
