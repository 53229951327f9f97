"""Nothing damaged is accepted: checkpoints and model files with changed bytes (content digest),
non-finite weights, thresholds or decays, silent or constant outputs (a failed parity, never
"agreement 100%"), NIR files with bad metadata or data outside the file (HDF5 external links
and external storage), checkpoints whose record fields have the wrong type.

The CLI cases run the real command in its own process (``cli`` in conftest.py): exit 2, one stderr line naming the problem,
no traceback; a refused command leaves nothing in a fresh output folder and changes nothing in
an existing one. The API cases check that the same functions raise a ``DPAPError``.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import zipfile
from pathlib import Path

import h5py
import nir
import numpy as np
import pytest
import torch

import nir_graphs as G
from test_bad_inputs import _npz, _snapshot

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


# ---- damaged files, built for real ----------------------------------------------------------

def flip_tensor_bytes(path: Path, key: str, n: int = 512) -> None:
    """Flip one exponent bit of the first ``n`` float32 values of the state-dict tensor ``key``
    inside the torch zip, in place at its data record's offset (the zip still opens)."""
    record = _record_of(path, key)
    with zipfile.ZipFile(path) as z:
        info = z.getinfo(record)
    with open(path, "r+b") as fh:
        fh.seek(info.header_offset)
        name_len, extra_len = struct.unpack("<HH", fh.read(30)[26:30])
        start = info.header_offset + 30 + name_len + extra_len
        fh.seek(start)
        data = bytearray(fh.read(min(n * 4, info.file_size)))
        for i in range(3, len(data), 4):
            data[i] ^= 0x40
        fh.seek(start)
        fh.write(data)


def _record_of(path: Path, key: str) -> str:
    """The zip record holding the tensor ``key`` of the file's ``model`` / ``state_dict``: the
    record whose size is the tensor's and whose bytes are its bytes."""
    data = torch.load(path, weights_only=True)
    t = (data.get("model") or data["state_dict"])[key].contiguous()
    raw = t.numpy().tobytes()
    with zipfile.ZipFile(path) as z:
        for info in z.infolist():
            if "/data/" in info.filename and info.file_size == len(raw) and z.read(info) == raw:
                return info.filename
    raise AssertionError(f"no record holds {key}")


def _edit_checkpoint(src: Path, dst: Path, edit) -> Path:
    """A copy of the run ``src`` at ``dst`` whose checkpoint went through ``edit`` and was saved
    again (with a valid digest: the content itself is what is wrong)."""
    from dpap_deploy.checkpoint import load_checkpoint, save_checkpoint
    shutil.copytree(src, dst)
    ck = load_checkpoint(dst)
    ck.pop("path")
    ck.pop("digest", None)
    edit(ck)
    save_checkpoint(dst / "checkpoint.pt", ck)
    return dst


def _set(ck, key, value):
    ck[key] = value


def _nan_rows(ck, key, rows=3):
    ck["model"][key][:rows] = float("nan")


def _h5_replace(path: Path, name: str, make) -> None:
    """Replace (or add) the object ``name`` of the HDF5 file ``path``: ``make(file, name,
    old_value or None)``."""
    with h5py.File(path, "r+") as f:
        old = f[name][()] if name in f else None
        if old is not None:
            del f[name]
        make(f, name, old)


def _weight_name(path: Path) -> str:
    names = []
    with h5py.File(path, "r") as f:
        f.visit(lambda n: names.append(n) if n.endswith("/weight") else None)
    return sorted(names)[0]


def _chain_graph(weight: np.ndarray) -> nir.NIRGraph:
    n = weight.shape[0]
    return G.graph({"input": nir.Input(np.array([weight.shape[1]])),
                    "w": nir.Linear(weight=weight.astype(np.float32)), "n": G.lif((n,)),
                    "output": nir.Output(np.array([n]))},
                   [("input", "w"), ("w", "n"), ("n", "output")])


