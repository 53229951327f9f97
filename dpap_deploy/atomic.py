"""Atomic file writes: every artifact appears whole or not at all.

A file is written under a temporary name in its own folder (``.STEM.XXXX.tmp.EXT``), flushed
to disk, then renamed over ``STEM.EXT`` with ``os.replace``, which POSIX makes atomic within one
file system. A process killed at any point leaves either the previous file or the new one, plus
at most a hidden temporary file that no reader looks at; the next command that takes the
folder's lock removes it (lock.py). Writers that insist on a path of their own
(``nir.write``, ``h5py``, ``onnx``, matplotlib) write into :func:`atomic_path`'s temporary path.

No write goes through a symbolic link: the temporary file is created with ``O_EXCL`` (which
fails on any existing name, a link included) and ``os.replace`` replaces a link at the final
name, never its target.

A full disk is one line (:class:`~dpap_deploy.errors.DiskFullError`) naming the folder, the
bytes written or needed and the bytes free, whichever library reported it: ``ENOSPC`` /
``EDQUOT`` from Python, h5py's ``OSError`` ("errno = 28") and torch's ``RuntimeError``
("PytorchStreamWriter failed writing file", "unexpected pos"). The temporary file is removed
and the previous file left as it was. Where the size is known before writing
(:func:`atomic_write_data`, :func:`atomic_buffer`), the free space is checked first.
HDF5 can crash the process (SIGSEGV) when a write fails while it closes a file, so HDF5
writers should write into :func:`atomic_buffer` (memory) rather than a path.
"""
from __future__ import annotations

import contextlib
import errno
import io
import os
import secrets
from pathlib import Path
from typing import Callable, Iterator

from .errors import DiskFullError

NO_SPACE = (errno.ENOSPC, errno.EDQUOT)
# How torch (inline_container.cc) and HDF5 word a failed write whose errno they do not pass on.
WRAPPED_NO_SPACE = ("No space left on device", "errno = 28", "PytorchStreamWriter failed writing",
                    "file write failed", "unexpected pos")


def _temp_name(path: Path) -> str:
    """Reserve a new, unique temporary name next to ``path``; the writer then reopens it by
    path. The suffix keeps the real one (".nir.tmp" would confuse writers that pick a format
    by suffix), so: ``.STEM.XXXXXXXX.tmp.EXT``. Created with mode 0666 and exclusively, so the
    process's umask gives it the usual file mode (without reading or changing the umask)."""
    while True:
        tmp = str(path.parent / f".{path.stem}.{secrets.token_hex(4)}.tmp{path.suffix}")
        try:
            os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
            return tmp
        except FileExistsError:
            continue


def _fsync(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def free_bytes(folder: str | Path) -> int:
    """Bytes this process may still write on ``folder``'s file system (root may also use the
    blocks a file system reserves for it)."""
    st = os.statvfs(folder)
    return st.f_frsize * (st.f_bfree if os.geteuid() == 0 else st.f_bavail)


def is_disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` (or an exception it was raised from) reports a full disk or quota."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in NO_SPACE:
            return True
        if isinstance(exc, (OSError, RuntimeError)) and any(m in str(exc) for m in WRAPPED_NO_SPACE):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _size(path: str | None) -> int:
    try:
        return os.stat(path).st_size if path else 0
    except OSError:
        return 0


def _disk_full(path: Path, tmp: str | None) -> DiskFullError:
    """The one line for a write of ``path`` that ran out of space (``tmp``: its temporary)."""
    folder = path.parent.absolute()
    existing = next(p for p in (folder, *folder.parents) if p.exists())
    try:
        free = f"{free_bytes(existing):,}"
    except OSError:
        free = "no"
    return DiskFullError(f"no space left in {folder} to write {path.name}: {_size(tmp):,} bytes "
                         f"written, {free} bytes free; free some space there or choose another "
                         f"--out (any previous {path.name} is unchanged)")


def check_free_space(path: str | Path, need: int) -> None:
    """Refuse (one line) to write ``need`` bytes to ``path`` when its file system has less free."""
    path = Path(path)
    free = free_bytes(path.parent)
    if need > free:
        raise DiskFullError(f"no space left in {path.parent.absolute()} to write {path.name}: it "
                            f"needs {need:,} bytes, {free:,} bytes are free; free some space there "
                            f"or choose another --out (any previous {path.name} is unchanged)")


@contextlib.contextmanager
def report_disk_full(path: Path, tmp: str | None = None) -> Iterator[None]:
    """Turn a full-disk error raised in the block, however wrapped, into a DiskFullError."""
    try:
        yield
    except (OSError, RuntimeError) as exc:
        if not is_disk_full(exc):
            raise
        raise _disk_full(path, tmp) from exc


@contextlib.contextmanager
def atomic_path(path: str | Path, need: int | None = None) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on a clean exit it is synced and renamed to
    ``path``, on an exception removed. ``need``: bytes the file will take, when known (checked
    against the free space first). For writers that take a file name::

        with atomic_path(out / "network.nir") as tmp:
            nir.write(str(tmp), graph)
    """
    path = Path(path)
    with report_disk_full(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        if need is not None:
            check_free_space(path, need)
        tmp = _temp_name(path)
    try:
        with report_disk_full(path, tmp):
            yield Path(tmp)
            _fsync(tmp)
            os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def atomic_write_bytes(path: str | Path, write: Callable, need: int | None = None) -> None:
    """Call ``write(fileobj)`` on a temporary file next to ``path``, sync, then rename."""
    with atomic_path(path, need) as tmp, open(tmp, "wb") as fh:
        write(fh)


def atomic_write_data(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically, after checking that it fits."""
    atomic_write_bytes(path, lambda fh: fh.write(data), need=len(data))


@contextlib.contextmanager
def atomic_buffer(path: str | Path) -> Iterator[io.BytesIO]:
    """Yield an in-memory file; on a clean exit its bytes are written to ``path`` atomically
    (free space checked first). For writers that misbehave when the disk fills under them
    (HDF5: ``nir.write(buf, graph)``, ``h5py.File(buf, "w")``)::

        with atomic_buffer(out / "network.nir") as buf:
            nir.write(buf, graph)
    """
    buf = io.BytesIO()
    yield buf
    atomic_write_data(path, buf.getvalue())


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_data(path, text.encode())


def atomic_copy(src: str | Path, dst: str | Path) -> None:
    with open(src, "rb") as fh:
        data = fh.read()
    atomic_write_data(dst, data)
