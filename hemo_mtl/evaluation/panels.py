"""Image panels for tensorboard: a CT slice with ground truth (left) and prediction (right) overlaid."""
from __future__ import annotations

from typing import Mapping

import torch
from torchvision.utils import draw_bounding_boxes, draw_segmentation_masks

from ..categories import CATEGORY_NAMES, LABEL_COLORS, MASK_LABELS
from ..inference.geometry import label_map


def _gray(image: torch.Tensor) -> torch.Tensor:
    """First window channel of a [0,1] image as uint8 RGB."""
    g = (image[0].float().clamp(0, 1) * 255).round().to(torch.uint8).cpu()
    return g.unsqueeze(0).repeat(3, 1, 1)


def overlay(image: torch.Tensor, mask: torch.Tensor | None = None, boxes: torch.Tensor | None = None,
            labels: torch.Tensor | None = None, scores: torch.Tensor | None = None) -> torch.Tensor:
    """(3, H, W) uint8: the slice, a label mask (0..5, 6 = bleed of unknown subtype) as coloured areas,
    boxes with subtype names."""
    out = _gray(image)
    if mask is not None and mask.any():
        classes = torch.stack([mask.cpu() == c for c in MASK_LABELS])
        present = classes.flatten(1).any(1)
        out = draw_segmentation_masks(out, classes[present], alpha=0.45,
                                      colors=[LABEL_COLORS[c] for c, p in zip(MASK_LABELS, present.tolist()) if p])
    if boxes is not None and len(boxes):
        labels = labels.cpu().long() if labels is not None else torch.ones(len(boxes), dtype=torch.long)
        names = [CATEGORY_NAMES.get(int(l), str(int(l))) for l in labels]
        if scores is not None:
            names = [f"{n} {float(s):.2f}" for n, s in zip(names, scores.cpu())]
        colors = [LABEL_COLORS.get(int(l), "#ffffff") for l in labels]
        out = draw_bounding_boxes(out, boxes.detach().float().cpu(), labels=names, colors=colors, width=1)
    return out


def draw_panel(sample: Mapping, prediction: Mapping, score_threshold: float = 0.5) -> torch.Tensor:
    """(3, H, 2W) uint8: ground truth | prediction for one slice.

    ``sample``: image (C,H,W), optional mask (H,W), boxes (N,4), labels (N,).
    ``prediction``: optional seg_prob (6,H,W; or 2,H,W of a binary head) and instances {boxes, labels, scores}.
    """
    image = sample["image"]
    gt = overlay(image, sample.get("mask"), sample.get("boxes"), sample.get("labels"))
    pred_mask = label_map(prediction["seg_prob"][None])[0] if "seg_prob" in prediction else None
    inst = prediction.get("instances") or {}
    keep = inst["scores"] >= score_threshold if "scores" in inst else None
    pred = overlay(image, pred_mask,
                   inst["boxes"][keep] if keep is not None else None,
                   inst["labels"][keep] if keep is not None else None,
                   inst["scores"][keep] if keep is not None else None)
    return torch.cat([gt, pred], dim=2)
