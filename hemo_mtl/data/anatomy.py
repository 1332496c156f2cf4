"""Where a bleed can be: the inside of the skull on a brain-window slice.

Intracranial haemorrhage lies inside the skull by definition, and acute blood is denser than brain
(50-90 HU against 20-40 HU), so every slice carries label information about where its bleed can be:
data.lesion_insertion draws bleeds only inside the skull, and the segmenter's weak loss
(``heads.seg.weak_weight``, ``data.bleed_roi``) looks for a labelled slice's bleed only there and
calls the rest background (scalp swelling, the head holder and the sinuses otherwise pass for the
bleed of a bleeding slice, and the brain across from a bleed for the bleed itself). Hand-written: a
hole fill of the saturated bone ring is all it takes, and no imaging library ships a skull-inside mask
for 8-bit brain-window slices.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage
from skimage.morphology import convex_hull_image

BONE = 0.98  # brain-window intensity at which bone saturates (display [0, 1])


def intracranial_region(gray: np.ndarray) -> np.ndarray | None:
    """Inside of the skull on a brain-window slice in [0, 1], one pixel in from the bone: the largest
    soft-tissue component that saturated bone (``gray >= BONE``) encloses; None when the slice shows
    no closed skull (skull base, vertex, a cropped head)."""
    region = _largest_enclosed(gray, gray >= BONE)
    return None if region is None else ndimage.binary_erosion(region, iterations=1)


def _largest_enclosed(gray: np.ndarray, ring: np.ndarray) -> np.ndarray | None:
    """The largest soft-tissue component the ``ring`` encloses; None below 2% of the slice."""
    inside = ndimage.binary_fill_holes(ring) & ~ring & (gray > 0.05)
    return _largest_component(inside, min_pixels=0.02 * gray.size)


def _largest_component(mask: np.ndarray, min_pixels: float = 0.0) -> np.ndarray | None:
    """The largest connected component of ``mask``; None when it has none or it is below ``min_pixels``."""
    labels, n = ndimage.label(mask)
    if n == 0:
        return None
    sizes = ndimage.sum_labels(np.ones_like(labels), labels, index=np.arange(1, n + 1))
    region = labels == (1 + int(np.argmax(sizes)))
    return None if region.sum() < min_pixels else region


def intracranial_roi(gray: np.ndarray) -> np.ndarray | None:
    """Where a bleed may be on an augmented brain-window slice: the inside of the skull, or None when
    no closed skull shows. Bone is the top 5% of the slice's range (blood sits at 60-85% of a brain
    window), so brightness/contrast augmentation, which moves the saturated level, does not lose it;
    one closing bridges a thin skull that resizing and rotation left unsaturated in places. No
    erosion: a subdural bleed lies against the inner table. Where the ring stays open (about half
    of the slices: thin frontal bone, the skull base's foramina and sinuses) the convex hull of the
    largest bone piece closes it; on a skull-base slice that piece may be the face, so the region is
    then only roughly the cranial cavity."""
    low, high = float(gray.min()), float(gray.max())
    if high - low < 0.5:
        return None
    ring = ndimage.binary_closing(gray >= high - 0.05 * (high - low), iterations=1, border_value=0)
    region = _largest_enclosed(gray, ring)
    return region if region is not None else _inside_hull(gray, ring)


def _inside_hull(gray: np.ndarray, ring: np.ndarray) -> np.ndarray | None:
    """The largest soft-tissue component inside the convex hull of the ring's largest piece; None
    below 2% of the slice."""
    bone = _largest_component(ring)
    if bone is None:
        return None
    return _largest_component(convex_hull_image(bone) & ~ring & (gray > 0.05), min_pixels=0.02 * gray.size)


BLEED_ROIS = ("skull", "hyperdense")


def check_bleed_roi(kind: str | None) -> str | None:
    """``kind`` when it names a region of ``BLEED_ROIS`` (or is None), else ValueError."""
    if kind is not None and kind not in BLEED_ROIS:
        raise ValueError(f"data.bleed_roi must be one of {BLEED_ROIS} or null, got {kind!r}")
    return kind


def bleed_roi(gray: np.ndarray, kind: str) -> np.ndarray | None:
    """Where a bleed may be (``data.bleed_roi``): ``skull``, the inside of the skull; ``hyperdense``, the
    pixels inside it brighter than brain tissue by a tenth of the slice's range (about 8 HU of a brain
    window), grown by a pixel for the partial-volume edge. Brain tissue's level is the median of the
    brighter half of the inside (its 75th percentile): cerebrospinal fluid fills much of an atrophic or
    hydrocephalic head and pulls the whole inside's median down until grey matter passes for blood. The
    threshold is taken on the slice smoothed by a pixel (at 128 px) within the core below, so that single
    noise pixels of a grainy scan do not pass. The dense pixels are looked for off the bone by a rim of a
    64th of the slice (2 px at 128, about 3.5 mm of a 25 cm field): the inner table's partial-volume edge
    is as bright as blood on every slice, bleeding or not; a subdural against the table still reaches the
    bone through its inner part and the one-pixel growth. None where no closed skull shows."""
    if check_bleed_roi(kind) is None:
        raise ValueError("bleed_roi needs a region name, got None")
    inside = intracranial_roi(gray)
    if inside is None or kind == "skull":
        return inside
    core = ndimage.binary_erosion(inside, iterations=max(1, round(gray.shape[0] / 64)))
    tissue = float(np.percentile(gray[inside], 75))  # the brighter half's median
    sigma = gray.shape[0] / 128  # smoothed within the core: neither the rim nor the bone leaks in
    weight = ndimage.gaussian_filter(core.astype(np.float32), sigma)
    smooth = ndimage.gaussian_filter(np.where(core, gray, 0).astype(np.float32), sigma) / np.maximum(weight, 1e-6)
    dense = smooth >= tissue + 0.1 * float(gray.max() - gray.min())
    return ndimage.binary_dilation(dense & core, iterations=1) & inside
