"""Pixel-exact outlines of binary masks, in the COCO pixel convention.

COCO (pycocotools) rasterises a polygon so that pixel (row r, col c) is the unit square
[c, c+1) x [r, r+1): a polygon through the pixel *corners* of a component decodes back to exactly
that component. OpenCV contours run through boundary pixel *centres* instead and lose about half a
pixel all round (a one-pixel lesion or a one-pixel streak becomes a degenerate polygon). Tracing the
mask upsampled 2x and mapping each contour coordinate ``u`` to ``ceil(u / 2)`` puts every vertex on
the pixel corners, so the outline is exact (tested against pycocotools on random masks).
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class Outline:
    """One outer boundary: integer corner coordinates (N, 2) as (x, y), N >= 4, no repeated
    consecutive or collinear vertices, positive shoelace ``area`` in pixel coordinates (x right,
    y down); ``area`` counts the enclosed pixels, holes included. ``holes`` counts the component's
    holes (not in ``points``: a COCO polygon cannot carry holes); ``self_touching`` is True when the
    ring touches itself at a vertex (8-connected pixels that meet only at a corner), which
    shapely-style consumers call invalid although pycocotools decodes it exactly. ``start`` is the
    component's first pixel in raster order (x, y), e.g. to look its label up; ``box`` is
    (x0, y0, x1, y1) in corner coordinates, so the tight bbox is [x0, y0, x1 - x0, y1 - y0]."""

    points: np.ndarray
    area: float
    holes: int
    self_touching: bool
    start: tuple[int, int]
    box: tuple[int, int, int, int]

    def flat(self, dx: int = 0, dy: int = 0) -> list[int]:
        """COCO polygon part ``[x1, y1, x2, y2, ...]`` shifted by (dx, dy)."""
        return (self.points + np.array([dx, dy], dtype=self.points.dtype)).ravel().tolist()


def signed_area(points: np.ndarray) -> float:
    """Shoelace area of a closed ring (N, 2); positive for our orientation."""
    x = points[:, 0].astype(np.float64)
    y = points[:, 1].astype(np.float64)
    return 0.5 * float(np.dot(np.roll(x, 1), y) - np.dot(x, np.roll(y, 1)))


class _Rings:
    """Many closed rings in one (M, 2) array, processed together: per-ring Python work is what
    costs on slices with many small components."""

    def __init__(self, points: np.ndarray, ring: np.ndarray, count: int):
        self.points, self.ring, self.count = points, ring, count
        first = np.flatnonzero(np.concatenate(([True], ring[1:] != ring[:-1])))
        self.first = first
        self.last = np.append(first[1:], len(ring)) - 1

    def previous(self) -> np.ndarray:
        idx = np.arange(len(self.ring)) - 1
        idx[self.first] = self.last
        return idx

    def keep(self, mask: np.ndarray) -> "_Rings":
        return _Rings(self.points[mask], self.ring[mask], self.count)


def _clean(rings: _Rings) -> _Rings:
    """Drop consecutive duplicates, then vertices in the middle of straight runs (cyclic, per ring).
    Removing all straight-run middles at once leaves the directions between corners unchanged."""
    pts = rings.points
    rings = rings.keep(np.any(pts != pts[rings.previous()], axis=1))
    pts, prev = rings.points, rings.previous()
    d_in = pts - pts[prev]
    nxt = np.empty_like(prev)
    nxt[prev] = np.arange(len(prev))
    d_out = pts[nxt] - pts
    cross = d_in[:, 0] * d_out[:, 1] - d_in[:, 1] * d_out[:, 0]
    dot = d_in[:, 0] * d_out[:, 0] + d_in[:, 1] * d_out[:, 1]
    return rings.keep((cross != 0) | (dot <= 0))


def trace_outlines(binary: np.ndarray) -> list[Outline]:
    """Exact outer outlines of every 8-connected component of a 2D 0/1 (or bool) array.

    Holes are 4-connected background regions enclosed by a component (OpenCV's convention, which
    matches 8-connected foreground labelling). Coordinates are relative to the array's origin; crop
    to the components' bounding box first, the cost grows with the array size. Outlines come in
    raster order of their ``start`` pixel, the order of ``cv2.connectedComponents`` labels.
    """
    if binary.ndim != 2:
        raise ValueError(f"trace_outlines needs a 2D mask, got shape {binary.shape}")
    if binary.dtype == bool:
        src = binary.view(np.uint8)
    elif binary.dtype == np.uint8:
        src = binary  # OpenCV takes any nonzero byte as foreground
    else:
        src = (binary != 0).view(np.uint8)
    h, w = src.shape
    padded = cv2.copyMakeBorder(src, 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0)
    # 2x nearest upsampling: each byte doubled through a uint16 view, then each row repeated
    # (several times faster than cv2.resize here)
    up = (padded.astype(np.uint16) * 257).view(np.uint8).repeat(2, axis=0)
    contours, hierarchy = cv2.findContours(up, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE, offset=(-2, -2))
    if not contours:
        return []
    parents = hierarchy[0][:, 3]
    outer = np.flatnonzero(parents < 0)
    holes = np.bincount(parents[parents >= 0], minlength=len(contours))[outer]
    raw = [contours[i].reshape(-1, 2) for i in outer]
    lengths = np.fromiter((len(r) for r in raw), dtype=np.int64, count=len(raw))
    raw = np.concatenate(raw).astype(np.int64)
    # border following starts at the component's first pixel in raster order (Suzuki & Abe)
    starts = raw[np.cumsum(lengths) - lengths] // 2
    n = len(outer)
    rings = _clean(_Rings((raw + 1) // 2, np.repeat(np.arange(n), lengths), n))
    pts, ring, first, last = rings.points, rings.ring, rings.first, rings.last
    if len(first) != n:  # every ring keeps >= 4 corners; anything else is a tracing bug
        raise RuntimeError(f"outline tracing lost {n - len(first)} ring(s)")
    prev = pts[rings.previous()].astype(np.float64)
    cross = prev[:, 0] * pts[:, 1] - pts[:, 0] * prev[:, 1]
    areas = 0.5 * np.bincount(ring, weights=cross, minlength=n)
    flip = areas[ring] < 0  # one orientation for every ring: reverse the negative ones
    order = np.arange(len(ring))
    order[flip] = (first[ring] + last[ring] - order)[flip]
    pts = pts[order]
    keys = np.sort(ring * ((h + 1) * (w + 1)) + pts[:, 1] * (w + 1) + pts[:, 0])
    touching = np.zeros(n, dtype=bool)
    touching[keys[1:][keys[1:] == keys[:-1]] // ((h + 1) * (w + 1))] = True
    lo = np.minimum.reduceat(pts, first)
    hi = np.maximum.reduceat(pts, first)
    outlines = [
        Outline(points=pts[first[i] : last[i] + 1], area=abs(float(areas[i])), holes=int(holes[i]),
                self_touching=bool(touching[i]), start=(int(starts[i, 0]), int(starts[i, 1])),
                box=(int(lo[i, 0]), int(lo[i, 1]), int(hi[i, 0]), int(hi[i, 1])))
        for i in range(n)
    ]
    outlines.sort(key=lambda o: (o.start[1], o.start[0]))
    return outlines


def largest_outline(binary: np.ndarray) -> Outline | None:
    """The outline enclosing the largest area (holes filled), or None for an empty mask."""
    outlines = trace_outlines(binary)
    return max(outlines, key=lambda o: o.area) if outlines else None
