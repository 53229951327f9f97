"""The model graph of a (compacted) SNN as a ``nir.NIRGraph``.

Nodes: ``Input``, ``Conv1d`` / ``Conv2d``, ``Affine`` (``Linear`` when there is no bias), the
neuron nodes the neuron adapters give (``LIF``, ``IF``, ``CubaLIF``, with a recurrent
``Linear`` on a cycle for ``RLeaky``), ``AvgPool2d``, ``Flatten``, ``Output``. The graph may
branch: a residual ``+`` becomes two edges into the node that reads the sum (NIR sums the
inputs of a node). BatchNorm is folded into its synapse (NIR has no BatchNorm); average pooling
stays a node unless the caller folded it (netx). MaxPool, ``torch.cat`` and other operations
have no NIR node and are refused with the reason.

**LIF mapping.** NIR's LIF is continuous, ``tau dv/dt = (v_leak - v) + r I``, spike when
``v > v_threshold``, then ``v = v_reset``. Discretised with a forward-Euler step ``dt``:
``v[t+1] = (1 - dt/tau) v[t] + (dt/tau) r I[t+1]``. snnTorch's ``Leaky`` with reset to zero is
``u[t+1] = beta u[t] + I[t+1]``, so ``tau = dt / (1 - beta)``, ``r = tau / dt``,
``v_leak = 0``, ``v_reset = 0``, ``v_threshold = V_th`` (other neurons: their adapters in
``graph/neurons``). We use snnTorch's ``dt = 1e-4`` and store ``dt`` and the number of time
steps in the graph's metadata. Shapes exclude the batch; ``Flatten`` flattens every non-batch
dimension (``start_dim = 0``).

**Two encodings of the same neuron** (``encoding``, recorded in the metadata as
``neuron_encoding``): ``"gain"`` (default) writes ``r = tau / dt``, so the discrete input gain
``g = r dt / tau`` is 1 and the synapses keep snnTorch's weights. ``"unit-r"`` writes ``r = 1``
(``g = dt / tau = 1 - beta``) and multiplies the rows (output channels) of every weight and bias
feeding the neuron (through an average pooling, which is linear and per channel), the
recurrent one included, by ``s = 1 / g``: ``g (s W x) = W x``.
Readers that ignore ``r`` (Norse) then compute the same network. CubaLIF: ``r = w_in = 1`` and
``s = 1 / (g g_syn)``; IF: ``r = 1``, ``s = 1 / dt``. ``s`` is taken from the float32 gain the
readers compute (``nir_neurons.discretise``), so the product is ``W x`` to float32 rounding.

**Pooling** (``pooling``, metadata ``pooling``): ``"avg"`` (default) writes ``AvgPool2d``;
``"sum"`` writes ``SumPool2d`` (for readers without ``AvgPool2d``, such as Norse) and moves the
average's ``1 / (kh kw)`` into the weights of the next synapse (or, when a neuron follows the
pool, of the synapse before it, never its recurrent weight, whose input passes no pool):
``W avg(x) = (W / (kh kw)) sum(x)``, exact in float32 for a power-of-two window such as 2 x 2.

A factor moved into a synapse before a pool (or ``"unit-r"``'s ``s`` moved into any synapse)
is refused (``UnsupportedModelError`` naming the node) when that synapse or a pool on the way
also feeds another node, which would receive the factor as well.
"""
from __future__ import annotations

import nir
import numpy as np
import torch
from torch import nn

from ..compaction.fold import fold_bn_into
from ..errors import ConfigError, UnsupportedModelError
from ..graph import ModelGraph, graph_of
from ..graph.trace_ops import pair
from .nir_forms import add_group, max_pool
from ..graph.model_graph import (ADD, CAT, FLATTEN, INPUT, NEURON, NORM, OUTPUT, PASS, POOL,
                                 SYNAPSE)

DT = 1e-4
ENCODINGS = ("gain", "unit-r")
POOLINGS = ("avg", "sum")


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy().astype(np.float32)


def _synapse_node(m: nn.Module, in_shape: tuple[int, ...]):
    if isinstance(m, (nn.Conv1d, nn.Conv2d)):
        bias = m.bias if m.bias is not None else torch.zeros(m.out_channels)
        if isinstance(m, nn.Conv1d):
            return nir.Conv1d(input_shape=int(in_shape[-1]), weight=_np(m.weight),
                              stride=int(m.stride[0]), padding=int(m.padding[0]),
                              dilation=int(m.dilation[0]), groups=m.groups, bias=_np(bias))
        return nir.Conv2d(input_shape=tuple(in_shape[1:]), weight=_np(m.weight),
                          stride=np.array(pair(m.stride)), padding=np.array(pair(m.padding)),
                          dilation=np.array(pair(m.dilation)), groups=m.groups, bias=_np(bias))
    if m.bias is not None:
        return nir.Affine(weight=_np(m.weight), bias=_np(m.bias))
    return nir.Linear(weight=_np(m.weight))


