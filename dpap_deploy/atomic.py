"""Atomic file writes: every artifact appears whole or not at all.

A file is written under a temporary name in its own folder (``.STEM.XXXX.tmp.EXT``), flushed
to disk, then renamed over ``STEM.EXT`` with ``os.replace``, which POSIX makes atomic within one
file system. A process killed at any point leaves either the previous file or the new one, plus
at most a hidden temporary file that no reader looks at; the next command that takes the
folder's lock removes it (lock.py). Writers that insist on a path of their own
(``nir.write``, ``h5py``, ``onnx``, matplotlib) write into :func:`atomic_path`'s temporary path.
"""
from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path
from typing import Callable, Iterator


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


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on a clean exit it is synced and renamed to
    ``path``, on an exception removed. For writers that take a file name::

        with atomic_path(out / "network.nir") as tmp:
            nir.write(str(tmp), graph)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_name(path)
    try:
        yield Path(tmp)
        _fsync(tmp)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def atomic_write_bytes(path: str | Path, write: Callable) -> None:
    """Call ``write(fileobj)`` on a temporary file next to ``path``, sync, then rename."""
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        write(fh)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, lambda fh: fh.write(text.encode()))


def atomic_copy(src: str | Path, dst: str | Path) -> None:
    with open(src, "rb") as fh:
        data = fh.read()
    atomic_write_bytes(dst, lambda out: out.write(data))
