"""Intensity-threshold hemorrhage segmentation: the reference row of the PhysioNet CT-ICH protocol.

Fresh blood is denser than brain (roughly 50-90 HU vs. 20-45 HU), so the simplest detector marks
pixels in a blood HU band, then cleans the map with closing + opening (the same in-plane morphology
as the learned model's post-processing). It knows nothing about shape or anatomy, which is the point
of the comparison: it fires on partial-volume skull edges and calcification-like spots and misses
isodense bleeds. The input is the dataset's brain-window channel (values in [0, 1] for W80/L40),
mapped back to HU; window saturation (>= the window top) counts as bone, not blood.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..data.windowing import WINDOWS
from .postprocess import clean_mask


def threshold_mask(hu: np.ndarray, low: float = 55.0, high: float = 90.0, closing: int = 1,
                   opening: int = 1) -> np.ndarray:
    """uint8 mask (same shape as ``hu``: (H, W) or (H, W, Z)) of pixels with low <= HU < high, closed
    then opened in-plane ``closing`` / ``opening`` times with a 3x3 element."""
    hu = np.asarray(hu, dtype=np.float32)
    band = ((hu >= low) & (hu < high)).astype(np.uint8)
    return clean_mask(band, closing=closing, opening=opening)


class ThresholdSegmenter(nn.Module):
    """The threshold rule as an eval-mode model: ``{"seg_prob": (B, 2, H, W) one-hot, "cls_prob": (B, 6)}``
    (``cls_prob[:, 0]`` = 1 when any pixel is marked), so the standard evaluators score it."""

    def __init__(self, low: float = 55.0, high: float = 90.0, closing: int = 1, opening: int = 1,
                 window: str = "brain", channel: int = 0):
        super().__init__()
        self.low, self.high, self.closing, self.opening = float(low), float(high), int(closing), int(opening)
        self.center, self.width = WINDOWS[window]
        self.channel = int(channel)
        self.register_buffer("_dummy", torch.zeros(()))  # gives the module a device

    def forward(self, batch: dict) -> dict:
        x = batch["image"][:, self.channel].float().cpu().numpy()  # (B, H, W) in [0, 1]
        hu = self.center - self.width / 2 + x * self.width
        hu[x >= 1.0] = np.inf  # saturated: denser than the window top (bone), never blood
        masks = threshold_mask(np.moveaxis(hu, 0, -1), self.low, self.high, self.closing, self.opening)
        labels = torch.from_numpy(np.moveaxis(masks, -1, 0).astype(np.int64))
        seg = torch.nn.functional.one_hot(labels, 2).permute(0, 3, 1, 2).float()
        cls = torch.zeros(len(labels), 6)
        cls[:, 0] = labels.flatten(1).amax(1).float()
        device = batch["image"].device
        return {"seg_prob": seg.to(device), "cls_prob": cls.to(device)}
