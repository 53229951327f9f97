"""What the tracer (``trace.py``) knows of torch's functions and layers: what each function
it sees between modules is to the graph (keyed on the function object itself, never its name),
the attributes it records for pooling, and hiding the model's hooks while it traces. A function
not in the table is refused at trace time (``unknown``): the graph cannot tell how it moves
channels, and a wrong guess would only show later, as a compacted network that computes
something else."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import resolve_name

from .model_graph import ADD, CAT, ELEMENTWISE, POOL

# what a function is to the graph: a node op (ADD, CAT, POOL, ELEMENTWISE) or one of these
SAME = "same"            # passes its tensor through (a copy, another dtype or device)
IGNORE = "ignore"        # makes no data of this step (``zeros_like``, ``stack`` of records)
SHAPE, DROPOUT, ACT, INDEX = "shape", "dropout", "act", "index"


def _fns(kind: str, names: str, *owners) -> dict:
    """``{function: (kind, name)}`` for each of ``names`` that ``torch``, ``torch.Tensor`` or
    ``torch.nn.functional`` (or ``owners``) has."""
    return {getattr(o, n): (kind, n) for n in names.split()
            for o in owners or (torch, torch.Tensor, F) if hasattr(o, n)}


OPS: dict = {
    **_fns(SAME, "detach clone contiguous to float double half bfloat16 type_as cpu cuda "
                 "requires_grad_ detach_ data", torch.Tensor),
    **_fns(SAME, "detach clone"),
    **_fns(IGNORE, "stack zeros_like ones_like full_like empty_like new_zeros new_ones "
                   "new_full new_empty __setitem__"),
    **_fns(ADD, "add __add__ __radd__ __iadd__ add_"),
    **_fns(CAT, "cat concat concatenate", torch),
    **_fns(SHAPE, "flatten view reshape squeeze unsqueeze"),
    **_fns(POOL, "max_pool1d max_pool2d avg_pool1d avg_pool2d max_pool1d_with_indices "
                 "max_pool2d_with_indices _max_pool1d _max_pool2d"),
    **_fns(DROPOUT, "dropout dropout1d dropout2d feature_dropout alpha_dropout", torch, F),
    **_fns(ACT, "relu relu_ gelu silu sigmoid tanh leaky_relu elu hardtanh relu6 softplus"),
    **_fns(ELEMENTWISE, "mul __mul__ __rmul__ mul_ __imul__ div __truediv__ __rtruediv__ div_ "
                        "true_divide sub __sub__ __rsub__ sub_ __isub__ neg __neg__ abs __abs__ "
                        "exp exp2 expm1 log log1p log2 pow __pow__ __rpow__ sqrt rsqrt square "
                        "reciprocal sign sgn heaviside clamp clip clamp_min clamp_max clamp_ "
                        "round floor ceil trunc sin cos erf where maximum minimum "
                        "gt ge lt le eq ne __gt__ __ge__ __lt__ __le__ __eq__ __ne__ "
                        "logical_not logical_and logical_or __invert__ __and__ __or__ "
                        "bernoulli hardsigmoid hardswish mish softsign tanhshrink logsigmoid "
                        "sigmoid_ tanh_"),
    **_fns(ELEMENTWISE, "bool long int", torch.Tensor),       # (torch.bool ... are dtypes)
    torch.Tensor.__getitem__: (INDEX, "__getitem__"),
}

# mixes channels, but keeps which one is largest: taken as the model's last operation only
OUTPUT_ONLY = set(_fns(ELEMENTWISE, "softmax log_softmax"))

# a better form for functions often met (the generic advice is below)
HINTS = {
    **{f: "use nn.Linear / nn.Conv1d / nn.Conv2d modules for the weights (the graph prunes "
          "modules)" for f in (F.linear, F.conv1d, F.conv2d, torch.matmul, torch.Tensor.matmul,
                               torch.mm, torch.Tensor.__matmul__, torch.bmm)},
    **{f: "use nn.AvgPool2d / nn.MaxPool2d (or F.avg_pool2d / F.max_pool2d) with a fixed kernel "
          "(input size / output size)" for f in (F.adaptive_avg_pool1d, F.adaptive_avg_pool2d,
                                                 F.adaptive_max_pool1d, F.adaptive_max_pool2d)},
    **{f: "apply it to what the model returns (as its last operation, or outside the model)"
       for f in OUTPUT_ONLY},
    F.batch_norm: "use nn.BatchNorm1d / nn.BatchNorm2d modules",
    torch.Tensor.__getitem__: "index only the model's input (x[t], x[:, t] for a time step); "
                              "take channels with a module (nn.Linear, nn.Conv2d), not a slice",
}


def op_of(func) -> tuple[str, str] | None:
    """``(kind, name)`` of a function the tracer saw, ``None`` if it is not in ``OPS``. A
    property read (``x.data``) arrives as its descriptor's ``__get__``."""
    key = func.__self__ if type(func).__name__ == "method-wrapper" else func
    try:
        return OPS.get(key)
    except TypeError:          # an unhashable callable: not one of torch's
        return None


