"""What every exporter takes and returns (one module per target, same interface):

    result = export(job, out_dir)   # writes files, runs them in the real consumer, compares

``job`` holds the compacted network and the test data; ``result`` the files written, the
accuracy measured in the target, and the parity with the torch model.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError, DPAPError


def _describe(t: Any) -> str:
    return f"{len(t)} {type(t).__name__}" if hasattr(t, "__len__") else type(t).__name__


@dataclass
class ExportJob:
    model: nn.Module            # the compacted network (evaluation mode)
    kind: str                   # "snn" or "ann"
    x: torch.Tensor             # test inputs, [N, C, H, W]
    y: torch.Tensor             # test labels
    time_steps: int | None = None    # the run's T (an SNN's exporters need it; no default)
    max_samples: int | None = None   # how many test samples the consumer runs
    graph: Any = None                # the model's ModelGraph; built once on first use
    deploy: nn.Module | None = None  # the folded network compaction saved (deploy.pt)
    nir_encoding: str = "gain"       # NIR neurons: "gain" (r = tau/dt) or "unit-r" (r = 1,
                                     # input weights scaled: for readers that ignore r)
    nir_pooling: str = "avg"         # NIR pools: "avg" (AvgPool2d) or "sum" (SumPool2d, the
                                     # 1/(kh kw) in the next weights: readers without AvgPool2d)
    log: Any = None                  # told how a long consumer run goes (a line); None: silent

    def __post_init__(self) -> None:
        if not hasattr(self.x, "__len__") or not isinstance(self.y, torch.Tensor) \
                or len(self.x) != len(self.y):     # x: a tensor, or frames binned on demand
            raise ConfigError(f"an export needs test inputs and labels as tensors of the same "
                              f"length, got {_describe(self.x)} and {_describe(self.y)}")
        if self.kind == "snn" and (not isinstance(self.time_steps, int) or self.time_steps < 1):
            raise ConfigError(f"an SNN export needs the run's time steps, got time_steps="
                              f"{self.time_steps!r}; pass the T the network was trained with")

    @classmethod
    def from_files(cls, folder: str | Path, x: torch.Tensor, y: torch.Tensor, time_steps: int,
                   max_samples: int | None = None, **options) -> "ExportJob":
        """The job of a compaction's folder: ``compact.pt``, and ``deploy.pt`` (the folded
        network) when it is there. The files carry the run's ``time_steps``; another value
        is refused (a network run with the wrong T gives wrong spikes, silently)."""
        from ..serialize import load_model
        folder = Path(folder)
        model, kind, meta = load_model(folder / "compact.pt")
        if meta.get("time_steps", time_steps) != time_steps:
            raise DPAPError(f"{folder / 'compact.pt'} was compacted for time_steps="
                            f"{meta['time_steps']}, the run has {time_steps}; compact it again")
        deploy = load_model(folder / "deploy.pt")[0] if (folder / "deploy.pt").is_file() else None
        return cls(model, kind, x, y, time_steps, max_samples, deploy=deploy, **options)

    def model_graph(self):
        if self.graph is None:
            from ..graph import build_graph
            self.graph = build_graph(self.model, self.x[:2])
        return self.graph

    def deployment_graph(self):
        """The folded network's graph (BatchNorm and average pooling folded into synapses):
        the one compaction saved and verified, else folded now."""
        from ..graph import build_graph
        if self.deploy is not None:
            return build_graph(self.deploy, self.x[:2])
        from ..compaction import fold_for_deployment
        x, _ = self.samples()
        return fold_for_deployment(self.model, x[:64], time_steps=self.time_steps,
                                   graph=self.model_graph())[1]

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


def file_sha256(folder: str | Path, names: list[str]) -> dict[str, str]:
    """``{name: sha256 of the file}`` for the files an export wrote in ``folder``."""
    from ..runfolder import file_digest
    return {name: file_digest(Path(folder) / name) for name in names}