def _pool_node(n) -> nir.NIRNode:
    a = n.attrs
    if a.get("pool") == "max":
        raise UnsupportedModelError(
            f"'{n.name}' is a max pooling: NIR (and Lava) have no MaxPool node; use average "
            "pooling (nn.AvgPool2d) and retrain to export")
    if a.get("dims") != 2 or a.get("ceil_mode") or not a.get("exact", True):
        raise UnsupportedModelError(
            f"average pooling '{n.name}' ({a.get('dims')}-d, ceil_mode={a.get('ceil_mode')}"
            f"{'' if a.get('exact', True) else ', not a plain window mean: count_include_pad=False with padding or a divisor_override'}"
            ") has no NIR node; NIR's AvgPool2d is 2-d, floor mode, padding counted as zeros: "
            "use ceil_mode=False, the default count_include_pad=True and no divisor_override")
    return nir.AvgPool2d(kernel_size=np.array(a["kernel"]), stride=np.array(a["stride"]),
                         padding=np.array(a["padding"]))


def _add_bias(nodes: dict, feeders: list[str], bias: np.ndarray, where: str) -> None:
    """Add a constant input current to the one synapse node that feeds a neuron."""
    if len(feeders) != 1 or not isinstance(nodes[feeders[0]], (nir.Affine, nir.Linear)):
        raise UnsupportedModelError(
            f"the recurrent weight of '{where}' has a bias and its neuron is not fed by one "
            "Linear layer that could carry it; use bias=False on the recurrent weight")
    old = nodes[feeders[0]]
    b = np.asarray(getattr(old, "bias", 0.0), dtype=np.float32) + bias
    nodes[feeders[0]] = nir.Affine(weight=old.weight, bias=b.astype(np.float32))


def input_scale(node: nir.NIRNode, dt: float = DT) -> np.ndarray:
    """``s = 1 / (g g_syn)``: what a ``"unit-r"`` neuron's input weights are multiplied by, with
    ``g``, ``g_syn`` the float32 gains a reader computes from the node (1 when absent)."""
    from ..graph.nir_neurons import discretise
    d = discretise(node, dt)
    g = np.ones(1) if d.gain is None else np.asarray(d.gain, np.float64)
    gs = np.ones(1) if d.syn_gain is None else np.asarray(d.syn_gain, np.float64)
    return 1.0 / (g * gs)


def _row_scale(scale: np.ndarray, node: nir.NIRNode, shape: tuple[int, ...], where: str):
    """``scale`` (one value per neuron of ``shape``) as one value per row / output channel of
    the synapse ``node``, or refuse when a channel's neurons need different values."""
    s = np.broadcast_to(scale, shape)
    if isinstance(node, (nir.Conv1d, nir.Conv2d)):
        per = s.reshape(s.shape[0], -1)
        if not np.all(per == per[:, :1]):
            raise UnsupportedModelError(
                f"neuron '{where}' has time constants that vary within a channel; "
                "encoding='unit-r' scales a convolution per output channel: use encoding='gain'")
        return per[:, 0]
    return s.reshape(-1)


def _through_pools(name: str, nodes: dict, edges: list[tuple[str, str]]) -> list[str]:
    """The chain from ``name`` back through average / sum poolings to the synapse behind them
    (a pool is linear and per channel, so scaling the channels before it scales them after it):
    ``[name, ..., synapse]``, just ``[name]`` when ``name`` is no pool."""
    chain = [name]
    while isinstance(nodes[chain[-1]], (nir.AvgPool2d, nir.SumPool2d)):
        src = [s for s, d in edges if d == chain[-1]]
        if len(src) != 1:
            break
        chain.append(src[0])
    return chain


