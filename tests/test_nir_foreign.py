"""NIR files written by other libraries (sinabs IAF, LIF and a Conv2d-SumPool2d IAF network,
read with our stack: exact reproduction of the writer's own output spikes, in the torch
reference and in Lava, when the step ``dt`` is known (the file's metadata or ``dt=``, the
CLI's ``--dt``); a warning, then a failed parity or a one-line refusal, when it is not.

The files in ``tests/data/nir_foreign`` were written by the libraries themselves
(``make_files.py`` there, run by hand); ``K.npz`` holds the inputs and the writer's spikes.
"""
import json
import os
import logging
from pathlib import Path

import nir
import numpy as np
import pytest

from dpap_deploy.errors import ConfigError, DPAPError, ParityError, UnsupportedModelError
from dpap_deploy.exporters.nir_checks import read_checked, resolve_dt
from dpap_deploy.exporters.nir_file import run_nir_file
from dpap_deploy.exporters.nir_torch import run_reference

DATA = Path(__file__).resolve().parent / "data" / "nir_foreign"
KINDS = ["sinabs_iaf", "sinabs_lif", "sinabs_conv_iaf", "norse_iaf", "norse_lif",
         "snntorch_leaky"]
# the step each writer's equations correspond to (make_files.py's docstring)
DT = {"sinabs_iaf": 1.0, "sinabs_conv_iaf": 1.0, "sinabs_lif": 5.0 * (1 - np.exp(-1 / 5.0)), "norse_iaf": 1.0,
      "norse_lif": 1e-6, "snntorch_leaky": 1e-4}
SPIKES = {"sinabs_iaf": 44, "sinabs_conv_iaf": 86, "sinabs_lif": 48, "norse_iaf": 44, "norse_lif": 43,
          "snntorch_leaky": 74}


def _data(kind):
    with np.load(DATA / f"{kind}.npz") as f:
        return f["x"], f["spikes"], float(f["dt"])


def _reference(name: str, dt=None):
    notes = []
    graph = read_checked(DATA / name, notes=notes)
    x, _, _ = _data(name.split(".")[0].removesuffix("-dt"))
    return run_reference(graph, x, x.shape[1], resolve_dt(graph, dt, name)[0]), notes


@pytest.mark.parametrize("kind", KINDS)
def test_the_writers_spikes_come_back_with_the_files_dt(kind):
    x, spikes, dt = _data(kind)
    assert dt == pytest.approx(DT[kind], rel=1e-12) and spikes.sum() == SPIKES[kind]
    out, notes = _reference(f"{kind}-dt.nir")               # dt in the metadata
    assert np.array_equal(out, spikes)
    out, _ = _reference(f"{kind}.nir", dt=DT[kind])          # dt given (--dt)
    assert np.array_equal(out, spikes)
    # sinabs and Norse write a leading batch / time dimension in Input: dropped, and said
    if kind in ("sinabs_iaf", "sinabs_lif", "norse_iaf", "norse_lif"):
        lead = 10 if kind.startswith("sinabs") else 1
        assert notes == [f"Input 'input' shape [{lead}, 16] read as [16]: its leading dimension "
                         "(the writer's batch or time steps) is not part of one sample: its "
                         "consumer '0' takes [16]"]
    else:
        assert notes == []


def _as_reported(path: Path, folder: Path) -> str:
    """How a report in ``folder`` names ``path``: relative to the folder when they share a
    folder below the root (a checkout under /tmp next to pytest's /tmp folders), else the
    file's name alone (never a machine path)."""
    p, f = path.resolve(), folder.resolve()
    return p.name if os.path.commonpath([p, f]) == p.anchor else os.path.relpath(p, f)


@pytest.mark.parametrize("kind", KINDS)
def test_lava_reproduces_the_writer_with_the_files_dt(kind, tmp_path):
    x, spikes, dt = _data(kind)
    rep = run_nir_file(DATA / f"{kind}-dt.nir", tmp_path / "o", time_steps=x.shape[1],
                       input_file=DATA / f"{kind}.npz")["export"]
    assert rep["passed"] and rep["parity"]["identical_spike_trains"] == 1.0
    assert rep["parity"]["output_spikes_reference"] == spikes.sum() == SPIKES[kind]
    assert rep["dt"] == dt and rep["dt_source"] == "the file's metadata" and rep["warnings"] == []
    md = (tmp_path / "o/report.md").read_text()
    assert f"- dt: {dt:g} s (the file's metadata)" in md
    for text in (md, (tmp_path / "o/report.json").read_text()):     # no machine path
        assert str(DATA) not in text and str(tmp_path) not in text
    assert rep["source_nir"] == _as_reported(DATA / f"{kind}-dt.nir", tmp_path / "o")
    assert (tmp_path / "o" / rep["source_nir"]).resolve() == (DATA / f"{kind}-dt.nir").resolve() \
        or rep["source_nir"] == f"{kind}-dt.nir"


