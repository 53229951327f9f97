"""Average pooling folded into synapses, for the deployment copy (``fold.fold_for_deployment``).

Average pooling without padding is linear, so where it meets a synapse it folds into one
(the arithmetic is ``pool_after_conv`` / ``pool_before_conv`` / ``pool_before_dense`` here,
shared with the netx writer; weights summed in float64, rounded once to float32):

- *over currents*, ``conv_{W,S,P}(x) -> avgpool_{k,s} -> ...`` (snnTorch's tutorial shape
  ``lif(F.avg_pool2d(conv(x), 2))``): one convolution with kernel ``(k - 1) S + K``, stride
  ``S s``, the same padding (any padding mode: it pads ``x``), the same bias and weights
  ``W'[v] = sum_{a < k} W[v - S a] / (k_h k_w)``. Its output size is the pool's,
  ``floor((floor((H + 2P - K) / S) + 1 - k) / s) + 1``. Rectangular, overlapping (``s != k``)
  and 1-D pools (after a ``Conv1d``) fold alike; the conv must be undilated with numeric padding;
- *over spikes* (or the input), ``avgpool_{k,k} -> [flatten] -> synapse``: into the synapse it
  feeds (a conv ``(K, S, P)`` becomes ``(K k, S k, P k)``, a padded conv only on a map that is
  a multiple of ``k``; a ``Linear`` after ``Flatten`` gets each pooled column spread over its
  window), as before.

A pool is a plain window mean only without padding, without a ``divisor_override`` and without
``ceil_mode``'s partial last window (``ceil_mode=True`` is exact where the windows tile the map:
``(H - k) % s == 0``). A pool that does not fold exactly stays in the deployment network,
unfolded (``PoolFold.kept`` says why); the targets then take it as a pooling stage or refuse it
themselves.

A folded module pool becomes ``nn.Identity`` (module names stay). A *functional* pool over
currents (``F.avg_pool2d(self.conv1(x), 2)``) is a call in the user's ``forward``: the conv
becomes a ``PooledConv`` (the composed conv, marking its output), and the copy's class becomes a
subclass of the user's class (``folded_class``) whose ``forward`` runs the user's ``forward``
with every average-pool call on a marked output answered by that output itself: the pool
happened in the conv. Such a copy runs, traces and deep-copies as the original; it cannot be
pickled by reference (``torch.save(model)``), its class being made at run time.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from ..errors import UnsupportedModelError
from ..graph import ModelGraph, build_graph
from ..graph.model_graph import FLATTEN, PASS, POOL, SYNAPSE
from ..graph.trace_ops import pair as _pair
from .surgery import replace_module


@dataclass
class PoolFold:
    """What ``fold_avgpool`` did: the pools folded (and into which synapse) and the pools kept,
    each with its one-line reason."""

    folded: dict[str, str] = field(default_factory=dict)      # pool -> synapse
    kept: dict[str, str] = field(default_factory=dict)        # pool -> reason


@torch.no_grad()
def pool_after_conv(weight: torch.Tensor, stride: tuple[int, int],
                    kernel: tuple[int, int]) -> torch.Tensor:
    """The kernel of ``avgpool_kernel(conv_{weight, stride}(x))`` as one convolution (stride
    ``stride * pool stride``, padding unchanged): ``W'[v] = sum_{a < k} W[v - S a] / (k_h k_w)``,
    of shape ``[Co, Ci, (k_h - 1) S_h + K_h, (k_w - 1) S_w + K_w]``; summed in float64, then
    rounded once to ``weight``'s dtype."""
    kh, kw = kernel
    co, ci, fh, fw = weight.shape
    box = torch.full((1, 1, kh, kw), 1.0 / (kh * kw), dtype=torch.float64, device=weight.device)
    w = F.conv_transpose2d(box, weight.double().reshape(1, co * ci, fh, fw), stride=tuple(stride))
    return w.reshape(co, ci, *w.shape[-2:]).to(weight.dtype)