def _scale_feeders(nodes: dict, edges: list, feeders: list[str], scale: np.ndarray, shape,
                   where: str, done: set[str], moved: list, neuron: str,
                   fixes: tuple[str, ...]) -> None:
    """Multiply each feeding synapse's rows (weight and bias) by ``scale``, through the pools
    between it and the neuron. ``fixes``: the options whose factor ``scale`` holds
    (``"encoding='gain'"`` for the ``"unit-r"`` ``1 / g``, ``"pooling='avg'"`` for a sum
    pool's ``1 / (kh kw)``), named in a refusal. Each chain goes to ``moved`` with the NIR
    ``neuron`` it is meant for: ``_check_moved`` refuses it once the graph is complete if any
    node of it feeds something else."""
    what = " and ".join({"encoding='gain'": "encoding='unit-r'",
                         "pooling='avg'": "pooling='sum'"}[f] for f in fixes)
    for chain in (_through_pools(f, nodes, edges) for f in feeders):
        name = chain[-1]
        old = nodes[name]
        if not isinstance(old, (nir.Affine, nir.Linear, nir.Conv1d, nir.Conv2d)) or name in done:
            raise UnsupportedModelError(
                f"neuron '{where}' takes input from '{name}' ({type(old).__name__}), not from a "
                f"weight of its own that {what} could scale; use {' and '.join(fixes)}")
        s = _row_scale(scale, old, shape, where)
        w = old.weight.astype(np.float64) * s.reshape((-1,) + (1,) * (old.weight.ndim - 1))
        fields = {"weight": w.astype(np.float32)}
        if getattr(old, "bias", None) is not None:
            fields["bias"] = (np.asarray(old.bias, np.float64) * s).astype(np.float32)
        nodes[name] = _replace(old, fields)
        done.add(name)
        moved.append((chain, neuron, where, fixes))


def _scale_inputs(nodes: dict, edges: list, feeders: list[str], recurrent: str | None,
                  unit: np.ndarray | None, pool_factor: float | None, shape, where: str,
                  done: set[str], moved: list, neuron: str) -> None:
    """Scale what feeds the NIR neuron ``neuron`` (graph node ``where``): the ``feeders``
    (its input, through the pools) by ``unit`` (``"unit-r"``'s ``1 / g``, else ``None``) times
    ``pool_factor`` (the ``1 / (kh kw)`` of the sum pools between, else ``None``); its
    ``recurrent`` weight by ``unit`` alone: the recurrent input does not pass through a pool."""
    fixes = tuple(f for f, v in (("encoding='gain'", unit), ("pooling='avg'", pool_factor))
                  if v is not None)
    if fixes:
        scale = (1.0 if unit is None else unit) * (1.0 if pool_factor is None else pool_factor)
        _scale_feeders(nodes, edges, feeders, scale, shape, where, done, moved, neuron, fixes)
    if recurrent is not None and unit is not None:
        _scale_feeders(nodes, edges, [recurrent], unit, shape, where, done, moved, neuron,
                       ("encoding='gain'",))


def _check_moved(moved: list, edges: list[tuple[str, str]]) -> None:
    """Refuse a scaled chain (``_scale_feeders``) whose synapse or pool also feeds another node:
    the factor moved into the synapse would reach that consumer too."""
    out: dict[str, set[str]] = {}
    for s, d in edges:
        out.setdefault(s, set()).add(d)
    for chain, neuron, where, fixes in moved:
        nxt = neuron
        for name in chain:
            other = sorted(out.get(name, set()) - {nxt})
            if other:
                raise UnsupportedModelError(
                    f"'{name}' feeds {', '.join(repr(o) for o in other)} besides '{nxt}': the "
                    f"factor moved into '{chain[-1]}' for neuron '{where}' would reach them too; "
                    f"use {' and '.join(fixes)}")
            nxt = name


def _sum_pool(node: nir.AvgPool2d) -> tuple[nir.SumPool2d, float]:
    """``AvgPool2d = SumPool2d / (kh kw)``: the sum pool and its factor ``1 / (kh kw)``."""
    return (nir.SumPool2d(kernel_size=node.kernel_size, stride=node.stride, padding=node.padding),
            1.0 / float(np.prod(np.asarray(node.kernel_size))))


def _scaled_weight(node: nir.NIRNode, factor: float) -> nir.NIRNode:
    """The synapse with its weight (not its bias) times ``factor``."""
    w = (np.asarray(node.weight, np.float64) * factor).astype(np.float32)
    return _replace(node, {"weight": w})


def _check_choice(what: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"unknown NIR {what} {value!r}; choose one of {', '.join(choices)}")


def _replace(node: nir.NIRNode, fields: dict) -> nir.NIRNode:
    """A copy of ``node`` with ``fields`` changed (the others as they are)."""
    import dataclasses
    keep = {f.name: getattr(node, f.name) for f in dataclasses.fields(node)
            if f.init and f.name not in ("input_type", "output_type", "metadata")}
    keep.update(fields)
    return type(node)(**keep)


