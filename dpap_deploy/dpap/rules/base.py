"""The rule class and the registry (``RULES``) every rule module registers into; the
package's ``__init__`` imports the rules that come with it (see there)."""
from __future__ import annotations

import torch

from ...errors import ConfigError


class PlasticityRule:
    """A plasticity measure. ``rec`` is the layer's per-batch record: end-of-window traces
    ``s_pre [N, C_in]``, ``s_post [N, C_out]`` (Eq 5-6), this step's presynaptic activity
    ``o_pre``, and ``acc``, the rule's own per-batch accumulator (None at the batch start)."""

    name: str = ""
    needs_time: bool = False      # needs spike timing: refused for an ANN (no time axis)

    def on_step(self, rec, o_post: torch.Tensor) -> None:
        """Called at every time step, before the post trace takes ``o_post``."""

    def measure(self, rec, theta: torch.Tensor) -> torch.Tensor:
        """The batch's ``[C_out, C_in]`` term; ``theta`` is BCM's sliding threshold (Eq 8)."""
        raise NotImplementedError


RULES: dict[str, PlasticityRule] = {}


def register(cls: type[PlasticityRule]) -> type[PlasticityRule]:
    if not cls.name:
        raise ConfigError(f"plasticity rule {cls.__name__} has no name")
    RULES[cls.name] = cls()
    return cls


def rule(name: str) -> PlasticityRule:
    if name not in RULES:
        raise ConfigError(f"rule={name!r}: unknown plasticity rule; choose one of "
                          f"{', '.join(RULES)}")
    return RULES[name]
