"""HDF5 files that read only themselves.

HDF5 lets a file point at data in other files: an external link (``h5py.ExternalLink``) names
another file and an object in it; a dataset with external raw storage (``external=[...]``)
keeps its bytes in files named inside it; a virtual dataset maps other files' datasets. Reading
such a NIR or netx file would read whatever those names point to (any file this process can
read). Every HDF5 file we read is walked first, without reading any data, and refused if any
object in it reaches outside it:

    check_self_contained("net.nir", "NIR file")   # DPAPError naming the object and its target
"""
from __future__ import annotations

from pathlib import Path

from ..errors import DPAPError


def check_self_contained(path: str | Path, what: str) -> None:
    """Refuse ``path`` when an object in it is an external link, a dataset stored in external
    files or a virtual dataset. A file HDF5 cannot open is refused as unreadable."""
    import h5py
    try:
        f = h5py.File(str(path), "r")
    except Exception as exc:   # noqa: BLE001 - h5py raises OSError and others for non-HDF5 data
        first = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
        raise DPAPError(f"{path} is not a readable {what} ({type(exc).__name__}: {first}); "
                        "write it again") from None
    with f:
        problem = _outside(f, set())
    if problem:
        raise DPAPError(f"{path}: {problem}, which reads data outside the file; a {what} must "
                        "hold its own data: write it again without external links or storage")


def _outside(root, seen: set) -> str | None:
    """The first object under ``root`` that reaches outside the file, described; else None.
    Hard links are followed once each (``seen``: object addresses); soft links stay inside the
    file and are not followed. An explicit stack, not recursion: a file of thousands of
    nested groups is walked like any other."""
    import h5py
    stack = [root]
    while stack:
        group = stack.pop()
        for name in group:
            link = group.get(name, getlink=True)
            where = f"{group.name.rstrip('/')}/{name}"
            if isinstance(link, h5py.ExternalLink):
                return f"'{where}' is an external link to {link.filename}:{link.path}"
            if isinstance(link, h5py.SoftLink):
                continue
            obj = group[name]
            addr = h5py.h5o.get_info(obj.id).addr
            if addr in seen:
                continue
            seen.add(addr)
            if isinstance(obj, h5py.Dataset):
                if obj.external:
                    files = ", ".join(str(e[0]) for e in obj.external)
                    return f"dataset '{where}' keeps its data in external file(s) {files}"
                if obj.is_virtual:
                    return f"dataset '{where}' is a virtual dataset mapping other files"
            elif isinstance(obj, h5py.Group):
                stack.append(obj)
    return None
