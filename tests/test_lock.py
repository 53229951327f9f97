"""The output folder's lock (filelock underneath): never two holders, even while holders come
and go and remove the lock file; a holder killed with ``kill -9`` blocks nobody; the lock file
is removed while still held; nothing is imported (no fork hook registered) before a lock is
taken. (Refusals naming the holder: test_reliability.py, test_faults.py; planted links:
test_resources_security.py.)"""
import os
import re
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from dpap_deploy.lock import LOCK_NAME, output_lock

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}
WRITER = textwrap.dedent("""
    import os, sys, time
    from dpap_deploy.errors import DPAPError
    from dpap_deploy.lock import output_lock
    folder, name, held, refusals = sys.argv[1], sys.argv[2], 0, set()
    end = time.monotonic() + float(sys.argv[3])
    while time.monotonic() < end:
        try:
            with output_lock(folder, name):
                fd = os.open(os.path.join(folder, "holder"), os.O_CREAT | os.O_EXCL | os.O_WRONLY)
                time.sleep(0.001)
                os.close(fd)
                os.unlink(os.path.join(folder, "holder"))
                held += 1
        except FileExistsError:
            sys.exit("two holders at once")
        except DPAPError as exc:
            refusals.add(str(exc).split(" is in use by ")[1].split(";")[0])
    print(held, *sorted(refusals), sep="\\n")
""")


def test_writers_racing_for_one_folder_never_hold_it_together(tmp_path):
    """Each writer takes the lock, marks the folder as its own (O_EXCL), unmarks it, releases,
    and again, for 2 s: a mark already there is a second holder."""
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path), f"w{i}", "2"],
                              env=ENV, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for i in range(3)]
    results = [(p.wait(timeout=120), *p.communicate()) for p in procs]
    assert all(rc == 0 for rc, _, _ in results), [err[-800:] for _, _, err in results]
    for _, out, _ in results:
        held, *holders = out.splitlines()
        assert int(held) > 0                                    # nobody was locked out for good
        assert all(re.fullmatch(r"pid \d+ \(w\d\)|another process", h) for h in holders), holders
    assert list(tmp_path.iterdir()) == []                       # the lock file went with the last


def test_a_holder_killed_with_kill_9_blocks_nobody(tmp_path):
    code = ("import sys, time\nfrom dpap_deploy.lock import output_lock\n"
            "with output_lock(sys.argv[1], 'victim'):\n    print('held', flush=True)\n"
            "    time.sleep(120)")
    p = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], env=ENV, cwd=ROOT,
                         stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline() == "held\n"
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert (tmp_path / LOCK_NAME).read_text() == f"pid {p.pid} (victim)\n"   # left behind
    with output_lock(tmp_path, "next"):
        assert (tmp_path / LOCK_NAME).read_text() == f"pid {os.getpid()} (next)\n"
    assert list(tmp_path.iterdir()) == []


def test_the_lock_file_is_removed_before_the_lock_is_released(tmp_path, monkeypatch):
    """A writer that opened the file just before sees it removed when its flock succeeds
    (filelock then does not count it as held); removed after the release, the file could be
    locked by that writer while a third creates and locks a new one."""
    import fcntl
    seen, flock = [], fcntl.flock

    def observed(fd, operation):                 # the kernel's unlock, as filelock calls it
        if operation == fcntl.LOCK_UN:
            seen.append((tmp_path / LOCK_NAME).exists())
        return flock(fd, operation)
    monkeypatch.setattr(fcntl, "flock", observed)
    with output_lock(tmp_path, "outer"):
        with output_lock(tmp_path, "nested"):              # the same process takes it again
            assert (tmp_path / LOCK_NAME).read_text() == f"pid {os.getpid()} (outer)\n"
        assert seen == []
    assert seen == [False] and not (tmp_path / LOCK_NAME).exists()


def test_filelock_is_imported_when_the_first_lock_is_taken(tmp_path):
    code = ("import sys\nimport dpap_deploy.pipeline, dpap_deploy.cli\n"
            "assert 'filelock' not in sys.modules\n"
            "from dpap_deploy.lock import output_lock\n"
            "with output_lock(sys.argv[1]):\n    assert 'filelock' in sys.modules")
    r = subprocess.run([sys.executable, "-c", code, str(tmp_path / "o")], env=ENV, cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
