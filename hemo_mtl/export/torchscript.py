"""TorchScript export by tracing: the eval forward has no data-dependent control flow in the exported
heads (shape checks resolve at trace time for the fixed input size), so the trace is the model."""
from __future__ import annotations

import warnings
from pathlib import Path

import torch

from ..atomic import atomic_path
from .graph import ProbabilityModel


def export_torchscript(model: ProbabilityModel, example: torch.Tensor, path) -> Path:
    path = Path(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # shape comparisons frozen at the traced size
        traced = torch.jit.trace(model, (example,), check_trace=False)
    with atomic_path(path) as tmp:
        traced.save(str(tmp))
    return path
