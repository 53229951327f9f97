"""What every exporter takes and returns (one module per target, same interface):

    result = export(job, out_dir)   # writes files, runs them in the real consumer, compares

``job`` holds the compacted network and the test data; ``result`` the files written, the
accuracy measured in the target, and the parity with the torch model.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn


@dataclass
class ExportJob:
    model: nn.Module            # the compacted network (evaluation mode)
    kind: str                   # "snn" or "ann"
    x: torch.Tensor             # test inputs, [N, C, H, W]
    y: torch.Tensor             # test labels
    time_steps: int = 8
    max_samples: int | None = None   # how many test samples the consumer runs
    graph: Any = None                # the model's ModelGraph; built once on first use

    def model_graph(self):
        if self.graph is None:
            from ..graph import build_graph
            self.graph = build_graph(self.model, self.x[:2])
        return self.graph

    def samples(self) -> tuple[torch.Tensor, torch.Tensor]:
        n = len(self.x) if self.max_samples is None else min(self.max_samples, len(self.x))
        return self.x[:n], self.y[:n]


@dataclass
class ExportResult:
    target: str
    files: list[str]
    accuracy: float             # accuracy of the exported model, run by its consumer
    parity: dict[str, Any]      # {"agreement": fraction, "n_samples": int, ...}
    passed: bool                # the parity check of this target held
    details: dict[str, Any] = field(default_factory=dict)

    def to_report(self) -> dict[str, Any]:
        return {"target": self.target, "files": self.files, "accuracy": self.accuracy,
                "parity": self.parity, "passed": self.passed, **self.details}
