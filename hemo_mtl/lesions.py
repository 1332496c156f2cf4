"""Connected lesions of a label mask: the one labelling that every instance, lesion and count comes from.

A lesion is a connected component of one subtype (a touching EDH and SDH are two lesions). Voxels of
unknown subtype form none by default, since a training instance or a ground-truth lesion needs its
category; predictions (``inference.postprocess``) pass ``labels=MASK_LABELS``, so the bleed of a
binary segmentation head (``UNKNOWN_SUBTYPE``) is a lesion of unknown subtype. The caller picks the connectivity by
its neighbour count: 4 or 8 in a 2D slice, 6, 18 or 26 in a 3D (X, Y, Z) volume. The callers and
their rules:

- ``data.instances.mask_to_instances`` (2D training instances): 8, the COCO export's slice rule
  (``converters.mask_to_coco``, 8-connected outlines), so a training target is an exported annotation.
- ``converters.mask_to_coco.volume_instances`` (``lesions_<split>.json``): 26 by default, 18 or 6
  on request.
- ``evaluation.detection.lesions_3d_from_mask`` (3D FROC lesions): 26.
- ``inference.postprocess`` (``label_lesions`` for lesions.csv, ``lesion_counts``, ``clean_mask``'s
  ``min_voxels``): 26.

26 in 3D is the analogue of the 8-connected slice components: a lesion never splits into pieces a
slice view would join, so the 3D lesions of a ground truth, a prediction and an export agree.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

from .categories import CATEGORY_NAMES

# neighbour count -> scipy's connectivity rank (generate_binary_structure), per number of dimensions
_RANKS = {2: {4: 1, 8: 2}, 3: {6: 1, 18: 2, 26: 3}}


def structure(ndim: int, connectivity: int) -> np.ndarray:
    """The structuring element of ``connectivity`` neighbours in ``ndim`` dimensions (2 or 3)."""
    ranks = _RANKS.get(ndim)
    if ranks is None:
        raise ValueError(f"lesions are labelled in 2D or 3D masks, got {ndim} dimensions")
    if connectivity not in ranks:
        *rest, last = ranks
        raise ValueError(f"connectivity must be {', '.join(map(str, rest))} or {last} for a {ndim}D mask, "
                         f"got {connectivity}")
    return ndimage.generate_binary_structure(ndim, ranks[connectivity])


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


def connected_lesions(mask: np.ndarray, connectivity: int,
                      labels: tuple[int, ...] = tuple(CATEGORY_NAMES)) -> tuple[np.ndarray, list[int]]:
    """Connected components per label of a 2D or 3D label mask (0 background, 1..5 subtypes, 6 unknown
    subtype); only the mask values in ``labels`` (by default the subtypes 1..5) form lesions.

    Returns (ids: int32 shaped like ``mask``, 0 = none, lesions numbered 1..N label by label and
    within a label in ``scipy.ndimage.label``'s raster order; the mask value of each lesion).
    ``ndimage.find_objects(ids)`` gives their boxes, ``np.bincount(ids.ravel())`` their sizes."""
    mask = np.asarray(mask)
    element = structure(mask.ndim, connectivity)
    ids = np.zeros(mask.shape, np.int32)
    subtypes: list[int] = []
    box = nonzero_box(mask)
    if box is None:
        return ids, subtypes
    part = mask[box]
    part_ids = ids[box]  # a view: written in place
    for label in labels:
        binary = part == label
        if not binary.any():
            continue
        lab, n = ndimage.label(binary, element)
        hit = lab > 0
        part_ids[hit] = lab[hit] + len(subtypes)
        subtypes += [label] * n
    return ids, subtypes
