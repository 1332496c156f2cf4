"""ONNX export through ``torch.onnx.export(dynamo=True)`` (torch.export + onnxscript), batch axis dynamic.

The legacy TorchScript-based exporter is not used: it is deprecated and refuses modules whose state
dict carries non-tensor extra state (the loss balancer's).
"""
from __future__ import annotations

import contextlib
import io
from pathlib import Path

import torch

from ..atomic import atomic_path
from .graph import ProbabilityModel

OPSET = 18  # the opset the dynamo exporter targets natively (no version conversion pass)


def export_onnx(model: ProbabilityModel, example: torch.Tensor, path) -> Path:
    """Write ``model`` as one self-contained ONNX file (weights inside), input ``image`` with a dynamic
    batch axis; spatial size and channels fixed by ``example``."""
    path = Path(path)
    batch = torch.export.Dim("batch", min=1, max=4096)
    with atomic_path(path) as tmp, contextlib.redirect_stdout(io.StringIO()):  # the exporter prints progress
        torch.onnx.export(model, (example,), str(tmp), input_names=["image"], output_names=model.output_names,
                          dynamo=True, dynamic_shapes={"image": {0: batch}}, external_data=False,
                          opset_version=OPSET)
    return path