@torch.no_grad()
def pool_before_conv(weight: torch.Tensor, kernel: tuple[int, int]) -> torch.Tensor:
    """The kernel of ``conv_weight(avgpool_kernel(x))`` (pool stride = kernel) as one
    convolution on the unpooled map (stride and padding times the kernel):
    ``W'[v] = W[v // k] / (k_h k_w)``, shape ``[Co, Ci, K_h k_h, K_w k_w]``."""
    kh, kw = kernel
    co, ci, fh, fw = weight.shape
    box = torch.full((1, 1, kh, kw), 1.0 / (kh * kw), dtype=torch.float64, device=weight.device)
    wk = F.conv_transpose2d(weight.double().reshape(co * ci, 1, fh, fw), box, stride=(kh, kw))
    return wk.reshape(co, ci, *wk.shape[-2:]).to(weight.dtype)


@torch.no_grad()
def pool_before_dense(weight: torch.Tensor, in_shape: tuple[int, int, int],
                      kernel: tuple[int, int]) -> torch.Tensor:
    """The weight of ``linear(flatten(avgpool_kernel(x)))`` (pool stride = kernel) on the
    flattened unpooled map ``in_shape = (C, H, W)``: each pooled column spread over its
    ``k_h x k_w`` source pixels, divided by ``k_h k_w``; rows and columns the pool drops get
    zero weights. Shape ``[O, C H W]``."""
    (c, h, w), (kh, kw) = in_shape, kernel
    hp, wp = h // kh, w // kw
    wl = weight.double().view(weight.shape[0], c, hp, wp)
    spread = wl.repeat_interleave(kh, 2).repeat_interleave(kw, 3) / (kh * kw)
    return F.pad(spread, (0, w - wp * kw, 0, h - hp * kh)).reshape(weight.shape[0],
                                                                    -1).to(weight.dtype)


def _what(pool) -> str:
    if pool.module is not None:
        return f"{type(pool.module).__name__} '{pool.name}'"
    return f"F.avg_pool{pool.attrs.get('dims', 2)}d '{pool.name}'"


def window_reason(pool) -> str | None:
    """Why the pool is not a plain mean over full windows (``None`` if it is)."""
    a, what = pool.attrs, _what(pool)
    k, s, p = tuple(a["kernel"]), tuple(a["stride"]), tuple(a["padding"])
    if any(p):
        return (f"cannot fold {what}: padding {p} pads the pooled map with zeros that are no "
                "output of the layer before it; use padding=0 to fold it into the synapse")
    divisor = getattr(pool.module, "divisor_override", None) if pool.module is not None else \
        (None if a.get("exact", True) else "set")
    if divisor is not None:
        return (f"cannot fold {what}: divisor_override={divisor} divides by another count than "
                "the window's; drop divisor_override to fold it into the synapse")
    size = tuple(pool.in_shape[-len(k):])
    if a.get("ceil_mode") and any((n - kk) % ss for n, kk, ss in zip(size, k, s)):
        return (f"cannot fold {what}: ceil_mode=True on the {'x'.join(map(str, size))} map "
                f"(kernel {k}, stride {s}) adds a partial last window, a mean over fewer "
                "values; use ceil_mode=False to fold it into the synapse")
    return None


def _alone(graph: ModelGraph, cons, start: int, stop: int) -> bool:
    """The path from node ``start`` forward to ``stop`` is a chain (no branching)."""
    cur = start
    while cur != stop:
        if len(cons[cur]) != 1:
            return False
        cur = cons[cur][0]
    return True


def _conv_before(graph: ModelGraph, pool):
    """The conv whose output current the pool averages (through pass-through nodes, e.g. a
    folded BatchNorm), or ``None`` when the pool's input is not a synapse's current."""
    node = pool
    while len(node.inputs) == 1:
        node = graph.nodes[node.inputs[0]]
        if node.op == SYNAPSE:
            return node if _alone(graph, graph.consumers(), node.id, pool.id) else None
        if node.op != PASS:
            return None
    return None


