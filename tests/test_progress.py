"""The longer stages say when they start and end, through a ``log`` callable: the API is silent
unless given one, and the CLI's lines go to stderr, also into a pipe, leaving stdout to the
result line."""
from pathlib import Path

import numpy as np
import pytest

from dpap_deploy import pipeline
from dpap_deploy.progress import Stage
from dpap_deploy.training import TrainConfig, train


@pytest.fixture(scope="module")
def snn_run(tmp_path_factory):
    """A one-epoch snn-digits run on a small npz."""
    from dpap_deploy.data import load_dataset
    w = tmp_path_factory.mktemp("progress")
    d = load_dataset("digits")
    np.savez(w / "small.npz", x_train=d.x_train[:128].numpy(), y_train=d.y_train[:128].numpy(),
             x_test=d.x_test[:40].numpy(), y_test=d.y_test[:40].numpy())
    train(TrainConfig(dataset=f"npz:{w / 'small.npz'}", epochs=1, batch_size=64), w / "run",
          progress=False)
    return w / "run"


def test_stage_lines_and_silence():
    lines = []
    with Stage(lines.append, "compact", "counting on 40 samples"):
        pass
    assert lines[0] == "compact: counting on 40 samples ..."
    assert lines[1].startswith("compact: counting on 40 samples done in ") and len(lines) == 2
    with Stage(None, "compact", "nothing to say"):     # no log: nothing, and no error
        pass
    with pytest.raises(ValueError), Stage(lines.append, "x", "failing"):
        raise ValueError("boom")
    assert lines[-1] == "x: failing ..."              # no "done" line for a stage that failed


def _measure(run: Path, log):
    from dpap_deploy.compaction.measure import compact_and_measure
    from dpap_deploy.trained import load_trained
    t = load_trained(run)
    d = t.load_data()
    return compact_and_measure(t.model, t.kind, t.masks, d.x_test, d.y_test, t.cfg.time_steps,
                               log=log)


def test_compaction_says_each_stage_only_when_asked(snn_run, capsys):
    lines = []
    _measure(snn_run, lines.append)
    starts = [l for l in lines if l.endswith(" ...")]
    assert [l.split(" ", 2)[1] for l in starts] == ["removing", "folding", "accuracy",
                                                   "counting", "NeuroBench's"]
    assert len(lines) == 10 and all(l.startswith("compact: ") for l in lines)
    assert "on 40 samples" in starts[0]
    _measure(snn_run, None)
    assert capsys.readouterr() == ("", "")                   # the API is silent by default


def test_export_says_start_and_check(snn_run, tmp_path):
    from dpap_deploy.data import load_dataset
    from dpap_deploy.exporters import ExportJob, export
    from dpap_deploy.serialize import load_model
    pipeline.compact(snn_run, tmp_path / "c")
    model, kind, meta = load_model(tmp_path / "c" / "compact.pt")
    d = load_dataset("digits")
    lines = []
    export("nir", ExportJob(model, kind, d.x_test[:20], d.y_test[:20], meta["time_steps"]),
           tmp_path / "nir", log=lines.append)
    assert lines[0] == "export nir: writing the files, running them in the consumer on 20 " \
                       "samples ..."
    assert lines[1].startswith("export nir: writing the files, running them in the consumer "
                               "on 20 samples done in ")
    assert lines[2] == "export nir: checking the result against torch (agreement 100.00%)"


def test_cli_compact_into_a_pipe(snn_run, tmp_path, cli):
    r = cli(["compact", snn_run, "--out", tmp_path / "c"], timeout=600)
    assert r.returncode == 0, r.stderr
    progress = [l for l in r.stderr.splitlines() if l.startswith("compact: ")]
    assert len(progress) >= 5 and progress[0].endswith(" ...")
    assert len(r.stdout.splitlines()) == 1 and r.stdout.startswith("parameters ")
    quiet = cli(["compact", snn_run, "--out", tmp_path / "q", "--quiet"], timeout=600)
    assert quiet.returncode == 0, quiet.stderr
    assert not [l for l in quiet.stderr.splitlines() if l.startswith("compact: ")]
    assert quiet.stdout.splitlines()[0].split(";")[0] == r.stdout.split(";")[0]


def test_compaction_reports_neurobench_accuracy(snn_run, tmp_path):
    """NeuroBench's accuracy (a tie goes to the lowest class) stands beside ours (ties wrong),
    on the same samples: ours equals the compacted network's accuracy."""
    rep = pipeline.compact(snn_run, tmp_path / "c").to_dict()
    nb = rep["neurobench"]["compact"]
    assert nb["accuracy_ties_wrong"] == rep["compaction"]["accuracy_compact"]
    assert 0 <= nb["accuracy_ties_wrong"] <= nb["accuracy"] <= 1


def test_a_logged_lava_run_goes_in_pieces_with_the_same_spikes(monkeypatch):
    """With a log the Lava run goes in pieces of PROGRESS_SAMPLES samples, a line after each,
    and Lava continues where each piece stopped: the spikes equal the reference's (and so
    the unlogged run's, which test_nir_lava checks) on a graph with a recurrent edge and relays."""
    import numpy as np
    from dpap_deploy.exporters import nir_to_lava
    from dpap_deploy.exporters.nir_torch import run_reference
    import nir_graphs as G
    monkeypatch.setattr(nir_to_lava, "PROGRESS_SAMPLES", 5)
    g = G.conv1d_recurrent(np.random.default_rng(0))
    net = nir_to_lava.LavaNetwork(g, 8)
    x = np.random.default_rng(1).uniform(0, 1.5, (12,) + net.in_shape).astype(np.float32)
    lines = []
    got = net.run(x, log=lines.append)
    assert np.array_equal(got, run_reference(g, x, 8))
    total = int(lines[-1].split("/")[1].split()[0].replace(",", ""))
    assert len(lines) == -(-total // 40) >= 3 and lines[0].startswith("lava: 40/")
