"""Which NIR readers read our files, and do they compute our network? (docs/nir-compat.md)

    .venv/bin/python benchmarks/bench_nir_compat.py [--venvs DIR] [--samples N]

1. Writes our NIR files (``nir_graph.to_nir``) in both neuron encodings (``gain``: ``r = tau/dt``;
   ``unit-r``: ``r = 1``, input weights scaled; and ``unit-r+sumpool``: also ``SumPool2d`` for
   ``AvgPool2d``, the 1/4 in the next weights) for two networks: the zoo's ``snn-digits``
   trained 3 epochs with DPAP (nothing pruned yet) and compacted (what ``--target nir`` writes:
   Conv2d, AvgPool2d, Flatten, Affine, LIF), and a minimal ``Linear-LIF-Linear-LIF``. Our
   output spikes (``nir_torch.run_reference``, equal to the snnTorch model's) are the reference.
2. Creates one venv per foreign reader under ``--venvs`` (outside the repository; torch pinned
   to ``torch==2.13.0``, the local CPU wheel) and installs the reader from PyPI. snnTorch,
   nirtorch and Lava (through our converter) run in the project's own ``.venv``.
3. Runs every reader on every file, in its own process, with the same fixed inputs (the first
   ``--samples`` digits test images, direct encoding: the same input at every step, ``dt`` from
   the file), and compares its output spikes with ours.

Writes ``benchmarks/results/nir_compat.csv`` and prints the table: reads / exact / why not.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results" / "nir_compat.csv"
TORCH = "torch==2.13.0"         # the local CPU wheel; anything else pulls GBs of CUDA packages
# file variants: name -> to_nir options (the last only where the network has pools)
VARIANTS = {"gain": {}, "unit-r": {"encoding": "unit-r"},
            "unit-r+sumpool": {"encoding": "unit-r", "pooling": "sum"}}


@dataclass(frozen=True)
class Reader:
    name: str                   # the row's label
    dist: str                   # the distribution whose version is reported
    venv: str | None = None     # its venv under --venvs (None: the project's .venv)
    pip: tuple[str, ...] = ()   # what that venv installs (torch pinned first)
    note: str = ""              # the cause of a difference, read in the reader's source


READERS = (
    Reader("snntorch import_from_nir", "snntorch"),
    Reader("nirtorch nir_to_torch, hand-written map", "nirtorch"),
    Reader("lava (dpap-deploy nir_to_lava)", "lava-nc"),
    Reader("norse from_nir", "norse", "norse", ("norse",),
           "Norse 1.1 ignores r (it warns): with r = tau/dt its input gain is dt/tau, not 1 "
           "(encoding unit-r avoids it); it maps SumPool2d but not AvgPool2d, and nirtorch.load "
           "then fails on the pool's edges (pooling sum avoids it)"),
    Reader("sinabs from_nir", "sinabs", "sinabs", ("sinabs",),
           "sinabs pins nir<=1.0.4, whose nir.read has no v_reset"),
    Reader("sinabs from_nir, nir 1.0.8 over its pin", "sinabs", "sinabs-nir108",
           ("sinabs", "--no-deps nir==1.0.8"),
           "sinabs 3.1.3's importer fails on what nir 1.0.8 reads: lifting its pin is no fix"),
    Reader("spyx from_nir", "spyx", "spyx", ("spyx", "nir"),
           "spyx's LIF spikes on the membrane before the step's input, resets by subtraction "
           "and ignores r and v_reset; its convolutions are channels-last"),
    Reader("rockpool from_nir", "rockpool", "rockpool", ("rockpool", "nir", "nirtorch"),
           "rockpool 3.1 reads a LIF's tau as tau_mem (AttributeError) and has no Conv2d map"),
)


# ------------------------------------------------------------------ run inside a reader's venv
def _repeat(x: np.ndarray, T: int) -> np.ndarray:
    """``[T, N, ...]``: the direct encoding, the same input at every step."""
    return np.repeat(x[None], T, axis=0).astype(np.float32)


def run_snntorch(path: str, x: np.ndarray, T: int, dt: float) -> np.ndarray:
    """snnTorch keeps the membranes in its modules and flattens from dim 0 (the batch): one
    sample at a time, membranes cleared between samples."""
    import nir
    import torch
    from snntorch.import_nir import import_from_nir
    net = import_from_nir(nir.read(path))
    out = []
    for sample in torch.from_numpy(x):
        for m in net.modules():
            if hasattr(m, "reset_hidden"):
                m.reset_hidden()
        steps = [net(sample) for _ in range(T)]
        out.append(np.stack([(s[0] if isinstance(s, tuple) else s).detach().reshape(-1).numpy()
                             for s in steps]))
    return np.stack(out)


def _torch_steps(net, x: np.ndarray, T: int, n: int | None = None) -> np.ndarray:
    """``[n, T, out]`` of a module called as ``net(x, state) -> (out, state)`` every step
    (``n``: the batch, 1 for one unbatched sample)."""
    import torch
    xt, state, steps = torch.from_numpy(x), None, []
    for _ in range(T):
        y, state = net(xt) if state is None else net(xt, state)
        steps.append(y.detach().reshape(n or len(x), -1).numpy())
    return np.stack(steps, axis=1)


def run_nirtorch(path: str, x: np.ndarray, T: int, dt: float) -> np.ndarray:
    """nirtorch 2.6 with a map a user writes from NIR's documented LIF (forward Euler:
    ``v = (1 - dt/tau) v + (r dt/tau) I``, reset to ``v_reset``), its own Affine (nirtorch's
    leaves a random bias) and a batch-aware Flatten."""
    import nir
    import nirtorch
    import torch

    class LIF(torch.nn.Module):
        def __init__(self, n):
            super().__init__()
            f = lambda v: torch.as_tensor(np.asarray(v, np.float32))  # noqa: E731
            self.beta, self.g = f(1 - dt / n.tau), f(n.r * dt / n.tau)
            self.vth, self.vr = f(n.v_threshold), f(n.v_reset)

        def forward(self, i, state=None):
            v = self.beta * (0 if state is None else state) + self.g * i
            s = (v > self.vth).float()
            return s, torch.where(s > 0, self.vr, v)

    def affine(n):
        lin = torch.nn.Linear(n.weight.shape[1], n.weight.shape[0])
        lin.weight.data, lin.bias.data = torch.from_numpy(n.weight), torch.from_numpy(n.bias)
        return lin

    net = nirtorch.nir_to_torch(nir.read(path), {nir.LIF: LIF, nir.Affine: affine,
                                                 nir.Flatten: lambda n: torch.nn.Flatten(1)})
    return _torch_steps(net, x, T)


def run_lava(path: str, x: np.ndarray, T: int, dt: float) -> np.ndarray:
    import nir
    sys.path.insert(0, str(ROOT))
    from dpap_deploy.exporters.nir_to_lava import LavaNetwork
    return LavaNetwork(nir.read(path), T).run(x)


def run_norse(path: str, x: np.ndarray, T: int, dt: float) -> np.ndarray:
    """One sample at a time: Norse maps ``Flatten(start_dim=0)`` as it is, over the batch."""
    import nir
    from norse.torch import from_nir
    net = from_nir(nir.read(path), dt=dt, ignore_warnings=True)
    return np.concatenate([_torch_steps(net, sample, T, n=1) for sample in x])


def run_sinabs(path: str, x: np.ndarray, T: int, dt: float) -> np.ndarray:
    """sinabs layers take ``[N * T, ...]`` with the batch size given at import."""
    import nir
    import sinabs
    import torch
    net = sinabs.from_nir(nir.read(path), batch_size=len(x), num_timesteps=T)
    xt = torch.from_numpy(np.repeat(x[:, None], T, axis=1).reshape(len(x) * T, *x.shape[1:]))
    return net(xt).detach().reshape(len(x), T, -1).numpy()


def run_spyx(path: str, x: np.ndarray, T: int, dt: float) -> np.ndarray:
    import nir
    import spyx.nir
    _, out = spyx.nir.from_nir(nir.read(path), _repeat(x, T), dt=dt)
    return np.swapaxes(np.asarray(out), 0, 1).reshape(len(x), T, -1)


def run_rockpool(path: str, x: np.ndarray, T: int, dt: float) -> np.ndarray:
    """rockpool's torch modules take ``[N, T, features]``."""
    import nir
    import torch
    from rockpool.nn.modules import from_nir
    net = from_nir(nir.read(path))
    out = net(torch.from_numpy(np.swapaxes(_repeat(x, T), 0, 1)))
    out = out[0] if isinstance(out, tuple) else out
    return out.detach().reshape(len(x), T, -1).numpy()


