"""``report.json`` as a typed object (contract.md): dataclass sections, checked when read.

    report = Report.from_dict(json.loads(text), where="runs/a/report.json")
    report.to_dict()          # the JSON object, key for key

Every section knows its fields and their types; :meth:`Section.from_dict` refuses a missing
field or a value of the wrong type with one line naming the key. Keys a section does not
declare (a target's own details in ``export``, keys written by a newer version) are kept in
``extra`` and written back unchanged. A field declared with ``omit_none`` is left out of the
JSON while it is ``None`` (a section a later stage adds; SNN-only values of an ANN run).

Numbers are checked too: a declared float must be finite (JSON's ``NaN`` / ``Infinity`` are
refused), and one declared with :func:`fraction` must lie in [0, 1]. A ``schema_version``
outside ``READABLE_VERSIONS`` is refused with the version found and those this one reads.
"""
from __future__ import annotations

import math
import types
import typing
from dataclasses import MISSING, dataclass, field, fields, replace
from typing import Any

from ..errors import DPAPError

SCHEMA_VERSION = 1
READABLE_VERSIONS = (1,)


def optional(default=None) -> Any:
    """A field left out of the JSON while it is ``None``."""
    return field(default=default, metadata={"omit_none": True})


def fraction(default: Any = MISSING, omit_none: bool = False) -> Any:
    """A float field that must lie in [0, 1] (an accuracy, a share of samples or units)."""
    return field(default=default, metadata={"fraction": True, "omit_none": omit_none})


class SchemaVersionError(DPAPError):
    """A report of a ``schema_version`` this dpap-deploy does not read: written by another
    version, not damaged."""


def check_schema_version(d: dict, where: str) -> None:
    """Refuse a report whose ``schema_version`` this dpap-deploy does not read (a report
    without one predates the field: version 1). :meth:`Report.from_dict` calls it, so every
    reader of a report, the file reader included, checks the version once."""
    v = d.get("schema_version", 1)
    if isinstance(v, bool) or v not in READABLE_VERSIONS:
        readable = ", ".join(map(str, READABLE_VERSIONS))
        raise SchemaVersionError(
            f"{where} has schema_version {v!r:.40}; this dpap-deploy reads schema_version "
            f"{readable}: read it with the dpap-deploy that wrote it, or rerun the command that "
            "wrote it with this one")


def _check_fraction(value, where: str) -> None:
    if value is not None and not 0.0 <= value <= 1.0:
        raise DPAPError(f"{where} is {value!r}, not a fraction between 0 and 1")


def _type_name(tp) -> str:
    return getattr(tp, "__name__", str(tp).replace("typing.", ""))


