"""Training samples/s against the peers: our training loop (multi-step executor, with and
without DPAP; the step loop) against a bare snnTorch loop, Norse and SpikingJelly, side by
side in one process, on the paper's MNIST SNN (15C3-AP2-40C3-AP2-300FC-10FC), T = 8, batch 128,
CPU; and the first-run cost of our executor (its kernels compiled in a fresh process).

    .venv/bin/python benchmarks/bench_peers.py [--quick] [--repeats 7] [--samples 1408]

Every contender trains the same network from the same initial weights on the same inputs
(real scikit-learn digits upsampled to 28x28, direct encoding: the static image is the input
current at each of the T steps), with the same loss (Eq 3: squared error of the output firing
rate against the one-hot label) and the same fused Adam. One repetition is one pass over
``--samples`` samples (forward, backward, optimizer step per batch); repetitions are
interleaved (``common.interleaved_medians``) and samples/s is taken from the medians. Ours run
``training.train_epoch`` as ``dpap-deploy train`` does (its batching and shuffling, DPAP's
per-batch bookkeeping; DPAP's end of epoch is timed apart, once); the peers run a plain loop
over the batches. All share the process (and its allocator).

Each peer's neuron is set to the paper's LIF (u <- 0.2 u (1 - o) + I, o = [u > 0.5], reset to
zero, rectangle surrogate of width 1) as closely as it can state it; ``NEURONS`` says where it
differs, and after the warm-up every contender, given our weights, is checked to spike as our
executor does, population by population. The first-run cost is measured in two fresh
processes, before the timing: one with an empty kernel cache (a new folder: the compilation
included), one with that cache filled. Run it alone: two torch processes slow each other down.
Writes ``benchmarks/results/peers.json`` and ``peers.md`` (``--quick``: ``peers_quick.*``).
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

import torch

from common import digits_28, interleaved_medians, median, write_results
from dpap_deploy.neurons import LAMBDA, SURROGATE_WIDTH, V_TH

HERE = Path(__file__).resolve().parent
MODEL, T, BATCH = "snn-mnist", 8, 128
# all DPAP bookkeeping active from the first batch (the traces' plasticity term is skipped in
# the warm-up epochs otherwise), as in bench_dpap_overhead.py
DPAP_ACTIVE = {"conv": {"warmup": 0}, "linear": {"warmup": 0}}

NEURONS = {
    "ours (multi-step + DPAP)": "snn.Leaky(beta 0.2, threshold 0.5, reset zero), rectangle "
                                "surrogate; multi-step executor, DPAP attached (warm-up 0)",
    "ours (multi-step)": "the same, no pruner",
    "ours (step loop)": "the same network, training's step loop (`--executor step`: the "
                        "graph's time loop calling the model T times), no pruner",
    "snnTorch loop": "the zoo model (snn.Leaky) called T times; the project's rectangle "
                     "surrogate; no graph, no project code in the loop",
    "Norse": "LIFBoxCell(tau_mem_inv 800, dt 1e-3: v <- 0.2 v + 0.8 I; v_th 0.4, v_reset 0) in "
             "SequentialState, stepped T times: v = 0.8 u, so the same spikes; surrogate "
             "'triangle' (alpha 1; Norse has no rectangle); reset in the spiking step",
    "SpikingJelly": "LIFNode(tau 1.25, decay_input False, v_threshold 0.5, v_reset 0, "
                    "detach_reset True), surrogate Rect(alpha 1) (= ours), step_mode 'm' "
                    "(2.0 has no backend argument: on the CPU its torch path); the input "
                    "expanded over T before the first conv, as its conv_fashion_mnist example; "
                    "fires at u >= 0.5 (ours u > 0.5)",
}
OUR_STEP = "ours (step loop)"


def versions() -> dict:
    out = {}
    for pkg in ("torch", "snntorch", "norse", "spikingjelly"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = None
    return out


# ------------------------------------------------------------------ the contenders

def our_run(data, **options):
    """A training run as ``dpap-deploy train`` builds it (same seed: same initial weights)."""
    from dpap_deploy.training import TrainConfig, build_run
    cfg = TrainConfig(model=MODEL, batch_size=BATCH, time_steps=T, epochs=100, device="cpu",
                      **options)
    return build_run(cfg, data)


def our_epoch(run):
    """One pass of ``train_epoch`` (DPAP's per-batch bookkeeping included, its end of epoch
    not: timed apart), returning its seconds."""
    from dpap_deploy.training import train_epoch

    def epoch() -> float:
        t0 = time.perf_counter()
        train_epoch(run, progress=False)
        run.history.append({})      # the next pass shuffles as the next epoch would
        return time.perf_counter() - t0
    return epoch


def snntorch_forward(ref):
    """The model itself, stepped: what an snnTorch user writes."""
    from dpap_deploy.graph import reset_states
    net = copy.deepcopy(ref)

    def forward(x):
        reset_states(net)
        return torch.stack([net(x) for _ in range(T)]).mean(0)
    return net, forward


def norse_forward(ref):
    from norse.torch import LIFBoxCell, LIFBoxParameters, SequentialState
    import snntorch as snn
    dt = 1e-3
    p = LIFBoxParameters(tau_mem_inv=torch.tensor((1 - LAMBDA) / dt),
                         v_th=torch.tensor((1 - LAMBDA) * V_TH), v_reset=torch.tensor(0.0),
                         v_leak=torch.tensor(0.0), method="triangle", alpha=1.0)
    net = SequentialState(*[LIFBoxCell(p, dt=dt) if isinstance(m, snn.Leaky) else copy.deepcopy(m)
                            for m in ref])

    def forward(x):
        state, out = None, []
        for _ in range(T):
            z, state = net(x, state)
            out.append(z)
        return torch.stack(out).mean(0)
    return net, forward


def spikingjelly_forward(ref):
    import snntorch as snn
    from spikingjelly.activation_based import functional, layer, neuron, surrogate
    from torch import nn

    def convert(m):
        if isinstance(m, snn.Leaky):
            return neuron.LIFNode(tau=1 / (1 - LAMBDA), decay_input=False, v_threshold=V_TH,
                                  v_reset=0.0, detach_reset=True,
                                  surrogate_function=surrogate.Rect(alpha=1 / SURROGATE_WIDTH))
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            new = layer.Linear(m.in_features, m.out_features) if isinstance(m, nn.Linear) else \
                layer.Conv2d(m.in_channels, m.out_channels, m.kernel_size, m.stride, m.padding)
            new.load_state_dict(m.state_dict())
            return new
        if isinstance(m, nn.AvgPool2d):
            return layer.AvgPool2d(m.kernel_size, m.stride)
        if isinstance(m, nn.Flatten):
            return layer.Flatten()
        raise TypeError(f"no SpikingJelly layer for {type(m).__name__}")
    net = nn.Sequential(*[convert(m) for m in ref])
    functional.set_step_mode(net, "m")

    def forward(x):
        functional.reset_net(net)
        return net(x.unsqueeze(0).expand((T,) + x.shape)).mean(0)
    return net, forward


PEERS = {"snnTorch loop": snntorch_forward, "Norse": norse_forward,
         "SpikingJelly": spikingjelly_forward}


def peer_epoch(net, forward, x, y, lr: float):
    from dpap_deploy.training.loop import loss_fn
    opt = torch.optim.Adam(net.parameters(), lr=lr, fused=True)   # as our training uses
    net.train()

    def epoch():
        for i in range(0, len(y), BATCH):
            loss = loss_fn(forward(x[i:i + BATCH]), y[i:i + BATCH], "snn")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return epoch


def spike_agreement(ref, x, peers: dict) -> dict:
    """Each contender's spikes against ours, from the same weights (``ref``'s, copied) on one
    batch, population by population: the network up to that population run over the window,
    the fraction of its [batch, neurons] spike counts equal to our multi-step executor's.
    ``firing_rate``: ours, per population."""
    import snntorch as snn
    from dpap_deploy.executor import MultiStep
    from dpap_deploy.executor.run import run_window
    from dpap_deploy.graph import build_graph
    out: dict[str, list[float]] = {}
    for k in [k for k, m in enumerate(ref) if isinstance(m, snn.Leaky)]:
        sub = copy.deepcopy(ref[:k + 1])
        graph = build_graph(sub, x)
        with torch.no_grad():
            ours = MultiStep(graph).run(x, T).mean(0)
            outs = {OUR_STEP: run_window(graph, x, T).mean(0)} | \
                {name: make(sub)[1](x) for name, make in peers.items()}
        out.setdefault("firing_rate", []).append(float(ours.mean()))
        for name, o in outs.items():
            out.setdefault(name, []).append(float((o == ours).float().mean()))
    return out


# ------------------------------------------------------------------ first-run cost

def first_run_child() -> None:
    """In a fresh process: build a run, then time its first training step (the kernels built
    on the way) and a second one; say whether the kernels were compiled here or loaded."""
    start = time.time()
    t0 = time.perf_counter()
    data = digits_28(BATCH)
    run = our_run(data, dpap=True)
    t1 = time.perf_counter()
    step = our_epoch(run)
    first = step()
    second = step()
    from dpap_deploy.executor import native
    kernel = f"torch path ({native.error or 'native kernels off'})"
    if native._module is not None:
        so = Path(native._module.__file__)
        kernel = f"{'compiled' if so.stat().st_mtime >= start else 'loaded'}: {so}"
    print(json.dumps({"build_run_s": t1 - t0, "first_step_s": first, "second_step_s": second,
                      "kernel": kernel}))


def first_run(cache: str) -> dict:
    """A fresh process whose kernel cache is ``cache``: torch's extension folder is
    ``TORCH_EXTENSIONS_DIR`` where torch picks the folder, under the user cache folder
    (``XDG_CACHE_HOME``) where the caller does (``get_default_build_root``); both point there."""
    env = dict(os.environ, TORCH_EXTENSIONS_DIR=cache, XDG_CACHE_HOME=cache)
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, __file__, "--first-run-child"], capture_output=True,
                       text=True, env=env, cwd=HERE)
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        sys.exit(f"the first-run measurement failed:\n{r.stderr[-2000:]}")
    res = json.loads(r.stdout.strip().splitlines()[-1]) | {"process_s": wall}
    how, _, so = res["kernel"].partition(": ")
    if so:                                 # compiled or loaded: from this cache, in which folder
        here = Path(so).resolve().is_relative_to(Path(cache).resolve())
        res["kernel"] = f"{how} ({Path(so).parent.name})" if here else \
            f"{how}, NOT from the emptied cache: {so}"
    return res


# ------------------------------------------------------------------ the benchmark

def bench(samples: int, repeats: int) -> dict:
    torch.manual_seed(0)
    data = digits_28(samples)
    x, y = data.x_train, data.y_train
    runs = {"ours (multi-step + DPAP)": our_run(data, dpap=True, dpap_config=DPAP_ACTIVE),
            "ours (multi-step)": our_run(data, dpap=False),
            OUR_STEP: our_run(data, dpap=False, executor="step")}
    ref = runs["ours (multi-step)"].model
    epochs = {name: our_epoch(r) for name, r in runs.items()}
    skipped, peers = {}, {}
    for name, make in PEERS.items():
        try:
            net, fwd = make(ref)
        except ImportError as exc:
            skipped[name] = f"not installed ({exc.name}): pip install norse spikingjelly"
            continue
        epochs[name] = peer_epoch(net, fwd, x, y, runs["ours (multi-step)"].cfg.lr)
        peers[name] = make
    names = list(epochs)
    for name in names:                         # warm-up: allocator, caches, kernels
        epochs[name]()
    # after the warm-up, where more neurons fire than at initialisation
    agree = spike_agreement(ref, x[:BATCH], peers)
    times = interleaved_medians([epochs[n] for n in names], repeats)
    sps = {n: samples / median(t) for n, t in zip(names, times)}
    rows = [{"name": n, "samples_per_s": sps[n], "vs_our_step_loop": sps[n] / sps[OUR_STEP],
             "median_s": median(t), "times_s": t, "spikes_as_ours": agree.get(n),
             "neuron": NEURONS[n]} for n, t in zip(names, times)]
    rows += [{"name": n, "skipped": why, "neuron": NEURONS[n]} for n, why in skipped.items()]
    dp = runs["ours (multi-step + DPAP)"]
    t0 = time.perf_counter()
    dp.dpap.end_epoch()
    end_epoch_s = time.perf_counter() - t0
    return {"rows": rows, "firing_rates": agree["firing_rate"], "dpap_end_epoch_s": end_epoch_s}


def goal_lines(res: dict) -> list[str]:
    """The goal of the comparison: ours (multi-step, DPAP attached) at least 3x our step loop
    and ahead of every peer; and what DPAP's end of epoch adds on an MNIST-sized epoch."""
    rows = {r["name"]: r for r in res["rows"] if "skipped" not in r}
    ours = rows["ours (multi-step + DPAP)"]
    peers = {n: r["samples_per_s"] for n, r in rows.items() if n in PEERS}
    best = max(peers, key=peers.get) if peers else None
    epoch_s = 60000 / ours["samples_per_s"]
    end = res["dpap_end_epoch_s"]
    met = lambda ok: "met" if ok else "NOT met"  # noqa: E731
    ratio = ours["vs_our_step_loop"]
    ahead = "no peer measured."
    if best:
        lead = ours["samples_per_s"] / peers[best]
        ahead = f"ahead of every peer: {lead:.2f}x the fastest, {best} ({met(lead > 1)})."
    return ["", f"Goal: ours (multi-step + DPAP) >= 3x our step loop: {ratio:.2f}x "
            f"({met(ratio >= 3)}); {ahead}",
            "", f"DPAP's end of epoch (survival, pruning), once per epoch, not in the rows above: "
            f"{end:.3f} s, {end / (epoch_s + end):.2%} of an epoch of MNIST's 60,000 samples at "
            f"the rate above."]


