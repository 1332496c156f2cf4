"""COCO run-length encoding helpers around pycocotools.

pycocotools encodes whole images (column-major). Encoding a small component through a full-size
canvas costs a full-image scan per component, so ``encode_crop`` computes the run boundaries of the
cropped component directly in full-image coordinates and lets pycocotools compress them.
``encode_masks`` is the one place whole masks (a stack of them) become COCO RLE dicts with ``str``
counts, for evaluation records and predicted detections alike. ``string_counts`` decodes a compressed ``counts`` string in pure Python so that validation can check
a user's RLE *before* handing it to pycocotools, whose C decoder does not bounds-check.
"""
from __future__ import annotations

import numpy as np
from pycocotools import mask as mask_utils


def encode_crop(crop: np.ndarray, x0: int, y0: int, height: int, width: int) -> dict:
    """Compressed COCO RLE ``{"size": [height, width], "counts": str}`` of a full image that is
    zero except for ``crop`` (bool/0-1, shape (h, w)) placed with its top-left pixel at (x0, y0)."""
    h, w = crop.shape
    if x0 < 0 or y0 < 0 or x0 + w > width or y0 + h > height:
        raise ValueError(f"crop {w}x{h} at ({x0}, {y0}) does not fit a {width}x{height} image")
    padded = np.zeros((w, h + 2), dtype=np.int8)  # one row per image column (column-major order)
    padded[:, 1:-1] = crop.T != 0
    cols, rows = np.nonzero(np.diff(padded, axis=1))  # run starts and ends, column by column
    boundaries = (x0 + cols).astype(np.int64) * height + (y0 + rows)
    if h == height:  # a run reaching the bottom of a column continues at the top of the next one
        joined = np.flatnonzero(boundaries[1:] == boundaries[:-1])
        boundaries = np.delete(boundaries, np.concatenate((joined, joined + 1)))
    end = [] if boundaries.size and boundaries[-1] == height * width else [height * width]
    counts = np.diff(np.concatenate(([0], boundaries, end)))
    rle = mask_utils.frPyObjects({"size": [height, width], "counts": counts.tolist()}, height, width)
    return {"size": [height, width], "counts": rle["counts"].decode("ascii")}


def string_counts(counts: str) -> list[int]:
    """Run lengths of a compressed COCO RLE string (pycocotools' ``rleFrString``, bounds-checked).

    Raises ValueError for characters outside the alphabet or a truncated final number.
    """
    out: list[int] = []
    p = 0
    n = len(counts)
    while p < n:
        x = 0
        k = 0
        more = True
        while more:
            if p >= n:
                raise ValueError("RLE counts string ends in the middle of a number")
            c = ord(counts[p]) - 48
            if not 0 <= c < 64:
                raise ValueError(f"RLE counts string has an invalid character {counts[p]!r} at {p}")
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and (c & 0x10):
                x |= -1 << (5 * k)
        if len(out) > 2:
            x += out[-2]
        out.append(x)
    return out


def to_rle(segmentation, height: int, width: int) -> dict:
    """A single pycocotools RLE for any COCO segmentation (polygon parts, uncompressed or
    compressed RLE), as ``COCO.annToRLE`` does."""
    if isinstance(segmentation, list):
        return mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
    if isinstance(segmentation.get("counts"), list):
        return mask_utils.frPyObjects(segmentation, height, width)
    counts = segmentation["counts"]
    return {"size": list(segmentation["size"]), "counts": counts.encode("ascii") if isinstance(counts, str) else counts}


def decode(segmentation, height: int, width: int) -> np.ndarray:
    """uint8 (height, width) mask of any COCO segmentation (what ``COCO.annToMask`` returns)."""
    return mask_utils.decode(to_rle(segmentation, height, width))


def encode_masks(masks, threshold: float | None = None) -> list[dict]:
    """(N, H, W) (or (N, 1, H, W)) binary masks, numpy or torch -> COCO RLEs with str counts;
    ``threshold``: probability masks, foreground where the value is > it."""
    m = masks.detach().cpu().numpy() if hasattr(masks, "detach") else np.asarray(masks)
    if m.ndim == 4:
        m = m[:, 0]
    if len(m) == 0:
        return []
    if threshold is not None:
        m = m > threshold
    rles = mask_utils.encode(np.asfortranarray(m.astype(np.uint8).transpose(1, 2, 0)))
    for r in rles:
        r["counts"] = r["counts"].decode("ascii")
    return rles
