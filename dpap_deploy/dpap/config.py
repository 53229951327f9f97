"""DPAP hyperparameters: plain dataclasses, validated on construction.

Survival-function parameters are set per layer kind (conv, linear), as in the paper
(C = 5 for conv layers, C = 2 for fully connected layers). Defaults are the calibrated values of
``method.md`` (p75 normalisation); conv ``beta`` is calibrated so that conv channels can be
pruned (``method.md``, "Conv-channel pruning"). See ``docs/method.md`` for the presets and what
each parameter does.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Mapping

from ..errors import ConfigError
from ..validate import check_field_types


# Conv survival start values. A conv element with no evidence (normalised importance 0 every
# epoch) loses at most epsilon * sum_k e^(-k/eta) = 0.65 / (1 - e^(-1/eta)) over a run:
# ~8.1 for eta = 12, ~2.3 for eta = 3. beta = 10 (eta 12) and 3 (eta 3) exceed those, so conv
# channels could never die; CONV_BETA and SHORT_CONV_BETA are below them, at the same fraction
# (~0.65) of the possible loss, so a conv channel at zero importance dies at epoch 14 (default)
# or 5 (short). SHORT_CONV_BETA is the calibrated value (docs/method.md); CONV_BETA is it scaled
# by the ratio of the two possible losses, (1 - e^(-1/3)) / (1 - e^(-1/12)) ~ 3.54.
CONV_BETA, SHORT_CONV_BETA = 5.3, 1.5
KEEP_CONV_BETA, SHORT_KEEP_CONV_BETA = 10.0, 3.0
NORMALIZATIONS = ("p75", "minmax")
# The switches between this project's reading of the paper (first value, the default) and the
# authors' code (second value); docs/method.md, "Switches: the authors' code".
DECAYS = ("smooth", "staircase")
MASK_TIMINGS = ("step", "epoch")
ACCUMULATIONS = ("epoch", "cumulative")
POPULATIONS = ("alive", "all")
IMPORTANCES = ("product", "minmax-product")
ZERO_RANGES = ("skip", "half")


@dataclass(frozen=True)
class SurvivalParams:
    """Survival-function parameters of one layer kind (paper Eq 12-17).

    ``delta = 2 * Normalized(x) - epsilon``; ``dF = delta + C if delta >= 0 else delta``;
    ``F = gamma * F + exp(-(epoch - warmup) / eta) * dF`` for ``epoch >= warmup``; ``F`` starts
    at ``beta``; an element with ``F < 0`` is pruned. ``decay``: ``smooth`` (that exponent) or
    ``staircase`` (the authors' code: ``exp(-floor((epoch - warmup) / eta))``).
    """

    epsilon: float
    eta: float
    beta: float = 10.0
    gamma: float = 0.999
    C: float = 2.0
    warmup: int = 2
    decay: str = "smooth"

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
        _check(self.decay in DECAYS, "decay", self.decay, f"choose one of {', '.join(DECAYS)}")


def _check(ok: bool, name: str, value: Any, why: str) -> None:
    if not ok:
        raise ConfigError(f"invalid DPAP hyperparameter {name}={value!r}: {why}")


@dataclass(frozen=True)
class DPAPConfig:
    """Everything DPAP needs besides the model.

    ``rule``: synaptic plasticity measure, a name in ``dpap.rules.RULES``: ``bcm`` (paper
    default), ``hebb``, ``stdp``, or one registered by the user.
    ``normalization``: ``p75`` (``clip((x-min)/(p75-min), 0, 1)`` over alive elements, the
    default) or ``minmax``. ``tau``: spiking-trace decay (Eq 5-6).
    ``prune_output_synapses``: also prune the output layer's synapses (its neurons never are).
    ``mask_dead_synapses_in_spine``: pruned synapses contribute nothing to a neuron's spine
    importance (Eq 11 sums over the synapses that still exist).

    The authors' code differs in the switches below (docs/method.md; ``preset("braincog")``
    sets them all). ``mask_timing``: ``step`` (weights re-masked after every optimizer step,
    gradients masked: permanent) or ``epoch`` (the masks multiplied into the weights once, at
    the end of each epoch; no gradient masking, so pruned weights train and regrow until the
    next epoch's mask). ``accumulation``: ``epoch`` (plasticity and trace sums reset every
    epoch, nothing summed in the warm-up) or ``cumulative`` (summed from epoch 0, never reset).
    ``population``: the elements normalisation and min-max run over, ``alive`` or ``all``
    (pruned ones too). ``importance``: ``product`` (``D = trace * sum_j BCM``, Eq 11) or
    ``minmax-product`` (``minmax(sum_j BCM) * minmax(trace)``, each over the population).
    ``prune_conv_kernels``: conv synapses (channel-pair kernels) are pruned as well as channels
    (the authors prune conv channels only). ``zero_range``: what a normalisation whose range is
    zero (every value equal: no evidence) gives, ``skip`` (no survival update that epoch) or
    ``half`` (every element normalises to 0.5, as the authors' ``unit`` and ``unit_tensor``).
    """

    conv: SurvivalParams = field(default_factory=lambda: SurvivalParams(
        epsilon=0.65, eta=12.0, beta=CONV_BETA, gamma=0.999, C=5.0, warmup=2))
    linear: SurvivalParams = field(default_factory=lambda: SurvivalParams(
        epsilon=1.5, eta=13.0, beta=10.0, gamma=0.999, C=2.0, warmup=2))
    rule: str = "bcm"
    normalization: str = "p75"
    tau: float = 0.5
    prune_output_synapses: bool = False
    mask_dead_synapses_in_spine: bool = True
    history_synapse_samples: int = 256
    mask_timing: str = "step"
    accumulation: str = "epoch"
    population: str = "alive"
    importance: str = "product"
    prune_conv_kernels: bool = True
    zero_range: str = "skip"

    def __post_init__(self) -> None:
        check_field_types(self, "DPAP option")
        from .rules import RULES
        _check(self.rule in RULES, "rule", self.rule, f"choose one of {', '.join(RULES)}")
        for name, choices in (("mask_timing", MASK_TIMINGS), ("accumulation", ACCUMULATIONS),
                              ("population", POPULATIONS), ("importance", IMPORTANCES),
                              ("zero_range", ZERO_RANGES)):
            _check(getattr(self, name) in choices, name, getattr(self, name),
                   f"choose one of {', '.join(choices)}")
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


# Presets (docs/method.md, "Defaults and presets"). "default": conv channels and kernels can be
# pruned (conv beta = CONV_BETA). "keep-conv": the earlier default, conv beta 10, under which no
# conv element can die: fully connected layers and nothing else are pruned. "conv-pruning" is
# kept as a name for "default". "ann" waits longer before pruning, as the ANN calibration did
# (warm-up 10). "short" is for runs of ~10-20 epochs: the decay time scale eta is the default's
# scaled to the run length (13 x 15 / 60 ~ 3) and beta is lowered with it, so pruning starts
# after the warm-up, levels off within the run and leaves time to recover; "short-keep-conv" is
# "short" with conv layers kept whole. "minmax" keeps conv layers whole: under min-max
# normalisation almost every value normalises near 0 and a conv layer would die.
PRESETS: dict[str, Any] = {
    "default": _default,
    "conv-pruning": _default,
    "keep-conv": lambda: replace(_default(), conv=replace(_default().conv, beta=KEEP_CONV_BETA)),
    "ann": lambda: replace(_default(), conv=replace(_default().conv, warmup=10),
                          linear=replace(_default().linear, warmup=10)),
    "short": lambda: _short(SHORT_CONV_BETA),
    "short-keep-conv": lambda: _short(SHORT_KEEP_CONV_BETA),
    "minmax": lambda: replace(preset("keep-conv"), normalization="minmax",
                              linear=replace(_default().linear, epsilon=0.2, beta=1.0)),
    "braincog": lambda: _braincog(),
}


def _braincog() -> DPAPConfig:
    """The authors' code (BrainCog's DPAP example, CIFAR-10 SNN): conv eps/eta/beta
    .65/12/10, FC 1.5/13/10, C 5 / 2, 5 warm-up epochs, staircase decay, soft masks once per
    epoch, cumulative sums over all elements, D from min-max normalised factors, pruned
    synapses in the spine sum, conv channels only, 0.5 for a zero range. Its optimizer is the training option
    ``optimizer="braincog"`` (docs/method.md)."""
    return DPAPConfig(
        conv=SurvivalParams(epsilon=0.65, eta=12.0, beta=10.0, gamma=0.999, C=5.0, warmup=5,
                            decay="staircase"),
        linear=SurvivalParams(epsilon=1.5, eta=13.0, beta=10.0, gamma=0.999, C=2.0, warmup=5,
                              decay="staircase"),
        mask_timing="epoch", accumulation="cumulative", population="all",
        importance="minmax-product", mask_dead_synapses_in_spine=False,
        prune_conv_kernels=False, zero_range="half")


def _short(conv_beta: float) -> DPAPConfig:
    d = _default()
    return replace(d, conv=replace(d.conv, eta=3.0, beta=conv_beta),
                   linear=replace(d.linear, eta=3.0, beta=3.0))


def preset(name: str) -> DPAPConfig:
    if name not in PRESETS:
        raise ConfigError(f"unknown DPAP preset {name!r}; choose one of {', '.join(PRESETS)}")
    return PRESETS[name]()
