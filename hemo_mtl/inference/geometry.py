"""Where a slice sits in the square model input, and back (``hemo_mtl.data.fit.SquareFit``, the
geometry training uses too), and the label map. Shared by the predictor and its probability maps.

The label map is where a segmentation head's classes become mask values (``class_labels``): a
multiclass head's argmax 0..5 is the mask as is; a binary head's bleed (argmax 1) becomes
``UNKNOWN_SUBTYPE``, so no writer downstream reads it as subtype 1 (EDH)."""
from __future__ import annotations

import torch

from ..categories import SUBTYPES, UNKNOWN_SUBTYPE
from ..data.fit import Fit, SquareFit

__all__ = ["Fit", "class_labels", "fit_to_square", "label_map", "label_volume", "unfit"]


def fit_to_square(x: torch.Tensor, size: int) -> torch.Tensor:
    """(N, C, H, W) -> (N, C, size, size): the training geometry (``SquareFit``) on a batch."""
    return SquareFit(size).tensor(x)


def unfit(maps: torch.Tensor, fit: Fit) -> torch.Tensor:
    """Inverse of ``fit_to_square`` for probability maps (N, K, size, size) -> (N, K, H, W)."""
    return SquareFit(fit.size).invert(maps, fit)


def class_labels(num_classes: int) -> tuple[int, ...]:
    """The mask value of each class channel of a segmentation head: (0, 1..5) for a multiclass head
    (background + subtypes), (0, ``UNKNOWN_SUBTYPE``) for a binary one (background + any bleed)."""
    if num_classes == len(SUBTYPES) + 1:
        return tuple(range(num_classes))
    if num_classes == 2:
        return (0, UNKNOWN_SUBTYPE)
    raise ValueError(f"segmentation probabilities need {len(SUBTYPES) + 1} classes (background + subtypes) or 2 "
                     f"(background + any bleed), got {num_classes}")


def label_map(prob: torch.Tensor) -> torch.Tensor:
    """(N, K, H, W) probabilities -> (N, H, W) uint8 mask values (``class_labels``) of the argmax over
    dim 1 (first maximum wins). In channels_last the few channels are the innermost axis, so the
    reduction reads contiguous memory (a strided dim-1 argmax is ~5x slower)."""
    labels = class_labels(prob.shape[1])
    index = prob.contiguous(memory_format=torch.channels_last).argmax(1)
    if labels == tuple(range(len(labels))):
        return index.to(torch.uint8)
    return torch.tensor(labels, dtype=torch.uint8, device=index.device)[index]


def label_volume(prob: torch.Tensor, fit: Fit | None, chunk: int = 4) -> torch.Tensor:
    """(N, K, S, S) probabilities -> (N, H, W) uint8 mask values on the slice grid: un-pad, resize and argmax
    a few slices at a time, so the full-size float maps (N x K x H x W) never exist at once."""
    parts = []
    for i in range(0, len(prob), chunk):
        p = prob[i:i + chunk].contiguous(memory_format=torch.channels_last)
        parts.append(label_map(unfit(p, fit) if fit is not None else p))
    return torch.cat(parts) if parts else torch.zeros((0, *prob.shape[-2:]), dtype=torch.uint8)
