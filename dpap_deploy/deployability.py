"""Will it deploy? Every reason each target would refuse a model, known before training.

    from dpap_deploy import check_deployable
    result = check_deployable(model, example_input)          # the targets of its kind
    result.ok, result.blockers["loihi-sim"], print(result)

One check, used by ``DPAP(...)`` (a :class:`~dpap_deploy.errors.DeployabilityWarning`), by
``train_and_export`` (a refusal before training) and by ``dpap-deploy check``. Each target
answers for itself (``exporters.blockers``: the target module's ``blockers(graph,
time_steps)``, else a dry build of its artifact); nothing is trained, written or simulated.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

import warnings

from .errors import ConfigError, DeployabilityWarning, NotDeployableError


@dataclass
class Deployability:
    """Per target, the blockers (one line each: what, where, why, the fix); empty: it takes
    the model. ``str()`` is one line per target that takes it and one per blocker, grouped."""

    blockers: dict[str, list[str]] = field(default_factory=dict)
    kind: str = "snn"

    @property
    def ok(self) -> bool:
        """Every checked target takes the model."""
        return not any(self.blockers.values())

    @property
    def targets(self) -> list[str]:
        return list(self.blockers)

    def ok_for(self, target: str) -> bool:
        return not self.blockers[target]

    def count(self) -> int:
        return sum(len(b) for b in self.blockers.values())

    def pairs(self) -> list[tuple[str, str]]:
        """``[(target, blocker), ...]`` in target order."""
        return [(t, b) for t, lines in self.blockers.items() for b in lines]

    def refusal(self, what: str) -> NotDeployableError:
        """The error saying ``what`` (e.g. "nothing was trained") after the blockers' count."""
        bad = [t for t, b in self.blockers.items() if b]
        n = self.count()
        return NotDeployableError(
            f"the model cannot go to {', '.join(bad)} as written ({n} blocker"
            f"{'' if n == 1 else 's'}, each with its fix); {what}", self.pairs())

    def __str__(self) -> str:
        lines = []
        for target, found in self.blockers.items():
            if not found:
                lines.append(f"{target}: ok")
                continue
            lines.append(f"{target}: {len(found)} blocker{'' if len(found) == 1 else 's'}")
            lines += [f"  - {b}" for b in found]
        return "\n".join(lines)


def targets_for(kind: str, targets: str | Iterable[str] | None = None) -> list[str]:
    """The targets to check: ``targets`` (one name or several, each a known target), else
    every registered target that takes models of ``kind``."""
    from .exporters import TARGETS, exporter
    if targets is None:
        return [t for t in TARGETS if kind in exporter(t).KINDS]
    names = [targets] if isinstance(targets, str) else list(targets)
    for t in names:
        if t not in TARGETS:
            raise ConfigError(f"unknown target {t!r}; choose among {', '.join(TARGETS)}")
    if not names:
        raise ConfigError(f"no target to check; name one or more of {', '.join(TARGETS)}")
    return list(dict.fromkeys(names))


def check_graph(graph, targets: str | Iterable[str] | None = None,
                time_steps: int | None = None) -> Deployability:
    """The blockers of a built model graph for ``targets`` (``targets_for``)."""
    from .exporters import blockers
    return Deployability({t: blockers(t, graph, time_steps)
                          for t in targets_for(graph.kind, targets)}, graph.kind)


def warn_blockers(graph, targets: str | Iterable[str] | None = None,
                  stacklevel: int = 2) -> Deployability:
    """``check_graph`` and one ``DeployabilityWarning`` listing every blocker of every target
    (nothing when they all take the model), pointing at the line ``stacklevel`` frames above
    the caller's (``warnings.warn``'s meaning, from the caller: 2 is its own caller). The check
    draws no random numbers (the random state is restored, so training stays reproducible)."""
    import torch
    with torch.random.fork_rng(devices=[]):
        result = check_graph(graph, targets)
    if not result.ok:
        bad = [t for t in result.targets if not result.ok_for(t)]
        n = result.count()
        lines = "\n".join(f"  [{t}] {b}" for t, b in result.pairs())
        warnings.warn(
            f"DPAP: this model cannot be deployed to {', '.join(bad)} as written ({n} blocker"
            f"{'' if n == 1 else 's'}, each with its fix; fix them before training, or pass "
            f"check_deploy=False, or check_deploy=[targets] for the targets you use):\n{lines}",
            DeployabilityWarning, stacklevel=stacklevel + 1)
    return result


def check_deployable(model, example_input, targets: str | Iterable[str] | None = None,
                     time_steps: int | None = None, time_axis: int | None = None) -> Deployability:
    """Every blocker of ``model`` for each of ``targets`` (default: every target of its kind:
    ``nir``, ``loihi-sim``, ``netx`` for an SNN, ``onnx`` for an ANN), without training and
    without running a simulator. ``example_input``: a batch as the model takes it (two samples
    are enough); ``time_steps``: the T it will run with (default: its own loop's, else 8);
    ``time_axis``: the input's time axis when it has one (``build_graph``'s)."""
    from .graph import build_graph
    return check_graph(build_graph(model, example_input, time_axis=time_axis), targets,
                       time_steps)


__all__ = ["Deployability", "check_deployable", "check_graph", "targets_for", "warn_blockers"]
