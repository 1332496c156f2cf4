"""Mask clean-up and lesion statistics on whole (X, Y, Z) label volumes.

Everything works on the full volume at once (scipy.ndimage with an in-plane structuring element), so
there is no per-slice Python loop: closing/opening act within each slice (the slice spacing is usually
5x the pixel spacing, so smoothing across slices would merge unrelated bleeds), lesions are 3D
26-connected components per subtype, the same definition ``converters.mask_to_coco.volume_instances``
uses.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy import ndimage

from ..categories import SUBTYPES

_IN_PLANE = np.ones((3, 3, 1), dtype=bool)  # 8-neighbourhood inside a slice, nothing across slices
_LESION = np.ones((3, 3, 3), dtype=bool)  # 26-connectivity


def _per_subtype(mask: np.ndarray, fn) -> np.ndarray:
    """Apply ``fn(binary) -> binary`` to each subtype's mask; later subtypes win on overlap."""
    out = np.zeros_like(mask, dtype=np.uint8)
    present = np.bincount(mask.ravel(order="K"), minlength=len(SUBTYPES) + 1) > 0  # one pass, not one per label
    for label in range(1, len(SUBTYPES) + 1):
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
        vol = _per_subtype(vol, lambda b: _drop_small(b, min_voxels))
    return vol.reshape(np.shape(mask))


def _drop_small(binary: np.ndarray, min_voxels: int) -> np.ndarray:
    labels, n = ndimage.label(binary, _LESION)
    sizes = np.bincount(labels.ravel(), minlength=n + 1)
    keep = sizes >= min_voxels
    keep[0] = False
    return keep[labels]


def nonzero_box(mask: np.ndarray, margin: int = 0) -> tuple[slice, ...] | None:
    """Index of the smallest box holding every nonzero voxel, grown by ``margin`` (clipped); None when
    empty. Bleeds fill a small part of a scan: labelling or filtering the box instead of the whole
    512 x 512 x Z volume gives the same answer several times faster."""
    mask = np.asarray(mask)
    if mask.ndim < 2:
        raise ValueError(f"expected a 2D or 3D mask, got shape {mask.shape}")
    plane = mask.any(axis=tuple(range(2, mask.ndim))) if mask.ndim > 2 else mask != 0
    hits = [np.flatnonzero(plane.any(axis=1)), np.flatnonzero(plane.any(axis=0))]
    if hits[0].size == 0:
        return None
    if mask.ndim == 3:
        hits.append(np.flatnonzero(mask.any(axis=(0, 1))))
    return tuple(slice(max(int(h[0]) - margin, 0), min(int(h[-1]) + 1 + margin, n)) for h, n in zip(hits, mask.shape))


def _lesions_in_box(vol: np.ndarray):
    """(bounding box of the bleed, lesion ids inside it, subtype of each lesion) or (None, None, [])."""
    box = nonzero_box(vol)
    if box is None:
        return None, None, []
    part = np.asarray(vol[box], dtype=np.uint8)
    present = np.bincount(part.ravel(order="K"), minlength=len(SUBTYPES) + 1) > 0
    ids = np.zeros(part.shape, np.int32)
    subtypes: list[int] = []
    for label in range(1, len(SUBTYPES) + 1):
        if not present[label]:
            continue
        lab, n = ndimage.label(part == label, _LESION)
        if n:
            hit = lab > 0
            ids[hit] = lab[hit] + len(subtypes)
            subtypes += [label] * n
    return box, ids, subtypes


def label_lesions(mask: np.ndarray) -> tuple[np.ndarray, list[int]]:
    """3D lesions of a label volume: (lesion ids shaped like ``mask``, int32, 0 = none, lesions 1..N
    numbered subtype by subtype; the subtype id 1..5 of each lesion). 26-connected components per
    subtype, labelled inside the bleed's bounding box."""
    vol = _as_volume(mask)
    full = np.zeros(vol.shape, np.int32)
    box, ids, subtypes = _lesions_in_box(vol)
    if box is not None:
        full[box] = ids
    return full.reshape(np.shape(mask)), subtypes


def lesion_counts(mask: np.ndarray) -> dict[str, int]:
    """Number of 3D (26-connected) lesions per subtype, plus ``any`` (their sum)."""
    subtypes = _lesions_in_box(_as_volume(mask))[2]
    counts = {name: subtypes.count(i + 1) for i, name in enumerate(SUBTYPES)}
    return {"any": sum(counts.values()), **counts}


def volumes_ml(mask: np.ndarray, spacing: Sequence[float] | None) -> dict[str, float] | None:
    """Bleed volume per subtype (and ``any``) in mL from voxel counts and spacing (mm); None without spacing."""
    if spacing is None:
        return None
    voxel_ml = float(np.prod([float(s) for s in spacing])) / 1000.0
    counts = np.bincount(np.asarray(mask, dtype=np.uint8).ravel(order="K"), minlength=len(SUBTYPES) + 1)  # K: no copy
    per = {name: float(counts[i + 1]) * voxel_ml for i, name in enumerate(SUBTYPES)}
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
