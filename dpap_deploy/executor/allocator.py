"""CPU memory allocation for window-sized tensors.

A multi-step window allocates tensors of ``T x batch x population`` floats (tens of MB). glibc
serves blocks above its mmap threshold (32 MB at most, adapted at run time) with a fresh
``mmap`` each time and returns them to the system on free, so every such tensor pays one page
fault per 4 KB on first touch: measured here, that doubled the time of a fused Leaky window.
PyTorch's CPU performance guide recommends a caching allocator (jemalloc, tcmalloc) for the
same reason; without replacing the allocator, glibc's own knobs do it: a high mmap threshold
and trim threshold keep freed blocks in the heap for reuse. The cost: the process keeps its
peak memory instead of returning it. Process-wide, so the library never calls it (importing
``dpap_deploy`` or calling its API leaves malloc alone): a program that owns its process opts
in, as ``dpap-deploy``'s command line does for itself; ``DPAP_DEPLOY_MALLOC_TUNING=0`` turns
that off.
"""
from __future__ import annotations

import ctypes
import os
import sys

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
_LIMIT = 1 << 30
_done = False


def tune_cpu_allocator() -> bool:
    """Keep freed large blocks for reuse (glibc only; idempotent). Returns whether it is on."""
    global _done
    if _done:
        return True
    if os.environ.get("DPAP_DEPLOY_MALLOC_TUNING", "1") == "0" or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        ok = libc.mallopt(M_MMAP_THRESHOLD, _LIMIT) == 1 and \
            libc.mallopt(M_TRIM_THRESHOLD, _LIMIT) == 1
    except (OSError, AttributeError):     # not glibc (musl, macOS): nothing to tune
        return False
    _done = ok
    return ok
