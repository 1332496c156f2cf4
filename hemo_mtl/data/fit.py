"""The model's input geometry, one object for training and inference: a slice's longest side goes to
``size`` (bilinear for images, nearest for masks), then zero padding, centred, makes it square.

``SquareFit(size)`` gives the dataset its albumentations step (numpy, one sample, before the
augmentation) and the predictor its batched torch step and the inverse for probability maps. Both
place the slice by the same ``Fit`` (resized size, padding), so training and inference cannot drift
apart; both resample with half-pixel centres (cv2.INTER_LINEAR, ``F.interpolate(align_corners=False)``).
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class Fit:
    """Where an (H, W) slice sits inside the square model input after resize + centre pad."""
    height: int
    width: int
    size: int

    @property
    def resized(self) -> tuple[int, int]:
        scale = self.size / max(self.height, self.width)
        return max(1, int(round(self.height * scale))), max(1, int(round(self.width * scale)))

    @property
    def pad(self) -> tuple[int, int]:
        h, w = self.resized
        return (self.size - h) // 2, (self.size - w) // 2

    @property
    def scale(self) -> tuple[float, float]:
        h, w = self.resized
        return h / self.height, w / self.width


@dataclass(frozen=True)
class SquareFit:
    """Resize the longest side to ``size`` and zero-pad, centred, to ``size`` x ``size``."""
    size: int

    def fit(self, height: int, width: int) -> Fit:
        return Fit(int(height), int(width), self.size)

    # -- numpy, one (H, W[, C]) sample: the dataset ------------------------------------------------------

    def albumentations(self) -> list:
        """The dataset's step, first in its albumentations pipeline (image bilinear, mask nearest)."""
        import albumentations as A  # noqa: PLC0415

        return [A.Lambda(image=self.image, mask=self.mask, p=1.0)]

    def image(self, img: np.ndarray, **_) -> np.ndarray:
        return self._numpy(img, cv2.INTER_LINEAR)

    def mask(self, mask: np.ndarray, **_) -> np.ndarray:
        return self._numpy(mask, cv2.INTER_NEAREST)

    def _numpy(self, a: np.ndarray, interpolation: int) -> np.ndarray:
        # albumentations' resize: cv2 on chunks of 4 channels (cv2 rounds > 4 channels differently)
        from albumentations.augmentations.geometric.functional import resize  # noqa: PLC0415

        fit = self.fit(*a.shape[:2])
        h, w = fit.resized
        a = resize(a, (h, w), interpolation)
        top, left = fit.pad
        pad = [(top, self.size - h - top), (left, self.size - w - left)] + [(0, 0)] * (a.ndim - 2)
        return np.pad(a, pad)

    # -- torch, (N, C, H, W) batches on any device: the predictor ------------------------------------------

    def tensor(self, x):
        """(N, C, H, W) -> (N, C, size, size), bilinear."""
        import torch.nn.functional as F  # noqa: PLC0415

        fit = self.fit(x.shape[-2], x.shape[-1])
        h, w = fit.resized
        if (h, w) != tuple(x.shape[-2:]):
            x = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False)
        top, left = fit.pad
        return F.pad(x, (left, self.size - w - left, top, self.size - h - top))

    def invert(self, maps, fit: Fit):
        """Probability maps (N, K, size, size) back onto the slice grid (N, K, H, W), bilinear."""
        import torch.nn.functional as F  # noqa: PLC0415

        h, w = fit.resized
        top, left = fit.pad
        maps = maps[..., top:top + h, left:left + w]
        if (h, w) != (fit.height, fit.width):
            maps = F.interpolate(maps, size=(fit.height, fit.width), mode="bilinear", align_corners=False)
        return maps
