"""Synthetic bleeds drawn into real slices that are known to hold none: exact masks on real anatomy.

A release may mask few patients (CT-ICH's shared sample: one), so the segmenter sees few real bleed
masks, while every slice of a patient without a bleed carries an exact empty mask. Drawing a bleed
into such a slice gives a training pair with the real scanner's texture, skull and noise and an exact
mask: what a phantom rendered from scratch cannot give. Shapes follow the subtypes' appearance on
axial CT: a subdural crescent along the inner table over a wide arc, an epidural lens over a short
arc, an intraparenchymal blob away from the skull; all hyperdense (60-80 HU, near the top of the brain
window), edges blurred over about a pixel.

Works on brain-window display intensities in [0, 1] (bone saturates at 1) and on HU slices (drawn in
HU). The slice's labels become that subtype (and ``any``), its boxes come from the drawn mask as
everywhere else.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

from ..categories import CATEGORY_IDS
from .anatomy import intracranial_region

SHAPES = ("SDH", "EDH", "IPH")
BLOOD_HU = (60.0, 80.0)
BLOOD_DISPLAY = (0.62, 0.85)  # the same blood under the brain window W80/L40, with some scanner spread


def _angles(region: np.ndarray) -> tuple[np.ndarray, float]:
    ys, xs = np.nonzero(region)
    cy, cx = ys.mean(), xs.mean()
    yy, xx = np.indices(region.shape)
    return np.arctan2(yy - cy, xx - cx), float(np.sqrt(region.sum() / np.pi))


def _along_skull(region: np.ndarray, rng, half_arc: tuple, depth: tuple, profile) -> np.ndarray:
    """Pixels of ``region`` within a depth profile of the inner table over an arc."""
    theta, radius = _angles(region)
    centre, arc = rng.uniform(-np.pi, np.pi), np.deg2rad(rng.uniform(*half_arc))
    off = np.angle(np.exp(1j * (theta - centre))) / arc  # -1..1 across the arc
    thickness = rng.uniform(*depth) * radius * profile(np.clip(np.abs(off), 0, 1))
    dist = ndimage.distance_transform_edt(region)
    return region & (np.abs(off) < 1) & (dist <= thickness)


def draw_shape(region: np.ndarray, subtype: str, rng: np.random.Generator) -> np.ndarray:
    """A boolean bleed of ``subtype`` inside ``region`` (may be empty on a small region)."""
    if subtype == "SDH":  # crescent: wide arc, thin, tapering
        return _along_skull(region, rng, (35, 75), (0.04, 0.12), lambda u: np.cos(u * np.pi / 2))
    if subtype == "EDH":  # lens: short arc, thick, convex
        return _along_skull(region, rng, (15, 35), (0.08, 0.2), lambda u: np.sqrt(1 - u ** 2))
    if subtype == "IPH":
        _, radius = _angles(region)
        dist = ndimage.distance_transform_edt(region)
        candidates = np.argwhere(dist > 0.3 * radius)
        if not len(candidates):
            return np.zeros_like(region)
        cy, cx = candidates[rng.integers(len(candidates))]
        a, b = rng.uniform(0.05, 0.18, 2) * radius
        angle = rng.uniform(0, np.pi)
        yy, xx = np.indices(region.shape)
        u = ((yy - cy) * np.cos(angle) + (xx - cx) * np.sin(angle)) / a
        v = (-(yy - cy) * np.sin(angle) + (xx - cx) * np.cos(angle)) / b
        wobble = ndimage.gaussian_filter(rng.normal(size=region.shape), 2 + 0.1 * min(a, b)) * 6
        return region & (u ** 2 + v ** 2 + wobble < 1)
    raise ValueError(f"lesion insertion draws {SHAPES}, not {subtype!r}")


def insert_bleed(slices: np.ndarray, kind: str, rng: np.random.Generator,
                 subtypes=SHAPES) -> tuple[np.ndarray, np.ndarray, str] | None:
    """Draw one bleed into ``slices`` (C, H, W): display channels in [0, 1] or HU (all channels get the
    same lesion: 2.5D neighbours see it too). Returns (slices, uint8 label mask, subtype) or None when
    the centre slice shows no closed skull or the shape came out empty."""
    centre = slices[len(slices) // 2]
    gray = np.clip(centre / 80.0, 0, 1) if kind == "hu" else centre  # the brain window of HU
    region = intracranial_region(gray)
    if region is None:
        return None
    subtype = str(subtypes[int(rng.integers(len(subtypes)))])
    shape = draw_shape(region, subtype, rng)
    if shape.sum() < 12:
        return None
    alpha = np.clip(ndimage.gaussian_filter(shape.astype(np.float32), 0.8), 0, 1) * region
    level = rng.uniform(*(BLOOD_HU if kind == "hu" else BLOOD_DISPLAY))
    noise = rng.normal(0, 4.0 if kind == "hu" else 0.03, size=shape.shape).astype(np.float32)
    out = slices * (1 - alpha) + alpha * (level + noise)
    if kind != "hu":
        out = np.clip(out, 0, 1)
    mask = (alpha >= 0.5).astype(np.uint8) * CATEGORY_IDS[subtype]
    return out.astype(slices.dtype), mask, subtype
