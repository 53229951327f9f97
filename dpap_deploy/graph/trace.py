"""``build_graph(model, example_input)``: trace one time step of a model into a ModelGraph.

The model runs once, as written, on the example input (evaluation mode, no gradients), with
forward hooks on its leaf modules and a ``TorchFunctionMode`` that sees every torch function
called *between* modules (functional pooling, ``flatten`` / ``view``, residual ``+``,
``torch.cat``...). Each produced tensor is tagged with the node that made it, so the edges are
the real dataflow, whatever Python the forward contains. A function is known by the function
object itself (``trace_ops.OPS``); one the table does not know is refused once the trace is
done, naming it and the forward's line that calls it.

Time: a model whose forward runs its own time loop calls its modules ``T`` times; the second
call of the *first* module starts step 1, and only step 0 becomes the graph
(``steps_per_call = T``). A module called twice within one step is weight sharing and refused.
Neurons may keep their state internally (``init_hidden=True``) or take and return it
(``spk, mem = lif(cur, mem)``): only their first argument is data; the rest is state. A
neuron's spikes and its membrane are tagged apart, and what the model returns (after step 0
too: ``torch.stack(mem_rec)``, ``.sum(0)``) is followed back to them: the graph's readout.
Where the forward indexes its input by time (``x[t]``, ``x[:, t]``) the input's time axis is
known (``time_axis.py``) and the graph's input is one step's.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from ..errors import ConfigError, DPAPError, UnsupportedModelError
from .model_graph import (ADD, CAT, ELEMENTWISE, FLATTEN, INPUT, NEURON, NORM, NORMS, OUTPUT,
                          PASS, PASSIVE, POOL, POOLS, SYNAPSE, SYNAPSES, ModelGraph, Node,
                          find_layers)
from .neurons import adapter_for, supported_names
from .trace_ops import (ACT, DROPOUT, HINTS, IGNORE, INDEX, OUTPUT_ONLY, SAME, SHAPE,
                        _pool_attrs, _pool_fn_attrs, _restore_hooks, _stash_hooks, describe,
                        op_of)
from .state import neuron_membrane, reset_states
from .unknown import refuse_unknown_neurons
from .time_axis import batch_slice, check_axis, conflict, frame, index_axis, note_inferred

SUPPORTED_TEXT = ("Conv1d, Conv2d, Linear, BatchNorm1d/2d, pooling (module or functional), "
                  "flatten/view/reshape, Dropout, residual '+', torch.cat, and neurons: ")


def _first_tensor(x):
    if isinstance(x, torch.Tensor):
        return x
    if isinstance(x, (tuple, list)):
        for v in x:
            t = _first_tensor(v)
            if t is not None:
                return t
    return None


def _tensors(x) -> list[torch.Tensor]:
    if isinstance(x, torch.Tensor):
        return [x]
    if isinstance(x, (tuple, list)):
        return [t for v in x for t in _tensors(v)]
    if isinstance(x, dict):
        return [t for v in x.values() for t in _tensors(v)]
    return []


class _Tracer(TorchFunctionMode):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.names = {m: n for n, m in model.named_modules()}
        self.nodes: list[Node] = []
        self.tag: dict[int, int] = {}          # id(tensor) -> node id
        self.mem_tag: dict[int, int] = {}      # id(membrane tensor) -> its neuron's node id
        self.late: dict[int, tuple[int, bool]] = {}   # after step 0: id -> (node, membrane?)
        self.keep: list[torch.Tensor] = []     # keeps tagged tensors alive (ids stay unique)
        self.depth = 0
        self.calls: dict[nn.Module, int] = {}
        self.first: nn.Module | None = None
        self.step0 = True
        self.counter = 0
        self.time_index: int | None = None     # the input's time axis, as the forward reads it
        self.step_shape: tuple[int, ...] = ()  # ... and one step of it (batch excluded)
        self.indexed = False                   # the forward indexes its input
        self.framed = False                    # traced on one event frame of the input

    # -------------------------------------------------------------- tagging
    def _tag(self, t, node: int) -> None:
        for x in _tensors(t):
            self.tag[id(x)] = node
            self.keep.append(x)

    def producers(self, *args) -> list[int]:
        out = []
        for t in _tensors(list(args)):
            i = self.tag.get(id(t))
            if i is not None and i not in out:
                out.append(i)
        return out

    def add_node(self, op: str, name: str, inputs: list[int], out, in_tensors, **kw) -> int:
        t = _first_tensor(out)
        shape = tuple(t.shape[1:]) if t is not None else ()
        node = Node(len(self.nodes), op, name, inputs, shape,
                    [tuple(x.shape[1:]) for x in in_tensors], **kw)
        self.nodes.append(node)
        return node.id

    # --------------------------------------------------------------- modules
    def leaf(self, m: nn.Module) -> bool:
        return adapter_for(m) is not None or not list(m.children()) or \
            isinstance(m, SYNAPSES + NORMS + POOLS + PASSIVE + (nn.Flatten,))

    def pre(self, mod, args):
        self.depth += 1
        n = self.calls.get(mod, 0)
        self.calls[mod] = n + 1
        if self.first is None:
            self.first = mod
        if n >= 1 and self.step0:
            if mod is not self.first or self._reads_step0_output(args):
                raise UnsupportedModelError(
                    f"module '{self.names[mod]}' ({type(mod).__name__}) is called twice in one "
                    "time step (weight sharing); give each use its own module")
            self.step0 = False
            self._drop_next_step_preprocessing()

    def _reads_step0_output(self, args) -> bool:
        """A time loop feeds its first module the input again; a module fed what this step's
        modules made is used twice in one step."""
        todo = self.producers(args[0] if args else None)
        while todo:
            node = self.nodes[todo.pop()]
            if node.module is not None:
                return True
            todo.extend(node.inputs)
        return False

    def _drop_next_step_preprocessing(self) -> None:
        """Functions recorded after step 0's last module that read only the input (e.g. the
        next step's ``x.flatten(1)``) belong to step 1: drop them."""
        dropped: set[int] = set()
        while self.nodes and self.nodes[-1].module is None and self.nodes[-1].op != INPUT and \
                all(self.nodes[i].op == INPUT or i in dropped for i in self.nodes[-1].inputs):
            dropped.add(self.nodes.pop().id)

    def post(self, mod, args, out):
        self.depth -= 1
        if not self.step0:
            return
        name = self.names[mod]
        data = args[0] if args else None
        inputs = self.producers(data)
        in_t = [data] if isinstance(data, torch.Tensor) else []
        adapter = adapter_for(mod)
        if adapter is not None:
            nid = self.add_node(NEURON, name, inputs, adapter.spikes(out), in_t,
                                module=mod, adapter=adapter)
            self._tag(adapter.spikes(out), nid)
            mem = neuron_membrane(adapter, mod, out)
            if isinstance(mem, torch.Tensor) and id(mem) not in self.tag:
                self.mem_tag[id(mem)] = nid
                self.keep.append(mem)
            return
        if isinstance(mod, SYNAPSES):
            op = SYNAPSE
        elif isinstance(mod, NORMS):
            op = NORM
        elif isinstance(mod, POOLS):
            op = POOL
        elif isinstance(mod, PASSIVE):
            op = PASS
        elif isinstance(mod, nn.Flatten):
            op = FLATTEN
        elif not list(mod.parameters(recurse=False)) and _first_tensor(out) is not None and \
                in_t and tuple(_first_tensor(out).shape) == tuple(in_t[0].shape):
            op = ELEMENTWISE
        else:
            raise UnsupportedModelError(
                f"unsupported layer type '{type(mod).__name__}' at '{name}'; the model graph "
                f"supports {SUPPORTED_TEXT}{supported_names()}")
        attrs = _pool_attrs(mod) if op == POOL else {}
        nid = self.add_node(op, name, inputs, out, in_t, module=mod, attrs=attrs)
        self._tag(out, nid)

    # ------------------------------------------------------------- functions
    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if self.depth == 0 and self.step0:
            self.record(func, args, kwargs, out)
        elif self.depth == 0:
            self.follow(args, out)
        return out

    def origin(self, t) -> tuple[int, bool] | None:
        """(node, is membrane) of a tensor step 0 made, or of what later code made from it."""
        if id(t) in self.tag:
            return self.tag[id(t)], False
        if id(t) in self.mem_tag:
            return self.mem_tag[id(t)], True
        return self.late.get(id(t))

    def follow(self, args, out) -> None:
        """After step 0, the records the model returns (``torch.stack(mem_rec)``,
        ``.sum(0)``...) keep the origin of their first element: that is the readout."""
        src = _first_tensor(args)
        o = _first_tensor(out)
        if src is None or o is None or o is src:
            return
        origin = self.origin(src)
        if origin is not None and origin[0] != 0:
            self.late[id(o)] = origin
            self.keep.append(o)

    def _adds_zero(self, args, kwargs) -> bool:
        """An add whose operands other than the traced one are zero (a Python 0 or a tensor of
        zeros): the first step of a running sum, which passes its traced operand through."""
        others = [a for a in (*args, *kwargs.values())
                  if not (isinstance(a, torch.Tensor) and id(a) in self.tag)]
        return bool(others) and all(
            (isinstance(a, (int, float)) and not isinstance(a, bool) and a == 0) or
            (isinstance(a, torch.Tensor) and not bool(a.ne(0).any())) for a in others)

    def record(self, func, args, kwargs, out) -> None:
        if not _tensors(out):
            return
        ins = self.producers(*args, *kwargs.values())
        op = op_of(func)
        if not ins or (op and op[0] == IGNORE):
            return
        kind, name = op or (None, None)
        src = _first_tensor(args)
        in_t = [t for t in _tensors(list(args)) if id(t) in self.tag]
        if kind == SAME:
            self._tag(out, ins[0])
            return
        if kind == INDEX and self.nodes[ins[0]].op == INPUT:
            self.indexed = True
            axis = index_axis(args[1] if len(args) > 1 else None)
            if axis is not None and self.time_index is None:
                self.time_index = axis         # x[t] / x[:, t]: one step of the input
                self.step_shape = tuple(_first_tensor(out).shape[1:])
            self._tag(out, ins[0])
            return
        if kind == ADD and len(ins) == 1 and self._adds_zero(args, kwargs):
            self._tag(out, ins[0])             # out = 0; out = out + readout(spk): a running sum
            return
        self.counter += 1
        name = name or describe(func).rsplit(".", 1)[-1]
        label = f"{name.strip('_')}_{self.counter}"
        if kind == ADD and len(ins) == 2:
            nid = self.add_node(ADD, label, ins, out, in_t)
        elif kind == CAT:
            dim = kwargs.get("dim", args[1] if len(args) > 1 else 0)
            nid = self.add_node(CAT, label, ins, out, in_t, attrs={"dim": int(dim)})
        elif kind == SHAPE:
            o = _first_tensor(out)
            if o.dim() == 2 and src is not None and o.shape[0] == src.shape[0] \
                    and src.dim() > 2:
                nid = self.add_node(FLATTEN, label, ins, out, in_t)
            elif src is not None and tuple(o.shape) == tuple(src.shape):
                self._tag(out, ins[0])
                return
            else:
                nid = self.add_node(ELEMENTWISE, label, ins, out, in_t,
                                    attrs={"fn": name, "reshape": True})
        elif kind == POOL:
            nid = self.add_node(POOL, label, ins, out, in_t, attrs=_pool_fn_attrs(name, args, kwargs))
        elif kind == DROPOUT:
            p = kwargs.get("p", args[1] if len(args) > 1 and isinstance(args[1], float) else 0.5)
            nid = self.add_node(PASS, label, ins, out, in_t, attrs={"fn": name, "p": p})
        elif kind == ACT:          # its parameters (``F.hardtanh(x, 0, 0.5)``) in its name
            params = [repr(a) for a in args[1:]] + \
                [f"{k}={v!r}" for k, v in kwargs.items() if k != "inplace"]
            fn = f"{name}({', '.join(params)})" if params else name
            nid = self.add_node(ELEMENTWISE, label, ins, out, in_t, attrs={"fn": fn, "act": True})
        elif kind in (ELEMENTWISE, ADD):    # ADD: a constant added (``x + 1``)
            nid = self.add_node(ELEMENTWISE, label, ins, out, in_t, attrs={"fn": name})
        else:       # refused once the step is known to be step 0 (``refuse_unknown``)
            nid = self.add_node(ELEMENTWISE, label, ins, out, in_t,
                                attrs={"fn": name, "unknown": (func, _user_line())})
        self._tag(out, nid)


