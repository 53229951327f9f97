"""``build_graph(model, example_input)``: trace one time step of a model into a ModelGraph.

The model runs once, as written, on the example input (evaluation mode, no gradients), with
forward hooks on its leaf modules and a ``TorchFunctionMode`` that sees every torch function
called *between* modules (functional pooling, ``flatten`` / ``view``, residual ``+``,
``torch.cat``...). Each produced tensor is tagged with the node that made it, so the edges are
the real dataflow, whatever Python the forward contains.

Time: a model whose forward runs its own time loop calls its modules ``T`` times; the second
call of the *first* module starts step 1, and only step 0 becomes the graph
(``steps_per_call = T``). A module called twice within one step is weight sharing and refused.
Neurons may keep their state internally (``init_hidden=True``) or take and return it
(``spk, mem = lif(cur, mem)``): only their first argument is data; the rest is state.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from ..errors import DPAPError, UnsupportedModelError
from .model_graph import (ADD, CAT, ELEMENTWISE, FLATTEN, INPUT, NEURON, NORM, NORMS, OUTPUT,
                          PASS, PASSIVE, POOL, POOLS, SYNAPSE, SYNAPSES, ModelGraph, Node,
                          find_layers)
from .neurons import adapter_for, supported_names
from .state import reset_states

_SAME = {"detach", "clone", "contiguous", "to", "float", "double", "half", "type_as", "cpu",
         "cuda", "requires_grad_", "detach_"}
_ADD = {"add", "__add__", "__radd__", "__iadd__", "add_"}
_SHAPE = {"flatten", "view", "reshape", "squeeze", "unsqueeze"}
_POOL_FN = {"max_pool1d", "max_pool2d", "avg_pool1d", "avg_pool2d", "max_pool2d_with_indices",
            "max_pool1d_with_indices", "_max_pool2d", "_max_pool1d", "boolean_dispatch"}
_DROPOUT_FN = {"dropout", "dropout1d", "dropout2d", "feature_dropout", "alpha_dropout"}
_ACT_FN = {"relu", "relu_", "gelu", "silu", "sigmoid", "tanh", "leaky_relu", "elu", "hardtanh",
           "relu6", "softplus"}
_IGNORE = {"size", "dim", "numel", "__len__", "__getattribute__", "__get__", "shape", "stack",
           "__format__", "__repr__", "item", "tolist", "__bool__", "__index__", "__int__",
           "__float__", "requires_grad", "grad_fn", "is_floating_point", "__setitem__",
           "append", "zeros_like", "ones_like", "new_zeros", "dtype", "device"}

SUPPORTED_TEXT = ("Conv1d, Conv2d, Linear, BatchNorm1d/2d, pooling (module or functional), "
                  "flatten/view/reshape, Dropout, residual '+', torch.cat, and neurons: ")


def _fname(func) -> str:
    name = getattr(func, "__name__", None) or str(func)
    return name


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
            mem = _membrane(adapter, mod, out)
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

    def record(self, func, args, kwargs, out) -> None:
        name = _fname(func)
        if name in _IGNORE or not _tensors(out):
            return
        ins = self.producers(*args, *kwargs.values())
        if not ins:
            return
        src = _first_tensor(args)
        in_t = [t for t in _tensors(list(args)) if id(t) in self.tag]
        if name in _SAME:
            self._tag(out, ins[0])
            return
        if name == "__getitem__" and self.nodes[ins[0]].op == INPUT:
            self._tag(out, ins[0])             # x[:, t]: one frame of the input
            return
        self.counter += 1
        label = f"{name.strip('_')}_{self.counter}"
        if name in _ADD and len(ins) == 2:
            nid = self.add_node(ADD, label, ins, out, in_t)
        elif name == "cat":
            dim = kwargs.get("dim", args[1] if len(args) > 1 else 0)
            nid = self.add_node(CAT, label, ins, out, in_t, attrs={"dim": int(dim)})
        elif name in _SHAPE:
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
        elif name in _POOL_FN or "pool" in name:
            nid = self.add_node(POOL, label, ins, out, in_t, attrs=_pool_fn_attrs(name, args, kwargs))
        elif name in _DROPOUT_FN:
            p = kwargs.get("p", args[1] if len(args) > 1 and isinstance(args[1], float) else 0.5)
            nid = self.add_node(PASS, label, ins, out, in_t, attrs={"fn": name, "p": p})
        elif name in _ACT_FN:
            nid = self.add_node(ELEMENTWISE, label, ins, out, in_t, attrs={"fn": name, "act": True})
        else:
            nid = self.add_node(ELEMENTWISE, label, ins, out, in_t, attrs={"fn": name})
        self._tag(out, nid)


def _pair(v, n: int = 2) -> tuple[int, ...]:
    if isinstance(v, (tuple, list)):
        return tuple(int(x) for x in v)
    return (int(v),) * n


def _pool_attrs(m: nn.Module) -> dict:
    n = 1 if isinstance(m, (nn.AvgPool1d, nn.MaxPool1d)) else 2
    k = _pair(m.kernel_size, n)
    return {"pool": "max" if isinstance(m, (nn.MaxPool1d, nn.MaxPool2d)) else "avg",
            "kernel": k, "stride": _pair(m.stride or m.kernel_size, n),
            "padding": _pair(m.padding, n), "dims": n,
            "ceil_mode": bool(m.ceil_mode),
            "exact": not getattr(m, "count_include_pad", True) is False
            and getattr(m, "divisor_override", None) is None}


def _pool_fn_attrs(name: str, args, kwargs) -> dict:
    n = 1 if "1d" in name else 2
    names = ["input", "kernel_size", "stride", "padding"]
    vals = dict(zip(names, args))
    vals.update({k: v for k, v in kwargs.items() if k in names})
    k = _pair(vals.get("kernel_size", 2), n)
    s = vals.get("stride")
    return {"pool": "max" if "max" in name else "avg", "kernel": k,
            "stride": _pair(s, n) if s not in (None, [], ()) else k,
            "padding": _pair(vals.get("padding", 0), n), "dims": n,
            "ceil_mode": bool(kwargs.get("ceil_mode", False)),
            "exact": kwargs.get("divisor_override") is None}


def build_graph(model: nn.Module, example_input: torch.Tensor) -> ModelGraph:
    """Trace ``model`` on ``example_input`` (a batch; two samples are enough) into a graph.

    Event frames ``[B, T, C, H, W]`` given to a model that takes one frame per call are fed one
    frame; a model with its own time loop gets the input as it is. The model's training mode
    and neuron states are restored afterwards."""
    if not isinstance(model, nn.Module):
        raise UnsupportedModelError(f"the model must be a torch nn.Module, got "
                                    f"{type(model).__name__}; pass the network itself")
    if not isinstance(example_input, torch.Tensor) or example_input.dim() < 2:
        raise DPAPError("the example input must be a batched tensor [B, ...] (one or two samples "
                        "are enough)")
    x = example_input[:2]
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
    event = x.dim() == 5
    try:
        graph = _trace(model, x, tracer, event)
    finally:
        for h in hooks:
            h.remove()
        _restore_hooks(stashed)
        model.train(was)
        reset_states(model)
    graph.layers = find_layers(graph)
    return graph


def _stash_hooks(model: nn.Module) -> list:
    saved = []
    for m in model.modules():
        saved.append((m, dict(m._forward_hooks), dict(m._forward_pre_hooks)))
        m._forward_hooks.clear()
        m._forward_pre_hooks.clear()
    return saved


def _restore_hooks(saved: list) -> None:
    for m, fwd, pre in saved:
        m._forward_hooks.clear()
        m._forward_pre_hooks.clear()
        m._forward_hooks.update(fwd)
        m._forward_pre_hooks.update(pre)


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
        except (RuntimeError, ValueError, TypeError) as exc:
            if event:                      # a model that takes one frame per call
                tracer.__init__(model)
                frame = x[:, 0]
                inp = tracer.add_node(INPUT, "input", [], frame, [])
                tracer._tag(frame, inp)
                try:
                    result = model(frame)
                except (RuntimeError, ValueError, TypeError) as exc2:
                    raise _fit_error(frame, exc2) from None
            else:
                raise _fit_error(x, exc) from None
    calls = [c for c in tracer.calls.values()]
    if not calls:
        raise UnsupportedModelError("the model called no module on the example input")
    steps = max(calls)
    kind = "snn" if any(n.op == NEURON and n.adapter.kind == "snn" for n in tracer.nodes) else "ann"
    out_id, membrane = _output_node(tracer, result)
    tracer.nodes.append(Node(len(tracer.nodes), OUTPUT, "output", [out_id],
                             tracer.nodes[out_id].out_shape, [tracer.nodes[out_id].out_shape]))
    return ModelGraph(model=model, nodes=tracer.nodes, kind=kind, steps_per_call=steps,
                      output=out_id, input_shape=tracer.nodes[inp].out_shape,
                      output_membrane=membrane)


def _membrane(adapter, module: nn.Module, out):
    """The membrane a neuron call produced: the adapter's ``membrane(out)`` where it has one,
    else the last element of a tuple output (snnTorch returns ``(spk, ..., mem)``), else the
    state a hidden-state neuron keeps (``module.mem``)."""
    fn = getattr(adapter, "membrane", None)
    if fn is not None:
        return fn(out)
    if isinstance(out, tuple) and len(out) > 1:
        return out[-1]
    return getattr(module, "mem", None)


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


__all__ = ["build_graph"]
