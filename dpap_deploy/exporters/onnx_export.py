"""``onnx``: the compacted ANN as an ONNX model with a dynamic batch dimension, checked with
``onnx.checker`` and run in onnxruntime; logits must match torch within 1e-5."""
from __future__ import annotations

import contextlib
import io
import logging
from pathlib import Path

import numpy as np
import torch

from ..metrics import accuracy, agreement, predictions
from .base import ExportJob, ExportResult

TARGET = "onnx"
KINDS = ("ann",)
ATOL = 1e-5


def export(job: ExportJob, out: Path) -> ExportResult:
    import onnx
    import onnxruntime as ort

    x, y = job.samples()
    model = job.model.eval()
    path = Path(out) / "model.onnx"
    batch = torch.export.Dim("batch", min=1)
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)   # torchvision-op notices
    with contextlib.redirect_stdout(io.StringIO()):             # the exporter's progress lines
        torch.onnx.export(model, (x[:2],), str(path), input_names=["input"],
                          output_names=["logits"], dynamic_shapes=({0: batch},), dynamo=True)
    onnx.checker.check_model(onnx.load(str(path)), full_check=True)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = np.concatenate([sess.run(None, {"input": x[i:i + 256].numpy()})[0]
                          for i in range(0, len(x), 256)])
    with torch.no_grad():
        ref = model(x).numpy()
    diff = float(np.abs(got - ref).max())
    acc = accuracy(predictions(got), y)           # tied logits: no prediction, wrong
    agree = agreement(got, ref)
    return ExportResult(TARGET, [path.name], acc,
                        {"agreement": agree, "n_samples": len(x), "max_abs_diff": diff,
                         "atol": ATOL}, diff <= ATOL,
                        {"opset": onnx.load(str(path)).opset_import[0].version,
                         "dynamic_batch": True})