def _nir_files(w: Path) -> dict[str, Path]:
    from dpap_deploy.exporters.nir_checks import sign
    rng = np.random.default_rng(0)
    files = {}
    good = w / "signed.nir"
    nir.write(str(good), sign(G.cuba_if_avgpool(rng)))
    files["signed_nir"] = good
    for name in ("damaged", "extlink", "extstore", "ts_bytes", "ts_nan", "ts_float"):
        files[f"{name}_nir"] = w / f"{name}.nir"
        shutil.copy(good, files[f"{name}_nir"])
    wname = _weight_name(good)
    _h5_replace(files["damaged_nir"], wname, lambda f, n, v: f.create_dataset(n, data=v * 1.001))
    np.save(w / "other.npy", np.zeros(1))
    with h5py.File(w / "other.h5", "w") as o:
        o["weight"] = h5py.File(good, "r")[wname][()]
    _h5_replace(files["extlink_nir"], wname,
                lambda f, n, v: f.__setitem__(n, h5py.ExternalLink(str(w / "other.h5"), "/weight")))
    raw = w / "weight.raw"

    def external(f, n, v):
        raw.write_bytes(np.ascontiguousarray(v).tobytes())
        f.create_dataset(n, shape=v.shape, dtype=v.dtype, external=[(str(raw), 0, v.nbytes)])
    _h5_replace(files["extstore_nir"], wname, external)
    for name, value in (("ts_bytes", np.bytes_(b"8")), ("ts_nan", np.float64("nan")),
                        ("ts_float", np.float64(8.5))):
        _h5_replace(files[f"{name}_nir"], "node/metadata/time_steps",
                    lambda f, n, v, value=value: f.create_dataset(n, data=value))
    bad = np.eye(3)
    bad[1, 1] = np.nan
    files["nan_nir"] = w / "nan.nir"
    nir.write(str(files["nan_nir"]), _chain_graph(bad))
    files["silent_nir"] = w / "silent.nir"
    nir.write(str(files["silent_nir"]), _chain_graph(np.zeros((3, 3))))
    return files


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Tiny trained runs (1 epoch on a small npz) and damaged variants of them and of NIR files;
    read only by the cases."""
    from dpap_deploy.checkpoint import load_checkpoint
    from dpap_deploy.pipeline import train
    from dpap_deploy.training import TrainConfig
    w = tmp_path_factory.mktemp("integrity")
    npz = _npz(w / "good.npz")
    for model in ("ann-digits", "snn-digits"):
        train(TrainConfig(dataset=f"npz:{npz}", model=model, epochs=1, batch_size=32),
              w / model, progress=False)
    ann, snn = w / "ann-digits", w / "snn-digits"
    flipped = w / "ann_flipped"
    shutil.copytree(ann, flipped)
    flip_tensor_bytes(flipped / "checkpoint.pt", "7.weight")
    zero_conv = lambda ck: ck["model"]["0.weight"].zero_()  # noqa: E731 - input-independent net
    runs = {"ann": ann, "snn": snn, "ann_flipped": flipped,
            "ann_nan": _edit_checkpoint(ann, w / "ann_nan", lambda ck: _nan_rows(ck, "7.weight")),
            "snn_nan_beta": _edit_checkpoint(snn, w / "snn_nan_beta",
                                             lambda ck: ck["model"]["10.beta"].fill_(float("nan"))),
            "ann_history_str": _edit_checkpoint(ann, w / "ann_history_str",
                                                lambda ck: _set(ck, "history", "oops")),
            "ann_history_ints": _edit_checkpoint(ann, w / "ann_history_ints",
                                                 lambda ck: _set(ck, "history", [1, 2])),
            "ann_dead": _edit_checkpoint(ann, w / "ann_dead", zero_conv)}
    old = w / "ann_nodigest"                      # written before digests were stored
    shutil.copytree(ann, old)
    ck = load_checkpoint(old)
    ck.pop("path")
    ck.pop("digest")
    torch.save(ck, old / "checkpoint.pt")
    (w / "afile").write_text("a file, not a folder\n")
    return {"w": w, **runs, "ann_nodigest": old, **_nir_files(w)}


# ---- the CLI cases ---------------------------------------------------------------------------

# (id, argv, fragments the one stderr line must contain). {F}: a fresh output folder (must not
# exist afterwards); {E}: a private copy of the trained ANN run (must be unchanged afterwards).
REFUSED = [
    ("flipped-compact", "compact {ann_flipped} --out {F}", ["checkpoint.pt", "damaged",
                                                            "content digest mismatch"]),
    ("flipped-export-into-run", "export {ann_flipped} --target onnx --out {E}",
     ["checkpoint.pt", "damaged"]),
    ("nan-weight-compact", "compact {ann_nan} --out {F}", ["7.weight", "384 non-finite"]),
    ("nan-weight-export", "export {ann_nan} --target onnx --out {E}", ["7.weight", "non-finite"]),
    ("nan-weight-resume", "train --resume --epochs 3 --out {E:nan}", ["7.weight", "non-finite"]),
    ("nan-beta-loihi", "export {snn_nan_beta} --target loihi-sim --max-samples 5 --out {F}",
     ["10.beta", "1 non-finite"]),
    ("nan-nir", "export {nan_nir} --target loihi-sim --out {F}", ["node 'w' weight",
                                                                  "1 non-finite"]),
    ("damaged-nir", "export {damaged_nir} --target loihi-sim --out {F}",
     ["damaged.nir", "content digest mismatch"]),
    ("extlink-nir", "export {extlink_nir} --target loihi-sim --out {F}",
     ["external link", "other.h5"]),
    ("extstore-nir", "export {extstore_nir} --target loihi-sim --out {F}",
     ["external file", "weight.raw"]),
    ("ts-bytes-nir", "export {ts_bytes_nir} --target loihi-sim --out {F}",
     ["time_steps is '8'"]),
    ("ts-nan-nir", "export {ts_nan_nir} --target loihi-sim --out {F}", ["time_steps", "nan"]),
    ("ts-float-nir", "export {ts_float_nir} --target loihi-sim --out {F}", ["time_steps", "8.5"]),
    ("nir-out-file", "export {signed_nir} --target loihi-sim --out {w}/afile",
     ["afile", "is a file"]),
    ("nir-out-under-file", "export {signed_nir} --target loihi-sim --out {w}/afile/sub",
     ["afile", "is a file"]),
    ("history-str-compact", "compact {ann_history_str} --out {F}", ["history", "'oops'"]),
    ("history-str-inplace", "compact {E:history_str} --out {E:history_str}", ["history"]),
    ("history-ints-export", "export {ann_history_ints} --target onnx --out {F}",
     ["history", "list of per-epoch tables"]),
]

# Exports that run and fail their parity: the report is written, the error says why.
FAILED_PARITY = [
    ("silent-loihi", "export {snn} --target loihi-sim --max-samples 5 --quiet --out {F}",
     ["loihi-sim parity check failed", "silent output"]),
    ("silent-nir-target", "export {snn} --target nir --max-samples 5 --quiet --out {F}",
     ["nir parity check failed", "silent output"]),
    ("constant-onnx", "export {ann_dead} --target onnx --quiet --out {F}",
     ["onnx parity check failed", "constant output"]),
    ("silent-nir-file", "export {silent_nir} --target loihi-sim --max-samples 5 --quiet --out {F}",
     ["silent.nir", "silent output"]),
]


def _args(world, case_dir: Path, argv: str):
    fresh, existing = case_dir / "out", []
    out = []
    for tok in argv.split():
        for key in sorted(world, key=len, reverse=True):
            tok = tok.replace("{" + key + "}", str(world[key]))
        tok = tok.replace("{F}", str(fresh))
        if tok.startswith("{E"):
            variant = tok[3:-1]
            dst = case_dir / f"existing_{variant or 'run'}"
            if not dst.exists():
                shutil.copytree(world[f"ann_{variant}"] if variant else world["ann"], dst)
                existing.append(dst)
            tok = str(dst)
        out.append(tok)
    return out, fresh, existing


@pytest.fixture(scope="module")
def results(world, tmp_path_factory, cli):
    tmp = tmp_path_factory.mktemp("cases")
    inputs = _snapshot(world["w"])
    prepared = {}
    for name, argv, _frags in REFUSED + FAILED_PARITY:
        (tmp / name).mkdir()
        args, fresh, existing = _args(world, tmp / name, argv)
        prepared[name] = (args, fresh, existing, {str(e): _snapshot(e) for e in existing})
    runs = cli.many([p[0] for p in prepared.values()], env=ENV, timeout=300, jobs=2)
    done = {name: (r, fresh, before, {str(e): _snapshot(e) for e in existing})
            for (name, (_, fresh, existing, before)), r in zip(prepared.items(), runs)}
    done["__inputs__"] = (inputs, _snapshot(world["w"]))
    return done


def _one_line(r, frags):
    """Exit 2 and exactly one error line holding ``frags`` (a failed parity too, run --quiet:
    its reason is said once, not also as a silent-output warning)."""
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    assert "Traceback" not in r.stderr
    assert len(lines) == 1 and lines[-1].startswith("dpap-deploy: error: "), r.stderr
    for f in frags:
        assert f in lines[-1], (f, lines[-1])
    return lines[-1]


@pytest.mark.parametrize("case", REFUSED, ids=[c[0] for c in REFUSED])
def test_refused(results, case):
    r, fresh, before, after = results[case[0]]
    _one_line(r, case[2])
    assert not fresh.exists(), sorted(p.name for p in fresh.rglob("*"))
    assert before == after, f"{case[0]} changed files in an existing run folder"


@pytest.mark.parametrize("case", FAILED_PARITY, ids=[c[0] for c in FAILED_PARITY])
def test_silent_or_constant_output_is_a_failed_parity(results, case):
    r, fresh, _, _ = results[case[0]]
    _one_line(r, case[2])
    assert "agreement 100" not in r.stdout and "passed" not in r.stdout
    e = json.loads((fresh / "report.json").read_text())["export"]
    assert e["passed"] is False and "failure" in e["parity"]


def test_inputs_untouched(results):
    before, after = results["__inputs__"]
    assert before == after


def test_export_records_each_files_sha256(results):
    """The export section lists a sha256 per file, equal to the file's."""
    r, fresh, _, _ = results["silent-loihi"]
    e = json.loads((fresh / "report.json").read_text())["export"]
    assert set(e["file_sha256"]) == set(e["files"]) == {"network-bn-folded.nir"}
    for name, digest in e["file_sha256"].items():
        assert hashlib.sha256((fresh / name).read_bytes()).hexdigest() == digest
    meta = nir.read(str(fresh / "network-bn-folded.nir")).metadata
    from dpap_deploy.exporters.nir_checks import graph_digest
    assert meta["content_sha256"] == graph_digest(nir.read(str(fresh / "network-bn-folded.nir")))


