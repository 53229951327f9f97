"""Lava runs that cannot outlive their parent.

A Lava run forks about a dozen processes (``multiprocessing``, 'fork'). Left alone, ``kill -9``
of the parent leaves them running, and Ctrl-C sends SIGINT to every one of them, whose
tracebacks and half-stopped channels then hang the parent's ``stop()``. Here, while a run is
under way (:func:`lava_run`):

- every forked child (and its own children) asks the kernel for SIGKILL when its parent dies
  (``prctl(PR_SET_PDEATHSIG)``, set in an ``os.register_at_fork`` hook; a child whose parent
  died before that exits at once), and ignores SIGINT: Ctrl-C is the parent's alone;
- on Ctrl-C the parent kills its descendants (no graceful ``stop()``, which could wait forever
  on them) and raises ``KeyboardInterrupt``; the command line turns that into one line and
  exit status 130. Ctrl-C reaches the main thread even when the kernel hands it to one of
  Lava's helper threads (:func:`_ctrl_c_reaches_main_thread`). Killing the children kills
  multiprocessing's resource tracker too, which would have unlinked the run's POSIX
  shared-memory segments (``/dev/shm/psm_*``, Lava's channels): the parent removes them itself
  (:func:`remove_run_segments`), so an interrupted run leaves none behind;
- on any other error, and on success, Lava is stopped gracefully in a ``finally``.
"""
from __future__ import annotations

import ctypes
import os
import signal
import threading
import time
from contextlib import contextmanager
from pathlib import Path

PR_SET_PDEATHSIG = 1
_state = {"active": False, "forker": None}


def _before_fork() -> None:
    _state["forker"] = os.getpid()


def _after_fork_in_child() -> None:
    if not _state["active"]:
        return
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):      # not Linux: the parent's Ctrl-C path still kills us
        pass
    if os.getppid() != _state["forker"]:   # the parent died between fork and prctl
        os._exit(1)


def _register_fork_hooks() -> None:
    """Installed on the first Lava run, not at import: importing this module changes nothing."""
    if not _state.get("hooks"):
        os.register_at_fork(before=_before_fork, after_in_child=_after_fork_in_child)
        _state["hooks"] = True


def descendants(pid: int | None = None) -> list[int]:
    """Process ids of every descendant of ``pid`` (default: this process), from ``/proc``."""
    root = os.getpid() if pid is None else pid
    children: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(d.name))
    out, todo = [], [root]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def kill_descendants(keep: set[int] = frozenset()) -> None:
    """SIGKILL every descendant of this process except ``keep``."""
    for pid in descendants():
        if pid in keep:
            continue
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


SHM = Path("/dev/shm")
SHM_PREFIX = "psm_"          # multiprocessing.shared_memory's names


def shm_segments() -> set[str]:
    """Names of the POSIX shared-memory segments that exist now (none where there is no
    ``/dev/shm``)."""
    try:
        return {p.name for p in SHM.iterdir() if p.name.startswith(SHM_PREFIX)}
    except OSError:
        return set()


def _mapped_segments() -> set[str]:
    """Segments this process maps (the file column of ``/proc/self/maps``)."""
    try:
        lines = Path("/proc/self/maps").read_text().splitlines()
    except OSError:
        return set()
    files = (ln.split(None, 5)[5] for ln in lines if "/dev/shm/" in ln)
    return {Path(f.removesuffix(" (deleted)")).name for f in files
            if f.startswith(f"{SHM}/{SHM_PREFIX}")}


def _tracker_alive() -> bool:
    """Whether this process's multiprocessing resource tracker still runs (it was started
    before the run and so not killed with the run's children)."""
    from multiprocessing import resource_tracker
    pid = getattr(resource_tracker._resource_tracker, "_pid", None)
    if pid is None:
        return False
    try:
        return os.waitpid(pid, os.WNOHANG) == (0, 0)
    except ChildProcessError:
        return False


def remove_run_segments(before: set[str]) -> list[str]:
    """Unlink the shared-memory segments a run created: those absent from ``before`` (taken
    when the run started) that this process maps. Nothing else is touched: a segment another
    program created meanwhile is not mapped here. A tracker that survived the run is told, so
    it does not report them as leaked at exit. Returns the names removed."""
    from multiprocessing import resource_tracker
    ours = sorted((shm_segments() - before) & _mapped_segments())
    tell = _tracker_alive()
    for name in ours:
        try:
            os.unlink(SHM / name)
        except FileNotFoundError:
            continue
        if tell:
            resource_tracker.unregister("/" + name, "shared_memory")
    return ours


@contextmanager
def children_die_with_parent():
    """Within this block, forked children die with this process and ignore SIGINT."""
    previous = _state["active"]
    _register_fork_hooks()
    _state["active"] = True
    try:
        yield
    finally:
        _state["active"] = previous


@contextmanager
def _ctrl_c_reaches_main_thread():
    """Ctrl-C sends SIGINT to the process, and the kernel gives it to any thread that does not
    block it, Lava's channel threads included. CPython's C handler then only marks it pending,
    and the main thread sleeps on in Lava's lock wait until the whole run ends (measured: a
    SIGINT sent to one of those threads left ``export --target loihi-sim`` running past 20 s).
    CPython writes every signal, whichever thread takes it, to the wakeup fd. A watcher thread
    reads it and, if the main thread has not reacted within 0.3 s, sends SIGINT to the main
    thread itself, which interrupts the wait. The bytes are passed on to a wakeup fd set
    before (an event loop's). Only in the main thread: elsewhere signals are not handled."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    r, w = os.pipe()
    os.set_blocking(w, False)
    previous = signal.set_wakeup_fd(w, warn_on_full_buffer=False)
    main, done = threading.main_thread().ident, threading.Event()

    def watch() -> None:
        while not done.is_set():
            data = os.read(r, 64)
            if previous != -1:
                try:
                    os.write(previous, data)
                except OSError:
                    pass
            if done.is_set() or signal.SIGINT not in data:
                continue
            deadline = time.monotonic() + 0.3
            while time.monotonic() < deadline and not _state.get("interrupted"):
                time.sleep(0.01)
            if not _state.get("interrupted") and not done.is_set():
                signal.pthread_kill(main, signal.SIGINT)
            return                                 # one Ctrl-C ends the run

    _state["interrupted"] = False
    watcher = threading.Thread(target=watch, name="dpap-ctrl-c", daemon=True)
    watcher.start()
    try:
        yield
    finally:
        done.set()
        signal.set_wakeup_fd(previous)
        try:
            os.write(w, b"\0")                   # wakes the watcher, which then returns
        except OSError:                          # the pipe is full: it is awake already
            pass
        watcher.join(timeout=1.0)
        os.close(r)
        os.close(w)


def lava_run(process, run, read):
    """``run()`` then ``read()`` on a Lava network whose ``process.stop()`` ends it; the
    children die with this process, Ctrl-C kills them and re-raises, any other outcome stops
    Lava gracefully."""
    before, segments = set(descendants()), shm_segments()
    with children_die_with_parent(), _ctrl_c_reaches_main_thread():
        try:
            run()
            out = read()
        except KeyboardInterrupt:
            _state["interrupted"] = True
            kill_descendants(keep=before)
            remove_run_segments(segments)
            raise
        except BaseException:
            process.stop()
            raise
        process.stop()
    return out
