"""A trained run read back for the later stages: ``load_trained(source)``.

    trained = load_trained("runs/a")          # a run folder or its checkpoint.pt
    trained.model, trained.masks, trained.cfg.time_steps, trained.layer_stats

Only what compaction, counting, export and the report need: the model with its weights, the
pruning masks and the run's record (configuration, history, per-layer counts). No optimizer,
scheduler or pruner is built, no dataset is loaded, and the caller's random state is left
untouched (the model is built under ``torch.random.fork_rng``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import masks as mk
from .checkpoint import check_finite, load_checkpoint
from .errors import DPAPError
from .train_config import TrainConfig
from .validate import check_checkpoint_keys


@dataclass
class Trained:
    cfg: TrainConfig
    kind: str
    model: nn.Module                       # evaluation mode, on the CPU
    input_shape: tuple[int, ...]
    n_classes: int
    history: list[dict]
    layer_stats: list[dict]                # per prunable layer, under the masks (masks.layer_stats)
    masks: mk.Masks | None                 # None: the pruner stored none (zero weights tell)
    pruner_state: dict | None              # DPAP's state_dict (survival histories for plots)
    dpap_config: dict | None               # the resolved DPAP configuration, None without DPAP
    data_warnings: list[str] = field(default_factory=list)
    path: Path | None = None

    @property
    def epoch(self) -> int:
        return len(self.history)

    @property
    def params_total(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    @property
    def params_removed_fraction(self) -> float:
        return mk.removed_fraction(self.layer_stats, self.params_total)

    def load_data(self):
        """The run's dataset (its configured name, root and time steps)."""
        from .data import load_dataset
        return load_dataset(self.cfg.dataset, self.cfg.data_root, self.cfg.time_steps)


def load_trained(source: str | Path) -> Trained:
    """The model, masks and record of the run at ``source`` (a run folder or a checkpoint)."""
    from .graph import build_graph
    from .zoo import build_model
    ckpt = load_checkpoint(source)
    path = ckpt.get("path", "the checkpoint")
    check_checkpoint_keys(ckpt, path)
    check_record(ckpt, path)
    check_finite(ckpt["model"], str(path))
    cfg = TrainConfig.from_dict(dict(ckpt["train_config"]))
    shape, sample_shape, n_classes = _data_shape(ckpt, cfg)
    with torch.random.fork_rng(devices=[]):
        model, kind = build_model(cfg.model, shape, n_classes)
    if ckpt.get("conversion"):                 # a make-deployable run: its replaced ops
        from .convert_record import apply_conversion
        apply_conversion(model, ckpt["conversion"])
    model.eval()
    example = torch.zeros(2, *sample_shape)
    layers = build_graph(model, example).layers
    dpap_state = ckpt.get("dpap")
    if dpap_state is not None:
        mk.check_state(dpap_state, layers, path)
        migrate_kinds(dpap_state, ckpt["model"])
    pruner_state = dpap_state or ckpt.get("baseline") or {}
    masks = mk.from_dpap_state(pruner_state) if "layers" in pruner_state else None
    try:
        model.load_state_dict(ckpt["model"])
    except (KeyError, RuntimeError, ValueError, TypeError) as exc:
        first = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise DPAPError(f"{path} does not match its own model configuration: {first}; "
                        "train the run again") from None
    stats = ckpt.get("layer_stats")
    if not stats:             # a checkpoint from before they were stored; no masks: zero weights
        kept = masks or mk.from_weights(layers, units=True)
        stats = [mk.layer_stats(l, *kept[l.name]) for l in layers]
    return Trained(cfg=cfg, kind=kind, model=model, input_shape=tuple(shape),
                   n_classes=n_classes, history=list(ckpt["history"]), layer_stats=stats,
                   masks=masks, pruner_state=dpap_state,
                   dpap_config=(dpap_state or {}).get("config"),
                   data_warnings=list(ckpt.get("data_warnings", [])), path=Path(path))


def _is_list_of(v: Any, kind: type) -> bool:
    return isinstance(v, list) and all(isinstance(e, kind) for e in v)


# The record's fields and what each must be (checked before anything is built or written).
_RECORD = {"history": (lambda v: _is_list_of(v, dict), "a list of per-epoch tables"),
           "model": (lambda v: isinstance(v, dict)
                     and all(isinstance(t, torch.Tensor) for t in v.values()),
                     "a table of tensors (the state dict)"),
           "kind": (lambda v: v in ("snn", "ann"), "'snn' or 'ann'"),
           "layer_stats": (lambda v: v is None or _is_list_of(v, dict),
                           "a list of per-layer tables"),
           "data_warnings": (lambda v: _is_list_of(v, str), "a list of strings"),
           "data_shape": (lambda v: v is None or _is_data_shape(v),
                          "a table of input_shape, sample_shape (lists of integers) and n_classes"),
           "dpap": (lambda v: v is None or isinstance(v, dict), "a table (DPAP's state)"),
           "conversion": (lambda v: v is None or _is_list_of(v, dict),
                          "a list of replaced modules"),
           "baseline": (lambda v: v is None or isinstance(v, dict), "a table (the baseline's "
                                                                      "state)")}


def _is_data_shape(d: Any) -> bool:
    def ints(v):
        return _is_list_of(list(v) if isinstance(v, tuple) else v, int) and \
            all(not isinstance(e, bool) and e >= 1 for e in v)
    return isinstance(d, dict) and ints(d.get("input_shape")) and ints(d.get("sample_shape")) \
        and isinstance(d.get("n_classes"), int) and not isinstance(d["n_classes"], bool) \
        and d["n_classes"] >= 1


def check_record(ckpt: dict[str, Any], path) -> None:
    """Each record field of a checkpoint has its type (``history`` a list of tables, the state
    dict a table of tensors, ...): one line naming the field and its value, never a failure
    half-way through a later stage (after files were written)."""
    for key, (ok, want) in _RECORD.items():
        if key in ckpt and not ok(ckpt[key]):
            raise DPAPError(f"{path}: its {key} is {_show(ckpt[key])}, not {want}; the "
                            "checkpoint is damaged: restore it or train the run again")


def _show(v: Any) -> str:
    text = repr(v) if not isinstance(v, (dict, list)) else f"a {type(v).__name__} of {len(v)}"
    return f"{type(v).__name__} {text[:60]}" if not isinstance(v, (dict, list)) else text


def _data_shape(ckpt: dict[str, Any], cfg: TrainConfig):
    """``(frame shape, sample shape, classes)``, stored by training (a sample of event data is
    ``[T, C, H, W]``); checkpoints from before they were stored read them from the dataset."""
    d = ckpt.get("data_shape")
    if isinstance(d, dict):
        return (tuple(int(v) for v in d["input_shape"]), tuple(int(v) for v in d["sample_shape"]),
                int(d["n_classes"]))
    from .data import load_dataset
    data = load_dataset(cfg.dataset, cfg.data_root, cfg.time_steps)
    return tuple(data.input_shape), tuple(data.x_test.shape[1:]), data.n_classes


def migrate_kinds(state: dict, weights: dict) -> None:
    """Layer kinds in a DPAP state from before they were stored."""
    for d in state["layers"]:
        if "kind" not in d and f"{d['name']}.weight" in weights:
            d["kind"] = "conv" if weights[f"{d['name']}.weight"].dim() == 4 else "linear"