# ---- the Python API --------------------------------------------------------------------------

def test_api_checkpoint_digest(world, tmp_path):
    from dpap_deploy.checkpoint import load_checkpoint
    from dpap_deploy.errors import CheckpointError
    from dpap_deploy.trained import load_trained
    with pytest.raises(CheckpointError, match="damaged checkpoint: content digest mismatch"):
        load_checkpoint(world["ann_flipped"])
    assert "digest" in load_checkpoint(world["ann"])
    old = load_trained(world["ann_nodigest"])          # files from before digests still load
    assert old.kind == "ann" and "digest" not in load_checkpoint(world["ann_nodigest"])


def test_api_model_file_digest_and_finite(world, tmp_path):
    from dpap_deploy.errors import CheckpointError
    from dpap_deploy.serialize import load_model, save_model
    from dpap_deploy.trained import load_trained
    model = load_trained(world["snn"]).model
    save_model(tmp_path / "m.pt", model, "snn")
    load_model(tmp_path / "m.pt")
    shutil.copy(tmp_path / "m.pt", tmp_path / "flipped.pt")
    flip_tensor_bytes(tmp_path / "flipped.pt", "7.weight")
    with pytest.raises(CheckpointError, match="flipped.pt is a damaged model file"):
        load_model(tmp_path / "flipped.pt")
    data = torch.load(tmp_path / "m.pt", weights_only=True)
    data.pop("digest")
    torch.save(data, tmp_path / "old.pt")             # from before digests: loads
    load_model(tmp_path / "old.pt")
    with torch.no_grad():
        model[10].threshold.fill_(float("inf"))
    save_model(tmp_path / "inf.pt", model, "snn")
    with pytest.raises(CheckpointError, match=r"10.threshold holds 1 non-finite"):
        load_model(tmp_path / "inf.pt")


