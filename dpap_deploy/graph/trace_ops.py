"""What the tracer (``trace.py``) needs to know of torch's functions and layers: the names it
treats alike, the attributes it records for pooling, and hiding the model's hooks while it
traces."""
from __future__ import annotations

from torch import nn

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


def _pair(v, n: int = 2) -> tuple[int, ...]:
    if isinstance(v, (tuple, list)):
        return tuple(int(x) for x in v)
    return (int(v),) * n


def _dilation(v, n: int):
    """A pool's dilation as torch's modules hold it: an int for 1-d, a pair for 2-d."""
    d = _pair(v, n)
    return d[0] if n == 1 else d


def _exact_avg(padding: tuple[int, ...], count_include_pad, divisor_override) -> bool:
    """An average pool is a plain window mean (``sum / (kh kw)``, padding counted as zeros):
    ``count_include_pad=False`` divides by fewer near a padded edge (the same without padding);
    ``divisor_override`` divides by another number."""
    return divisor_override is None and (count_include_pad is not False or not any(padding))


def _pool_attrs(m: nn.Module) -> dict:
    n = 1 if isinstance(m, (nn.AvgPool1d, nn.MaxPool1d)) else 2
    k = _pair(m.kernel_size, n)
    pad = _pair(m.padding, n)
    is_max = isinstance(m, (nn.MaxPool1d, nn.MaxPool2d))
    return {"pool": "max" if is_max else "avg",
            "kernel": k, "stride": _pair(m.stride or m.kernel_size, n),
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
    k = _pair(vals.get("kernel_size", 2), n)
    s = vals.get("stride")
    pad = _pair(vals.get("padding", 0), n)
    return {"pool": "max" if is_max else "avg", "kernel": k,
            "stride": _pair(s, n) if s not in (None, [], ()) else k,
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
