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
