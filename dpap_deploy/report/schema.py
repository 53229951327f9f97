"""``report.json`` as a typed object (contract.md): pydantic models, checked when read.

    report = Report.from_dict(json.loads(text), where="runs/a/report.json")
    report.to_dict()          # the JSON object, key for key

A field is declared by its type: ``int``, ``float`` (finite; an int is taken as a float),
``Fraction`` (a float in [0, 1]), ``str``, a section, ``list[...]``, ``dict``. ``X | None = None``
is written as ``null``; ``X | None = optional()`` is left out while it is ``None`` (a section a
later stage adds, SNN-only values of an ANN run). Values are checked strictly (``"3"`` is no
int, ``true`` no number, ``NaN`` no float); :meth:`Section.from_dict` turns the first failure
into one line naming the key. ``Parity``, ``Export`` (a target's own details) and ``Report``
(keys of a newer version) keep and write back keys they do not declare. A ``schema_version``
outside ``READABLE_VERSIONS`` is refused with the version found and those this one reads.
``docs/report.schema.json`` is :func:`json_schema`'s output, written again by
``python -c 'from dpap_deploy.report.schema import json_schema; print(json_schema(), end="")'``.
"""
from __future__ import annotations

import json
from typing import Annotated, Any

from pydantic import (BaseModel, ConfigDict, Field, ValidationError, model_serializer,
                      model_validator)
from pydantic.json_schema import SkipJsonSchema

from ..errors import DPAPError

SCHEMA_VERSION = 1
READABLE_VERSIONS = (1,)

Fraction = Annotated[float, Field(ge=0, le=1)]
"""A float in [0, 1]: an accuracy, a share of samples or units."""


def optional(default: Any = None) -> Any:
    """A field left out of the JSON while it is ``None``."""
    return Field(default, exclude_if=lambda v: v is None)


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


# what a value failing pydantic's check of that type is not, in the line of the refusal
_NOT = {"float_type": "float", "int_type": "int", "string_type": "str", "bool_type": "bool",
        "list_type": "a list", "dict_type": "an object", "model_type": "an object",
        "finite_number": "a finite number", "greater_than_equal": "a fraction between 0 and 1",
        "less_than_equal": "a fraction between 0 and 1"}


def _path(where: str, loc: tuple) -> str:
    return where + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc)


def _line(err: dict, where: str) -> str:
    """pydantic's error ``err`` as one line: ``report.pruning.layers[0] lacks 'name'``."""
    loc, why = err["loc"], _NOT.get(err["type"])
    if err["type"] == "missing":
        return f"{_path(where, loc[:-1])} lacks {loc[-1]!r}"
    return f"{_path(where, loc)} is {err['input']!r:.60}, " + (f"not {why}" if why else err["msg"])


class Section(BaseModel):
    """A section of ``report.json``: strict types, finite numbers, fields in the order
    report.json has always had them (required or not)."""
    model_config = ConfigDict(strict=True, allow_inf_nan=False)

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump()

    @classmethod
    def from_dict(cls, d: Any, where: str = "report"):
        try:
            return cls.model_validate(d)
        except ValidationError as exc:
            raise DPAPError(_line(exc.errors()[0], where)) from None


class Accuracy(Section):
    test: Fraction
    best: Fraction
    best_epoch: int | None = None
    train: Fraction | None = optional()


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


class Pruning(Section):
    params_removed_fraction: Fraction
    params_total: int | None = optional()
    params_kept: int | None = None
    layers: list[LayerPruning]


class Output(Section):
    """Output-layer activity on the test set (:func:`..metrics.output_activity`); an SNN's
    report names the SNN keys, null or not, an ANN's leaves them out."""
    tie_fraction: Fraction | None
    measured_on: str
    firing_rate: float | None = None
    silent_fraction: Fraction | None = None
    warning: str | None = None
    snn: SkipJsonSchema[bool] = Field(False, exclude=True)  # not written: whether the SNN keys are

    @model_validator(mode="before")
    @classmethod
    def _snn_from_keys(cls, d: Any) -> Any:
        return {**d, "snn": "firing_rate" in d} if isinstance(d, dict) and "snn" not in d else d

    @model_serializer(mode="wrap")
    def _snn_keys(self, handler) -> dict[str, Any]:
        d = handler(self)
        return d if self.snn else {k: d[k] for k in ("tie_fraction", "measured_on")}


