"""Grad-CAM of the classifier's ``any`` logit: where on a slice the bleed call comes from.

Computed with the maintained ``grad-cam`` package (``pytorch_grad_cam``, extra ``explain``), imported
only when saliency is asked for. The model is wrapped as image -> (B, 6) classifier logits and the
target is logit 0 (``any``). Grad-CAM weighs each channel of the target map by the spatial mean of
the logit's gradient, keeps the positive part of the weighted sum and scales each slice's map to
[0, 1] (min to 0, max to 1), so maps show where, not how strongly: a clear slice has one too.
The trunk runs without gradients; only the cls head is differentiated (the target map is a leaf), so
a map costs about one extra forward of the trunk per slice.
"""
from __future__ import annotations

from collections import OrderedDict

import numpy as np
import torch
from torch import nn

from ..data.io import DataError
from .geometry import unfit


def require_gradcam():
    """The ``pytorch_grad_cam`` module, or one line saying how to install it."""
    try:
        import pytorch_grad_cam
    except ImportError as exc:
        raise DataError("saliency maps need the 'explain' extra (grad-cam): pip install 'hemo-mtl[explain]'") from exc
    return pytorch_grad_cam


class Tap(nn.Module):
    """A Grad-CAM target layer: passes a map on as a leaf that needs a gradient (cuts the trunk's graph)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.detach().requires_grad_(True)


def classification_head(model: nn.Module) -> nn.Module:
    """The ``cls`` task head of a MultiTaskModel; DataError when it has none."""
    for head in getattr(model, "heads", {}).values():
        if getattr(head, "task", None) == "cls":
            return head
    raise DataError("saliency explains the classifier's p(any): this checkpoint has no classification head")


class AnyLogitModel(nn.Module):
    """image (B, C, S, S) -> classifier logits (B, 6), through a ``tap`` on the map Grad-CAM explains.

    Target layer: the last feature map feeding the cls head, after which there is only pooling and its
    linear layers: the stride-32 encoder map, or with ``features: fpn`` the FPN's finest level (p2,
    stride 4), the top-down pathway's last output, which sums every coarser level's semantics on the
    finest grid (docs/experiments.md: all four levels averaged put the peak off the bleed more often)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.backbone = model.backbone
        self.head = classification_head(model)
        levels = {k: v for k, v in self.backbone.strides.items() if k != "pool"}
        self.level = min(levels, key=levels.get) if self.head.uses_fpn else "top"
        self.taps = nn.ModuleDict({self.level: Tap()})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            feats = self.backbone(x, with_fpn=self.head.uses_fpn)
        if self.head.uses_fpn:
            fpn = OrderedDict((k, self.taps[k](v) if k in self.taps else v) for k, v in feats.fpn.items())
            feats = feats._replace(fpn=fpn)  # the other levels still feed the logits, as constants
        else:
            feats = feats._replace(top=self.taps["top"](feats.top))
        return self.head.logits(feats)


def grad_cam(model: nn.Module, x: torch.Tensor, batch_size: int = 16) -> torch.Tensor:
    """(N, C, S, S) model inputs -> (N, S, S) float32 Grad-CAM of the ``any`` logit in [0, 1]."""
    cam_lib = require_gradcam()
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    wrapped = AnyLogitModel(model)
    maps = []
    with torch.inference_mode(False), torch.enable_grad(), \
            cam_lib.GradCAM(model=wrapped, target_layers=list(wrapped.taps.values())) as cam:
        for i in range(0, len(x), batch_size):
            part = x[i:i + batch_size].clone()
            maps.append(torch.from_numpy(np.asarray(cam(part, targets=[ClassifierOutputTarget(0)] * len(part)))))
    wrapped.zero_grad(set_to_none=True)
    if not maps:
        return torch.zeros((0, *x.shape[-2:]))
    return torch.cat(maps).float().clamp_(0, 1)


def slice_saliency(model: nn.Module, inputs: torch.Tensor, fits, sizes, batch_size: int = 16) -> list[np.ndarray]:
    """Grad-CAM of one model on its inputs (``Predictor.model_inputs``), back on the slice grid: one
    (N, H, W) array per group of equal-size slices (``fits``: where each group sits in the input)."""
    maps = grad_cam(model, inputs, batch_size)
    out, start = [], 0
    for fit, n in zip(fits, sizes):
        part = maps[start:start + n, None]
        out.append(unfit(part, fit)[:, 0].clamp_(0, 1).numpy())  # bilinear: stays within [0, 1]
        start += n
    return out


def scan_layout(scan, groups: list[np.ndarray]):
    """Per-group (N, H, W) maps -> a volume's (X, Y, Z), or one (H, W) map per slice of an image folder."""
    if scan.kind == "hu":
        return np.ascontiguousarray(np.moveaxis(groups[0], 0, 2))
    return [m for g in groups for m in g]