RUNNERS = {"snntorch": run_snntorch, "nirtorch": run_nirtorch, "lava-nc": run_lava,
           "norse": run_norse, "sinabs": run_sinabs, "spyx": run_spyx, "rockpool": run_rockpool}


def read_one(dist: str, path: str, x_path: str, out: str) -> None:
    """Reader mode (inside the reader's venv): run the file, write ``out`` (spikes) and
    ``out.json`` (version, error)."""
    from importlib.metadata import version
    info = {"version": version(dist), "error": None}
    try:
        meta = _metadata(path)
        got = RUNNERS[dist](path, np.load(x_path), int(meta["time_steps"]), float(meta["dt"]))
        np.save(out, np.asarray(got, dtype=np.float32))
    except Exception as exc:                  # the row records why the reader failed
        info["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        info["trace"] = traceback.format_exc(limit=-3)
    Path(out + ".json").write_text(json.dumps(info))


def _metadata(path: str) -> dict:
    """The file's ``dt`` and ``time_steps``, read with h5py (a reader's own nir.read may fail)."""
    import h5py
    with h5py.File(path, "r") as f:
        m = f["node"]["metadata"]
        return {k: m[k][()] for k in ("dt", "time_steps")}


# ------------------------------------------------------------------ the project's side
def make_files(work: Path, n: int) -> list[tuple[str, str, Path]]:
    """Our NIR files, the inputs and our spikes; returns ``(model, encoding, file)``."""
    import nir
    sys.path.insert(0, str(ROOT))
    from dpap_deploy.data import load_dataset
    from dpap_deploy.exporters._compare import torch_spikes
    from dpap_deploy.exporters.nir_graph import to_nir
    from dpap_deploy.exporters.nir_torch import run_reference
    x = load_dataset("digits").x_test[:n]
    files = []
    for name, model, xs, T in (_digits(work, x), _mini(x)):
        np.save(work / f"x-{name}.npy", xs.numpy())
        ref = torch_spikes(model, xs, T)
        for enc, options in VARIANTS.items():
            if "pooling" in options and name == "mini":
                continue                                  # no pools: the same file as unit-r
            path = work / f"{name}-{enc}.nir"
            nir.write(str(path), to_nir(model, xs[:2], T, **options))
            ours = run_reference(nir.read(str(path)), xs.numpy(), T).reshape(ref.shape)
            if not np.array_equal(ours, ref):
                raise SystemExit(f"{path.name}: our reader differs from the model; fix that first")
            np.save(work / f"ref-{name}-{enc}.npy", ours)
            files.append((name, enc, path))
    return files


def _digits(work: Path, x):
    """The zoo's snn-digits, trained 3 epochs (seed 0), compacted, BatchNorm folded."""
    import torch
    from dpap_deploy.compaction import fold_for_deployment
    from dpap_deploy.pipeline import compact
    from dpap_deploy.serialize import load_model
    from dpap_deploy.training import TrainConfig, train
    run = work / "digits-run"
    if not (run / "compact.pt").is_file():
        torch.manual_seed(0)
        train(TrainConfig(epochs=3), run, progress=False)
        compact(run, run)
    model, _, meta = load_model(run / "compact.pt")
    T = meta["time_steps"]
    _, folded = fold_for_deployment(model, x[:64], time_steps=T, fold_pools=False)
    return "digits", folded, x, T


def _mini(x):
    """``Linear(64, 32)-LIF-Linear(32, 10)-LIF``, beta 0.9, seed 0, weights x3 (it spikes)."""
    import snntorch as snn
    import torch
    from torch import nn
    torch.manual_seed(0)
    lif = lambda: snn.Leaky(beta=0.9, init_hidden=True, reset_mechanism="zero")  # noqa: E731
    net = nn.Sequential(nn.Linear(64, 32), lif(), nn.Linear(32, 10), lif()).eval()
    with torch.no_grad():
        net[0].weight.mul_(3)
        net[2].weight.mul_(3)
    return "mini", net, x.reshape(len(x), -1), 8


def venv_python(r: Reader, venvs: Path) -> Path:
    """The reader's python, its venv created and its packages installed when missing."""
    if r.venv is None:
        return Path(sys.executable)
    env = venvs / r.venv
    py = env / "bin" / "python"
    if not (env / ".installed").is_file():
        subprocess.run([sys._base_executable, "-m", "venv", str(env)], check=True)
        _pip(py, [TORCH, *[p for p in r.pip if not p.startswith("--no-deps")]])
        for p in r.pip:
            if p.startswith("--no-deps"):
                _pip(py, ["--no-deps", *p.split()[1:]])
        (env / ".installed").write_text("ok\n")
    return py


def _pip(py: Path, args: list[str]) -> None:
    print(f"installing {' '.join(args)} into {py.parent.parent}", flush=True)
    subprocess.run([str(py), "-m", "pip", "install", "-q", *args], check=True,
                   stdout=subprocess.DEVNULL)


def compare(r: Reader, work: Path, model: str, enc: str, out: Path) -> dict:
    info = json.loads(Path(str(out) + ".json").read_text())
    ref = np.load(work / f"ref-{model}-{enc}.npy")
    row = {"reader": r.name, "version": info["version"], "model": model, "encoding": enc,
           "reads": "no", "exact": "no", "samples_identical": "", "spikes_ours": int(ref.sum()),
           "spikes_theirs": "", "why_not": info["error"] or ""}
    if info["error"] is None:
        got = np.load(out)
        row["reads"] = "yes"
        if got.shape != ref.shape:
            row["why_not"] = f"output shape {got.shape}, ours {ref.shape}"
            return row
        same = (got == ref).all(axis=(1, 2))
        row.update(samples_identical=f"{same.mean():.2f}", spikes_theirs=int(got.sum()),
                   exact="yes" if same.all() else "no")
    if row["exact"] == "no" and r.note:
        row["why_not"] = "; ".join(s for s in (row["why_not"], r.note) if s)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--venvs", type=Path, default=Path("/tmp/nir-compat"),
                    help="folder for the readers' venvs (outside the repository)")
    ap.add_argument("--samples", type=int, default=20, help="digits test samples to run")
    ap.add_argument("--read", nargs=4, metavar=("DIST", "FILE", "X", "OUT"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.read:
        return read_one(*a.read)
    work = a.venvs / "files"
    work.mkdir(parents=True, exist_ok=True)
    files = make_files(work, a.samples)
    rows = []
    for r in READERS:
        try:
            py = venv_python(r, a.venvs)
        except subprocess.CalledProcessError as exc:
            rows += [_install_failed(r, m, e, exc) for m, e, _ in files]
            continue
        for model, enc, path in files:
            out = work / f"out-{r.venv or r.dist}-{model}-{enc}.npy"
            subprocess.run([str(py), __file__, "--read", r.dist, str(path),
                            str(work / f"x-{model}.npy"), str(out)], timeout=900,
                           env={**os.environ, "OMP_NUM_THREADS": "1"})
            rows.append(compare(r, work, model, enc, out))
    write(rows)


def _install_failed(r: Reader, model: str, enc: str, exc) -> dict:
    return {"reader": r.name, "version": "", "model": model, "encoding": enc, "reads": "no",
            "exact": "no", "samples_identical": "", "spikes_ours": "", "spikes_theirs": "",
            "why_not": f"does not install here: {exc}"}


def write(rows: list[dict]) -> None:
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    with open(RESULTS, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    cols = ("reader", "version", "model", "encoding", "reads", "exact", "samples_identical",
            "spikes_theirs", "spikes_ours", "why_not")
    print("| " + " | ".join(cols) + " |\n|" + "---|" * len(cols))
    for row in rows:
        print("| " + " | ".join(str(row[c]).replace("|", "/") for c in cols) + " |")
    print(f"\nwritten: {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
