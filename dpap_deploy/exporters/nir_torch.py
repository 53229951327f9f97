"""A torch reference executor of any NIR graph: the ground truth the Lava run is checked against.

    out = run_reference(graph, x, time_steps)      # np.ndarray [N, T, out]

Semantics are NIR's (``nir_topology``: summed fan-in, topological order within a step,
recurrent edges deliver the previous step), neurons are discretised by ``nir_neurons``
(forward Euler with the graph's ``dt``, float32 constants chosen so that snnTorch's own
spikes come back). Shapes exclude the batch. Nodes: ``Input``, ``Output``, ``Conv1d``,
``Conv2d``, ``Affine``, ``Linear``, ``Scale``, ``Flatten``, ``AvgPool2d``, ``SumPool2d``,
``Threshold``, ``LIF``, ``CubaLIF``, ``IF``, ``LI`` (graded: its output is its state ``v``);
anything else is refused with one line. A node fed by several edges adds them, after the
decay, in the order the graph lists them, feed-forward edges first
(``beta v + a + b + rec + reset``: snnTorch's order for the forms ``nir_forms`` writes).

Why not nirtorch 2.6's ``nir_to_torch`` with this module's nodes as its node map: it gives the
same spikes on feed-forward graphs, but (measured on tests/nir_graphs.py) a recurrent edge
delivers zeros before the first step where snnTorch's ``RLeaky`` delivers ``recurrent(0)``
(an ``Affine``'s bias: 3% of the output spikes differ), a node fed by several edges adds them
in the order of a Python set (string hashes: it changes with ``PYTHONHASHSEED``, and an ``LI``
output differs by an ulp in a quarter of its values), and it gives no node's value but the
output's (``nir_to_lava`` takes every node's shape from :meth:`NIRTorch.shapes`). nirtorch
stays a test dependency only: an independent reader of our files (test_nir_readers.py).
"""
from __future__ import annotations

import nir
import numpy as np
import torch
import torch.nn.functional as F

from ..errors import UnsupportedModelError
from ..graph.nir_neurons import STATEFUL, discretise
from .nir_topology import Topology, topology

PASS_THROUGH = (nir.Input, nir.Output)


def _t(a, dtype=torch.float32) -> torch.Tensor:
    return torch.as_tensor(np.asarray(a), dtype=dtype)


def _ints(v, n: int) -> tuple[int, ...]:
    a = np.atleast_1d(np.asarray(v)).astype(int).tolist()
    return tuple(a * n if len(a) == 1 else a)


def _padding(p, n: int):
    return p if isinstance(p, str) else _ints(p, n)


def _synapse(node: nir.NIRNode):
    """A stateless node as a function of one step's input."""
    if isinstance(node, (nir.Conv1d, nir.Conv2d)):
        n = 1 if isinstance(node, nir.Conv1d) else 2
        conv = F.conv1d if n == 1 else F.conv2d
        w, b = _t(node.weight), _t(node.bias) if node.bias is not None else None
        args = dict(stride=_ints(node.stride, n), padding=_padding(node.padding, n),
                    dilation=_ints(node.dilation, n), groups=int(node.groups))
        return lambda x: conv(x, w, b, **args)
    if isinstance(node, nir.Affine):
        w, b = _t(node.weight), _t(node.bias)
        return lambda x: F.linear(x, w, b)
    if isinstance(node, nir.Linear):
        w = _t(node.weight)
        return lambda x: F.linear(x, w)
    if isinstance(node, nir.Scale):
        s = _t(node.scale)
        return lambda x: x * s
    if isinstance(node, nir.Flatten):
        start, end = int(node.start_dim), int(node.end_dim)
        return lambda x: x.flatten(start + 1 if start >= 0 else start,
                                   end + 1 if end >= 0 else end)
    if isinstance(node, (nir.AvgPool2d, nir.SumPool2d)):
        k, s, p = _ints(node.kernel_size, 2), _ints(node.stride, 2), _ints(node.padding, 2)
        div = 1 if isinstance(node, nir.SumPool2d) else None   # sum: divide by 1
        return lambda x: F.avg_pool2d(x, k, s, p, divisor_override=div)
    if isinstance(node, nir.Threshold):
        th = _t(node.threshold)
        return lambda x: (x > th).to(x.dtype)
    if isinstance(node, PASS_THROUGH):
        return lambda x: x
    return None


class _Neuron:
    """One population's state and step (equations in ``nir_neurons``)."""

    def __init__(self, name: str, node: nir.NIRNode, dt: float):
        self.name, self.d = name, discretise(node, dt, name)
        d = self.d
        self.p = {k: None if v is None else _t(v) for k, v in
                  dict(beta=d.beta, gain=d.gain, leak=d.leak, vth=d.v_threshold,
                       v_reset=d.v_reset, alpha=d.alpha, syn_gain=d.syn_gain).items()}
        self.v = self.i = None

    def _check(self, x: torch.Tensor) -> None:
        for k, v in self.p.items():
            if v is not None and v.numel() > 1 and tuple(v.shape) != tuple(x.shape[1:]):
                raise UnsupportedModelError(
                    f"NIR {self.d.kind} node {self.name!r}: parameter {k} has shape "
                    f"{tuple(v.shape)}, its input {tuple(x.shape[1:])}; give one value or one "
                    "per neuron")

    def step(self, parts: list[torch.Tensor]) -> torch.Tensor:
        """``parts``: the incoming edges' values, feed-forward first, summed in that order after
        the decay (``beta * v + a + b``: snnTorch's ``RLeaky`` adds input, then recurrence)."""
        p, x = self.p, parts[0]
        if self.v is None:
            self._check(x)
            self.v = torch.zeros_like(x)
            self.i = torch.zeros_like(x)
        if self.d.kind == "CubaLIF":             # I[t] = alpha I[t-1] + g_syn x[t]
            self.i = _decay_add(p["alpha"] * self.i, parts, p["syn_gain"])
            parts = [self.i]
        # v[t] = beta v[t-1] + g I[t] (+ c); IF: beta = 1, and 1 * v is v exactly
        v = _decay_add(self.v if self.d.kind == "IF" else p["beta"] * self.v, parts, p["gain"])
        if p["leak"] is not None:
            v = v + p["leak"]
        if self.d.kind == "LI":                  # graded: the state is the output
            self.v = v
            return v
        spk = v > p["vth"]
        self.v = torch.where(spk, p["v_reset"].expand_as(v), v)
        return spk.to(x.dtype)


