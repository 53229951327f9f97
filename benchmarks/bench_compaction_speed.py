"""Inference throughput of the masked vs the compacted network, side by side in one run.

    .venv/bin/python benchmarks/bench_compaction_speed.py [--quick] [--out FILE]

For the paper's MNIST SNN (15C3-AP2-40C3-AP2-300FC-10FC, T = 8) and LeNet, a short DPAP run on
28x28 inputs (the real digits, upsampled) produces the masks, with survival parameters that
prune within a few epochs (conv channels included). The masked model (zeros in place, what
snnTorch and PyTorch run after pruning) and the compacted one are then timed alternately on
batches of 256 on the CPU. Printed next to the speedup: the ratio of dense MACs of the two
networks (every weight of every layer, per step): the work each one actually does.
Target: speedup >= 0.7 x MAC ratio. Also printed: the ratio of neuron-state updates (LIF /
ReLU elements per step), work that MACs do not count and that dominates a small SNN on a CPU
when its first layer keeps all its channels.
"""
from __future__ import annotations

import argparse
import sys
import tempfile

import torch

from common import digits_28, interleaved_medians, median, write_results
from dpap_deploy.compaction import compact
from dpap_deploy.compaction.compact import outputs
from dpap_deploy.counting import fanout
from dpap_deploy.graph import build_graph
from dpap_deploy.masks import from_dpap_state
from dpap_deploy.training import TrainConfig, train

FAST = {"conv": {"epsilon": 1.0, "eta": 4.0, "beta": 3.0, "warmup": 1},
        "linear": {"epsilon": 1.5, "eta": 4.0, "beta": 3.0, "warmup": 1}}


def dense_macs(model, x) -> float:
    """Multiply-accumulates of every weight of every synaptic layer, per sample and step."""
    graph = build_graph(model, x[:1])
    return float(sum(fanout(l.synapse, graph.nodes[l.node].in_shape, nonzero=False).sum()
                     for l in graph.layers))


def neuron_updates(model, x) -> int:
    """Neuron-state elements updated per sample and step (LIF / ReLU outputs, pooling inputs
    excluded): the elementwise work that MACs do not count."""
    return sum(int(torch.tensor(n.out_shape).prod()) for n in build_graph(model, x[:1]).nodes
               if n.op == "neuron")


def bench(model_name: str, epochs: int, repeats: int, batch: int) -> dict:
    data = digits_28()
    with tempfile.TemporaryDirectory() as tmp:
        run = train(TrainConfig(model=model_name, epochs=epochs, batch_size=64, device="cpu",
                                dpap_config=FAST), tmp, progress=False, data=data)
    masks = from_dpap_state(run.dpap.state_dict())
    model = run.model.eval()
    x = data.x_test.repeat(-(-batch // len(data.x_test)), 1, 1, 1)[:batch]
    T = run.cfg.time_steps
    small = compact(model, x[:64], masks, time_steps=T).model.eval()
    t_masked, t_small = interleaved_medians(
        [lambda: outputs(model, x, run.kind, T), lambda: outputs(small, x, run.kind, T)], repeats)
    mm, ms = median(t_masked), median(t_small)
    ratio = dense_macs(model, x) / dense_macs(small, x)
    neuron_ratio = neuron_updates(model, x) / neuron_updates(small, x)
    p_dense = sum(p.numel() for p in model.parameters())
    p_small = sum(p.numel() for p in small.parameters())
    neurons = [(l.name, int(m[1].sum()), len(m[1])) for l, m in
               zip(run.dpap.layers, masks.values())]
    return {"model": model_name, "batch": batch, "dpap_epochs": epochs, "test_acc": run.history[-1]["test_acc"],
            "neurons_kept": neurons, "params_dense": p_dense, "params_compact": p_small,
            "s_masked": t_masked, "s_compact": t_small,
            "throughput_masked": batch / mm, "throughput_compact": batch / ms,
            "speedup": mm / ms, "mac_ratio": ratio, "speedup_over_ratio": (mm / ms) / ratio,
            "neuron_update_ratio": neuron_ratio}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer DPAP epochs and repeats")
    ap.add_argument("--out", default="benchmarks/results/compaction_speed.json")
    args = ap.parse_args(argv)
    epochs, repeats = (4, 3) if args.quick else (12, 7)
    results = []
    print(f"{'model':10s} {'kept neurons per layer':28s} {'params':>17s} {'masked/s':>9s} "
          f"{'compact/s':>9s} {'speedup':>8s} {'MAC ratio':>9s} {'sp/ratio':>8s} {'neuron ratio':>12s}",
          flush=True)
    for name in ("snn-mnist", "ann-lenet"):
        r = bench(name, epochs, repeats, 256)
        results.append(r)
        kept = " ".join(f"{k}/{n}" for _, k, n in r["neurons_kept"])
        print(f"{name:10s} {kept:28s} {r['params_dense']:>8,}->{r['params_compact']:<8,} "
              f"{r['throughput_masked']:9.0f} {r['throughput_compact']:9.0f} {r['speedup']:8.2f} "
              f"{r['mac_ratio']:9.2f} {r['speedup_over_ratio']:8.2f} "
              f"{r['neuron_update_ratio']:12.2f}", flush=True)
    write_results(args.out, {"torch_threads": torch.get_num_threads(), "results": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
