"""``onnx``: the compacted ANN as an ONNX model with a dynamic batch dimension, checked with
``onnx.checker`` and run in onnxruntime; logits must match torch up to float32 rounding:
``|difference| <= RTOL * max(1, max |logit|)``. Two float32 engines summing the same products in
another order differ by a few units of 2^-24 of the magnitudes summed (measured: 1.1e-5 on
logits up to ~38 on the default ANN, 3e-7 of the scale); a fixed 1e-5 failed correct exports
on 3 of 5 seeds. A real error (one flipped weight sign) moves logits by ~1e-1 (tested).

One self-contained file: the weights are embedded (no ``model.onnx.data`` beside it), so
``model.onnx`` copied alone runs; models over protobuf's 2 GiB limit are refused with a way out."""
from __future__ import annotations

import contextlib
import io
import logging
import warnings
from pathlib import Path

import numpy as np
import torch

from ..metrics import accuracy, agreement, predictions
from ..atomic import atomic_path
from ..errors import UnsupportedModelError
from ._compare import constant_output
from .base import ExportJob, ExportResult

TARGET = "onnx"
PROTOBUF_LIMIT = 2**31 - 2**20     # one protobuf message is < 2 GiB; keep 1 MiB for the graph
KINDS = ("ann",)
RTOL = 1e-6


def check_single_file(model: torch.nn.Module) -> None:
    """Weights embedded in ``model.onnx`` must fit protobuf's 2 GiB message limit."""
    size = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    if size > PROTOBUF_LIMIT:
        raise UnsupportedModelError(
            f"the model's weights take {size / 2**30:.2f} GiB, over the 2 GiB limit of one ONNX "
            "file (protobuf); prune or compact it further, or export with torch.onnx.export("
            "..., external_data=True) and keep the .data file next to the .onnx")


def blockers(graph, time_steps: int | None = None) -> list[str]:
    """Every reason this target would refuse the model graph, without exporting: the ANN's
    weights must fit one ONNX file (``check_single_file``); the operators torch.onnx takes are
    known only by exporting, which the export itself checks."""
    try:
        check_single_file(graph.model)
    except UnsupportedModelError as exc:
        return [str(exc)]
    return []


def export(job: ExportJob, out: Path) -> ExportResult:
    import onnx
    import onnxruntime as ort

    x, y = job.samples()
    model = job.model.eval()
    path = Path(out) / "model.onnx"
    check_single_file(model)
    batch = torch.export.Dim("batch", min=1)
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)   # torchvision-op notices
    with atomic_path(path) as tmp, contextlib.redirect_stdout(io.StringIO()), \
            warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)   # torch's own pytree deprecation notice
        # external_data=False: the weights go inside model.onnx, so the one file is the model
        torch.onnx.export(model, (x[:2],), str(tmp), input_names=["input"],
                          output_names=["logits"], dynamic_shapes=({0: batch},), dynamo=True,
                          external_data=False)
        onnx.checker.check_model(onnx.load(str(tmp), load_external_data=False), full_check=True)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = np.concatenate([sess.run(None, {"input": x[i:i + 256].numpy()})[0]
                          for i in range(0, len(x), 256)])
    with torch.no_grad():
        ref = model(x).numpy()
    diff = float(np.abs(got - ref).max())
    tol = RTOL * max(1.0, float(np.abs(ref).max()))
    acc = accuracy(predictions(got), y)           # tied logits: no prediction, wrong
    agree = agreement(got, ref)
    parity = {"agreement": agree, "n_samples": len(x), "max_abs_diff": diff, "tolerance": tol}
    failure = constant_output(got)
    if failure:
        parity["failure"] = failure
    return ExportResult(TARGET, [path.name], acc, parity, diff <= tol and not failure,
                        {"opset": onnx.load(str(path)).opset_import[0].version,
                         "dynamic_batch": True, "external_data": False,
                         "bytes": path.stat().st_size})
