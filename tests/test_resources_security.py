"""Resources and planted files: a full disk, an interrupted Lava run's shared memory, symbolic
links inside an output folder and hostile ``report.json`` files each end in one line (exit 2)
with nothing half-written, nothing leaked and nothing written outside the output folder."""
from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import shared_cli
from test_bad_inputs import _npz, _snapshot

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
TORCH_FULL = "[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534"
H5PY_FULL = ("Can't synchronously write data (file write failed: time = Sun Dec  6 21:02:39 2026"
             "\n, filename = 'x', file descriptor = 3, errno = 28, error message = 'No space left"
             " on device', buf = 0x7f49, total write size = 744704, bytes this sub-write = 744704"
             ", offset = 57344)")


def cli(*args, patch: str = "") -> subprocess.CompletedProcess:
    """The real command line in its own process (conftest's ``Cli``: ``python -c``, forked after
    the imports); ``patch`` runs first (an injected fault)."""
    code = textwrap.dedent(patch) + "\nfrom dpap_deploy.cli import main\nsys.exit(main(sys.argv[1:]))"
    return shared_cli()(args, code="import sys\n" + code, env=ENV, timeout=300)


def one_error_line(r: subprocess.CompletedProcess, *fragments: str) -> str:
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1, (r.returncode, r.stderr[-3000:])
    assert lines[0].startswith("dpap-deploy: error: "), lines[0]
    for f in fragments:
        assert f in lines[0], (f, lines[0])
    return lines[0]