def _drop_unread_spikes(nodes: dict, edges: list) -> None:
    """Remove a group's ``Threshold`` that nothing reads (a leaky-integrator readout: its
    membrane is the output); ``NIRGraph`` would give it an ``Output`` of its own."""
    read = {s for s, _ in edges}
    for name in [k for k, v in nodes.items() if isinstance(v, nir.Threshold) and k not in read
                 and (v.metadata or {}).get("dpap_role") == "spike"]:
        del nodes[name]
        edges[:] = [e for e in edges if name not in e]


def _output_sources(graph: ModelGraph, out, alias: dict, membrane: dict) -> list[str]:
    """What feeds ``Output``: the output neuron's spikes, its membrane LI when the model returns
    the membrane (``graph.readout == "membrane"``), or the graded node the model returns."""
    src = out.inputs[0]
    if getattr(graph, "readout", "spikes") != "membrane":
        return alias[src]
    if src not in membrane:
        n = graph.nodes[graph.output]
        raise UnsupportedModelError(
            f"the model returns the membrane of '{n.name}' (reset_mechanism="
            f"'{getattr(n.module, 'reset_mechanism', '?')}'), which NIR's spiking neuron nodes do "
            "not output; use reset_mechanism='none' (a leaky-integrator readout) or 'subtract'")
    return [membrane[src]]