def _user_line() -> str:
    """Where the user's code called the function: the innermost frame outside torch and this
    package, as ``file:line (`code`)``."""
    import os
    import traceback
    skip = (os.path.dirname(torch.__file__), os.path.dirname(os.path.dirname(__file__)))
    for f in reversed(traceback.extract_stack()):
        if not f.filename.startswith(skip):
            code = f" (`{f.line.strip()}`)" if f.line else ""
            return f"{os.path.basename(f.filename)}:{f.lineno}{code}"
    return "an unknown line"


def refuse_unknown(graph: ModelGraph) -> None:
    """The first function of the traced step the table (``trace_ops.OPS``) does not know, in one
    line: which, where in the forward, and what to write instead."""
    for n in graph.nodes:
        if "unknown" not in n.attrs:
            continue
        func, where = n.attrs.pop("unknown")
        if func in OUTPUT_ONLY and n.id == graph.output:
            continue            # (log-)softmax of the output: the same prediction
        after = ", ".join(f"'{graph.nodes[i].name}'" for i in n.inputs)
        fix = HINTS.get(func) or (
            "write it with operations the graph knows (modules, torch.relu and other "
            "activations, pooling, flatten/view/reshape, '+', torch.cat, arithmetic with "
            "constants), or, if it acts on each value alone, put it in an nn.Module of its own")
        raise UnsupportedModelError(
            f"{describe(func)} at {where} in {type(graph.model).__name__}.forward (applied to "
            f"{after}) is not an operation the model graph knows: it cannot tell which channels "
            f"it moves; {fix}")


