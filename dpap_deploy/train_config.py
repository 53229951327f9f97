"""The options of one training run, as a plain validated dataclass (no torch import: the CLI
checks them before loading torch). ``training.py`` runs them."""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from .errors import ConfigError
from .validate import check_new_run_options, check_train_config, read_config_file

# Optimizer and learning-rate schedule (training/run.py builds them). "adam": Adam, no weight
# decay, cosine to 0 over the run. "braincog": the authors' code, AdamW with weight decay
# 0.01, 5 epochs of linear warm-up from 1e-6, then cosine to 1e-5; from_file also sets their
# lr (5e-3 * 50 / 1024) and batch size when not given.
OPTIMIZERS = ("adam", "braincog")
BRAINCOG_DEFAULTS = {"lr": 5e-3 * 50 / 1024, "batch_size": 50}


@dataclass
class TrainConfig:
    """One training run. ``dpap_config=None`` picks the preset for the model kind
    (``default`` for SNNs, ``ann`` for ANNs)."""

    dataset: str = "digits"
    data_root: str | None = None
    model: str = "snn-digits"
    epochs: int = 60
    batch_size: int = 64
    time_steps: int = 8
    lr: float = 5e-3
    seed: int = 0
    device: str = "auto"
    dpap: bool = True
    dpap_config: dict | None = None
    baseline: str | None = None          # a baselines.METHODS name instead of DPAP
    prune_target: float | None = None    # baseline: fraction of the target kind to remove
    prune_target_kind: str = "params"    # baseline: params, synops or macs (structured ones)
    prune_window: list | None = None     # baseline: [start, end] epochs of the schedule
    executor: str = "multistep"          # SNN time loop: "multistep" (a window per layer) or "step"
    precision: str = "fp32"              # autocast dtype of the training forward: fp32, bf16, fp16
    workers: int = 0                     # DataLoader worker processes (0: in-memory fast path)
    augment: bool | None = None          # random crop (pad 4) + flip; None: on for cifar10
    optimizer: str = "adam"              # OPTIMIZERS: adam (cosine to 0) or braincog (AdamW)

    # Names the user gave (a config file's keys and the overrides): a resumed run must match
    # them. Not a field: not saved, not compared; None means every field was given.
    given = None

    def __post_init__(self) -> None:
        check_train_config(self)
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"invalid optimizer {self.optimizer!r}: use {' or '.join(OPTIMIZERS)}")

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def augmenting(self) -> bool:
        return self.dataset == "cifar10" if self.augment is None else bool(self.augment)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        if not isinstance(d, dict):
            raise ConfigError(f"training options must be a table, got {type(d).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"unknown training option(s) {', '.join(unknown)}; "
                              f"known: {', '.join(sorted(known))}")
        return cls(**d)

    @classmethod
    def from_file(cls, path: str | None = None, **overrides) -> "TrainConfig":
        """Defaults < the TOML or JSON file at ``path`` (training options and a ``[dpap]``
        table) < ``overrides`` (``None`` values are ignored: options not given). ``rule``
        and ``preset`` overrides go into the ``[dpap]`` table; ``no_dpap=True`` turns DPAP off;
        ``optimizer="braincog"`` brings the authors' lr and batch size unless they are given.

            TrainConfig.from_file("run.toml", epochs=5, rule="hebb")
        """
        values: dict = {}
        dpap = None
        if path is not None:
            file_cfg = read_config_file(path)
            dpap = file_cfg.pop("dpap", None)
            values.update({k.replace("-", "_"): v for k, v in file_cfg.items()})
        table = {k: overrides.pop(k) for k in ("rule", "preset") if overrides.get(k) is not None}
        if overrides.pop("no_dpap", False):
            values["dpap"] = False
        values.update({k: v for k, v in overrides.items() if v is not None})
        if values.get("optimizer") == "braincog":
            values = {**BRAINCOG_DEFAULTS, **values}
        if table:
            dpap = {**(dpap or {}), **table}
        if dpap is not None:
            from .dpap.config import DPAPConfig
            DPAPConfig.from_dict(dpap)      # checked now, with its own one-line message
            values["dpap_config"] = dpap
        cfg = cls.from_dict(values)
        cfg.given = frozenset(values)
        check_new_run_options(cfg)
        return cfg