@torch.no_grad()
def _compose_after(model: nn.Module, conv_node, pool) -> str | None:
    """Fold a pool over currents into the conv before it (module docstring)."""
    conv, what = conv_node.module, _what(pool)
    if not isinstance(conv, (nn.Conv1d, nn.Conv2d)):
        return (f"cannot fold {what}: it averages the output of "
                f"{type(conv).__name__} '{conv_node.name}', not of a convolution")
    if isinstance(conv.padding, str) and conv.padding != "valid" or \
            any(d != 1 for d in conv.dilation):
        return (f"cannot fold {what} into '{conv_node.name}' (padding={conv.padding!r}, "
                f"dilation={tuple(conv.dilation)}): use numeric padding and no dilation")
    one_d = isinstance(conv, nn.Conv1d)
    w = conv.weight.unsqueeze(2) if one_d else conv.weight
    stride = (1, conv.stride[0]) if one_d else _pair(conv.stride)
    kernel = (1,) + tuple(pool.attrs["kernel"]) if one_d else tuple(pool.attrs["kernel"])
    ps = (1,) + tuple(pool.attrs["stride"]) if one_d else tuple(pool.attrs["stride"])
    wk = pool_after_conv(w, stride, kernel)
    wk = wk.squeeze(2) if one_d else wk
    new_stride = tuple(s * p for s, p in zip(stride, ps))
    cls = type(conv) if pool.module is not None else (PooledConv1d if one_d else PooledConv2d)
    pad = 0 if conv.padding == "valid" else conv.padding
    new = cls(conv.in_channels, conv.out_channels, tuple(wk.shape[2:]),
              stride=new_stride[1:] if one_d else new_stride, padding=pad,
              groups=conv.groups, bias=conv.bias is not None, padding_mode=conv.padding_mode,
              device=wk.device, dtype=wk.dtype)
    new.weight.copy_(wk)
    if conv.bias is not None:
        new.bias.copy_(conv.bias)         # the window's weights sum to 1: bias unchanged
    replace_module(model, conv_node.name, new)
    return None


@torch.no_grad()
def _fold_before(model: nn.Module, graph: ModelGraph, pool) -> tuple[str | None, str | None]:
    """Fold a pool over spikes into the synapse it feeds: ``(synapse name, None)`` or
    ``(None, reason)``."""
    a, what = pool.attrs, _what(pool)
    if pool.module is None:
        return None, (f"cannot fold {what}: a functional pool over spikes stays a call of the "
                      "model's forward; use an nn.AvgPool2d module to fold it into weights")
    if a.get("dims") != 2 or tuple(a["kernel"]) != tuple(a["stride"]):
        return None, (f"cannot fold {what} (kernel {tuple(a['kernel'])}, stride "
                      f"{tuple(a['stride'])}) into the synapse after it: only a 2-D pool with "
                      "stride = kernel folds there")
    cons, cur, flattened = graph.consumers(), pool, False
    while True:
        nxt = cons[cur.id]
        if len(nxt) != 1:
            return None, f"cannot fold {what}: its output feeds several layers"
        cur = graph.nodes[nxt[0]]
        if cur.op == FLATTEN:
            flattened = True
        elif cur.op != PASS:
            break
    syn, name = cur.module, cur.name
    (kh, kw), (c, h, w) = tuple(a["kernel"]), tuple(pool.in_shape)
    if cur.op != SYNAPSE:
        return None, f"cannot fold {what}: it feeds '{name}', not a Conv2d or Linear"
    if isinstance(syn, nn.Conv2d) and not flattened:
        pad = _pair(syn.padding) if not isinstance(syn.padding, str) else None
        if pad is None or _pair(syn.dilation) != (1, 1) or syn.groups != 1:
            return None, (f"cannot fold {what} into the conv '{name}' (padding={syn.padding!r}, "
                          f"dilation={syn.dilation}, groups={syn.groups})")
        if pad != (0, 0) and (h % kh or w % kw):
            return None, (f"cannot fold {what} into the padded conv '{name}': the {h}x{w} map "
                          f"is not a multiple of the pool size {kh}x{kw}")
        wk = pool_before_conv(syn.weight, (kh, kw))
        new = nn.Conv2d(syn.in_channels, syn.out_channels, tuple(wk.shape[-2:]),
                        stride=(syn.stride[0] * kh, syn.stride[1] * kw),
                        padding=(pad[0] * kh, pad[1] * kw), bias=syn.bias is not None,
                        device=wk.device, dtype=wk.dtype)
    elif isinstance(syn, nn.Linear) and flattened:
        wk = pool_before_dense(syn.weight, (c, h, w), (kh, kw))
        new = nn.Linear(c * h * w, syn.out_features, bias=syn.bias is not None,
                        device=wk.device, dtype=wk.dtype)
    else:
        return None, f"cannot fold {what} into '{name}' ({type(syn).__name__})"
    new.weight.copy_(wk)
    if syn.bias is not None:
        new.bias.copy_(syn.bias)
    replace_module(model, name, new)
    replace_module(model, pool.name, nn.Identity())
    return name, None


