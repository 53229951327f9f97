"""Every code block of README.md and docs/*.md works as written.

``python`` blocks run, one document at a time in one namespace (a later block may use what an
earlier one defined), in a scratch folder. The names a block takes from its reader (``model``,
``loader``, ``x_test``, ...) are prepared here: a tutorial-style snnTorch class (its own time
loop, returning spikes and membranes), a few batches of the embedded digits, and a
``run.toml`` that trains the ``snn-digits`` zoo model on a small ``.npz``. A block preceded by
``<!-- not run: reason -->`` is an illustrative fragment and is skipped (there are few).

``bash`` blocks: every ``dpap-deploy ...`` / ``python -m dpap_deploy ...`` command parses with
the CLI's own parser.
"""
from __future__ import annotations

import re
import shlex
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md"] + sorted(p for p in (ROOT / "docs").glob("*.md"))
FENCE = re.compile(r"^```(\w*)\s*$")
NOT_RUN = re.compile(r"<!--\s*not run:\s*\S.*-->")
T = 8


def code_blocks(path: Path) -> list[tuple[int, str, str, bool]]:
    """``(first line number, language, code, marked not run)`` of each fenced block."""
    blocks, lines, i = [], path.read_text().splitlines(), 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        j = i + 1
        while not lines[j].startswith("```"):
            j += 1
        prev = next((l for l in reversed(lines[:i]) if l.strip()), "")
        blocks.append((i + 1, m.group(1), "\n".join(lines[i + 1:j]), bool(NOT_RUN.search(prev))))
        i = j + 1
    return blocks


def _rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


PY_DOCS = [p for p in DOCS if any(lang == "python" for _, lang, _, _ in code_blocks(p))]
SH_DOCS = [p for p in DOCS if any(lang == "bash" for _, lang, _, _ in code_blocks(p))]


# --- what a block takes from its reader -------------------------------------------------------

def tutorial_class():
    """snnTorch tutorial 5's style: its own time loop, explicit membranes, returns both."""
    import snntorch as snn
    import torch
    from torch import nn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1, self.lif1 = nn.Linear(64, 32), snn.Leaky(beta=0.8, reset_mechanism="zero")
            self.fc2, self.lif2 = nn.Linear(32, 10), snn.Leaky(beta=0.8, reset_mechanism="zero")

        def forward(self, x):
            mem1, mem2 = self.lif1.init_leaky(), self.lif2.init_leaky()
            spk_rec, mem_rec = [], []
            for _ in range(T):
                spk1, mem1 = self.lif1(self.fc1(x.flatten(1)), mem1)
                spk2, mem2 = self.lif2(self.fc2(spk1), mem2)
                spk_rec.append(spk2)
                mem_rec.append(mem2)
            return torch.stack(spk_rec), torch.stack(mem_rec)
    return Net


def zoo_sequential():
    """The ``snn-digits`` zoo model: an ``nn.Sequential`` with hidden state (one call = one
    step), the kind of model whose compaction needs ``time_steps``."""
    from dpap_deploy.zoo import build_model
    return build_model("snn-digits", (1, 8, 8), 10)[0]


def step_loop(model, x):
    """The reader's time loop for a one-call-one-step model: spike counts over ``T`` steps."""
    from snntorch import utils
    utils.reset(model)
    return sum(model(x) for _ in range(T))


def small_npz(path: Path, data) -> Path:
    np.savez(path, x_train=data.x_train[:192].numpy(), y_train=data.y_train[:192].numpy(),
             x_test=data.x_test[:48].numpy(), y_test=data.y_test[:48].numpy())
    return path


def reader_namespace(folder: Path, with_dpap: bool, tutorial: bool) -> dict:
    """The names the docs' blocks expect the reader to have; files go into ``folder``.
    ``tutorial``: the model is the tutorial-style class, else the zoo's ``nn.Sequential``."""
    import torch
    import torch.nn.functional as F
    from dpap_deploy.data import load_dataset
    torch.manual_seed(0)
    data = load_dataset("digits")
    npz = small_npz(folder / "small.npz", data)
    (folder / "run.toml").write_text(f'dataset = "npz:{npz}"\nmodel = "snn-digits"\n'
                                     'batch_size = 64\n')
    model = tutorial_class()() if tutorial else zoo_sequential()
    ns = {"model": model, "example_input": data.x_train[:2], "T": T, "epochs": 1, "E": 1,
          "loader": [(data.x_train[i:i + 64], data.y_train[i:i + 64]) for i in (0, 64)],
          "opt": torch.optim.Adam(model.parameters(), lr=5e-3),
          "loss_fn": F.cross_entropy, "loss": F.cross_entropy,
          "my_time_loop": step_loop,
          "x_test": data.x_test[:16], "y_test": data.y_test[:16]}
    if with_dpap:
        from dpap_deploy import DPAP, DPAPConfig
        ns["dpap"] = DPAP(model, ns["example_input"], DPAPConfig())
    return ns


# --- the tests ---------------------------------------------------------------------------------