def _decay_add(decayed: torch.Tensor, parts: list[torch.Tensor], gain) -> torch.Tensor:
    if gain is not None:
        return decayed + gain * _sum(parts)
    for part in parts:
        decayed = decayed + part
    return decayed


def _sum(parts: list[torch.Tensor]) -> torch.Tensor:
    total = parts[0]
    for part in parts[1:]:
        total = total + part
    return total


class NIRTorch:
    """Runs a NIR graph one time step per :meth:`step` call, keeping neuron state."""

    def __init__(self, graph: nir.NIRGraph | Topology, dt: float | None = None):
        self.top = graph if isinstance(graph, Topology) else topology(graph, dt)
        self.fns, self.neurons = {}, {}
        for name in self.top.order:
            node = self.top.nodes[name]
            if isinstance(node, STATEFUL):
                self.neurons[name] = _Neuron(name, node, self.top.dt)
                self.fns[name] = self.neurons[name].step
            else:
                fn = _synapse(node)
                if fn is None:
                    raise UnsupportedModelError(
                        f"NIR node {name!r} is a {type(node).__name__}, which the reference "
                        "runner does not take (Input, Output, Conv1d, Conv2d, Affine, Linear, "
                        "Scale, Flatten, AvgPool2d, SumPool2d, Threshold, LIF, CubaLIF, IF, LI)")
                self.fns[name] = fn
        self.reset()

    def reset(self) -> None:
        for n in self.neurons.values():
            n.v = n.i = None
        self.prev: dict[str, torch.Tensor] | None = None

    def _evaluate(self, x: torch.Tensor, back: dict, rest: bool = False) -> dict:
        top, out = self.top, {}
        for name in top.order:
            parts = [x] if name == top.source else \
                [out[s] for s in top.inputs[name]] + [back[s] for s in top.back[name] if s in back]
            if not parts:
                raise UnsupportedModelError(f"NIR node {name!r} has no input at the first step")
            try:
                if name in self.neurons:
                    out[name] = torch.zeros_like(parts[0]) if rest else self.fns[name](parts)
                else:
                    out[name] = self.fns[name](_sum(parts))
            except RuntimeError as exc:          # shapes that do not fit (files read unchecked)
                raise UnsupportedModelError(
                    f"NIR node {name!r} ({type(top.nodes[name]).__name__}) cannot take its input "
                    f"of shape {list(parts[0].shape[1:])} per sample "
                    f"({str(exc).splitlines()[0][:120]}); fix the shapes in the file") from None
        return out

    @torch.no_grad()
    def step(self, x: torch.Tensor, record: dict | None = None) -> torch.Tensor:
        """One time step; returns the Output node's value. ``record`` gets every node's."""
        if self.prev is None:      # before the first step: no input, no spike (a recurrent
            self.prev = self._evaluate(torch.zeros_like(x), {}, rest=True)   # Affine: its bias)
        out = self._evaluate(x, self.prev)
        self.prev = out
        if record is not None:
            record.update(out)
        return out[self.top.sink]

    def shapes(self, input_shape: tuple[int, ...]) -> dict[str, tuple[int, ...]]:
        """Every node's output shape (batch excluded), by one step on zeros."""
        rec: dict[str, torch.Tensor] = {}
        self.reset()
        self.step(torch.zeros((1,) + tuple(input_shape)), rec)
        self.reset()
        return {k: tuple(v.shape[1:]) for k, v in rec.items()}


def input_shape(top: Topology) -> tuple[int, ...]:
    node = top.nodes[top.source]
    t = node.input_type
    shape = next(iter(t.values())) if isinstance(t, dict) else t
    return tuple(int(s) for s in np.atleast_1d(np.asarray(shape)))


def run_reference(graph: nir.NIRGraph | Topology, x: np.ndarray, time_steps: int,
                  dt: float | None = None) -> np.ndarray:
    """Output ``[N, T, ...]`` of the graph for static inputs ``x [N, ...]`` (repeated every
    step: direct encoding) or frames ``x [N, T, ...]``; ``dt``: as in ``topology``."""
    net = NIRTorch(graph, dt)
    xt = torch.as_tensor(np.asarray(x), dtype=torch.float32)
    shape = input_shape(net.top)
    frames = xt.dim() == len(shape) + 2
    if frames and xt.shape[1] != time_steps:
        raise UnsupportedModelError(f"inputs have {xt.shape[1]} frames, the run {time_steps} steps")
    if tuple(xt.shape[2 if frames else 1:]) != shape:
        raise UnsupportedModelError(f"inputs of shape {tuple(xt.shape)} do not fit the graph's "
                                    f"input {shape} (give [N, *shape] or [N, T, *shape])")
    outs = [net.step(xt[:, t] if frames else xt) for t in range(time_steps)]
    return torch.stack(outs, 1).numpy()