def _fold_one(model: nn.Module, graph: ModelGraph, pool) -> tuple[str | None, str | None]:
    """``(synapse it folded into, None)`` or ``(None, why it stays)``."""
    reason = window_reason(pool)
    if reason:
        return None, reason
    conv = _conv_before(graph, pool)
    if conv is None:
        return _fold_before(model, graph, pool)
    reason = _compose_after(model, conv, pool)
    if reason:
        return None, reason
    if pool.module is not None:
        replace_module(model, pool.name, nn.Identity())
    else:
        _skip_functional_pools(model)
    return conv.name, None


def fold_avgpool(model: nn.Module, graph: ModelGraph, example_input: torch.Tensor,
                 record: PoolFold | None = None, strict: bool = False) -> ModelGraph:
    """In place: fold every average pool that folds exactly (module docstring), last pool
    first; returns the graph of the folded model. Pools that do not fold stay, their reasons
    in ``record.kept``; ``strict``: raise ``UnsupportedModelError`` with the first reason
    instead."""
    record = record if record is not None else PoolFold()
    while True:                 # sweeps until one folds nothing (a fold may free another pool)
        record.kept.clear()
        j, changed = None, False
        while True:
            pools = [n for n in graph.nodes if n.op == POOL and n.attrs.get("pool") == "avg"]
            j = len(pools) - 1 if j is None else j - 1     # pools before j keep their index
            if j < 0:
                break
            syn, reason = _fold_one(model, graph, pools[j])
            if reason:
                record.kept[pools[j].name] = reason
                continue
            record.folded[pools[j].name], changed = syn, True
            graph = build_graph(model, example_input, time_axis=graph.time_axis)
        if not changed:
            break
    if strict and record.kept:
        raise UnsupportedModelError(next(iter(record.kept.values())))
    return graph


# ------------------------------------------------------------------ functional pools
class _PooledMixin:
    """A conv whose pool (a functional call after it) is folded into its weights: its output
    is remembered so that the model's forward can skip that call (``_SkipFoldedPools``)."""

    def forward(self, x):
        out = super().forward(x)
        _MARKED.add(out)
        return out


class PooledConv1d(_PooledMixin, nn.Conv1d):
    """``nn.Conv1d`` holding a folded functional average pool (module docstring)."""


class PooledConv2d(_PooledMixin, nn.Conv2d):
    """``nn.Conv2d`` holding a folded functional average pool (module docstring)."""


class _Marked:
    """The outputs of ``PooledConv`` modules in the running forward (compared by identity)."""

    def __init__(self):
        self.items: list[torch.Tensor] = []
        self.depth = 0

    def add(self, t: torch.Tensor) -> None:
        if self.depth:
            self.items.append(t)

    def holds(self, t) -> bool:
        return any(t is m for m in self.items)


_MARKED = _Marked()
_AVG = {F.avg_pool1d, F.avg_pool2d, torch.avg_pool1d}


class _SkipFoldedPools(TorchFunctionMode):
    """An average-pool call on a ``PooledConv`` output returns that output: the pool is in the
    conv's weights. Every other call runs unchanged."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if (func in _AVG or getattr(func, "__name__", "") in ("avg_pool1d", "avg_pool2d")) \
                and args and _MARKED.holds(args[0]):
            return args[0]
        return func(*args, **kwargs)


class _FoldedForward:
    """Runs the user's ``forward`` with the folded functional pools skipped."""

    def forward(self, *args, **kwargs):
        _MARKED.depth += 1
        try:
            with _SkipFoldedPools():
                return super().forward(*args, **kwargs)
        finally:
            _MARKED.depth -= 1
            if not _MARKED.depth:
                _MARKED.items.clear()


_CLASSES: dict[type, type] = {}


def folded_class(cls: type) -> type:
    """The subclass of ``cls`` whose forward skips folded functional pools (one per class)."""
    if issubclass(cls, _FoldedForward):
        return cls
    if cls not in _CLASSES:
        _CLASSES[cls] = type(cls.__name__, (_FoldedForward, cls),
                             {"__module__": cls.__module__, "__doc__": cls.__doc__})
    return _CLASSES[cls]


def _skip_functional_pools(model: nn.Module) -> None:
    model.__class__ = folded_class(type(model))