def temporaries(folder: Path) -> list[Path]:
    return [p for p in folder.rglob(".*") if ".tmp" in p.name]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A 1-epoch ann-digits run, its compaction and its ONNX export (never written by tests)."""
    from dpap_deploy.pipeline import compact, export, train
    from dpap_deploy.training import TrainConfig
    w = tmp_path_factory.mktemp("runs")
    cfg = TrainConfig(dataset=f"npz:{_npz(w / 'good.npz')}", model="ann-digits", epochs=1,
                      batch_size=32)
    train(cfg, w / "run", progress=False)
    compact(w / "run", w / "compacted")
    export(w / "run", "onnx", w / "exported")
    return w


def copy(runs: Path, name: str, dst: Path) -> Path:
    shutil.copytree(runs / name, dst)
    return dst


# -- 1. a full disk -------------------------------------------------------------------------

def _fail_after_writing(target: str, error: str, arg: int) -> str:
    """Patch code: ``module:attr.attr`` writes a little to its file argument ``arg``, then
    raises ``error`` (a disk that fills in the middle of a file)."""
    module, path = target.split(":")
    attr = path.rsplit(".", 1)[-1]
    return f"""
        import errno, importlib
        _owner = importlib.import_module("{module}")
        for _a in "{path}".split(".")[:-1]:
            _owner = getattr(_owner, _a)
        def _fail(*args, **kw):
            dest = args[{arg}]
            if hasattr(dest, "write"):
                dest.write(b"half a file")
            else:
                open(dest, "wb").write(b"half a file")
            raise {error}
        setattr(_owner, "{attr}", _fail)
    """


def _fail_fsync(error: str) -> str:
    """Patch code: every ``os.fsync`` raises ``error`` (a file system that reports a full disk
    only when the data reaches it)."""
    return f"""
        import errno, os
        def _fail(fd):
            raise {error}
        os.fsync = _fail
    """


ENOSPC = "OSError(errno.ENOSPC, 'No space left on device')"
WRITERS = [  # (id, injected fault, run copied to D (None: D is new), command (--quiet: no
    #          progress lines beside the error), file that must stay as it was (or not be written))
    ("checkpoint-torch", _fail_after_writing("torch:save", f"RuntimeError({TORCH_FULL!r})", 1),
     None, ["train", "--model", "ann-digits", "--dataset", "npz:{npz}", "--epochs", "1",
            "--quiet", "--out", "{D}"], "checkpoint.pt"),
    ("compact-enospc", _fail_after_writing("torch:save", ENOSPC, 1), "compacted",
     ["compact", "{run}", "--quiet", "--out", "{D}"], "compact.pt"),
    ("plot-enospc", _fail_after_writing("matplotlib.figure:Figure.savefig", ENOSPC, 1), "run",
     ["report", "{D}"], "plots/accuracy.png"),
    ("onnx-enospc", _fail_after_writing("torch.onnx:export", ENOSPC, 2), "exported",
     ["export", "{run}", "--target", "onnx", "--quiet", "--out", "{D}"], "model.onnx"),
    ("fsync-h5py-text", _fail_fsync(f"OSError({H5PY_FULL!r})"), "compacted", ["report", "{D}"],
     "report.md"),
]


@pytest.mark.parametrize("case", WRITERS, ids=[c[0] for c in WRITERS])
def test_disk_full_in_a_writer_is_one_line_and_keeps_the_old_file(runs, tmp_path, case):
    _id, patch, source, argv, kept = case
    d = copy(runs, source, tmp_path / "d") if source else tmp_path / "d"
    before = _snapshot(d) if source else {}
    args = [a.replace("{D}", str(d)).replace("{run}", str(runs / "run"))
            .replace("{npz}", str(runs / "good.npz")) for a in argv]
    line = one_error_line(cli(*args, patch=patch), "no space left in", "bytes free",
                          "choose another --out")
    assert f"in {d}" in line, line
    assert temporaries(d) == [] and not (d / ".dpap-lock").exists()
    assert _snapshot(d).get(kept) == before.get(kept)


def test_disk_full_is_recognised_however_it_is_wrapped(tmp_path, monkeypatch):
    from dpap_deploy import atomic
    from dpap_deploy.errors import DiskFullError
    f = tmp_path / "network.nir"
    atomic.atomic_write_text(f, "old\n")
    for error in (OSError(errno.ENOSPC, "No space left on device"), OSError(H5PY_FULL),
                  RuntimeError(TORCH_FULL), OSError(errno.EDQUOT, "Disk quota exceeded")):
        with pytest.raises(DiskFullError, match=f"no space left in {tmp_path} to write "
                                                "network.nir: 4 bytes written"):
            with atomic.atomic_path(f) as tmp:
                tmp.write_text("half")
                raise error
        assert f.read_text() == "old\n" and sorted(p.name for p in tmp_path.iterdir()) == [f.name]
    with pytest.raises(RuntimeError, match="shape mismatch"):   # other errors pass unchanged
        with atomic.atomic_path(f):
            raise RuntimeError("shape mismatch")
    monkeypatch.setattr(atomic, "free_bytes", lambda _folder: 10)
    with pytest.raises(DiskFullError, match="it needs 1,000 bytes, 10 bytes are free"):
        atomic.atomic_write_data(f, b"x" * 1000)            # known size: checked first
    assert f.read_text() == "old\n" and len(list(tmp_path.iterdir())) == 1


@pytest.fixture
def small_fs(tmp_path):
    """A 2 MiB tmpfs nearly filled, or a skip saying why there is none."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({r.stderr.strip() or r.returncode})")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


def _fill(folder: Path, leave: int) -> None:
    with open(folder / "filler", "wb") as fh:
        fh.write(b"\0" * (shutil.disk_usage(folder).free - leave))


def test_a_real_full_disk_during_train_is_one_line(runs, small_fs):
    _fill(small_fs, 24 * 1024)
    out = small_fs / "run"
    r = cli("train", "--model", "ann-digits", "--dataset", f"npz:{runs / 'good.npz'}",
            "--epochs", "1", "--quiet", "--out", out)
    one_error_line(r, "no space left in", str(out), "bytes free")
    assert temporaries(small_fs) == [] and not (out / ".dpap-lock").exists()


def test_a_real_full_disk_during_report_keeps_every_file(runs, small_fs):
    d = copy(runs, "run", small_fs / "run")
    before = _snapshot(d)
    _fill(small_fs, 0)
    one_error_line(cli("report", d), "no space left in", str(d), "0 bytes free")
    assert _snapshot(d) == before and temporaries(small_fs) == []
    assert not (d / ".dpap-lock").exists()


