"""``report.json``'s published JSON Schema (``docs/report.schema.json``) is the models' own,
holds the contract's keys, and refuses what the models refuse; the models' refusals are one
line naming the key. (A real report of train, compact and export is checked against the
published schema in test_report_paths.py.)"""
import copy
import json
import re
from pathlib import Path

import jsonschema
import pytest

from dpap_deploy.errors import DPAPError
from dpap_deploy.report.schema import Report, json_schema

SCHEMA_FILE = Path(__file__).resolve().parents[1] / "docs" / "report.schema.json"
REGENERATE = ("python -c 'from dpap_deploy.report.schema import json_schema; "
              "print(json_schema(), end=\"\")' > docs/report.schema.json")
# contract.md's minimum report.json (plus export.passed, which every export section holds)
CONTRACT = {
    "dataset": "digits", "model": "snn-digits", "kind": "snn", "epochs": 0, "seed": 0,
    "dpap": True, "accuracy": {"test": 0.0, "best": 0.0},
    "pruning": {"params_removed_fraction": 0.0,
                "layers": [{"name": "0", "neurons_total": 0, "neurons_kept": 0,
                            "synapses_total": 0, "synapses_kept": 0}]},
    "params": {"dense": 0, "nonzero": 0, "compact": 0, "compact_nonzero": 0},
    "ops": {"synops_dense": 0.0, "synops_compact": 0.0, "macs_dense": 0.0, "macs_compact": 0.0},
    "export": {"target": "loihi-sim", "files": ["network.nir"], "accuracy": 0.0,
               "parity": {"agreement": 0.0, "n_samples": 0}, "passed": True}}


