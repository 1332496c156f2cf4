"""Instances from a label mask: one per 8-connected component per subtype (the COCO export's rule too)."""
from __future__ import annotations

import numpy as np
from scipy import ndimage

from ..lesions import connected_lesions

SLICE_CONNECTIVITY = 8  # the COCO export's slice components (converters.mask_to_coco), so targets match it


def mask_to_instances(mask: np.ndarray):
    """(boxes (N,4) float32 xyxy, labels (N,) int64 1..5, masks (N,H,W) uint8) from an (H, W) label mask.

    Pixels of unknown subtype (``UNKNOWN_SUBTYPE``) give no instance: a box needs its category.

    Boxes use pixel-edge coordinates, as COCO does: a component spanning columns 3..5 has
    x0=3, x1=6, so a one-pixel lesion has a 1x1 box rather than a degenerate 0x0 one.
    """
    h, w = mask.shape
    ids, subtypes = connected_lesions(mask, SLICE_CONNECTIVITY)
    if not subtypes:
        return np.zeros((0, 4), np.float32), np.zeros((0,), np.int64), np.zeros((0, h, w), np.uint8)
    boxes = [[cols.start, rows.start, cols.stop, rows.stop] for rows, cols in ndimage.find_objects(ids)]
    masks = np.stack([(ids == i).astype(np.uint8) for i in range(1, len(subtypes) + 1)])
    return np.asarray(boxes, np.float32), np.asarray(subtypes, np.int64), masks
