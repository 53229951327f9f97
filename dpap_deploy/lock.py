"""One writer per output folder.

A command that writes into ``DIR`` holds an exclusive ``fcntl.flock`` on ``DIR/.dpap-lock``
for as long as it writes; the file holds the holder's process id and command line, so a second
writer is refused with one line naming the holder. The kernel releases a flock when its
holder exits, however it exits (``kill -9`` included): a stale lock file never blocks anyone.

The lock file is removed on release. Removing a lock file races with a process that opened it
just before: it would then lock an unlinked file while a third process creates and locks a new
one. So after locking, the holder checks that the path still names the file it locked, and
retries otherwise (the usual remedy).

Taking the lock also removes the temporary files a writer killed mid-write left in the folder
(``.NAME.XXXX.tmp*``, see atomic.py): nobody else can be writing them.

No write follows a symbolic link planted inside the folder: a lock file or a folder written
into (``plots``) that is a link is refused with one line before anything is written, and the
lock file is opened with ``O_NOFOLLOW`` (a link planted after that check is refused too). The
output folder itself may be a link: the user named it.

A folder the command created and left empty (it failed before writing anything) is removed, so
a refused or failed command leaves no trace in a fresh output folder.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import sys
from pathlib import Path
from typing import Iterator

from .atomic import report_disk_full
from .errors import DPAPError, UnsafePathError

LOCK_NAME = ".dpap-lock"
SUBFOLDERS = ("plots",)     # folders the commands write into inside an output folder


def _holder(path: Path) -> str:
    try:
        text = path.read_text().strip()
    except OSError:
        return "another process"
    return text or "another process"


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


def _open_lock_file(path: Path) -> int:
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise _refuse_link(path) from None
        raise


def _acquire(path: Path) -> int:
    while True:
        fd = _open_lock_file(path)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise DPAPError(f"{path.parent} is in use by {_holder(path)}; wait for it to "
                                "finish or choose another --out") from None
            raise
        try:
            same = os.fstat(fd).st_ino == os.lstat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)   # the previous holder removed the file after we opened it: try again


_HELD: dict[Path, int] = {}   # folders this process holds -> nesting depth (stages nest)


@contextlib.contextmanager
def output_lock(folder: str | Path, command: str | None = None) -> Iterator[Path]:
    """Hold ``folder``'s write lock (creating the folder) for the ``with`` body. Re-entrant
    within a process: ``train_and_export`` holds it while its stages take it again."""
    folder = Path(folder)
    key = folder.resolve()
    if key in _HELD:
        _HELD[key] += 1
        try:
            yield folder
        finally:
            _HELD[key] -= 1
        return
    created = _missing_ancestors(folder)
    path = folder / LOCK_NAME
    try:
        with report_disk_full(path):
            folder.mkdir(parents=True, exist_ok=True)
        refuse_links(folder)
        fd = _acquire(path)
    except BaseException:
        _remove_if_empty(created)
        raise
    _HELD[key] = 1
    try:
        remove_stale_temporaries(folder)
        os.ftruncate(fd, 0)
        with report_disk_full(path):
            os.write(fd, f"pid {os.getpid()} ({command or ' '.join(sys.argv)})\n".encode())
        yield folder
    finally:
        del _HELD[key]
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        os.close(fd)
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
