"""A model written as snnTorch's tutorials write it (a class with its own time loop and explicit
membranes) trained with DPAP in its own loop, compacted, written to NIR and run in Lava.

    python examples/tutorial_class_to_lava.py [OUT_DIR]

Data: scikit-learn's handwritten digits (embedded). Runs in well under a minute on a CPU.
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
from dpap_deploy.exporters import ExportJob, export
from dpap_deploy.masks import from_dpap_state

NUM_STEPS = 8


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(64, 100)
        self.lif1 = snn.Leaky(beta=0.8, reset_mechanism="zero")   # NIR and Lava reset to zero
        self.fc2 = nn.Linear(100, 10)
        self.lif2 = snn.Leaky(beta=0.8, reset_mechanism="zero")

    def forward(self, x):
        mem1 = self.lif1.init_leaky()
        mem2 = self.lif2.init_leaky()
        spk2_rec = []
        for _ in range(NUM_STEPS):
            spk1, mem1 = self.lif1(self.fc1(x.flatten(1)), mem1)
            spk2, mem2 = self.lif2(self.fc2(spk1), mem2)
            spk2_rec.append(spk2)
        return torch.stack(spk2_rec)


def main(out_dir: str) -> None:
    torch.manual_seed(0)
    data = load_dataset("digits")
    net = Net()
    # A fast schedule for this short run: pruning starts after one epoch.
    dpap = DPAP(net, data.x_train[:2], DPAPConfig.from_dict(
        {"linear": {"epsilon": 1.5, "eta": 3.0, "beta": 2.0, "warmup": 1}}))
    opt = torch.optim.Adam(net.parameters(), lr=5e-3)
    for epoch in range(8):
        order = torch.randperm(len(data.y_train))
        for i in range(0, len(order), 64):
            idx = order[i:i + 64]
            rate = net(data.x_train[idx]).mean(0)
            loss = F.mse_loss(rate, F.one_hot(data.y_train[idx], 10).float())
            opt.zero_grad()
            loss.backward()
            opt.step()
            dpap.step()
        died = dpap.end_epoch()
        with torch.no_grad():
            acc = (net(data.x_test).sum(0).argmax(1) == data.y_test).float().mean()
        print(f"epoch {epoch}: test accuracy {acc:.3f}, pruned {died}")
    # Compaction straight after the training loop: no extra forward pass needed.
    small = compact(net, data.x_test, from_dpap_state(dpap.state_dict()),
                    time_steps=NUM_STEPS)
    print(f"compacted: fc1 keeps {small.model.fc1.out_features} of 100 neurons; "
          f"{sum(p.numel() for p in small.model.parameters())} of "
          f"{sum(p.numel() for p in net.parameters())} parameters")
    job = ExportJob(small.model, "snn", data.x_test, data.y_test, NUM_STEPS, max_samples=200,
                    graph=small.graph)
    for target in ("nir", "loihi-sim"):
        result = export(target, job, out_dir)
        print(f"{target}: files {result.files}, accuracy {result.accuracy:.3f}, agreement with "
              f"torch {result.parity['agreement']:.3f} on {result.parity['n_samples']} samples")
        if not result.passed:
            raise SystemExit(f"{target} parity check failed")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp(prefix="dpap-example-"))
