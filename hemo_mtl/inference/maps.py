"""Voxel maps from the segmentation head's class probabilities, on the slice grid: labels, per-subtype
bleed probabilities and the predictive entropy.

Uncertainty is the predictive entropy of the averaged distribution over the six classes (background +
five subtypes), -sum_c p_c log p_c, divided by log 6 so it runs from 0 (one class certain) to 1 (all six
equally likely). Averaging members (flip TTA's two passes, an ensemble's models) that disagree flattens
the mean distribution, so disagreement shows as entropy; a voxel all members find ambiguous shows too.
It needs only the averaged probabilities, so it costs one pass over the maps and no per-member storage.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .geometry import label_map, unfit


LOG_CLASSES = math.log(6.0)


def predictive_entropy(prob: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """Normalised entropy (0..1) of class probabilities along ``dim`` (0 log 0 = 0)."""
    p = prob.clamp_min(0)
    return -(torch.special.xlogy(p, p)).sum(dim) / math.log(prob.shape[dim])


@dataclass
class SliceMaps:
    labels: torch.Tensor  # (N, H, W) uint8 argmax
    prob: torch.Tensor | None = None  # (N, 5, H, W) float32 subtype probabilities
    entropy: torch.Tensor | None = None  # (N, H, W) float32 normalised predictive entropy


def slice_maps(prob: torch.Tensor, fit,  probabilities: bool = False, entropy: bool = False,
               chunk: int = 4) -> SliceMaps:
    """(N, K, S, S) model-grid probabilities (``fit`` None: already on the slice grid) -> label map and,
    on request, subtype probabilities and entropy on the slice grid; a few slices at a time, so the
    full-size float maps exist only when asked for."""
    labels, probs, ents = [], [], []
    for i in range(0, len(prob), chunk):
        p = prob[i:i + chunk].contiguous(memory_format=torch.channels_last)
        full = unfit(p, fit) if fit is not None else p
        labels.append(label_map(full))
        if probabilities:
            probs.append(full[:, 1:].float().contiguous())
        if entropy:
            ents.append(predictive_entropy(full.float()))
    if not labels:
        shape = prob.shape[-2:] if fit is None else (fit.height, fit.width)
        return SliceMaps(torch.zeros((0, *shape), dtype=torch.uint8),
                         torch.zeros((0, prob.shape[1] - 1, *shape)) if probabilities else None,
                         torch.zeros((0, *shape)) if entropy else None)
    return SliceMaps(torch.cat(labels), torch.cat(probs) if probabilities else None,
                     torch.cat(ents) if entropy else None)