def markdown(res: dict) -> str:
    a = res["args"]
    fr = res["first_run"]
    lines = [f"# Training speed against the peers ({MODEL}, T = {T}, batch {BATCH}, CPU)", "",
             f"{a['samples']} samples per repetition (real digits upsampled to 28x28), "
             f"{a['repeats']} interleaved repetitions, medians; torch threads "
             f"{res['torch_threads']}; " + ", ".join(f"{k} {v}" for k, v in res["versions"].items()
                                                      if v) + ". Every contender: the same "
             "initial weights, inputs, loss (Eq 3) and fused Adam; forward, backward and "
             "optimizer step per batch.", "",
             "| contender | samples/s | vs our step loop | spikes as ours | neuron, and "
             "where it differs |", "|---|---:|---:|---:|---|"]
    for r in res["rows"]:
        if "skipped" in r:
            lines.append(f"| {r['name']} | skipped | | | {r['skipped']} |")
            continue
        eq = r["spikes_as_ours"]
        eq = "reference" if eq is None else " / ".join(f"{v:.1%}" for v in eq)
        lines.append(f"| {r['name']} | {r['samples_per_s']:.0f} | {r['vs_our_step_loop']:.2f}x "
                     f"| {eq} | {r['neuron']} |")
    rates = " / ".join(f"{v:.3f}" for v in res["firing_rates"])
    lines += ["", "Spikes as ours: population by population (input to output), the spike "
              "counts over the window that equal our multi-step executor's, each contender "
              "given our weights after the warm-up pass, on one batch (our firing rates: "
              f"{rates})."] + goal_lines(res) + ["",
              "First-run cost of our executor (fresh process, DPAP attached, one batch):", "",
              "| kernel cache | build run s | first step s | second step s | process s | kernel |",
              "|---|---:|---:|---:|---:|---|"]
    for label, r in fr.items():
        lines.append(f"| {label} | {r['build_run_s']:.2f} | {r['first_step_s']:.2f} | "
                     f"{r['second_step_s']:.3f} | {r['process_s']:.1f} | {r['kernel']} |")
    if fr["filled"]["kernel"].startswith("compiled"):
        lines += ["", "The filled cache was not used: the kernels' sources or flags changed "
                  "between the two processes (a new build folder); measure again."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true",
                    help="256 samples, 2 repetitions: checks that it runs, times nothing")
    ap.add_argument("--samples", type=int, default=1408, help="per repetition (11 batches)")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--out", help="JSON path (default benchmarks/results/peers.json, "
                                  "peers_quick.json with --quick); the table beside it (.md)")
    ap.add_argument("--first-run-child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.first_run_child:
        first_run_child()
        return 0
    if args.quick:
        args.samples, args.repeats = 2 * BATCH, 2
    if args.samples < BATCH or args.samples % BATCH:
        ap.error(f"--samples {args.samples}: give a multiple of the batch, {BATCH}")
    out = Path(args.out or HERE / "results" / ("peers_quick.json" if args.quick else "peers.json"))
    with tempfile.TemporaryDirectory(prefix="dpap-kernels-") as cache:
        first = {"empty (compiled)": first_run(cache), "filled": first_run(cache)}
    res = {"benchmark": "peers", "model": MODEL, "time_steps": T, "batch": BATCH,
           "args": {"samples": args.samples, "repeats": args.repeats, "quick": args.quick},
           "versions": versions(), "torch_threads": torch.get_num_threads(),
           "first_run": first, **bench(args.samples, args.repeats)}
    table = markdown(res)
    print(table)
    write_results(str(out), res)
    from dpap_deploy.atomic import atomic_write_text
    atomic_write_text(out.with_suffix(".md"), table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