def build_graph(model: nn.Module, example_input: torch.Tensor,
                time_axis: int | None = None) -> ModelGraph:
    """Trace ``model`` on ``example_input`` (a batch; two samples are enough) into a graph.

    ``time_axis``: where the input holds its time steps (``graph/time_axis.py``): ``1`` for
    ``[B, T, ...]``, ``0`` for ``[T, B, ...]``; ``None``: no time axis, or inferred from how the
    forward indexes its input (``x[t]``, ``x[:, t]``; a notice names what was inferred). A model
    that takes one step per call is traced on one frame; a model with its own time loop gets
    the input as it is. Event frames ``[B, T, C, H, W]`` are batch first. The model's
    training mode and neuron states are restored afterwards."""
    if not isinstance(model, nn.Module):
        raise UnsupportedModelError(f"the model must be a torch nn.Module, got "
                                    f"{type(model).__name__}; pass the network itself")
    if not isinstance(example_input, torch.Tensor) or example_input.dim() < 2:
        raise DPAPError("the example input must be a batched tensor [B, ...] (one or two samples "
                        "are enough)")
    refuse_unknown_neurons(model)
    axis = check_axis(time_axis)
    if axis is not None:
        if example_input.dim() < 3:
            raise ConfigError(f"time_axis={axis} needs an input with a time and a batch axis, "
                              f"got shape {tuple(example_input.shape)}")
        graph = _trace_with_axis(model, example_input, axis)
    else:
        graph = _trace_inferred(model, example_input)
    graph.layers = find_layers(graph)
    return graph


