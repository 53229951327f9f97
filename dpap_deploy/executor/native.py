"""Compiled CPU kernels of the multi-step executor, built from the C++ sources in ``csrc/``: the
fused Leaky window (``leaky.cpp``), a Leaky window with its 2x2 average pool (``leaky_pool.cpp``)
and the 2x2 pool of spike maps (``pool.cpp``); ``common.h`` holds what the Leaky kernels share.

The torch path of ``lif.py`` reads and writes each ``[T, B, ...]`` tensor several times a step;
memory bandwidth, not arithmetic, bounds it. The kernels keep a neuron's membrane in a register
and run its whole time loop in one go (neurons split over torch's threads), computing the same
float32 operations in the same order as snnTorch (``-ffp-contract=off``: ``beta * U + I`` is
not fused into one rounding), so spikes and gradients are bit-identical to the torch path.

Built only when a training step wants one (``kernel(build=True)``: autograd records the
window); anything else (evaluation, compaction, counting, export, their verification batches)
uses the kernels only if a training step of this process built them, else the torch path, with
the same numbers. The build needs a C++ compiler and ninja. Its flags are portable (no
``-march=native``): the hot loops are compiled for AVX-512, AVX2 and the baseline, the widest
the CPU has chosen at load (``csrc/common.h``). Its folder under torch's extension root
(``TORCH_EXTENSIONS_DIR``) is named by a hash of the compiler's version, the CPU (model and
feature flags), torch, Python, the flags and the sources: a cache on a shared home never hands
one machine's binary to another. A failed build leaves the torch path and its reason in
``native.error``; ``DPAP_DEPLOY_NATIVE=0`` turns the kernels off. CUDA tensors always take
the torch path (``lif.py``, ``pool.py``).
"""
from __future__ import annotations

import hashlib
import os
import platform
import subprocess
import sys
import threading
from pathlib import Path

CSRC = Path(__file__).with_name("csrc")
SOURCES = ("leaky.cpp", "leaky_pool.cpp", "pool.cpp", "bindings.cpp")
FLAGS = ["-O3", "-ffp-contract=off"]
OPENMP = ["-fopenmp"]

_lock = threading.Lock()
_module = None
error: str | None = None


def _cpu() -> str:
    """The CPU's model and feature flags (Linux: the first processor of /proc/cpuinfo)."""
    try:
        text = Path("/proc/cpuinfo").read_text().split("\n\n")[0]
    except OSError:
        return platform.processor()
    keep = ("model name", "flags", "Features", "CPU implementer", "CPU part", "vendor_id")
    return "\n".join(l for l in text.splitlines() if l.split(":")[0].strip() in keep)


def _compiler() -> str:
    cxx = os.environ.get("CXX", "c++")
    try:
        out = subprocess.run([cxx, "--version"], capture_output=True, text=True, timeout=30)
        return cxx + " " + out.stdout.strip().splitlines()[0]
    except (OSError, IndexError, subprocess.SubprocessError):
        return cxx


def build_key(flags: list[str]) -> str:
    """What the binary depends on, hashed: compiler, CPU, torch, Python, flags, sources."""
    import torch
    h = hashlib.sha256()
    for part in (_compiler(), platform.machine(), _cpu(), torch.__version__, sys.version,
                 " ".join(flags)):
        h.update(part.encode() + b"\0")
    for f in sorted(CSRC.iterdir()):
        h.update(f.name.encode() + b"\0" + f.read_bytes())
    return h.hexdigest()[:16]


def _ninja_on_path() -> None:
    """torch's extension builder runs ``ninja`` from PATH; the ``ninja`` wheel of the
    requirements puts it in the environment's bin folder, which may not be on PATH."""
    try:
        import ninja
    except ImportError:
        return
    path = os.environ.get("PATH", "")
    if ninja.BIN_DIR not in path.split(os.pathsep):
        os.environ["PATH"] = ninja.BIN_DIR + os.pathsep + path


def _load(flags: list[str], ldflags: list[str]):
    from torch.utils.cpp_extension import get_default_build_root, load
    root = os.environ.get("TORCH_EXTENSIONS_DIR") or get_default_build_root()   # as torch's
    folder = Path(root) / f"dpap_deploy_native-{build_key(flags)}"
    folder.mkdir(parents=True, exist_ok=True)
    return load(name="dpap_deploy_native", sources=[str(CSRC / s) for s in SOURCES],
                extra_cflags=flags, extra_ldflags=ldflags, build_directory=str(folder),
                verbose=False)


def _build():
    """With OpenMP (torch's runtime, ``common.h``), or without it (the kernels then run on
    one thread) where the compiler has none."""
    _ninja_on_path()
    try:
        return _load(FLAGS + OPENMP, OPENMP)
    except Exception:  # noqa: BLE001 - no OpenMP here
        return _load(FLAGS, [])


def kernel(build: bool = False):
    """The compiled module, or ``None``: not built in this process and ``build`` not asked (only
    a training step asks), disabled, or the build failed (see ``error``)."""
    global _module, error
    if os.environ.get("DPAP_DEPLOY_NATIVE", "1") == "0":
        return None
    if _module is not None or error is not None or not build:
        return _module
    with _lock:
        if _module is None and error is None:
            try:
                _module = _build()
            except Exception as exc:  # noqa: BLE001 - any build failure means the torch path
                lines = str(exc).strip().splitlines()
                error = f"{type(exc).__name__}: {lines[-1][:300] if lines else ''}"
    return _module
