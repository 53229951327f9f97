"""Lava simulation speed of the compacted vs the uncompacted (masked) network, side by side.

    .venv/bin/python benchmarks/bench_lava_steps.py [--quick] [--out FILE]

The digits SNN is trained with DPAP (60 epochs, default settings), then both the masked
network (pruned units still present, zeros in place) and the compacted one are folded
(BatchNorm, AvgPool), converted through NIR to Lava processes and run in
``Loihi2SimCfg(select_tag='floating_pt')`` on the same test samples, alternately. Printed:
time steps per second of each and the ratio; both runs' output spikes must agree.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time

import numpy as np

from common import write_results
from dpap_deploy.compaction import compact, deployment_graph
from dpap_deploy.exporters.nir_graph import to_nir
from dpap_deploy.exporters.nir_to_lava import LavaNetwork
from dpap_deploy.masks import from_dpap_state
from dpap_deploy.training import TrainConfig, train


def lava_run(model, x, T):
    net = LavaNetwork(to_nir(model, x[:2], T), T)
    t0 = time.perf_counter()
    out = net.run(x.numpy())
    return time.perf_counter() - t0, out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="10 epochs, 50 samples, 1 repeat")
    ap.add_argument("--out", default="benchmarks/results/lava_steps.json")
    args = ap.parse_args(argv)
    epochs, n, repeats = (10, 50, 1) if args.quick else (60, 200, 3)
    with tempfile.TemporaryDirectory() as tmp:
        run = train(TrainConfig(epochs=epochs, device="cpu"), tmp, progress=False)
    T = run.cfg.time_steps
    x = run.data.x_test[:n]
    masked = deployment_graph(run.model.eval(), x, time_steps=T)
    masks = from_dpap_state(run.dpap.state_dict())
    small = deployment_graph(compact(run.model, x, masks, time_steps=T).model, x, time_steps=T)
    times = {"masked": [], "compact": []}
    outs = {}
    for r in range(repeats):
        for name, model in ((("masked", masked), ("compact", small)) if r % 2 == 0
                            else (("compact", small), ("masked", masked))):
            t, outs[name] = lava_run(model, x, T)
            times[name].append(t)
    steps = n * T
    res = {"samples": n, "time_steps": steps, "repeats": repeats,
           "params_masked": sum(p.numel() for p in masked.parameters()),
           "params_compact": sum(p.numel() for p in small.parameters()),
           "steps_per_s_masked": steps / float(np.median(times["masked"])),
           "steps_per_s_compact": steps / float(np.median(times["compact"])),
           "outputs_identical": bool(np.array_equal(outs["masked"], outs["compact"])),
           "wall_s": times}
    res["speedup"] = res["steps_per_s_compact"] / res["steps_per_s_masked"]
    print(f"{'network':8s} {'params':>8s} {'Lava steps/s':>13s}")
    print(f"{'masked':8s} {res['params_masked']:8d} {res['steps_per_s_masked']:13.1f}")
    print(f"{'compact':8s} {res['params_compact']:8d} {res['steps_per_s_compact']:13.1f}")
    print(f"speedup {res['speedup']:.2f}x; identical output spikes: {res['outputs_identical']}")
    write_results(args.out, res)
    return 0


if __name__ == "__main__":
    sys.exit(main())