def test_api_export_refuses_non_finite_networks(world, tmp_path):
    from dpap_deploy.errors import DPAPError
    from dpap_deploy.exporters import ExportJob, export
    from dpap_deploy.trained import load_trained
    t = load_trained(world["snn"])
    with torch.no_grad():
        t.model[0].bias[:2] = float("nan")
    job = ExportJob(t.model, "snn", torch.rand(4, 1, 8, 8), torch.zeros(4, dtype=torch.long), 4)
    with pytest.raises(DPAPError, match="0.bias holds 2 non-finite"):
        export("nir", job, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_api_record_types(world):
    from dpap_deploy.errors import DPAPError
    from dpap_deploy.pipeline import compact
    from dpap_deploy.trained import load_trained
    with pytest.raises(DPAPError, match="its history is str 'oops'"):
        load_trained(world["ann_history_str"])
    with pytest.raises(DPAPError, match="history"):
        compact(world["ann_history_ints"], world["w"] / "never")
    assert not (world["w"] / "never").exists()


def test_api_hdf5_outside_the_file(world, tmp_path):
    from dpap_deploy.errors import DPAPError
    from dpap_deploy.exporters.hdf5_safety import check_self_contained
    from dpap_deploy.exporters.netx_export import run_netx
    check_self_contained(world["signed_nir"], "NIR file")
    with pytest.raises(DPAPError, match="external link to .*other.h5"):
        check_self_contained(world["extlink_nir"], "NIR file")
    with pytest.raises(DPAPError, match="external file.*weight.raw"):
        check_self_contained(world["extstore_nir"], "NIR file")
    net = tmp_path / "network.net"
    with h5py.File(net, "w") as f:
        f["layer/0/type"] = np.bytes_("input")
        f["layer/0/shape"] = h5py.ExternalLink(str(world["w"] / "other.h5"), "/weight")
    with pytest.raises(DPAPError, match="netx file"):
        run_netx(net, np.zeros((1, 1, 8, 8), np.float32), 4)


def test_api_nir_file_checks_out_before_reading(world, monkeypatch):
    """``--out`` is checked before the NIR file is read or anything simulated."""
    from dpap_deploy.errors import ConfigError, DPAPError
    from dpap_deploy.exporters import nir_file

    def boom(*a, **k):
        raise AssertionError("read before --out was checked")
    with monkeypatch.context() as m:
        m.setattr(nir_file, "read_graph", boom)
        with pytest.raises(ConfigError, match="is a file"):
            nir_file.run_nir_file(world["signed_nir"], world["w"] / "afile")
    with pytest.raises(DPAPError, match="time_steps is '8'"):
        nir_file.run_nir_file(world["ts_bytes_nir"], world["w"] / "never")
    assert not (world["w"] / "never").exists()


def test_nir_file_takes_the_output_lock(world, tmp_path, cli):
    from dpap_deploy.lock import output_lock
    out = tmp_path / "busy"
    with output_lock(out, "a test holding the folder"):
        r = cli(["export", world["signed_nir"], "--target", "loihi-sim", "--out", out], env=ENV)
        assert sorted(p.name for p in out.iterdir()) == [".dpap-lock"]
    _one_line(r, ["is in use by", "a test holding the folder"])


def test_hdf5_walk_takes_thousands_of_nested_groups(tmp_path):
    """The self-containment walk uses a stack: an external link under 3,000 nested groups is
    found and refused in one line (recursion would end in RecursionError, exit 1)."""
    import h5py
    from dpap_deploy.errors import DPAPError
    from dpap_deploy.exporters.hdf5_safety import check_self_contained
    p = tmp_path / "deep.nir"
    with h5py.File(p, "w") as f:
        g = f
        for _ in range(3000):
            g = g.create_group("g")
        g["w"] = h5py.ExternalLink("other.h5", "x")
    with pytest.raises(DPAPError, match="external link to other.h5"):
        check_self_contained(p, "NIR file")