def graph_of(model_or_graph, x, time_axis: int | None = None) -> ModelGraph:
    """``model_or_graph`` itself when it is a ``ModelGraph``, else its graph traced on ``x``
    (``build_graph``; two samples are taken along the batch axis; streamed event frames, which
    are no tensor, give their first two, batch first)."""
    if isinstance(model_or_graph, ModelGraph):
        return model_or_graph
    lazy = not isinstance(x, torch.Tensor) and hasattr(x, "__getitem__")
    example = x[:2] if lazy else x          # anything else: build_graph says what it takes
    return build_graph(model_or_graph, example, time_axis=time_axis)


def _trace_inferred(model: nn.Module, example_input: torch.Tensor) -> ModelGraph:
    """No axis stated: trace on two samples of axis 0; a forward that reads ``x[t]`` (or fails
    indexing a time axis cut to two) takes ``[T, B, ...]``: traced again on the whole time axis."""
    try:
        graph, tracer = _trace_model(model, example_input[:2], example_input.dim() == 5)
    except DPAPError as first_error:
        if example_input.dim() < 3:
            raise
        try:
            graph, tracer = _trace_model(model, batch_slice(example_input, 0, 0, 2), False)
        except DPAPError:
            raise first_error from None
        if tracer.time_index != 0:
            raise first_error from None
        graph.time_axis = 0
        note_inferred(type(model).__name__, 0)
        return graph
    if tracer.time_index == 0:
        graph = _trace_with_axis(model, example_input, 0)
    elif tracer.time_index == 1 or tracer.framed:
        graph.time_axis = 1
    if tracer.time_index is not None and graph.steps_per_call > 1:
        note_inferred(type(model).__name__, tracer.time_index)
    return graph


def _trace_with_axis(model: nn.Module, example_input: torch.Tensor, axis: int) -> ModelGraph:
    """An own loop reading ``x[t]`` / ``x[:, t]`` takes the whole input; a model taking one
    step per call takes one frame."""
    x = batch_slice(example_input, axis, 0, 2)
    try:
        graph, tracer = _trace_model(model, x, False)
    except DPAPError:
        graph, tracer = None, None
    if tracer is not None and tracer.time_index is not None:
        if tracer.time_index != axis:
            raise conflict(axis, tracer.time_index)
        graph.time_axis = axis
        return graph
    if tracer is not None and graph.steps_per_call > 1:
        raise ConfigError(f"time_axis={axis} was given, but {type(model).__name__} runs its own "
                          "time loop without reading its input per step (the input has no time "
                          "axis); leave time_axis out")
    graph, _ = _trace_model(model, frame(x, axis, 0), False)
    graph.time_axis = axis
    return graph


