"""DPAP hyperparameters: plain dataclasses, validated on construction.

Survival-function parameters are set per layer kind (conv, linear), as in the paper
(C = 5 for conv layers, C = 2 for fully connected layers). Defaults are the calibrated values of
``method.md`` section 4 (p75 normalisation, digits-sized SNN); see ``docs/method.md`` for the
presets and what each parameter does.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Mapping

from ..errors import ConfigError
from ..validate import check_field_types

RULES = ("bcm", "hebb", "stdp")
NORMALIZATIONS = ("p75", "minmax")


@dataclass(frozen=True)
class SurvivalParams:
    """Survival-function parameters of one layer kind (paper Eq 12-17).

    ``delta = 2 * Normalized(x) - epsilon``; ``dF = delta + C if delta >= 0 else delta``;
    ``F = gamma * F + exp(-(epoch - warmup) / eta) * dF`` for ``epoch >= warmup``; ``F`` starts
    at ``beta``; an element with ``F < 0`` is pruned.
    """

    epsilon: float
    eta: float
    beta: float = 10.0
    gamma: float = 0.999
    C: float = 2.0
    warmup: int = 2

    def __post_init__(self) -> None:
        check_field_types(self, "DPAP hyperparameter")
        _check(math.isfinite(self.epsilon) and 0.0 <= self.epsilon <= 2.0, "epsilon", self.epsilon,
               "must be in [0, 2] (delta = 2*Normalized - epsilon; above 2 every element decays)")
        _check(math.isfinite(self.eta) and self.eta > 0, "eta", self.eta, "must be > 0")
        _check(math.isfinite(self.beta) and self.beta > 0, "beta", self.beta,
               "must be > 0 (survival functions start at beta)")
        _check(0.0 < self.gamma <= 1.0, "gamma", self.gamma, "must be in (0, 1]")
        _check(math.isfinite(self.C) and self.C >= 0, "C", self.C, "must be >= 0")
        _check(isinstance(self.warmup, int) and not isinstance(self.warmup, bool)
               and self.warmup >= 0, "warmup", self.warmup, "must be an integer >= 0")


def _check(ok: bool, name: str, value: Any, why: str) -> None:
    if not ok:
        raise ConfigError(f"invalid DPAP hyperparameter {name}={value!r}: {why}")


@dataclass(frozen=True)
class DPAPConfig:
    """Everything DPAP needs besides the model.

    ``rule``: synaptic plasticity measure, ``bcm`` (paper default), ``hebb`` or ``stdp``.
    ``normalization``: ``p75`` (``clip((x-min)/(p75-min), 0, 1)`` over alive elements, the
    default) or ``minmax``. ``tau``: spiking-trace decay (Eq 5-6).
    ``prune_output_synapses``: also prune the output layer's synapses (its neurons never are).
    ``mask_dead_synapses_in_spine``: pruned synapses contribute nothing to a neuron's spine
    importance (Eq 11 sums over the synapses that still exist).
    """

    conv: SurvivalParams = field(default_factory=lambda: SurvivalParams(
        epsilon=0.65, eta=12.0, beta=10.0, gamma=0.999, C=5.0, warmup=2))
    linear: SurvivalParams = field(default_factory=lambda: SurvivalParams(
        epsilon=1.5, eta=13.0, beta=10.0, gamma=0.999, C=2.0, warmup=2))
    rule: str = "bcm"
    normalization: str = "p75"
    tau: float = 0.5
    prune_output_synapses: bool = False
    mask_dead_synapses_in_spine: bool = True
    history_synapse_samples: int = 256

    def __post_init__(self) -> None:
        check_field_types(self, "DPAP option")
        _check(self.rule in RULES, "rule", self.rule, f"choose one of {', '.join(RULES)}")
        _check(self.normalization in NORMALIZATIONS, "normalization", self.normalization,
               f"choose one of {', '.join(NORMALIZATIONS)}")
        _check(0.0 <= self.tau < 1.0, "tau", self.tau, "must be in [0, 1)")
        _check(self.history_synapse_samples >= 0, "history_synapse_samples",
               self.history_synapse_samples, "must be >= 0")

    def params_for(self, layer_kind: str) -> SurvivalParams:
        return self.conv if layer_kind == "conv" else self.linear

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "DPAPConfig":
        """Build from a (possibly partial) mapping, e.g. the ``dpap`` table of a config file."""
        if not isinstance(data, Mapping):
            raise ConfigError(f"DPAP options must be a table (e.g. [dpap] in a TOML file), got "
                              f"{data!r}")
        data = dict(data)
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known - {"preset"})
        if unknown:
            raise ConfigError(f"unknown DPAP option(s) {', '.join(unknown)}; "
                              f"known: {', '.join(sorted(known | {'preset'}))}")
        name = data.pop("preset", "default")
        if not isinstance(name, str):
            raise ConfigError(f"invalid DPAP preset {name!r}: must be a name, one of "
                              f"{', '.join(PRESETS)}")
        base = preset(name)
        kw: dict[str, Any] = {}
        for kind in ("conv", "linear"):
            if kind in data:
                sub = data.pop(kind)
                if not isinstance(sub, Mapping):
                    raise ConfigError(f"DPAP option '{kind}' must be a table of survival "
                                      f"parameters, got {sub!r}")
                names = {f.name for f in fields(SurvivalParams)}
                bad = sorted(set(sub) - names)
                if bad:
                    raise ConfigError(f"unknown {kind} survival parameter(s) {', '.join(bad)}; "
                                      f"known: {', '.join(sorted(names))}")
                kw[kind] = replace(getattr(base, kind), **sub)
        kw.update(data)
        return replace(base, **kw)


def _default() -> DPAPConfig:
    return DPAPConfig()


# Presets. "default" is the calibration of method.md section 4 (p75 normalisation; with conv
# beta = 10 the smooth exponential can take a conv survival value down by at most
# 0.65 / (1 - e^(-1/12)) ~ 8.1, so conv channels survive: this preset prunes fully connected
# layers and conv kernels only). "conv-pruning" lowers conv beta so that channels can die.
# "ann" waits longer before pruning, as the ANN calibration did (warm-up 10).
# "short" is for runs of ~10-20 epochs: the decay time scale eta is the default's scaled to the
# run length (13 x 15 / 60 ~ 3) and beta is lowered with it, so pruning starts after the warm-up,
# levels off within the run and leaves time to recover (Fashion-MNIST LeNet / SNN: ~50-60%).
# Conv survival values can lose at most 0.65 / (1 - e^(-1/3)) ~ 2.3 < 3: conv layers survive.
PRESETS: dict[str, Any] = {
    "default": _default,
    "conv-pruning": lambda: replace(_default(), conv=replace(_default().conv, beta=6.0)),
    "ann": lambda: replace(_default(), conv=replace(_default().conv, warmup=10),
                          linear=replace(_default().linear, warmup=10)),
    "short": lambda: replace(_default(), conv=replace(_default().conv, eta=3.0, beta=3.0),
                             linear=replace(_default().linear, eta=3.0, beta=3.0)),
    "minmax": lambda: replace(_default(), normalization="minmax",
                              linear=replace(_default().linear, epsilon=0.2, beta=1.0)),
}


def preset(name: str) -> DPAPConfig:
    if name not in PRESETS:
        raise ConfigError(f"unknown DPAP preset {name!r}; choose one of {', '.join(PRESETS)}")
    return PRESETS[name]()