@pytest.fixture(scope="module")
def validator():
    schema = json.loads(SCHEMA_FILE.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def test_the_published_schema_is_the_models_own():
    assert SCHEMA_FILE.read_text() == json_schema(), f"regenerate it: {REGENERATE}"


def _keys(d: dict, schema: dict, defs: dict, where: str = "") -> list[str]:
    """Keys of ``d`` (nested) that ``schema`` does not declare."""
    missing = []
    for k, v in d.items():
        prop = schema.get("properties", {}).get(k)
        if prop is None:
            missing.append(where + k)
            continue
        ref = prop.get("$ref") or next((a["$ref"] for a in prop.get("anyOf", []) if "$ref" in a),
                                       None) or prop.get("items", {}).get("$ref")
        sub = defs[ref.rsplit("/", 1)[1]] if ref else {}
        for item in (v if isinstance(v, list) else [v]):
            if isinstance(item, dict):
                missing += _keys(item, sub, defs, f"{where}{k}.")
    return missing


def test_the_schema_declares_every_key_of_the_contract(validator):
    schema = validator.schema
    assert _keys(CONTRACT, schema, schema["$defs"]) == []
    validator.validate(CONTRACT)
    assert Report.from_dict(copy.deepcopy(CONTRACT)).to_dict() == {
        **CONTRACT, "time_steps": None, "dpap_config": None, "data_warnings": [],
        "schema_version": 1, "accuracy": {**CONTRACT["accuracy"], "best_epoch": None},
        "pruning": {**CONTRACT["pruning"], "params_kept": None}}


def _edit(path: str, value) -> dict:
    """CONTRACT with the value at ``path`` (``a.b.0.c``) replaced, or removed when ``...``."""
    d = copy.deepcopy(CONTRACT)
    *parents, last = [int(p) if p.isdigit() else p for p in path.split(".")]
    node = d
    for p in parents:
        node = node[p]
    if value is ...:
        del node[last]
    else:
        node[last] = value
    return d


BAD = [  # (path, value, the models' line)
    ("accuracy.test", ..., "report.accuracy lacks 'test'"),
    ("accuracy.test", 97.5, "report.accuracy.test is 97.5, not a fraction between 0 and 1"),
    ("accuracy.best", -0.1, "report.accuracy.best is -0.1, not a fraction between 0 and 1"),
    ("epochs", "3", "report.epochs is '3', not int"),
    ("seed", True, "report.seed is True, not int"),
    ("dpap", 1, "report.dpap is 1, not bool"),
    ("pruning.layers.0.neurons_total", ..., "report.pruning.layers[0] lacks 'neurons_total'"),
    ("pruning.layers.0.name", 7, "report.pruning.layers[0].name is 7, not str"),
    ("pruning.layers", {"0": {}}, "report.pruning.layers is {'0': {}}, not a list"),
    ("ops", [1.0], "report.ops is [1.0], not an object"),
    ("ops.synops_dense", "1e3", "report.ops.synops_dense is '1e3', not float"),
    ("export.files", ["a", 2], "report.export.files[1] is 2, not str"),
    ("export.parity.agreement", 2, "report.export.parity.agreement is 2, not a fraction"),
]


@pytest.mark.parametrize("path, value, line", BAD, ids=[f"{b[0]}={b[1]!r}" for b in BAD])
def test_the_models_and_the_schema_refuse_the_same_values(validator, path, value, line):
    bad = _edit(path, value)
    with pytest.raises(DPAPError, match=f"^{re.escape(line)}") as err:
        Report.from_dict(bad)
    assert "\n" not in str(err.value)
    assert not validator.is_valid(bad)


def test_the_models_refuse_what_json_schema_does_not_state():
    """JSON Schema has no NaN / Infinity and counts 3.0 as an integer."""
    for path, value, line in [("ops.macs_dense", float("nan"), "is nan, not a finite number"),
                              ("ops.macs_dense", float("inf"), "is inf, not a finite number"),
                              ("epochs", 3.0, "report.epochs is 3.0, not int")]:
        with pytest.raises(DPAPError, match=re.escape(line)):
            Report.from_dict(_edit(path, value))


def test_a_newer_versions_keys_and_a_targets_own_keys_are_written_back_in_place(validator):
    d = _edit("export.warnings", ["silent"])
    d["export"]["opset"] = 17                     # a target's own key, before the warnings
    d["export"]["warnings"] = d["export"].pop("warnings")
    d["export"]["parity"]["max_abs_diff"] = 0.0
    d["from_a_newer_version"] = {"x": [1]}
    back = Report.from_dict(copy.deepcopy(d)).to_dict()
    assert list(back["export"]) == list(d["export"]) and back["export"]["opset"] == 17
    assert back["export"]["parity"]["max_abs_diff"] == 0.0 and back["from_a_newer_version"] == {"x": [1]}
    validator.validate(back)


def test_an_ann_output_leaves_the_snn_keys_out_and_an_snn_output_names_them():
    ann = {"tie_fraction": 0.0, "measured_on": "5 test samples"}
    snn = {**ann, "firing_rate": None, "silent_fraction": 0.5, "warning": None}
    for out in (ann, snn):
        assert Report.from_dict({**CONTRACT, "output": out}).to_dict()["output"] == out


def test_a_later_stage_keeps_the_compaction_sections_it_lacks_but_not_a_fine_tuning():
    """``Report.merged`` (save_report over an earlier report.json): the compaction's sections,
    the chip estimate among them, stay when a newer report lacks them; ``qat`` does not (a
    compaction without fine-tuning made the earlier one stale)."""
    est = {"layers": [], "neurons": 1, "memory_bytes": 1, "cores": 1, "chips": 1}
    qat = {"target": "netx", "accuracy_float": 0.5, "accuracy_quantised": 0.5,
           "accuracy_fine_tuned": 0.5, "accuracy_fine_tuned_float": 0.5, "epochs": 1, "lr": 1e-4,
           "train_samples": 1, "measured_on": "test", "loss": [0.1]}
    old = Report.from_dict({**copy.deepcopy(CONTRACT), "qat": qat, "chip": {
        "dense": est, "compacted": est, "saving": {"cores": 0, "memory_bytes": 0, "neurons": 0},
        "limits": {}, "note": ""}})
    newer = Report.from_dict({k: v for k, v in copy.deepcopy(CONTRACT).items()
                              if k not in ("params", "ops", "export")})
    merged = old.merged(newer)
    assert (merged.chip, merged.params, merged.export) == (old.chip, old.params, old.export)
    assert merged.qat is None