def test_hdf5_written_through_memory_fails_cleanly_on_a_full_disk(small_fs):
    """HDF5 crashes the process (SIGSEGV) when the disk fills while it closes a file; written
    into ``atomic_buffer`` it never meets the disk, and the bytes fail as one plain write."""
    _fill(small_fs, 40 * 1024)
    code = textwrap.dedent(f"""
        import nir, numpy as np
        from dpap_deploy.atomic import atomic_buffer
        from dpap_deploy.errors import DiskFullError
        g = nir.NIRGraph(nodes={{"input": nir.Input(np.array([500])),
                                "w": nir.Linear(weight=np.random.rand(500, 500)),
                                "output": nir.Output(np.array([500]))}},
                         edges=[("input", "w"), ("w", "output")])
        try:
            with atomic_buffer("{small_fs}/network.nir") as buf:
                nir.write(buf, g)
        except DiskFullError as exc:
            print(exc)
    """)
    r = subprocess.run([sys.executable, "-c", code], env=ENV, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0 and r.stderr == "", (r.returncode, r.stderr[-2000:])
    assert "network.nir: it needs" in r.stdout and "bytes are free" in r.stdout
    assert sorted(p.name for p in small_fs.iterdir()) == ["filler"]


# -- 2. Ctrl-C during a Lava run ------------------------------------------------------------

def _segments() -> set[str]:
    return {p.name for p in Path("/dev/shm").glob("psm_*")}


def _sigint_default():
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_during_a_lava_run_leaves_no_shared_memory(tmp_path):
    import nir
    import nir_graphs as G
    from dpap_deploy.exporters.lava_process import descendants
    nir.write(str(tmp_path / "g.nir"), G.cuba_if_avgpool(np.random.default_rng(0)))
    before = _segments()
    p = subprocess.Popen([sys.executable, "-m", "dpap_deploy", "export", str(tmp_path / "g.nir"),
                          "--target", "loihi-sim", "--out", str(tmp_path / "o"), "--samples",
                          "20000"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env=ENV, start_new_session=True, preexec_fn=_sigint_default)
    try:
        t0 = time.time()
        while len(descendants(p.pid)) < 5 and time.time() - t0 < 120:
            time.sleep(0.2)
        time.sleep(1.0)                                # the run is under way
        during = _segments() - before
        os.killpg(p.pid, signal.SIGINT)
        _, err = p.communicate(timeout=30)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
    assert p.returncode == 130 and err.strip().splitlines() == ["dpap-deploy: interrupted"]
    assert len(during) >= 10                            # Lava's channels were there
    time.sleep(0.5)
    assert _segments() & during == set()


def test_only_the_runs_own_segments_are_removed(tmp_path):
    """A segment this process maps and that is new goes (the tracker, still running, is told:
    no leak warning at exit); one another program made meanwhile stays."""
    other = subprocess.run([sys.executable, "-c", textwrap.dedent("""
        from multiprocessing import resource_tracker, shared_memory
        s = shared_memory.SharedMemory(create=True, size=4096)
        resource_tracker.unregister(s._name, "shared_memory")
        print(s.name)
    """)], capture_output=True, text=True, check=True).stdout.strip()
    code = textwrap.dedent(f"""
        from multiprocessing import shared_memory
        from dpap_deploy.exporters.lava_process import remove_run_segments, shm_segments
        before = shm_segments() - {{"{other}"}}
        ours = shared_memory.SharedMemory(create=True, size=4096)
        assert remove_run_segments(before) == [ours.name], remove_run_segments
        ours.close()
    """)
    try:
        r = subprocess.run([sys.executable, "-c", code], env=ENV, capture_output=True,
                           text=True, timeout=60)
        assert r.returncode == 0 and r.stderr == "", r.stderr
        assert other in _segments()
    finally:
        Path("/dev/shm", other).unlink(missing_ok=True)


# -- 3. symbolic links planted in an output folder ------------------------------------------

@pytest.fixture
def outside(tmp_path):
    """A file and a folder outside every output folder, and their contents."""
    o = tmp_path / "outside"
    o.mkdir()
    (o / "victim.txt").write_text("precious\n")
    (o / "pics").mkdir()
    (o / "pics" / ".keep.1234abcd.tmp.png").write_text("not ours to remove\n")
    return o


@pytest.mark.parametrize("command", ["compact", "report"])
def test_a_planted_lock_link_is_refused(runs, tmp_path, outside, command):
    d = copy(runs, "compacted", tmp_path / "d")
    (d / ".dpap-lock").symlink_to(outside / "victim.txt")
    before = _snapshot(outside)
    args = ["compact", runs / "run", "--out", d] if command == "compact" else ["report", d]
    one_error_line(cli(*args), str(d / ".dpap-lock"), "symbolic link", "victim.txt")
    assert _snapshot(outside) == before and (d / ".dpap-lock").is_symlink()


def test_a_planted_plots_link_is_refused(runs, tmp_path, outside):
    d = copy(runs, "run", tmp_path / "d")
    shutil.rmtree(d / "plots")
    (d / "plots").symlink_to(outside / "pics", target_is_directory=True)
    before = _snapshot(outside)
    one_error_line(cli("report", d), str(d / "plots"), "symbolic link")
    assert _snapshot(outside) == before


def test_the_lock_file_is_never_opened_through_a_link(tmp_path, outside):
    """The check before locking can be raced; ``O_NOFOLLOW`` cannot."""
    from dpap_deploy import lock
    from dpap_deploy.errors import UnsafePathError
    (tmp_path / "o").mkdir()
    (tmp_path / "o" / lock.LOCK_NAME).symlink_to(outside / "victim.txt")
    with pytest.raises(UnsafePathError, match="symbolic link"):
        lock._acquire(tmp_path / "o" / lock.LOCK_NAME)
    assert (outside / "victim.txt").read_text() == "precious\n"


def test_an_atomic_write_replaces_a_link_not_its_target(tmp_path, outside):
    from dpap_deploy.atomic import atomic_write_text
    link = tmp_path / "report.json"
    link.symlink_to(outside / "victim.txt")
    atomic_write_text(link, "{}\n")
    assert not link.is_symlink() and link.read_text() == "{}\n"
    assert (outside / "victim.txt").read_text() == "precious\n"


# -- 4. hostile report.json -----------------------------------------------------------------

def _nested(levels: int) -> str:
    return "[" * levels + "]" * levels


REPORTS = [  # (id, edit of the report's JSON text, fragments of the line)
    ("nested-deep", lambda t: t[:-2] + f', "train_config": {{"x": {_nested(100_000)}}}}}',
     ["levels deep"]),
    ("nested-100", lambda t: t[:-2] + f', "neurobench": {{"x": {_nested(100)}}}}}',
     ["more than 32 levels deep"]),
    ("nan-accuracy", lambda t: t.replace('"test": ', '"test": NaN, "_was": ', 1),
     ["report.accuracy.test is nan", "not a finite number"]),
    ("inf-removed", lambda t: t.replace('"params_removed_fraction": ',
                                        '"params_removed_fraction": Infinity, "_was": ', 1),
     ["params_removed_fraction is inf"]),
    ("accuracy-above-1", lambda t: t.replace('"test": ', '"test": 97.5, "_was": ', 1),
     ["report.accuracy.test is 97.5", "between 0 and 1"]),
    ("schema-99", lambda t: t.replace('"schema_version": 1', '"schema_version": 99'),
     ["schema_version 99", "reads schema_version 1"]),
    ("schema-text", lambda t: t.replace('"schema_version": 1', '"schema_version": "1"'),
     ["schema_version '1'"]),
]


@pytest.mark.parametrize("case", REPORTS, ids=[c[0] for c in REPORTS])
def test_a_hostile_report_is_refused_in_one_line(runs, tmp_path, case):
    _id, edit, fragments = case
    d = copy(runs, "run", tmp_path / "d")
    text = (d / "report.json").read_text().rstrip()
    assert '"schema_version": 1' in text and text.endswith("}")
    (d / "report.json").write_text(edit(text + "\n"))
    before = _snapshot(d)
    one_error_line(cli("report", d), str(d / "report.json"), *fragments)
    assert _snapshot(d) == before
