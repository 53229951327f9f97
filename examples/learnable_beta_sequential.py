"""An ``nn.Sequential`` SNN whose neurons learn their own decay and threshold (one ``beta`` and
one ``threshold`` per neuron), trained with DPAP; compaction cuts the per-neuron parameters
together with the neurons, and the NIR file carries them per neuron.

    python examples/learnable_beta_sequential.py [OUT_DIR]
"""
import sys
import tempfile

import snntorch as snn
import torch
import torch.nn.functional as F
from torch import nn

from dpap_deploy import DPAP, DPAPConfig
from dpap_deploy.compaction import compact
from dpap_deploy.data import load_dataset
from dpap_deploy.executor.run import outputs
from dpap_deploy.exporters import ExportJob, export
from dpap_deploy.graph import reset_states
from dpap_deploy.masks import from_dpap_state

T = 8


def main(out_dir: str) -> None:
    torch.manual_seed(0)
    data = load_dataset("digits")
    hidden = 96
    net = nn.Sequential(
        nn.Flatten(), nn.Linear(64, hidden),
        snn.Leaky(beta=torch.full((hidden,), 0.8), learn_beta=True,
                  threshold=torch.ones(hidden), learn_threshold=True,
                  init_hidden=True, reset_mechanism="zero"),
        nn.Linear(hidden, 10), snn.Leaky(beta=0.8, init_hidden=True, reset_mechanism="zero"))
    dpap = DPAP(net, data.x_train[:2], DPAPConfig.from_dict(
        {"linear": {"epsilon": 1.5, "eta": 3.0, "beta": 2.0, "warmup": 1}}))
    opt = torch.optim.Adam(net.parameters(), lr=5e-3)
    for epoch in range(8):
        order = torch.randperm(len(data.y_train))
        for i in range(0, len(order), 64):
            idx = order[i:i + 64]
            reset_states(net)
            rate = torch.stack([net(data.x_train[idx]) for _ in range(T)]).mean(0)
            loss = F.mse_loss(rate, F.one_hot(data.y_train[idx], 10).float())
            opt.zero_grad()
            loss.backward()
            opt.step()
            dpap.step()
        dpap.end_epoch()
    acc = (outputs(dpap.graph, data.x_test, T).sum(0).argmax(1) == data.y_test).float().mean()
    small = compact(net, data.x_test, from_dpap_state(dpap.state_dict()), time_steps=T)
    lif = small.model[2]
    print(f"test accuracy {acc:.3f}; hidden neurons kept {lif.beta.numel()} of {hidden}; "
          f"learned beta in [{lif.beta.min():.3f}, {lif.beta.max():.3f}], threshold in "
          f"[{lif.threshold.min():.3f}, {lif.threshold.max():.3f}]")
    job = ExportJob(small.model, "snn", data.x_test, data.y_test, T, graph=small.graph)
    result = export("nir", job, out_dir)
    print(f"nir: {result.files}, identical spike trains on "
          f"{result.parity['identical_spike_trains']:.3f} of {result.parity['n_samples']} samples")
    if not result.passed:
        raise SystemExit("nir parity check failed")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp(prefix="dpap-example-"))
