"""Instances from a label mask: one per 8-connected component per subtype (the COCO export's rule too)."""
from __future__ import annotations

import cv2
import numpy as np

from ..categories import SUBTYPES


def mask_to_instances(mask: np.ndarray):
    """(boxes (N,4) float32 xyxy, labels (N,) int64 1..5, masks (N,H,W) uint8) from an (H, W) label mask.

    Pixels of unknown subtype (``UNKNOWN_SUBTYPE``) give no instance: a box needs its category.

    Boxes use pixel-edge coordinates, as COCO does: a component spanning columns 3..5 has
    x0=3, x1=6, so a one-pixel lesion has a 1x1 box rather than a degenerate 0x0 one.
    """
    boxes, labels, masks = [], [], []
    if mask.any():
        for label in range(1, len(SUBTYPES) + 1):
            binary = (mask == label).astype(np.uint8)
            if not binary.any():
                continue
            n, comp, stats, _ = cv2.connectedComponentsWithStats(binary, connectivity=8)
            for i in range(1, n):
                x, y, w, h = stats[i, :4]  # cv2: x along columns (axis 1), y along rows (axis 0)
                boxes.append([x, y, x + w, y + h])
                labels.append(label)
                masks.append((comp == i).astype(np.uint8))
    h, w = mask.shape
    if not boxes:
        return np.zeros((0, 4), np.float32), np.zeros((0,), np.int64), np.zeros((0, h, w), np.uint8)
    return np.asarray(boxes, np.float32), np.asarray(labels, np.int64), np.stack(masks)