def test_dt_given_to_the_api_is_used_and_recorded(tmp_path):
    x, spikes, _ = _data("sinabs_iaf")
    (tmp_path / "in").mkdir()
    for f in ("sinabs_iaf.nir", "sinabs_iaf.npz"):
        (tmp_path / "in" / f).write_bytes((DATA / f).read_bytes())
    rep = run_nir_file(tmp_path / "in/sinabs_iaf.nir", tmp_path / "o", time_steps=x.shape[1],
                       input_file=tmp_path / "in/sinabs_iaf.npz", dt=1.0)["export"]
    assert rep["passed"] and rep["parity"]["identical_spike_trains"] == 1.0
    assert rep["parity"]["output_spikes_reference"] == 44
    assert (rep["dt"], rep["dt_source"]) == (1.0, "--dt")
    assert rep["source_nir"] == "../in/sinabs_iaf.nir"     # relative to the report's folder
    assert rep["inputs"] == "x of ../in/sinabs_iaf.npz"
    assert str(tmp_path) not in (tmp_path / "o/report.md").read_text()


def test_a_file_without_dt_warns_and_a_silenced_network_fails(tmp_path, caplog):
    x, _, _ = _data("sinabs_iaf")
    with caplog.at_level(logging.WARNING, logger="dpap_deploy"), \
            pytest.raises(ParityError, match="emitted no spike|silent|no output spike"):
        run_nir_file(DATA / "sinabs_iaf.nir", tmp_path / "o", time_steps=x.shape[1],
                     input_file=DATA / "sinabs_iaf.npz")
    warnings = [r.getMessage() for r in caplog.records if r.name == "dpap_deploy"]
    assert warnings == [f"warning: {DATA / 'sinabs_iaf.nir'} stores no dt: its time constants "
                        "are discretised with the default dt = 1e-4 (what snnTorch writes); if "
                        "its writer used another step, pass it with --dt"]
    rep = json.loads((tmp_path / "o/report.json").read_text())["export"]
    assert (rep["dt"], rep["dt_source"]) == (1e-4, "default 1e-4: the file has none")
    named = _as_reported(DATA / "sinabs_iaf.nir", tmp_path / "o")
    assert rep["warnings"] == [w.removeprefix("warning: ").replace(str(DATA / "sinabs_iaf.nir"),
                                                                 named) for w in warnings]
    assert str(DATA) not in (tmp_path / "o/report.json").read_text()
    assert f"- **warning**: {named} stores no dt" in (tmp_path / "o/report.md").read_text()
    assert rep["parity"]["output_spikes_reference"] == 0 and rep["passed"] is False


def test_snntorch_file_without_dt_is_right_with_the_default(tmp_path):
    x, spikes, _ = _data("snntorch_leaky")
    out, _ = _reference("snntorch_leaky.nir")
    assert np.array_equal(out, spikes)


@pytest.mark.parametrize("kind", ["sinabs_lif", "norse_iaf"])
def test_iaf_and_lif_files_without_dt_compute_something_else(kind):
    out, _ = _reference(f"{kind}.nir")          # default 1e-4: gain r dt/tau is tiny
    assert out.sum() == 0 and SPIKES[kind] > 0


def test_tau_shorter_than_dt_is_refused_naming_node_value_and_fix(tmp_path):
    # Norse writes tau = dt_n / tau_mem_inv = 1e-5; under 1e-4: decay 1 - 10 = -9
    with pytest.raises(UnsupportedModelError) as exc:
        run_nir_file(DATA / "norse_lif.nir", tmp_path / "o", time_steps=10)
    msg = str(exc.value)
    assert msg == ("NIR LIF node '1': tau = 1e-05 is shorter than the step dt = 0.0001: the "
                   "decay 1 - dt/tau would be -9, outside [0, 1]; pass the dt the file was "
                   "written for (--dt)")
    with pytest.raises(UnsupportedModelError, match="node '1': tau = 1e-05 .* dt = 0.001"):
        _reference("norse_lif-dt.nir", dt=1e-3)


