"""One writer per output folder.

A command that writes into ``DIR`` holds ``DIR/.dpap-lock`` with filelock (an exclusive
``flock``: the kernel releases it when its holder exits, ``kill -9`` included, so a stale lock
file never blocks anyone). The file holds the holder's process id and command line, so a
second writer is refused at once with one line naming the holder. The holder removes the file
while it still holds it: filelock then sees the removed file in a process that opened it just
before, and does not count that lock as held. A command re-entering a folder its own process
holds (``train_and_export``'s stages) takes the same lock again.

Taking the lock also removes the temporary files a writer killed mid-write left in the folder
(``.NAME.XXXX.tmp*``, see atomic.py): nobody else can be writing them.

No write follows a symbolic link planted inside the folder: a lock file or a folder written
into (``plots``) that is a link is refused with one line before anything is written, and
filelock opens the lock file with ``O_NOFOLLOW`` (a link planted after that check is refused
too; filelock >= 3.20.1 does so, CVE-2025-68146). The output folder itself may be a link: the
user named it.

A folder the command created and left empty (it failed before writing anything) is removed, so
a refused or failed command leaves no trace in a fresh output folder.
"""
from __future__ import annotations

import contextlib
import errno
import os
import sys
from pathlib import Path
from typing import Iterator

from .atomic import report_disk_full
from .errors import DPAPError, UnsafePathError

LOCK_NAME = ".dpap-lock"
SUBFOLDERS = ("plots",)     # folders the commands write into inside an output folder


def _holder(path: Path) -> str:
    with contextlib.suppress(OSError):
        return path.read_text().strip() or "another process"
    return "another process"


def _refuse_link(path: Path) -> UnsafePathError:
    try:
        target = os.readlink(path)
    except OSError:
        target = "?"
    return UnsafePathError(f"{path} is a symbolic link (to {target}); dpap-deploy does not write "
                           "through links inside an output folder: remove the link or choose "
                           "another --out")


def refuse_links(folder: Path) -> None:
    """Refuse (one line) an output folder whose lock file or written subfolder is a link."""
    for name in (LOCK_NAME, *SUBFOLDERS):
        if (folder / name).is_symlink():
            raise _refuse_link(folder / name)


def _lock(path: Path):
    """The process's one lock object of ``path`` (filelock, imported here: its fork hooks are
    registered when the first command takes a lock, not at import)."""
    from filelock import FileLock
    return FileLock(path, timeout=0, thread_local=False, is_singleton=True)


def _acquire(path: Path):
    """``path``'s lock, taken now, or one line: who holds it, or that it is a link."""
    from filelock import Timeout
    lock = _lock(path)
    try:
        lock.acquire()
    except Timeout:
        raise DPAPError(f"{path.parent} is in use by {_holder(path)}; wait for it to finish or "
                        "choose another --out") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise _refuse_link(path) from None
        raise
    return lock


@contextlib.contextmanager
def output_lock(folder: str | Path, command: str | None = None) -> Iterator[Path]:
    """Hold ``folder``'s write lock (creating the folder) for the ``with`` body. Re-entrant
    within a process: ``train_and_export`` holds it while its stages take it again."""
    folder = Path(folder)
    path = folder / LOCK_NAME
    if folder.is_dir() and _lock(path).is_locked:           # this process holds it
        with _lock(path):
            yield folder
        return
    created = _missing_ancestors(folder)
    try:
        with report_disk_full(path):
            folder.mkdir(parents=True, exist_ok=True)
        refuse_links(folder)
        lock = _acquire(path)
    except BaseException:
        _remove_if_empty(created)
        raise
    try:
        remove_stale_temporaries(folder)
        fd = os.open(path, os.O_WRONLY | os.O_TRUNC | os.O_NOFOLLOW)
        try:
            with report_disk_full(path):
                os.write(fd, f"pid {os.getpid()} ({command or ' '.join(sys.argv)})\n".encode())
        finally:
            os.close(fd)
        yield folder
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)                                 # while held: see above
        lock.release()
        _remove_if_empty(created)


def remove_stale_temporaries(folder: Path) -> list[Path]:
    """Temporary files (``.NAME.XXXX.tmp*``, see atomic.py) that a killed writer left behind.
    Only the lock holder calls this: no write of this folder can be under way."""
    folders = [folder] + [folder / s for s in SUBFOLDERS if not (folder / s).is_symlink()]
    stale = [p for d in folders for p in d.glob(".*.tmp*") if p.is_file() and not p.is_symlink()]
    for p in stale:
        with contextlib.suppress(FileNotFoundError):
            p.unlink()
    return stale


def _missing_ancestors(folder: Path) -> list[Path]:
    """``folder`` and those of its parents that do not exist yet, deepest first."""
    out, p = [], folder.absolute()
    while not p.exists() and p != p.parent:
        out.append(p)
        p = p.parent
    return out


def _remove_if_empty(folders: list[Path]) -> None:
    """Remove the folders a failed command created, deepest first, if nothing was written."""
    for f in folders:
        try:
            f.rmdir()
        except OSError:
            return