class Params(Section):
    dense: int
    nonzero: int
    compact: int
    compact_nonzero: int
    compact_nonzero_weights: int | None = optional()
    deploy_nonzero_weights: int | None = optional()


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


class Compaction(Section):
    accuracy_masked: Fraction
    accuracy_compact: Fraction
    verified_on: int
    files: list[str]
    layers: list[CompactionLayer]


class ChipLayer(Section):
    """One layer's Loihi 2 cores (``chip.LayerCores``): ``bound`` names the limit that sets
    them, ``neurons`` or ``memory``."""
    name: str
    kind: str
    neurons: int
    weights: int
    synapses: int
    memory_bytes: int
    cores: int
    bound: str


class ChipEstimate(Section):
    layers: list[ChipLayer]
    neurons: int
    memory_bytes: int
    cores: int
    chips: int


class ChipSaving(Section):
    cores: int
    memory_bytes: int
    neurons: int


class Chip(Section):
    """Loihi 2 neuro-cores and synaptic memory, an estimate from public limits (``chip.py``)."""
    dense: ChipEstimate
    compacted: ChipEstimate
    saving: ChipSaving
    limits: dict
    note: str


class Qat(Section):
    """Quantization-aware fine-tuning (``qat.py``): accuracy of the float network, of its
    fixed-point form before and after fine-tuning (the emulation of what the export runs)."""
    target: str
    accuracy_float: Fraction
    accuracy_quantised: Fraction
    accuracy_fine_tuned: Fraction
    accuracy_fine_tuned_float: Fraction
    epochs: int
    lr: float
    train_samples: int
    measured_on: str
    loss: list[float]


class Parity(Section):
    """A target's parity check; its own keys kept as written."""
    model_config = ConfigDict(extra="allow")
    agreement: Fraction
    n_samples: int


class Export(Section):
    """An export's result, or its ``pending`` / ``stale`` mark (then no parity); the target's
    own details kept as written."""
    model_config = ConfigDict(extra="allow")
    target: str
    status: str | None = optional()
    files: list[str]
    accuracy: Fraction | None = optional()
    parity: Parity | None = optional()
    passed: bool
    note: str | None = optional()
    warnings: list[str] | None = optional()

    @model_serializer(mode="wrap")
    def _warnings_last(self, handler) -> dict[str, Any]:
        d = handler(self)              # after the target's own keys, as report.json has them
        if "warnings" in d:
            d["warnings"] = d.pop("warnings")
        return d


class Report(Section):
    """The whole ``report.json``: the training stage's sections, then what compaction
    (``params``, ``ops``, ``compaction``, ``neurobench``) and an export (``export``) add."""
    model_config = ConfigDict(extra="allow", title="dpap-deploy report.json",
                              json_schema_extra={"$schema": "https://json-schema.org/draft/2020-12/schema"})
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
    data_warnings: list[str] = []
    wall_time_s: float | None = optional()
    train_config: dict | None = optional()
    dpap_config: dict | None = None
    params: Params | None = optional()
    ops: Ops | None = optional()
    compaction: Compaction | None = optional()
    source_run: str | None = optional()
    neurobench: dict | None = optional()
    chip: Chip | None = optional()
    qat: Qat | None = optional()
    baseline_run: str | None = optional()
    export: Export | None = optional()
    schema_version: int = SCHEMA_VERSION

    @classmethod
    def from_dict(cls, d: Any, where: str = "report"):
        if isinstance(d, dict):
            check_schema_version(d, where)
        return super().from_dict(d, where)

    def merged(self, newer: "Report") -> "Report":
        """``newer`` with the sections it lacks taken from this report (a compaction keeps an
        export's pending mark and the baseline a report was drawn against). ``qat`` is not
        kept: a compaction without fine-tuning makes an earlier one stale."""
        keep = {f: getattr(self, f) for f in ("params", "ops", "compaction", "source_run",
                                               "neurobench", "chip", "export", "baseline_run")
                if getattr(newer, f) is None}
        return newer.model_copy(update=keep)


def json_schema() -> str:
    """The JSON Schema of ``report.json`` as published in ``docs/report.schema.json``."""
    return json.dumps(Report.model_json_schema(), indent=2) + "\n"
