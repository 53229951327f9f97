"""Training and inference samples/s: snnTorch's step loop against the multi-step executor,
side by side in one process (interleaved repeats, medians), for snn-digits, the paper's MNIST
SNN and (small batch) the CIFAR-10 SNN.

    python benchmarks/bench_speed.py [--repeats 7] [--quick] [--out benchmarks/results/speed.json]

Both executors share the process (glibc's default allocator), so each ratio compares like
with like. ``--quick``: the paper's MNIST SNN only (batch 128, at
initialisation), 3 repeats. A training step is forward, backward and an Adam step on one
batch (DPAP not attached; the fused Adam training uses); inference is a no-grad forward of one batch. Inputs: real digits
(upsampled to 28x28 for snn-mnist, to 32x32 RGB for snn-cifar10), direct encoding, T = 8.
snn-mnist is measured at initialisation and again after 300 training steps ("snn-mnist+300"),
where its layers' inputs hold more nonzero spikes; each synapse's input density is printed.
Run it alone: two torch processes at once slow each other down.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

# (name, input shape, batch, training steps before measuring): the paper's MNIST SNN also
# after some training, where its layers' inputs hold more nonzeros than at initialisation
MODELS = [("snn-digits", (1, 8, 8), 64, 0), ("snn-mnist", (1, 28, 28), 100, 0),
          ("snn-mnist", (1, 28, 28), 100, 300), ("snn-cifar10", (3, 32, 32), 16, 0)]
QUICK = [("snn-mnist", (1, 28, 28), 128, 0)]


def input_densities(graph, x, steps: int) -> dict:
    """Fraction of nonzeros in each synapse's input over a window (step loop, evaluation)."""
    import torch
    from torch import nn
    seen: dict[str, list[float]] = {}
    hooks = [m.register_forward_pre_hook(
        lambda _m, inp, n=n: seen.setdefault(n, []).append(float((inp[0] != 0).float().mean())))
        for n, m in graph.model.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    from dpap_deploy.executor.run import run_window
    graph.model.eval()
    with torch.no_grad():
        run_window(graph, x, steps)
    for h in hooks:
        h.remove()
    return {n: round(sum(v) / len(v), 4) for n, v in seen.items()}


def measure(name: str, shape, batch: int, repeats: int, trained: int = 0, steps: int = 8) -> dict:
    import torch
    import torch.nn.functional as F
    from common import interleaved_medians, median
    from dpap_deploy.data import load_dataset
    from dpap_deploy.executor import MultiStep
    from dpap_deploy.executor.run import run_window
    from dpap_deploy.graph import build_graph
    from dpap_deploy.zoo import build_model

    torch.manual_seed(0)
    d = load_dataset("digits")
    data = F.interpolate(d.x_train, size=shape[1:], mode="bilinear", align_corners=False)
    data = data.expand(-1, shape[0], -1, -1).contiguous()
    x, y = data[:batch], d.y_train[:batch]
    model, _ = build_model(name, shape, 10)
    graph = build_graph(model, x)
    executor = MultiStep(graph)
    if trained:        # a short training run (multi-step, Adam 1e-3) on the upsampled digits
        opt = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True)
        model.train()
        for i in range(trained):
            j = (i * batch) % (len(data) - batch)
            out = executor.run(data[j:j + batch], steps).mean(0)
            loss = ((out - F.one_hot(d.y_train[j:j + batch], 10).float()) ** 2).sum(1).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
    opt = torch.optim.Adam(model.parameters(), lr=1e-4, fused=True)   # as training uses

    def train_step(run):
        model.train()
        out = run().mean(0)
        loss = ((out - F.one_hot(y, 10).float()) ** 2).sum(1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()

    def infer(run):
        model.eval()
        with torch.no_grad():
            run()

    step = lambda: run_window(graph, x, steps)          # noqa: E731
    multi = lambda: executor.run(x, steps)               # noqa: E731

    runs = (step, multi)
    for f in runs:                                       # warm-up, and a firing check
        infer(f)
        train_step(f)
    model.eval()
    with torch.no_grad():
        rate = float(run_window(graph, x, steps).mean())
    tr = interleaved_medians([lambda f=f: train_step(f) for f in runs], repeats)
    inf = interleaved_medians([lambda f=f: infer(f) for f in runs], repeats)
    out = {"batch": batch, "time_steps": steps, "output_rate": rate, "trained_steps": trained,
           "input_nonzeros": input_densities(graph, x, steps)}
    for i, key in enumerate(("step_loop", "multistep")):
        out[f"train_{key}"] = batch / median(tr[i])
        out[f"infer_{key}"] = batch / median(inf[i])
    for mode in ("train", "infer"):
        out[f"{mode}_ratio"] = out[f"{mode}_multistep"] / out[f"{mode}_step_loop"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=None, help="7, or 3 with --quick")
    ap.add_argument("--quick", action="store_true", help="snn-mnist (batch 128) only")
    ap.add_argument("--out", default="benchmarks/results/speed.json")
    args = ap.parse_args()
    args.repeats = args.repeats or (3 if args.quick else 7)
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import torch
    from common import write_results
    t0 = time.perf_counter()
    res = {"threads": torch.get_num_threads(), "models": {}}
    for name, shape, batch, trained in (QUICK if args.quick else MODELS):
        label = f"{name}+{trained}" if trained else name
        res["models"][label] = measure(name, shape, batch, args.repeats, trained)
    res["wall_s"] = time.perf_counter() - t0
    print(f"{'model':15s} {'train step':>10s} {'multi':>8s} {'ratio':>6s}   "
          f"{'infer step':>10s} {'multi':>8s} {'ratio':>6s}   (samples/s)")
    for name, m in res["models"].items():
        print(f"{name:15s} {m['train_step_loop']:10.0f} "
              f"{m['train_multistep']:8.0f} {m['train_ratio']:5.2f}x   "
              f"{m['infer_step_loop']:10.0f} {m['infer_multistep']:8.0f} {m['infer_ratio']:5.2f}x")
    print("nonzeros in each synapse's input (snn-mnist+300: after 300 training steps):")
    for name, m in res["models"].items():
        print(f"  {name}: " + ", ".join(f"{k} {v:.1%}" for k, v in m["input_nonzeros"].items()))
    write_results(args.out, {"benchmark": "speed", **res})


if __name__ == "__main__":
    main()
