"""Reports hold no absolute path of the machine that wrote them: ``source_run``,
``baseline_run`` and a dataset file are relative to the report's folder, and still lead to
those folders (the plots of a compacted run are drawn from its source run's checkpoint)."""
import json
from contextlib import suppress
from pathlib import Path

import jsonschema
import numpy as np
import pytest

from dpap_deploy.data import load_dataset
from dpap_deploy.errors import ParityError
from dpap_deploy.pipeline import compact, export, report, train
from dpap_deploy.report.paths import relative, resolve
from dpap_deploy.report.schema import Report
from dpap_deploy.training import TrainConfig


def _npz(path: Path) -> Path:
    """A small user dataset file: 300 training and 60 test digits."""
    d = load_dataset("digits")
    path.parent.mkdir(parents=True)
    np.savez(path, x_train=d.x_train[:300].numpy(), y_train=d.y_train[:300].numpy(),
             x_test=d.x_test[:60].numpy(), y_test=d.y_test[:60].numpy())
    return path


def _absolute_paths(folder: Path, roots: list[str]) -> list[str]:
    """``report.json`` / ``report.md`` files of ``folder`` that name one of ``roots``."""
    found = []
    for name in ("report.json", "report.md"):
        text = (folder / name).read_text()
        found += [f"{folder.name}/{name}: {r}" for r in roots if r in text]
    return found


def test_train_compact_export_reports_hold_relative_paths(tmp_path):
    data = _npz(tmp_path / "data" / "digits.npz")
    cfg = dict(dataset=f"npz:{data}", epochs=1, batch_size=32)
    train(TrainConfig(**cfg), tmp_path / "runs" / "a", progress=False)
    train(TrainConfig(**cfg, dpap=False), tmp_path / "runs" / "base", progress=False)
    compact(tmp_path / "runs" / "a", tmp_path / "runs" / "small")
    with suppress(ParityError):              # a 1-epoch network may be silent: reported anyway
        export(tmp_path / "runs" / "a", "nir", tmp_path / "exports" / "nir")
    report(tmp_path / "runs" / "small", baseline=tmp_path / "runs" / "base")
    folders = [tmp_path / "runs" / n for n in ("a", "base", "small")] + [tmp_path / "exports/nir"]
    roots = sorted({str(tmp_path), str(tmp_path.resolve())})
    assert [f for f in folders if _absolute_paths(f, roots)] == []
    schema = json.loads((Path(__file__).resolve().parents[1] / "docs/report.schema.json").read_text())
    for f in folders:         # real reports: valid under the published schema, read back as written
        text = (f / "report.json").read_text()
        jsonschema.validate(json.loads(text), schema, jsonschema.Draft202012Validator)
        assert json.dumps(Report.from_dict(json.loads(text)).to_dict(), indent=2) + "\n" == text

    small = json.loads((tmp_path / "runs/small/report.json").read_text())
    assert small["source_run"] == "../a" and small["baseline_run"] == "../base"
    assert small["dataset"] == small["train_config"]["dataset"] == "npz:../../data/digits.npz"
    nir = json.loads((tmp_path / "exports/nir/report.json").read_text())
    assert nir["source_run"] == "../../runs/a"
    md = (tmp_path / "runs/small/report.md").read_text()
    assert "# snn-digits on npz:../../data/digits.npz" in md
    # the relative paths still lead there: the DPAP plots come from ../a's checkpoint
    assert "![survival](plots/survival.png)" in md
    assert (tmp_path / "runs/small/plots/survival.png").is_file()


@pytest.mark.parametrize("path, folder, rel", [("/d/runs/a", "/d/runs/b", "../a"),
                                               ("/d/x.npz", "/d/runs/b", "../../x.npz"),
                                               ("../a", "/d/runs/b", "../a")])
def test_relative_and_back(path, folder, rel):
    assert relative(path, folder) == rel
    assert resolve(rel, folder).resolve() == Path(folder, rel).resolve()
    assert resolve("/old/absolute", folder) == Path("/old/absolute")     # older reports
