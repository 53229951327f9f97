"""Saving and loading ``nn.Sequential`` models whose layer sizes are not the zoo's (compacted or
folded networks), in a format that ``torch.load(weights_only=True)`` reads: an architecture
spec of plain values plus the state dict. No pickled code. The file carries a content digest
(``checkpoint.content_digest``), checked when it is loaded, and a model whose weights, biases,
thresholds or decays are not finite is refused when it is loaded."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import snntorch as snn
import torch
from torch import nn

from .atomic import atomic_write_bytes
from .checkpoint import check_finite, safe_torch_load, verify_digest, with_digest
from .errors import CheckpointError, ConfigError, UnsupportedModelError
from .neurons import lif

FORMAT = "dpap-deploy-model"


def _t(v):
    return list(v) if isinstance(v, tuple) else v


def module_spec(m: nn.Module) -> dict[str, Any]:
    if isinstance(m, nn.Conv2d):
        return {"type": "Conv2d", "in": m.in_channels, "out": m.out_channels,
                "kernel": _t(m.kernel_size), "stride": _t(m.stride), "padding": _t(m.padding),
                "dilation": _t(m.dilation), "bias": m.bias is not None}
    if isinstance(m, nn.Linear):
        return {"type": "Linear", "in": m.in_features, "out": m.out_features,
                "bias": m.bias is not None}
    if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
        return {"type": type(m).__name__, "features": m.num_features, "eps": m.eps,
                "momentum": m.momentum, "affine": m.affine,
                "track_running_stats": m.track_running_stats}
    if isinstance(m, snn.Leaky):
        return {"type": "Leaky", "beta": float(m.beta), "threshold": float(m.threshold),
                "width": float(getattr(m.spike_grad, "width", 1.0))}
    if isinstance(m, (nn.AvgPool2d, nn.MaxPool2d)):
        return {"type": type(m).__name__, "kernel": _t(m.kernel_size),
                "stride": _t(m.stride)}
    if isinstance(m, nn.Flatten):
        return {"type": "Flatten", "start": m.start_dim, "end": m.end_dim}
    if isinstance(m, nn.Dropout):
        return {"type": "Dropout", "p": m.p}
    if isinstance(m, (nn.ReLU, nn.Identity)):
        return {"type": type(m).__name__}
    raise UnsupportedModelError(f"cannot save layer type '{type(m).__name__}'; save the model "
                                "with torch.save instead")


def _tuple(v):
    return tuple(v) if isinstance(v, list) else v


def build_module(spec: dict[str, Any]) -> nn.Module:
    t = spec["type"]
    if t == "Conv2d":
        return nn.Conv2d(spec["in"], spec["out"], _tuple(spec["kernel"]), _tuple(spec["stride"]),
                         _tuple(spec["padding"]), _tuple(spec["dilation"]), bias=spec["bias"])
    if t == "Linear":
        return nn.Linear(spec["in"], spec["out"], bias=spec["bias"])
    if t in ("BatchNorm1d", "BatchNorm2d"):
        return getattr(nn, t)(spec["features"], eps=spec["eps"], momentum=spec["momentum"],
                              affine=spec["affine"], track_running_stats=spec["track_running_stats"])
    if t == "Leaky":
        return lif(beta=spec["beta"], threshold=spec["threshold"], width=spec["width"])
    if t in ("AvgPool2d", "MaxPool2d"):
        return getattr(nn, t)(_tuple(spec["kernel"]), _tuple(spec["stride"]))
    if t == "Flatten":
        return nn.Flatten(spec["start"], spec["end"])
    if t == "Dropout":
        return nn.Dropout(spec["p"])
    if t in ("ReLU", "Identity"):
        return getattr(nn, t)()
    raise CheckpointError(f"unknown layer type {t!r} in a saved model")


def save_model(path: str | Path, model: nn.Module, kind: str, meta: dict | None = None) -> Path:
    if not isinstance(model, nn.Sequential):
        raise UnsupportedModelError(f"save_model handles nn.Sequential models, got "
                                    f"{type(model).__name__}; use torch.save for others")
    if kind not in ("snn", "ann"):
        raise ConfigError(f"kind {kind!r}: a saved model is 'snn' or 'ann'")
    spec = [module_spec(m) for m in model]
    data = with_digest({"format": FORMAT, "version": 1, "kind": kind, "spec": spec,
                        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
                        "meta": meta or {}})
    atomic_write_bytes(path, lambda fh: torch.save(data, fh))
    return Path(path)


def load_model(path: str | Path) -> tuple[nn.Sequential, str, dict]:
    """Returns ``(model, kind, meta)``; the model is in evaluation mode."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no saved model at {path}")
    data = safe_torch_load(path, "cpu", "model file")
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a model saved by dpap-deploy")
    verify_digest(data, path, "model file")
    _check_values(data, path)
    model = nn.Sequential(*[build_module(s) for s in data["spec"]])
    try:
        model.load_state_dict(data["state_dict"])
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: weights do not fit the saved architecture: "
                              f"{str(exc).splitlines()[0][:200]}") from None
    model.eval()
    return model, data["kind"], data["meta"]


def _check_values(data: dict, path: Path) -> None:
    """The spec is a list of layer tables, the state dict a table of tensors, all finite
    (the neurons' ``beta`` and ``threshold`` in the spec too)."""
    spec, state = data.get("spec"), data.get("state_dict")
    if not isinstance(spec, list) or not all(isinstance(s, dict) and "type" in s for s in spec) \
            or not isinstance(state, dict) or not isinstance(data.get("meta", {}), dict):
        raise CheckpointError(f"{path} is not a complete model file (no layer list, weights or "
                              "meta table); write it again with dpap-deploy")
    check_finite(state, str(path))
    for i, s in enumerate(spec):
        check_finite({f"layer {i} ({s['type']}) {k}": v for k, v in s.items()
                      if k in ("beta", "threshold")}, str(path))
