"""Python 3.11 compatibility patch for lava-nc 0.10.0 and lava-dl 0.6.0.

Both wheels declare ``Requires-Python <3.11`` and break on 3.11 in two small places:

1. ``lava/magma/compiler/var_model.py`` gives dataclass fields an instance default
   (``x: ByteEncoder = ByteEncoder()``); Python 3.11 rejects unhashable dataclass defaults
   (``ValueError: mutable default ... use default_factory``). The fix is
   ``field(default_factory=ByteEncoder)``, which is what the default meant.
2. ``lava/lib/dl/slayer/__init__.py`` imports its ``object_detection`` subpackage eagerly; that
   needs OpenCV and a working torchvision (there is no CPU torchvision build next to torch 2.13
   here). netx imports slayer, so the import is made optional: ``slayer.obd`` is then absent.

A third incompatibility is with other libraries in the same process, not with Python:
``lava.magma.runtime.message_infrastructure.multiprocessing`` calls
``multiprocessing.set_start_method('fork')`` when imported, which raises "context has already
been set" once anything has used the default context (tqdm's progress-bar lock does). Lava only
needs the start method to *be* 'fork', so :func:`import_lava_runtime` imports that module with
the call made a no-op when the method is already 'fork' (the Linux default), and refuses
clearly otherwise. This one is an import-time shim, not a file edit.

The patch edits the installed files in place, marks every edit, and is idempotent: running it
again finds the markers and changes nothing. ``scripts/setup.sh`` runs it after installing
Lava (``python -m dpap_deploy.lava_compat``); it then imports both packages to verify.
"""
from __future__ import annotations

import importlib.util
import os
import re
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

MARK = "# dpap-deploy: py3.11 compat"


@dataclass(frozen=True)
class PatchResult:
    path: Path
    changed: bool


def _find(module: str, relative: str) -> Path | None:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0]) / relative


def patch_var_model_source(src: str) -> str:
    """Rewrite ``name: ByteEncoder = ByteEncoder()`` fields as ``default_factory`` fields."""
    if MARK in src:
        return src
    new, n = re.subn(r"^(\s+\w+: ByteEncoder) = ByteEncoder\(\)\s*$",
                     rf"\1 = field(default_factory=ByteEncoder)  {MARK}", src, flags=re.M)
    if n == 0:
        return src
    new, k = re.subn(r"^from dataclasses import dataclass, InitVar\s*$",
                     f"from dataclasses import dataclass, InitVar, field  {MARK}", new,
                     count=1, flags=re.M)
    if k != 1:
        raise RuntimeError("lava var_model.py has an unexpected layout: cannot add "
                           "'field' to its dataclasses import; patch by hand or pin lava-nc 0.10.0")
    return new


def patch_slayer_init_source(src: str) -> str:
    """Make ``from . import object_detection as obd`` optional."""
    if MARK in src:
        return src
    line = "from . import object_detection as obd"
    if line not in src:
        return src
    guarded = (f"try:  {MARK}: object_detection needs cv2 and torchvision\n"
               f"    {line}\n"
               f"except Exception:  {MARK}\n"
               f"    obd = None")
    return src.replace(line, guarded, 1)


def _rewrite(path: Path, transform) -> PatchResult:
    src = path.read_text()
    new = transform(src)
    if new == src:
        return PatchResult(path, False)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".dpap-patch-")
    with os.fdopen(fd, "w") as fh:
        fh.write(new)
    os.replace(tmp, path)
    for cached in (path.parent / "__pycache__").glob(path.stem + ".*.pyc"):
        cached.unlink(missing_ok=True)
    return PatchResult(path, True)


def apply() -> list[PatchResult]:
    """Patch whichever of the two packages is installed; returns what was looked at."""
    results = []
    var_model = _find("lava.magma.compiler", "var_model.py")
    if var_model is not None and var_model.exists():
        results.append(_rewrite(var_model, patch_var_model_source))
    slayer_init = _find("lava.lib.dl.slayer", "__init__.py")
    if slayer_init is not None and slayer_init.exists():
        results.append(_rewrite(slayer_init, patch_slayer_init_source))
    return results


def import_lava_runtime() -> None:
    """Import Lava's runtime in a process whose multiprocessing context may already be set."""
    import multiprocessing as mp
    mod = "lava.magma.runtime.message_infrastructure.multiprocessing"
    if mod in sys.modules:
        return
    current = mp.get_start_method(allow_none=True)
    if current not in (None, "fork"):
        from .errors import DPAPError
        raise DPAPError(f"Lava needs the 'fork' multiprocessing start method, this process uses "
                        f"{current!r}; run the Lava target in a fresh process")
    original = mp.set_start_method

    def tolerant(method, force=False):
        if method == mp.get_start_method(allow_none=True):
            return None
        return original(method, force=force)

    mp.set_start_method = tolerant
    try:
        importlib.import_module(mod)
    finally:
        mp.set_start_method = original


def main() -> int:
    results = apply()
    if not results:
        print("[lava-compat] lava-nc / lava-dl not installed: nothing to patch")
        return 0
    for r in results:
        print(f"[lava-compat] {'patched' if r.changed else 'already patched'}: {r.path}")
    import lava.lib.dl.netx  # noqa: F401  (imports slayer too)
    import lava.magma.compiler.var_model  # noqa: F401
    print("[lava-compat] lava.magma and lava.lib.dl.netx import on Python "
          f"{sys.version_info.major}.{sys.version_info.minor}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