def _trace_model(model: nn.Module, x: torch.Tensor, event: bool) -> tuple[ModelGraph, _Tracer]:
    tracer = _Tracer(model)
    hooks = []
    stashed = _stash_hooks(model)        # the user's (and DPAP's) hooks do not see the trace
    for m in model.modules():
        if m is model and list(m.children()):
            continue
        if tracer.leaf(m) and not _inside_neuron(m, model):
            hooks.append(m.register_forward_pre_hook(tracer.pre))
            hooks.append(m.register_forward_hook(tracer.post))
    was = model.training
    model.eval()
    reset_states(model)
    try:
        graph = _trace(model, x, tracer, event)
    finally:
        for h in hooks:
            h.remove()
        _restore_hooks(stashed)
        model.train(was)
        reset_states(model)
    return graph, tracer


def _inside_neuron(m: nn.Module, model: nn.Module) -> bool:
    """Modules owned by a neuron (RLeaky's recurrent Linear) are part of that neuron."""
    for parent in model.modules():
        if parent is not m and adapter_for(parent) is not None and \
                any(c is m for c in parent.modules()):
            return True
    return False


def _trace(model, x, tracer: _Tracer, event: bool) -> ModelGraph:
    inp = tracer.add_node(INPUT, "input", [], x, [])
    tracer.nodes[inp].out_shape = tuple(x.shape[1:])
    result = None
    with torch.no_grad(), tracer:
        tracer._tag(x, inp)
        try:
            result = model(x)
        except (RuntimeError, ValueError, TypeError, IndexError) as exc:
            if event:                      # a model that takes one frame per call
                tracer.__init__(model)
                tracer.framed = True
                first = x[:, 0]
                inp = tracer.add_node(INPUT, "input", [], first, [])
                tracer._tag(first, inp)
                try:
                    result = model(first)
                except (RuntimeError, ValueError, TypeError, IndexError) as exc2:
                    raise _fit_error(first, exc2) from None
            else:
                raise _fit_error(x, exc) from None
    calls = [c for c in tracer.calls.values()]
    if not calls:
        raise UnsupportedModelError("the model called no module on the example input")
    steps = max(calls)
    if tracer.time_index is not None and steps > 1:   # an own loop reading its input per step
        tracer.nodes[inp].out_shape = tracer.step_shape
    else:              # one call per step: indexing the input (x[:, 0]) is not a time axis
        tracer.time_index = None
    kind = "snn" if any(n.op == NEURON and n.adapter.kind == "snn" for n in tracer.nodes) else "ann"
    out_id, membrane = _output_node(tracer, result)
    tracer.nodes.append(Node(len(tracer.nodes), OUTPUT, "output", [out_id],
                             tracer.nodes[out_id].out_shape, [tracer.nodes[out_id].out_shape]))
    graph = ModelGraph(model=model, nodes=tracer.nodes, kind=kind, steps_per_call=steps,
                       output=out_id, input_shape=tracer.nodes[inp].out_shape,
                       output_membrane=membrane, input_indexed=tracer.indexed and steps == 1)
    refuse_unknown(graph)
    return graph




def _output_node(tracer: _Tracer, result) -> tuple[int, bool]:
    """The node the model returns (the first tensor of what it returns) and whether that is
    the node's membrane rather than its output (spikes)."""
    cons = {n.id: 0 for n in tracer.nodes}
    for n in tracer.nodes:
        for i in n.inputs:
            cons[i] += 1
    t = _first_tensor(result)
    origin = tracer.origin(t) if t is not None else None
    if origin is not None and origin[0] != 0:
        return origin
    sinks = [n.id for n in tracer.nodes if cons[n.id] == 0 and n.op != INPUT]
    if not sinks:
        raise UnsupportedModelError("could not find the model's output in its traced graph")
    return sinks[-1], False


def _fit_error(x: torch.Tensor, exc: Exception) -> DPAPError:
    if isinstance(exc, DPAPError):
        return exc
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return DPAPError(f"input of shape {tuple(x.shape[1:])} (batch dimension excluded) does not "
                     f"fit the model: {first}")


__all__ = ["build_graph", "graph_of"]
