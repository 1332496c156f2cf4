"""Where a slice sits in the square model input, and back: resize longest side + centre pad, its
inverse for probability maps, and the label map. Shared by the predictor and its probability maps."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Fit:
    """Where an (H, W) slice sits inside the square model input after resize + centre pad."""
    height: int
    width: int
    size: int

    @property
    def resized(self) -> tuple[int, int]:
        scale = self.size / max(self.height, self.width)
        return int(round(self.height * scale)), int(round(self.width * scale))

    @property
    def pad(self) -> tuple[int, int]:
        h, w = self.resized
        return (self.size - h) // 2, (self.size - w) // 2

    @property
    def scale(self) -> tuple[float, float]:
        h, w = self.resized
        return h / self.height, w / self.width


def fit_to_square(x: torch.Tensor, size: int) -> torch.Tensor:
    """(N, C, H, W) -> (N, C, size, size): longest side to ``size`` (bilinear, half-pixel centres like
    cv2.INTER_LINEAR), zero pad centred (PadIfNeeded's default)."""
    fit = Fit(x.shape[-2], x.shape[-1], size)
    h, w = fit.resized
    if (h, w) != tuple(x.shape[-2:]):
        x = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False)
    top, left = fit.pad
    return F.pad(x, (left, size - w - left, top, size - h - top))


def unfit(maps: torch.Tensor, fit: Fit) -> torch.Tensor:
    """Inverse of ``fit_to_square`` for probability maps (N, K, size, size) -> (N, K, H, W)."""
    h, w = fit.resized
    top, left = fit.pad
    maps = maps[..., top:top + h, left:left + w]
    if (h, w) != (fit.height, fit.width):
        maps = F.interpolate(maps, size=(fit.height, fit.width), mode="bilinear", align_corners=False)
    return maps


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