def _chain(input_shape, neuron, dt=1e-4):
    n = {"input": nir.Input(np.array(input_shape)),
         "fc": nir.Affine(np.eye(4, 16, dtype=np.float32) * 2, np.zeros(4, np.float32)),
         "n": neuron, "output": nir.Output(np.array([4]))}
    e = [("input", "fc"), ("fc", "n"), ("n", "output")]
    return nir.NIRGraph(nodes=n, edges=e, metadata={"dt": dt}, type_check=False)


def test_an_input_shape_that_fits_no_way_is_refused_in_one_line(tmp_path):
    nir.write(str(tmp_path / "g.nir"), _chain([3, 5], nir.IF(r=np.ones(4) * 1e4,
                                                          v_threshold=np.ones(4))))
    with pytest.raises(DPAPError) as exc:
        read_checked(tmp_path / "g.nir")
    assert str(exc.value) == (f"{tmp_path / 'g.nir'}: Input 'input' has shape [3, 5], but its "
                              "consumer 'fc' (Affine) takes [16] per sample; write the Input "
                              "with the shape of one sample, without the batch dimension")


def test_scalar_neuron_parameters_apply_to_every_neuron():
    # sinabs writes its LIF parameters as scalars (shape ()); NIR's type check refuses them
    with pytest.raises(ValueError, match="[Tt]ype"):
        nir.read(str(DATA / "sinabs_lif-dt.nir"))
    graph = read_checked(DATA / "sinabs_lif-dt.nir")
    assert {np.shape(getattr(graph.nodes[n], p)) for n in ("1", "3")
            for p in ("tau", "r", "v_leak", "v_threshold")} == {()}
    x, spikes, dt = _data("sinabs_lif")
    scalar = run_reference(graph, x, x.shape[1], dt)
    for name, size in (("1", 8), ("3", 4)):              # the same values, one per neuron
        node = graph.nodes[name]
        for p in ("tau", "r", "v_leak", "v_threshold", "v_reset"):
            setattr(node, p, np.full(size, np.asarray(getattr(node, p)), np.float32))
    assert np.array_equal(scalar, spikes) and np.array_equal(run_reference(graph, x, 10, dt), spikes)


def test_beta_zero_tau_equal_to_dt_is_kept():
    from dpap_deploy.graph.nir_neurons import decay
    tau32 = np.float32(1e-4 / (1 - 0.0))          # snnTorch's beta = 0
    assert decay(np.array([tau32]), 1e-4).tolist() == [0.0]


@pytest.mark.parametrize("bad", [0, -1e-3, float("nan"), True, "1e-3"])
def test_a_bad_dt_is_refused(bad):
    graph = read_checked(DATA / "snntorch_leaky.nir")
    with pytest.raises(ConfigError, match="--dt .*give the file's time step as a positive"):
        resolve_dt(graph, bad, "f.nir")


def test_shapes_that_do_not_fit_are_refused_naming_the_node(tmp_path):
    g = _chain([16], nir.IF(r=np.ones(4) * 1e4, v_threshold=np.ones(4)))
    g.nodes["fc2"] = nir.Linear(np.ones((2, 5), np.float32))       # takes 5, gets 4
    g.edges = [("input", "fc"), ("fc", "n"), ("n", "fc2"), ("fc2", "output")]
    nir.write(str(tmp_path / "g.nir"), g)
    with pytest.raises(UnsupportedModelError) as exc:
        run_reference(read_checked(tmp_path / "g.nir"), np.zeros((1, 16), np.float32), 2)
    assert str(exc.value).startswith("NIR node 'fc2' (Linear) cannot take its input of shape "
                                     "[4] per sample (")
    assert str(exc.value).endswith("); fix the shapes in the file")


def test_cli_says_the_default_dt_then_refuses_in_one_line(tmp_path):
    import os
    import subprocess
    import sys
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]),
           "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-m", "dpap_deploy", "export", str(DATA / "norse_lif.nir"),
                        "--target", "loihi-sim", "--out", str(tmp_path / "o"), "--time-steps",
                        "10"], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 2
    assert r.stderr.splitlines() == [
        f"warning: {DATA / 'norse_lif.nir'} stores no dt: its time constants are discretised "
        "with the default dt = 1e-4 (what snnTorch writes); if its writer used another step, "
        "pass it with --dt",
        "dpap-deploy: error: NIR LIF node '1': tau = 1e-05 is shorter than the step dt = "
        "0.0001: the decay 1 - dt/tau would be -9, outside [0, 1]; pass the dt the file was "
        "written for (--dt)"]