def to_nir(model: nn.Module | ModelGraph, example_input: torch.Tensor | None = None,
           time_steps: int | None = None, encoding: str = "gain",
           pooling: str = "avg") -> nir.NIRGraph:
    """NIR graph of an SNN (evaluation semantics). ``model`` may be its ``ModelGraph``;
    ``encoding``: ``"gain"`` or ``"unit-r"``; ``pooling``: ``"avg"`` or ``"sum"`` (module
    docstring)."""
    _check_choice("neuron encoding", encoding, ENCODINGS)
    _check_choice("pooling", pooling, POOLINGS)
    graph = graph_of(model, example_input)
    if graph.kind != "snn":
        raise UnsupportedModelError("NIR export takes spiking networks; for an ANN use --target onnx")
    if time_steps is None:      # the file carries T, and readers run it for T steps
        raise ConfigError("to_nir needs time_steps: the T the network runs with (written into "
                          "the file's metadata)")
    bn_of = {l.node: l.bn for l in graph.layers if l.bn is not None}
    nodes: dict[str, nir.NIRNode] = {}
    edges: list[tuple[str, str]] = []
    alias: dict[int, list[str]] = {}          # graph node -> NIR nodes whose sum it is
    membrane: dict[int, str] = {}             # neuron graph node -> its membrane LI
    used: set[str] = set()
    scaled: set[str] = set()                  # synapses already scaled for "unit-r"
    pending: dict[int, float] = {}            # graph node -> 1/(kh kw) of a sum pool before it
    moved: list = []                          # chains scaled for a neuron (_check_moved)

    def no_pending(n) -> None:
        if any(i in pending for i in n.inputs):
            raise UnsupportedModelError(
                f"the sum pooling before '{n.name}' needs a weight after it to carry its "
                "1/(kh kw); use pooling='avg'")

    def name_of(n) -> str:
        base = n.name.replace(".", "_") or n.op
        name, k = base, 1
        while name in used:
            k += 1
            name = f"{base}_{k}"
        used.add(name)
        return name

    def add(n, node: nir.NIRNode) -> str:
        name = name_of(n)
        nodes[name] = node
        for i in n.inputs:
            edges.extend((src, name) for src in alias[i])
        alias[n.id] = [name]
        return name

    for n in graph.nodes:
        if n.op == INPUT:
            nodes["input"] = nir.Input(input_type=np.array(n.out_shape))
            used.add("input")
            alias[n.id] = ["input"]
        elif n.op == SYNAPSE:
            syn = n.module if n.id not in bn_of else fold_bn_into(n.module, bn_of[n.id])
            node = _synapse_node(syn, n.in_shape)
            factor = pending.get(n.inputs[0])
            add(n, node if factor is None else _scaled_weight(node, factor))
        elif n.op == NORM:
            no_pending(n)
            if not any(n.id in l.path for l in graph.layers):
                raise UnsupportedModelError(
                    f"BatchNorm '{n.name}' does not follow a synapse of its own and cannot be "
                    "folded; NIR has no BatchNorm node")
            alias[n.id] = alias[n.inputs[0]]
        elif n.op == NEURON:
            if n.adapter.kind != "snn":
                raise UnsupportedModelError(f"'{n.name}' ({type(n.module).__name__}) is not a "
                                            "spiking neuron; NIR export takes SNNs")
            blocked = n.adapter.blockers(n.module, n.name) if hasattr(n.adapter, "blockers") \
                else []
            if blocked:                       # each names the module, the option, the fix
                raise UnsupportedModelError("; ".join(blocked))
            try:
                node = n.adapter.to_nir(n.module, n.out_shape, DT, encoding)
            except UnsupportedModelError as exc:
                raise UnsupportedModelError(f"neuron '{n.name}': {exc}") from None
            feeders = alias[n.inputs[0]]
            rec = getattr(n.adapter, "recurrent_nir", None)
            bias = n.adapter.recurrent_bias(n.module) if rec is not None else None
            if bias is not None and not isinstance(node, dict):
                _add_bias(nodes, feeders, bias, n.name)
            if isinstance(node, dict):           # LI group (nir_forms)
                name = name_of(n)
                w = rec(n.module, n.out_shape) if rec is not None else None
                if bias is not None:             # on the cycle, as snnTorch adds it
                    w = nir.Affine(weight=w.weight, bias=bias)
                first, mem, spike = add_group(nodes, edges, name, node, w, feeders)
                alias[n.id], membrane[n.id] = [spike], mem
                unit = None
                if encoding == "unit-r":      # 1 / (g g_syn) of the group's LIs
                    unit = np.prod([input_scale(node[r]) for r in ("mem", "syn") if r in node],
                                   axis=0)
                _scale_inputs(nodes, edges, feeders, f"{name}_rec" if w is not None else None,
                              unit, pending.get(n.inputs[0]), n.out_shape, n.name, scaled,
                              moved, first)
                continue
            name = add(n, node)
            w = None
            if rec is not None:
                w = f"{name}_rec"
                nodes[w] = rec(n.module, n.out_shape)
                edges.extend([(name, w), (w, name)])
            _scale_inputs(nodes, edges, feeders, w,
                          input_scale(node) if encoding == "unit-r" else None,
                          pending.get(n.inputs[0]), n.out_shape, n.name, scaled, moved, name)
        elif n.op == POOL and n.attrs.get("pool") == "max":
            fed = getattr(graph, "fed_by_spikes", lambda i: False)(n.id)
            pool, fire = max_pool(n, encoding, DT, fed)
            name = add(n, pool)
            nodes[f"{name}_any"] = fire
            edges.append((name, f"{name}_any"))
            alias[n.id] = [f"{name}_any"]
        elif n.op == POOL:
            node = _pool_node(n)
            if pooling == "sum":
                node, factor = _sum_pool(node)
                pending[n.id] = pending.get(n.inputs[0], 1.0) * factor
            add(n, node)
        elif n.op == FLATTEN:
            if n.inputs[0] in pending:
                pending[n.id] = pending[n.inputs[0]]
            add(n, nir.Flatten(input_type={"input": np.array(n.in_shape)}, start_dim=0, end_dim=-1))
        elif n.op == PASS:
            if n.inputs[0] in pending:
                pending[n.id] = pending[n.inputs[0]]
            alias[n.id] = alias[n.inputs[0]]
        elif n.op == ADD:
            no_pending(n)
            alias[n.id] = alias[n.inputs[0]] + alias[n.inputs[1]]
        elif n.op == OUTPUT:
            no_pending(n)
            nodes["output"] = nir.Output(output_type=np.array(n.out_shape))
            edges.extend((src, "output") for src in _output_sources(graph, n, alias, membrane))
        elif n.op == CAT:
            raise UnsupportedModelError(
                f"'{n.name}' is a torch.cat: NIR has no concatenation node; export a model "
                "without concatenation (or sum the branches)")
        else:
            raise UnsupportedModelError(
                f"operation '{n.attrs.get('fn', n.op)}' at '{n.name}' has no NIR node")
    _check_moved(moved, edges)
    _drop_unread_spikes(nodes, edges)
    meta = {"producer": "dpap-deploy", "dt": DT, "time_steps": int(time_steps),
            "encoding": "direct (input current repeated every step)",
            "neuron_encoding": encoding, "pooling": pooling}
    try:                                      # nir checks the shapes along every edge
        return nir.NIRGraph(nodes=nodes, edges=edges, metadata=meta)
    except ValueError as exc:
        raise UnsupportedModelError(
            f"NIR's type check refuses the graph ({exc}): an operation's output shape is "
            "not what the next node takes; report the model (this is a missing check)") from None
