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
from ..graph import graph_of
from ..graph.time_axis import batch_axis, batch_slice, check_axis


def _describe(t: Any) -> str:
    return f"{len(t)} {type(t).__name__}" if hasattr(t, "__len__") else type(t).__name__


def _samples_in(x: Any, time_axis: int | None) -> int | None:
    """Samples in ``x`` along its batch axis (``graph/time_axis.py``); None if it has none."""
    shape = getattr(x, "shape", None)
    if shape is not None and len(shape) > batch_axis(time_axis):
        return int(shape[batch_axis(time_axis)])
    return len(x) if hasattr(x, "__len__") and time_axis != 0 else None


@dataclass
class ExportJob:
    model: nn.Module            # the compacted network (evaluation mode)
    kind: str                   # "snn" or "ann"
    x: torch.Tensor             # test inputs: [N, ...], frames [N, T, ...] or [T, N, ...]
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
    time_axis: int | None = None     # the inputs' time axis: 1 [N, T, ...], 0 [T, N, ...]
                                     # (an own loop reading x[t]); None: none, or inferred
    fixed_point: bool = False        # loihi-sim: Lava's bit-accurate fixed-point models

    def __post_init__(self) -> None:
        self.time_axis = check_axis(self.time_axis)
        n = _samples_in(self.x, self.time_axis)    # x: a tensor, or frames binned on demand
        if n != len(self.y) and self.time_axis is None and self.kind == "snn" \
                and isinstance(self.x, torch.Tensor) and self.x.dim() >= 3:
            self.model_graph()                      # a time-first input, inferred: x[t]
            if self.time_axis is not None:
                return                              # checked again with the inferred axis
        if n is None or not isinstance(self.y, torch.Tensor) or n != len(self.y):
            raise ConfigError(f"an export needs test inputs and labels as tensors with as many "
                              f"samples (time_axis={self.time_axis}), got "
                              f"{_describe(self.x)} and {_describe(self.y)}")
        if self.time_axis is not None and self.kind == "snn":
            steps = int(self.x.shape[self.time_axis])
            if self.time_steps is None:
                self.time_steps = steps             # the frames' T is the run's
            elif self.time_steps != steps:
                raise ConfigError(f"the inputs hold {steps} steps along time_axis="
                                  f"{self.time_axis}, the run has time_steps={self.time_steps};"
                                  f" give inputs of {self.time_steps} steps (or the right axis)")
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
        """The model's graph, traced with the job's ``time_axis`` (a wrong one is refused in
        one line); an inferred axis becomes the job's."""
        if self.graph is None:
            self.graph = graph_of(self.model, self.x, time_axis=self.time_axis)
            if self.time_axis is None and getattr(self.graph, "time_axis", None) is not None:
                self.time_axis = self.graph.time_axis
                self.__post_init__()                # the inferred axis: samples, steps
        return self.graph

    def deployment_graph(self):
        """The folded network's graph (BatchNorm and average pooling folded into synapses):
        the one compaction saved and verified, else folded now."""
        if self.deploy is not None:
            return graph_of(self.deploy, self.x, time_axis=self.model_graph().time_axis)
        from ..compaction import fold_for_deployment
        x, _ = self.samples()
        return fold_for_deployment(self.model, batch_slice(x, self.time_axis, 0, 64),
                                   time_steps=self.time_steps, graph=self.model_graph())[1]

    def samples(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The first ``max_samples`` test inputs (cut along the batch axis, never along time)
        and their labels. An SNN's time axis is known first (stated, or inferred by tracing)."""
        if self.kind == "snn" and self.time_axis is None and isinstance(self.x, torch.Tensor):
            self.model_graph()
        total = len(self.y)
        n = total if self.max_samples is None else min(self.max_samples, total)
        return batch_slice(self.x, self.time_axis, 0, n), self.y[:n]

    def per_sample(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` (samples of the job's inputs) as the consumers take it, sample first:
        ``[N, ...]`` static, or frames ``[N, T, ...]`` (a time-first ``[T, N, ...]`` input is
        transposed; frame ``t`` of sample ``n`` is ``x[t, n]`` either way)."""
        return x.movedim(0, 1) if self.time_axis == 0 else x


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
