"""Voxel maps from the segmentation head's class probabilities, on the slice grid: labels, per-class
bleed probabilities and the predictive entropy.

The head has K classes: background + the five subtypes (multiclass, K = 6) or background + any bleed
(binary, K = 2). The probability maps keep every class but background, one channel per mask value of
``channel_labels`` (P(EDH) .. P(IVH), or P(bleed) for the ``UNKNOWN_SUBTYPE`` label of a binary head).

Uncertainty is the predictive entropy of the averaged distribution over the K classes,
-sum_c p_c log p_c, divided by log K so it runs from 0 (one class certain) to 1 (all K equally likely).
Averaging members (flip TTA's two passes, an ensemble's models) that disagree flattens the mean
distribution, so disagreement shows as entropy; a voxel all members find ambiguous shows too. It
needs only the averaged probabilities, so it costs one pass over the maps and no per-member storage.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..categories import LABEL_NAMES
from .geometry import class_labels, label_map, unfit


def channel_labels(num_classes: int) -> tuple[int, ...]:
    """The mask value each channel of a probability map stands for (a K-class head's K - 1 bleed classes)."""
    return class_labels(num_classes)[1:]


def channel_names(labels) -> list[str]:
    """Names of probability channels, from their mask values: EDH .. IVH, or ICH for a binary head."""
    return [LABEL_NAMES[int(v)] for v in labels]


def entropy_description(num_classes: int) -> str:
    """What an uncertainty map of a K-class head holds, for file headers and summary.json."""
    return f"predictive entropy of the averaged {num_classes}-class probabilities / log {num_classes} (0..1)"


def predictive_entropy(prob: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """Normalised entropy (0..1) of class probabilities along ``dim`` (0 log 0 = 0): divided by the log
    of that dim's size, so a binary head's maps run 0..1 as a multiclass head's do."""
    p = prob.clamp_min(0)
    return -(torch.special.xlogy(p, p)).sum(dim) / math.log(prob.shape[dim])


@dataclass
class SliceMaps:
    labels: torch.Tensor  # (N, H, W) uint8 mask values of the argmax (geometry.label_map)
    prob: torch.Tensor | None = None  # (N, K - 1, H, W) float32 bleed-class probabilities (channel_labels)
    entropy: torch.Tensor | None = None  # (N, H, W) float32 normalised predictive entropy


def slice_maps(prob: torch.Tensor, fit, probabilities: bool = False, entropy: bool = False,
               chunk: int = 4) -> SliceMaps:
    """(N, K, S, S) model-grid probabilities (``fit`` None: already on the slice grid) -> label map and,
    on request, the K - 1 bleed-class probabilities (channel c is P(``channel_labels(K)[c]``): five
    subtypes, or P(bleed) alone for a binary head) and the entropy on the slice grid; a few slices at
    a time, so the full-size float maps exist only when asked for."""
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
