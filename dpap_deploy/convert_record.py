"""A run folder's record of what ``make_deployable`` replaced (``checkpoint["conversion"]``):
written by ``convert_run``, applied by ``trained.load_trained`` when it rebuilds the run's
model from its zoo name."""
from __future__ import annotations

from torch import nn

from .convert_neurons import rebuild
from .convert_pools import PoolSwapped, avg_module, set_module
from .errors import CheckpointError, UnsupportedModelError


def conversion_record(original: nn.Module, converted: nn.Module) -> list[dict]:
    """The modules ``converted`` replaced in ``original`` (the same module names)."""
    if isinstance(converted, PoolSwapped):
        raise UnsupportedModelError("the run's model calls F.max_pool in its forward, which a "
                                    "run folder cannot record; convert it with "
                                    "make_deployable in Python")
    new = dict(converted.named_modules())
    record = []
    for name, old in original.named_modules():
        m = new.get(name)
        if m is None or m is old or not name:
            continue
        if isinstance(old, (nn.MaxPool1d, nn.MaxPool2d)) and \
                isinstance(m, (nn.AvgPool1d, nn.AvgPool2d)):
            record.append({"module": name, "op": "avg_pool"})
        elif type(m) is type(old) and hasattr(m, "reset_mechanism"):
            if (m.reset_mechanism, getattr(m, "reset_delay", None)) != \
                    (old.reset_mechanism, getattr(old, "reset_delay", None)):
                record.append({"module": name, "op": "neuron",
                               "reset_mechanism": str(m.reset_mechanism),
                               "reset_delay": bool(getattr(m, "reset_delay", False))})
        elif type(m) is not type(old):
            raise UnsupportedModelError(
                f"'{name}' became {type(m).__name__} (was {type(old).__name__}), which a run "
                "folder cannot record; convert it with make_deployable in Python")
    return record


def apply_conversion(model: nn.Module, record: list[dict] | None) -> nn.Module:
    """Replace, in ``model`` (rebuilt from a run's zoo name), what ``record`` says."""
    modules = dict(model.named_modules())
    for entry in record or []:
        name, op = entry.get("module"), entry.get("op")
        m = modules.get(name) if isinstance(name, str) else None
        if op == "avg_pool" and isinstance(m, (nn.MaxPool1d, nn.MaxPool2d)):
            set_module(model, name, avg_module(m))
        elif op == "neuron" and hasattr(m, "reset_mechanism"):
            set_module(model, name, rebuild(m, type(m),
                                            reset_mechanism=entry["reset_mechanism"],
                                            reset_delay=entry["reset_delay"]))
        else:
            raise CheckpointError(f"the conversion record entry {entry!r} does not fit the "
                                  "run's model; the checkpoint is damaged")
    return model