def describe(func) -> str:
    """The function as a user writes it: ``torch.cumsum``, ``torch.Tensor.T``."""
    try:
        name = resolve_name(func)
    except Exception:          # pragma: no cover - resolve_name reads attributes only
        name = None
    if name is None:
        name = getattr(func, "__qualname__", None) or getattr(func, "__name__", None) or repr(func)
    return name.removesuffix(".__get__")


def pair(v, n: int = 2) -> tuple[int, ...]:
    """A kernel size, stride or padding as a tuple of ``n`` ints (torch takes an int for all)."""
    if isinstance(v, (tuple, list)):
        return tuple(int(x) for x in v)
    return (int(v),) * n


def _dilation(v, n: int):
    """A pool's dilation as torch's modules hold it: an int for 1-d, a pair for 2-d."""
    d = pair(v, n)
    return d[0] if n == 1 else d


def _exact_avg(padding: tuple[int, ...], count_include_pad, divisor_override) -> bool:
    """An average pool is a plain window mean (``sum / (kh kw)``, padding counted as zeros):
    ``count_include_pad=False`` divides by fewer near a padded edge (the same without padding);
    ``divisor_override`` divides by another number."""
    return divisor_override is None and (count_include_pad is not False or not any(padding))


def _pool_attrs(m: nn.Module) -> dict:
    n = 1 if isinstance(m, (nn.AvgPool1d, nn.MaxPool1d)) else 2
    k = pair(m.kernel_size, n)
    pad = pair(m.padding, n)
    is_max = isinstance(m, (nn.MaxPool1d, nn.MaxPool2d))
    return {"pool": "max" if is_max else "avg",
            "kernel": k, "stride": pair(m.stride or m.kernel_size, n),
            "padding": pad, "dims": n,
            "dilation": _dilation(m.dilation if is_max else 1, n),
            "ceil_mode": bool(m.ceil_mode),
            "count_include_pad": bool(getattr(m, "count_include_pad", True)),
            "divisor_override": getattr(m, "divisor_override", None),
            "exact": is_max or _exact_avg(pad, getattr(m, "count_include_pad", True),
                                          getattr(m, "divisor_override", None))}


# torch.nn.functional's pooling signatures (after ``input``), positional order
_MAX_ARGS = ("kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices")
_AVG_ARGS = ("kernel_size", "stride", "padding", "ceil_mode", "count_include_pad",
             "divisor_override")


def _pool_fn_attrs(name: str, args, kwargs) -> dict:
    """The attributes of a functional pooling call, given positionally or by keyword:
    ``F.max_pool2d(x, k, stride, padding, dilation, ceil_mode)``,
    ``F.avg_pool2d(x, k, stride, padding, ceil_mode, count_include_pad, divisor_override)``."""
    n = 1 if "1d" in name else 2
    is_max = "max" in name
    vals = dict(zip(_MAX_ARGS if is_max else _AVG_ARGS, args[1:]))
    vals.update(kwargs)
    k = pair(vals.get("kernel_size", 2), n)
    s = vals.get("stride")
    pad = pair(vals.get("padding", 0), n)
    return {"pool": "max" if is_max else "avg", "kernel": k,
            "stride": pair(s, n) if s not in (None, [], ()) else k,
            "padding": pad, "dims": n,
            "dilation": _dilation(vals.get("dilation", 1) if is_max else 1, n),
            "ceil_mode": bool(vals.get("ceil_mode", False)),
            "count_include_pad": bool(vals.get("count_include_pad", True)),
            "divisor_override": vals.get("divisor_override"),
            "exact": is_max or _exact_avg(pad, vals.get("count_include_pad", True),
                                          vals.get("divisor_override"))}


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