def _check(value, tp, where: str):
    """``value`` converted to ``tp`` (sections built, ints accepted as floats), or a DPAPError."""
    if tp is Any:
        return value
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _check(value, arg, where)
            except DPAPError as exc:
                errors.append(exc)
        raise errors[0]
    if origin is list:
        if not isinstance(value, list):
            raise DPAPError(f"{where} is {value!r:.60}, not a list")
        (item,) = typing.get_args(tp) or (Any,)
        return [_check(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise DPAPError(f"{where} is {value!r:.60}, not an object")
        return value
    if isinstance(tp, type) and issubclass(tp, Section):
        return tp.from_dict(value, where)
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is int and isinstance(value, bool) or not isinstance(value, tp):
        raise DPAPError(f"{where} is {value!r:.60}, not {_type_name(tp)}")
    if tp is float and not math.isfinite(value):
        raise DPAPError(f"{where} is {value!r}, not a finite number")
    return value


class Section:
    """Base of the dataclass sections; subclasses may declare ``extra: dict`` to keep keys
    they do not declare."""

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if f.name == "extra":
                out.update(value)
            elif not (value is None and f.metadata.get("omit_none")):
                out[f.name] = _plain(value)
        return out

    @classmethod
    def from_dict(cls, d: Any, where: str = "report"):
        if not isinstance(d, dict):
            raise DPAPError(f"{where} is {d!r:.60}, not an object")
        hints = typing.get_type_hints(cls)
        declared = {f.name for f in fields(cls)}  # type: ignore[arg-type]
        values: dict[str, Any] = {}
        for f in fields(cls):  # type: ignore[arg-type]
            if f.name == "extra":
                continue
            if f.name not in d:
                if f.default is MISSING and f.default_factory is MISSING:
                    raise DPAPError(f"{where} lacks {f.name!r}")
                continue
            values[f.name] = _check(d[f.name], hints[f.name], f"{where}.{f.name}")
            if f.metadata.get("fraction"):
                _check_fraction(values[f.name], f"{where}.{f.name}")
        rest = {k: v for k, v in d.items() if k not in declared}
        if "extra" in declared:
            values["extra"] = rest
        return cls(**values)


def _plain(value):
    if isinstance(value, Section):
        return value.to_dict()
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


# Keyword-only sections: fields are declared in the order report.json has always had, required
# or not, and to_dict writes them in that order.
section = dataclass(kw_only=True)


@section
class Accuracy(Section):
    test: float = fraction()
    best: float = fraction()
    best_epoch: int | None = None
    train: float | None = fraction(None, omit_none=True)


@section
class LayerPruning(Section):
    """A layer under the pruner's masks (a conv synapse is a kernel)."""
    name: str
    kind: str | None = optional()
    neurons_total: int
    neurons_kept: int
    synapses_total: int
    synapses_kept: int
    params_total: int | None = optional()
    params_kept: int | None = optional()
    neurons_pruned: int | None = optional()
    synapses_pruned: int | None = optional()


@section
class Pruning(Section):
    params_removed_fraction: float = fraction()
    params_total: int | None = optional()
    params_kept: int | None = None
    layers: list[LayerPruning]


@section
class Output(Section):
    """Output-layer activity on the test set (:func:`..metrics.output_activity`); an SNN's
    report names the SNN keys, null or not, an ANN's leaves them out."""
    tie_fraction: float | None = fraction()
    measured_on: str
    firing_rate: float | None = None
    silent_fraction: float | None = fraction(None)
    warning: str | None = None
    snn: bool = False            # not written: whether the SNN keys are

    def to_dict(self) -> dict[str, Any]:
        d = {"tie_fraction": self.tie_fraction, "measured_on": self.measured_on}
        if self.snn:
            d.update(firing_rate=self.firing_rate, silent_fraction=self.silent_fraction,
                     warning=self.warning)
        return d

    @classmethod
    def from_dict(cls, d: Any, where: str = "report"):
        out = super().from_dict(d, where)
        out.snn = "firing_rate" in d
        return out


@section
class Params(Section):
    dense: int
    nonzero: int
    compact: int
    compact_nonzero: int
    compact_nonzero_weights: int | None = optional()
    deploy_nonzero_weights: int | None = optional()


@section
class Ops(Section):
    """Per test sample, measured on real inputs (counting.py)."""
    synops_dense: float
    synops_compact: float
    macs_dense: float
    macs_compact: float
    macs_compact_dense: float | None = optional()
    energy_pj_dense: float | None = optional()
    energy_pj_compact: float | None = optional()
    energy_note: str | None = optional()
    measured_on: str | None = optional()


@section
class CompactionLayer(Section):
    """A layer before and after compaction: kept = total - pruned - derived dead."""
    name: str
    kind: str
    neurons_total: int
    neurons_kept: int
    neurons_pruned: int
    neurons_derived_dead: int
    synapses_total: int
    synapses_kept: int
    synapses_pruned: int
    synapses_derived_dead: int
    params_dense: int
    params_compact: int
    synops_dense: float
    synops_compact: float
    macs_dense: float
    macs_compact: float


@section
class Compaction(Section):
    accuracy_masked: float = fraction()
    accuracy_compact: float = fraction()
    verified_on: int
    files: list[str]
    layers: list[CompactionLayer]


@section
class Parity(Section):
    agreement: float = fraction()
    n_samples: int
    extra: dict = field(default_factory=dict)


@section
class Export(Section):
    """An export's result, or its ``pending`` / ``stale`` mark (then no parity)."""
    target: str
    status: str | None = optional()
    files: list[str]
    accuracy: float | None = fraction(None, omit_none=True)
    parity: Parity | None = optional()
    passed: bool
    note: str | None = optional()
    extra: dict = field(default_factory=dict)        # the target's own details
    warnings: list[str] | None = optional()


@section
class Report(Section):
    """The whole ``report.json``: the training stage's sections, then what compaction
    (``params``, ``ops``, ``compaction``, ``neurobench``) and an export (``export``) add."""
    dataset: str
    model: str
    kind: str
    epochs: int
    seed: int
    dpap: bool
    pruning_method: str | None = optional()
    time_steps: int | None = None
    accuracy: Accuracy
    pruning: Pruning
    output: Output | None = optional()
    data_warnings: list[str] = field(default_factory=list)
    wall_time_s: float | None = optional()
    train_config: dict | None = optional()
    dpap_config: dict | None = None
    params: Params | None = optional()
    ops: Ops | None = optional()
    compaction: Compaction | None = optional()
    source_run: str | None = optional()
    neurobench: dict | None = optional()
    baseline_run: str | None = optional()
    export: Export | None = optional()
    schema_version: int = SCHEMA_VERSION
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: Any, where: str = "report"):
        if isinstance(d, dict):
            check_schema_version(d, where)
        return super().from_dict(d, where)

    def merged(self, newer: "Report") -> "Report":
        """``newer`` with the sections it lacks taken from this report (a compaction keeps an
        export's pending mark and the baseline a report was drawn against)."""
        keep = {f: getattr(self, f) for f in ("params", "ops", "compaction", "source_run",
                                               "neurobench", "export", "baseline_run")
                if getattr(newer, f) is None}
        return replace(newer, **keep)
