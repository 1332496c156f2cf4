"""Where a slice sits in the square model input, and back (``hemo_mtl.data.fit.SquareFit``, the
geometry training uses too), and the label map. Shared by the predictor and its probability maps."""
from __future__ import annotations

import torch

from ..data.fit import Fit, SquareFit

__all__ = ["Fit", "fit_to_square", "label_map", "label_volume", "unfit"]


def fit_to_square(x: torch.Tensor, size: int) -> torch.Tensor:
    """(N, C, H, W) -> (N, C, size, size): the training geometry (``SquareFit``) on a batch."""
    return SquareFit(size).tensor(x)


def unfit(maps: torch.Tensor, fit: Fit) -> torch.Tensor:
    """Inverse of ``fit_to_square`` for probability maps (N, K, size, size) -> (N, K, H, W)."""
    return SquareFit(fit.size).invert(maps, fit)


def label_map(prob: torch.Tensor) -> torch.Tensor:
    """argmax over dim 1 as uint8 (first maximum wins). In channels_last the few channels are the
    innermost axis, so the reduction reads contiguous memory (a strided dim-1 argmax is ~5x slower)."""
    return prob.contiguous(memory_format=torch.channels_last).argmax(1).to(torch.uint8)


def label_volume(prob: torch.Tensor, fit: Fit | None, chunk: int = 4) -> torch.Tensor:
    """(N, K, S, S) probabilities -> (N, H, W) uint8 labels on the slice grid: un-pad, resize and argmax
    a few slices at a time, so the full-size float maps (N x K x H x W) never exist at once."""
    parts = []
    for i in range(0, len(prob), chunk):
        p = prob[i:i + chunk].contiguous(memory_format=torch.channels_last)
        parts.append(label_map(unfit(p, fit) if fit is not None else p))
    return torch.cat(parts) if parts else torch.zeros((0, *prob.shape[-2:]), dtype=torch.uint8)