def test_code_blocks_are_found():
    """The extractor sees the blocks (a parser that finds nothing would pass every test)."""
    api = code_blocks(ROOT / "docs" / "api.md")
    assert [lang for _, lang, _, _ in api] == ["python"] * 5
    assert sum(skip for *_, skip in api) == 1
    assert len(PY_DOCS) >= 3 and len(SH_DOCS) >= 3


@pytest.mark.slow
@pytest.mark.parametrize("doc", PY_DOCS, ids=_rel)
def test_python_blocks_run(doc, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    text = doc.read_text()
    ns = reader_namespace(tmp_path, with_dpap="DPAP(model" not in text,
                          tutorial="spk_rec, mem_rec = model(x)" in text)
    ran = 0
    for line, lang, code, skip in code_blocks(doc):
        if lang != "python" or skip:
            continue
        try:
            exec(compile(code, f"{_rel(doc)}:{line}", "exec"), ns)
        except Exception as exc:  # noqa: BLE001 - name the block that failed
            pytest.fail(f"{_rel(doc)}, block at line {line}: {type(exc).__name__}: {exc}")
        ran += 1
    assert ran >= 1


def commands(code: str) -> list[list[str]]:
    """The dpap-deploy argument lists of a bash block (continuation lines joined, comments cut)."""
    out = []
    for line in code.replace("\\\n", " ").splitlines():
        for part in re.split(r"&&|;", line):
            words = shlex.split(part, comments=True)
            for i, w in enumerate(words):
                if w.endswith("dpap-deploy") or (w == "dpap_deploy" and words[i - 1] == "-m"):
                    out.append(words[i + 1:])
                    break
    return out


@pytest.mark.parametrize("doc", SH_DOCS, ids=_rel)
def test_bash_commands_parse(doc):
    from dpap_deploy.cli import build_parser
    parsed = 0
    for line, lang, code, skip in code_blocks(doc):
        if lang != "bash" or skip:
            continue
        for argv in commands(code):
            try:
                build_parser().parse_args(argv)
            except SystemExit:
                pytest.fail(f"{_rel(doc)}, block at line {line}: does not parse: "
                            f"dpap-deploy {shlex.join(argv)}")
            parsed += 1
    assert parsed >= 1 or doc.name in ("install.md",)


def test_not_run_markers_are_few():
    """Fragments are the exception: every marked block is named here."""
    marked = [(_rel(d), line) for d in DOCS for line, _, _, skip in code_blocks(d) if skip]
    assert len(marked) <= 4, marked


# --- the script docs/deploy.md names for netx ----------------------------------------------

@pytest.fixture(scope="module")
def netx_folder(tmp_path_factory):
    """A netx export of a one-epoch snn-digits run on a small npz (4 samples in Lava)."""
    from dpap_deploy import pipeline
    from dpap_deploy.data import load_dataset
    from dpap_deploy.training import TrainConfig, train
    w = tmp_path_factory.mktemp("netx")
    small_npz(w / "small.npz", load_dataset("digits"))
    train(TrainConfig(dataset=f"npz:{w / 'small.npz'}", epochs=1, batch_size=64), w / "run",
          progress=False)
    rep = pipeline.compact(w / "run", w / "run")
    from dpap_deploy.exporters import ExportJob, export
    from dpap_deploy.serialize import load_model
    model, kind, meta = load_model(w / "run" / "compact.pt")
    d = load_dataset("digits")
    export("netx", ExportJob(model, kind, d.x_test[:4], d.y_test[:4], meta["time_steps"]),
           w / "netx")
    np.save(w / "one.npy", d.x_test[0].numpy())
    assert rep.compaction is not None
    return w


def _load_network(script: Path, image: Path, cwd: Path):
    import subprocess
    import sys
    r = subprocess.run([sys.executable, str(script), str(image)], cwd=cwd, capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    return r.stdout.strip()


@pytest.mark.slow
def test_load_network_runs_from_any_folder(netx_folder, tmp_path):
    """``python /abs/path/load_network.py`` from another working directory finds its files."""
    out = _load_network(netx_folder / "netx" / "load_network.py", netx_folder / "one.npy",
                        tmp_path)
    assert re.fullmatch(r"(class \d|tie between classes [\d, ]+ \(no class\)|no output spikes "
                        r"\(no class\)) spike counts \[[\d, ]+\]", out), out


@pytest.mark.slow
def test_load_network_says_when_the_output_is_silent(netx_folder, tmp_path):
    """A silent output is no class (``argmax`` would say class 0)."""
    import shutil
    import h5py
    silent = tmp_path / "silent"
    shutil.copytree(netx_folder / "netx", silent)
    with h5py.File(silent / "network.net", "r+") as f:
        last = f["layer"][str(len(f["layer"]) - 1)]
        last["weight"][...] = -2              # inhibitory only (all 0 breaks netx's loader)
        if "bias" in last:
            last["bias"][...] = 0
    out = _load_network(silent / "load_network.py", netx_folder / "one.npy", netx_folder)
    assert out == "no output spikes (no class) spike counts [0, 0, 0, 0, 0, 0, 0, 0, 0, 0]", out
