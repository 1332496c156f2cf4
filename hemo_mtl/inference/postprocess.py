"""Mask clean-up and lesion statistics on whole (X, Y, Z) label volumes.

Everything works on the full volume at once (scipy.ndimage with an in-plane structuring element), so
there is no per-slice Python loop: closing/opening act within each slice (the slice spacing is usually
5x the pixel spacing, so smoothing across slices would merge unrelated bleeds), lesions are 3D
26-connected components per subtype (``hemo_mtl.lesions``), the definition the lesion export
(``converters.mask_to_coco.volume_instances``) and the 3D FROC use. Every mask value a prediction can
hold is a label here, ``UNKNOWN_SUBTYPE`` (a binary head's bleed) included: it is cleaned, counted and
measured like a subtype, and always part of ``any``.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy import ndimage

from ..categories import CATEGORY_NAMES, LABEL_NAMES, MASK_LABELS
from ..lesions import connected_lesions, nonzero_box

_IN_PLANE = np.ones((3, 3, 1), dtype=bool)  # 8-neighbourhood inside a slice, nothing across slices
LESION_CONNECTIVITY = 26  # 3D lesions: the ground truth's (volume_instances) and the 3D FROC's rule


def _per_subtype(mask: np.ndarray, fn) -> np.ndarray:
    """Apply ``fn(binary) -> binary`` to each label's mask (``MASK_LABELS``); later labels win on overlap."""
    out = np.zeros_like(mask, dtype=np.uint8)
    present = np.bincount(mask.ravel(order="K"), minlength=max(MASK_LABELS) + 1) > 0  # one pass, not one per label
    for label in MASK_LABELS:
        if present[label]:
            out[fn(mask == label)] = label
    return out


def _as_volume(mask: np.ndarray) -> np.ndarray:
    mask = np.asarray(mask)
    if mask.ndim == 2:
        return mask[..., None]
    if mask.ndim != 3:
        raise ValueError(f"expected a (X, Y, Z) label mask, got shape {mask.shape}")
    return mask


def clean_mask(mask: np.ndarray, closing: int = 0, opening: int = 0, min_voxels: int = 0) -> np.ndarray:
    """Closing then opening (``iterations`` of a 3x3 in-plane element), then drop 3D lesions smaller
    than ``min_voxels``; all per subtype. All zero leaves the mask unchanged."""
    vol = _as_volume(mask).astype(np.uint8)
    if closing > 0:
        vol = _per_subtype(vol, lambda b: ndimage.binary_closing(b, _IN_PLANE, iterations=closing, border_value=0))
    if opening > 0:
        vol = _per_subtype(vol, lambda b: ndimage.binary_opening(b, _IN_PLANE, iterations=opening))
    if min_voxels > 0:
        ids, _ = connected_lesions(vol, LESION_CONNECTIVITY, MASK_LABELS)
        keep = np.bincount(ids.ravel(), minlength=1) >= min_voxels
        keep[0] = False
        vol = np.where(keep[ids], vol, 0).astype(np.uint8)
    return vol.reshape(np.shape(mask))


def label_lesions(mask: np.ndarray) -> tuple[np.ndarray, list[int]]:
    """3D lesions of a label volume (a 2D mask is one slice): (lesion ids shaped like ``mask``, int32,
    0 = none, lesions 1..N numbered label by label; the mask value 1..6 of each lesion)."""
    ids, subtypes = connected_lesions(_as_volume(mask), LESION_CONNECTIVITY, MASK_LABELS)
    return ids.reshape(np.shape(mask)), subtypes


def lesion_counts(mask: np.ndarray, labels: Sequence[int] = tuple(CATEGORY_NAMES)) -> dict[str, int]:
    """Number of 3D (26-connected) lesions per label of ``labels`` (keys ``LABEL_NAMES``: the subtypes,
    or ICH for a binary head's ``seg_labels``), plus ``any``: every lesion, whatever its label."""
    found = label_lesions(mask)[1]
    return {"any": len(found), **{LABEL_NAMES[v]: found.count(v) for v in labels}}


def volumes_ml(mask: np.ndarray, spacing: Sequence[float] | None,
               labels: Sequence[int] = tuple(CATEGORY_NAMES)) -> dict[str, float] | None:
    """Bleed volume per label of ``labels`` (as ``lesion_counts``) and ``any`` (every nonzero voxel) in mL
    from voxel counts and spacing (mm); None without spacing."""
    if spacing is None:
        return None
    voxel_ml = float(np.prod([float(s) for s in spacing])) / 1000.0
    flat = np.asarray(mask, dtype=np.uint8).ravel(order="K")  # K: no copy
    counts = np.bincount(flat, minlength=max(MASK_LABELS) + 1)
    per = {LABEL_NAMES[v]: float(counts[v]) * voxel_ml for v in labels}
    return {"any": float(counts[1:].sum()) * voxel_ml, **per}


def contours(mask: np.ndarray) -> np.ndarray:
    """Inner boundary pixels of each label region (label where the 3x3 in-plane neighbourhood differs).
    Filters run on the labels' bounding box plus a one-pixel rim of background, which is exact."""
    vol = _as_volume(mask)
    out = np.zeros(vol.shape, np.uint8)
    box = nonzero_box(vol, margin=1)
    if box is not None:
        part = vol[box]
        eroded_same = ndimage.minimum_filter(part, footprint=_IN_PLANE, mode="nearest") == ndimage.maximum_filter(
            part, footprint=_IN_PLANE, mode="nearest")
        out[box] = np.where(eroded_same, 0, part)
    return out.reshape(np.shape(mask))
