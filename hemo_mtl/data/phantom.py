"""Seeded synthetic head CT with subtype-shaped bleeds and exact masks: the embedded default dataset.

Why a phantom: tests, the demo and CI need head CTs whose labels are known exactly and cost nothing to
ship. Why this one is not trivial: a model must learn *shape and location*, not "bright pixel", so the
phantom has hyperdense mimics that are not bleeds (falx, choroid/pineal calcifications, partial-volume
skull base, a bright rim at the inner table) and bleeds shaped as radiologists see them:
EDH a short biconvex lens against the inner table, SDH a thin crescent over a long arc, SAH blood
filling the sulci, the interhemispheric fissure or the basal cisterns, IPH a
rounded blob with an oedema halo (halo not labelled), IVH inside the ventricles (dependent layering
or a cast).

Geometry lives in a head frame in millimetres (polar coordinates about the head centre, height as a
fraction of a 120 mm head), so anatomy scales with ``size`` and ``slices``. Arrays follow nibabel:
(X, Y, Z) with Z the axial slice axis, slice 0 at the skull base; ``vol[:, :, k]`` is the (H, W)
image with anterior at row 0. Everything is vectorised numpy; per-slice work is at most a loop over
slices.

No crumbs: real annotators never draw specks, and a 1-px box is a target no detector can hit, so every
per-slice 8-connected component of every lesion mask has at least ``min_component_area(size)`` pixels.
Shapes are drawn so they do not fragment (an SDH crescent and the CSF spaces that SAH fills are at
least 2 px thick: a 1-px band rasterises as specks one pixel apart, one bleed as a dozen boxes); a filter then
guarantees it, giving the pixels of a dropped speck back to what they held before that bleed was
painted, so image and mask always agree (no blood HU without a mask).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from scipy import ndimage

from hemo_mtl.atomic import atomic_path, atomic_write_csv, atomic_write_text
from hemo_mtl.categories import CATEGORY_IDS, LABELS, SUBTYPES
from hemo_mtl.version import __version__

__all__ = [
    "GENERATOR_VERSION",
    "PhantomCase",
    "make_phantom_case",
    "min_component_area",
    "patient_seed",
    "slice_labels",
    "write_phantom_dataset",
]

GENERATOR_VERSION = "3"  # 2: no lesion components below min_component_area; own noise stream;
# 3: sulcal SAH distended to >= 2 px (was dotted at 128 px)
HEAD_HEIGHT_MM = 120.0  # z extent covered by the volume: `slices` slices of HEAD_HEIGHT_MM/slices mm
NORMAL_FRACTION = 0.25
LOCATIONS = ("lobar", "deep", "subtentorial")
MIN_SIZE, MIN_SLICES = 32, 4
_MAX_TRIES = 8
MIN_COMPONENT_PX = 6  # floor of the smallest lesion component kept in a slice, in pixels
MIN_COMPONENT_FRACTION = 2e-4  # ... and as a fraction of the slice (~11 mm^2 at any size: 52 px at 512)
_IN_PLANE_8 = np.zeros((3, 3, 3), bool)
_IN_PLANE_8[:, :, 1] = True  # 8-connectivity within each axial slice, none across slices


@dataclass
class PhantomCase:
    """One synthetic patient. ``anatomy`` holds boolean (X, Y, Z) masks of the bleed-free anatomy
    (intracranial, skull, skull_base, ventricles, csf, parenchyma, posterior_fossa); ``instances`` is
    uint8 (X, Y, Z) with lesion index + 1 (0 = none), aligned with ``lesions``."""

    patient_id: str
    volume: np.ndarray  # float32 (X, Y, Z) HU
    mask: np.ndarray  # uint8 (X, Y, Z) 0 background, 1 EDH .. 5 IVH
    affine: np.ndarray  # float64 4x4, diagonal spacing
    spacing: tuple[float, float, float]
    lesions: list[dict] = field(default_factory=list)
    anatomy: dict[str, np.ndarray] = field(default_factory=dict)
    instances: np.ndarray | None = None


# ----------------------------------------------------------------------------------------- geometry
def _wrap(angle):
    """Angle difference folded into [-pi, pi)."""
    return (angle + np.pi) % (2 * np.pi) - np.pi


def _dome(u):
    """sqrt(1 - u^2) clipped at 0: the profile of an ellipse/ellipsoid along one axis."""
    return np.sqrt(np.clip(1.0 - np.square(u), 0.0, None))


class _Head:
    """The drawn geometry of one head: coordinate grids, radii and the anatomy masks.

    In-plane grids are (H, W, 1) and per-slice vectors (1, 1, Z) so that they broadcast to volumes.
    theta = 0 points anterior (towards row 0), +-pi posterior; xh grows posteriorly, yh across.
    """

    def __init__(self, rng: np.random.Generator, size: int, slices: int):
        self.shape = (size, size, slices)
        self.s = float(rng.uniform(225.0, 250.0) / size)  # in-plane mm/pixel (FOV 225..250 mm)
        self.sz = HEAD_HEIGHT_MM / slices
        self.t = ((np.arange(slices, dtype=np.float32) + 0.5) / slices)[None, None, :]
        self.z = self.t * np.float32(HEAD_HEIGHT_MM)  # mm above the bottom of the volume

        centre = (size - 1) / 2 + rng.uniform(-0.025, 0.025, 2) * size
        alpha = rng.uniform(-0.12, 0.12)  # head tilt in the axial plane
        rows = ((np.arange(size, dtype=np.float32) - centre[0]) * self.s)[:, None]
        cols = ((np.arange(size, dtype=np.float32) - centre[1]) * self.s)[None, :]
        ca, sa = np.float32(np.cos(alpha)), np.float32(np.sin(alpha))
        self.dx = (rows + 0 * cols)[..., None]  # scanner rows (gravity: supine -> posterior is down)
        self.xh = (ca * rows + sa * cols)[..., None]
        self.yh = (-sa * rows + ca * cols)[..., None]
        self.r = np.hypot(self.xh, self.yh)
        self.theta = np.arctan2(self.yh, -self.xh)

        # head outline: egg-shaped ellipse with low harmonics, smaller towards base and vertex
        self.A, self.B = rng.uniform(84.0, 94.0), rng.uniform(66.0, 76.0)
        self.egg = rng.uniform(0.0, 0.04)
        self.harm = [(h, rng.uniform(0.0, 0.015), rng.uniform(0, 2 * np.pi)) for h in (2, 3, 4)]
        tc, tw = rng.uniform(0.38, 0.45), rng.uniform(0.66, 0.72)
        self.f = _dome((self.t - tc) / tw).clip(0.3, None)  # (1,1,Z)
        self.T0 = rng.uniform(5.0, 7.0)
        self.T_harm = [(2, rng.uniform(0.05, 0.15), rng.uniform(0, 2 * np.pi)),
                       (3, rng.uniform(0.0, 0.08), rng.uniform(0, 2 * np.pi))]
        self.t_tent = rng.uniform(0.27, 0.33)

        r_out = self.outer(self.theta) * self.f
        self.thick = self.thickness(self.theta, self.t)
        self.d_out = r_out - self.r  # mm inside the outer table
        self.depth = self.d_out - self.thick  # mm inside the inner table (> 0: intracranial)
        self.parts: dict[str, np.ndarray] = {}

    def outer(self, theta):
        """Outer-table radius (mm) at full height profile."""
        c, s = np.cos(theta), np.sin(theta)
        base = self.A * self.B / np.sqrt((self.B * c) ** 2 + (self.A * s) ** 2)
        wobble = 1 - self.egg * c + sum(a * np.cos(h * theta + p) for h, a, p in self.harm)
        return (base * wobble).astype(np.float32)

    def thickness(self, theta, t):
        """Skull thickness (mm): varies around the head and thickens towards the base."""
        around = 1 + sum(a * np.cos(h * theta + p) for h, a, p in self.T_harm)
        base = 1 + 0.6 * np.clip((0.3 - t) / 0.3, 0, 1)
        return (self.T0 * around * base).astype(np.float32)

    def r_in(self, theta: float, k: int) -> float:
        """Inner-table radius (mm) along direction theta on slice k."""
        t = float(self.t[0, 0, k])
        return float(self.outer(theta) * self.f[0, 0, k] - self.thickness(theta, t))

    @staticmethod
    def point(radius: float, theta: float) -> tuple[float, float]:
        """Head-frame (xh, yh) of a polar point."""
        return -radius * np.cos(theta), radius * np.sin(theta)

    def slices_between(self, t_lo: float, t_hi: float) -> np.ndarray:
        ks = np.flatnonzero((self.t[0, 0] >= t_lo) & (self.t[0, 0] <= t_hi))
        if ks.size == 0:  # very few slices: take the nearest one
            ks = np.array([int(np.argmin(np.abs(self.t[0, 0] - (t_lo + t_hi) / 2)))])
        return ks

    def slab(self, k: float, half_mm: float) -> slice:
        """Slice range covering k +- half_mm."""
        half = int(np.ceil(half_mm / self.sz))
        return slice(max(0, int(round(k)) - half), min(self.shape[2], int(round(k)) + half + 1))

    def dz(self, zs: slice, k: float) -> np.ndarray:
        return ((np.arange(zs.start, zs.stop, dtype=np.float32) - k) * self.sz)[None, None, :]


def _ellipse(dx, dy, a, b):
    return np.square(dx / a) + np.square(dy / b)


# ----------------------------------------------------------------------------------------- anatomy
def _within(h: _Head, t_lo: float, t_hi: float, shape: Callable[[slice, np.ndarray], np.ndarray]) -> np.ndarray:
    """Boolean volume: ``shape(zs, t[zs])`` on the slices with t_lo < t < t_hi, False elsewhere.

    Structures that exist on a few slices are computed only there (the phantom's main cost)."""
    out = np.zeros(h.shape, bool)
    ks = np.flatnonzero((h.t[0, 0] > t_lo) & (h.t[0, 0] < t_hi))
    if ks.size:
        zs = slice(int(ks[0]), int(ks[-1]) + 1)
        out[:, :, zs] = shape(zs, h.t[:, :, zs])
    return out


def _sulcal_csf(h: _Head, zs: slice, min_width: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """(sulci, surface CSF) over volume[:, :, zs], each at least ``min_width`` mm wide."""
    sc, depth = h.sulcal, h.depth[:, :, zs]
    sulci = (depth > 0) & (sc["dist"][:, :, zs] < max(sc["width"], min_width) / 2) & (depth < sc["depth"])
    surface = (depth > 0) & (depth < max(sc["surface"], min_width))
    return sulci, surface


def _paint_anatomy(h: _Head, rng: np.random.Generator, lf: np.ndarray) -> np.ndarray:
    """Bleed-free head in HU; fills h.parts with the anatomy masks the bleeds are built on."""
    s, t, xh, yh = h.s, h.t, h.xh, h.yh
    lf3 = lf[..., None]
    intr = h.depth > 0
    skull = (h.d_out >= 0) & ~intr
    scalp = (h.d_out < 0) & (h.d_out > -rng.uniform(3.0, 6.0))

    # cortex: surface CSF, radial sulci wandering a little from slice to slice, grey matter around them
    csf_w = max(rng.uniform(0.6, 1.5), 0.8 * s)
    n_sulci = int(rng.integers(40, 56))
    w_s = max(rng.uniform(1.4, 2.2), 1.1 * s)
    phase = np.cumsum(rng.normal(0.0, 0.25, h.shape[2])).astype(np.float32)[None, None, :]
    arg = n_sulci * h.theta + 0.8 * np.sin(h.r / 7.0 + rng.uniform(0, 2 * np.pi)) + phase
    sulc_dist = np.abs(_wrap(arg)) * (h.r / n_sulci)
    sulc_depth = rng.uniform(8.0, 14.0) * (0.7 + 0.3 * np.cos(7 * h.theta + rng.uniform(0, 6.3)))
    gm_t = rng.uniform(2.0, 3.0)
    h.sulcal = dict(dist=sulc_dist, width=w_s, depth=sulc_depth, surface=csf_w)
    sulci, surface = _sulcal_csf(h, slice(None))
    cortex = intr & ((h.depth < csf_w + gm_t) | ((sulc_dist < w_s / 2 + gm_t) & (h.depth < sulc_depth + gm_t)))

    # lateral ventricles (banana-shaped, mid slices), 3rd and 4th ventricles
    vf = rng.uniform(0.75, 1.4)
    tv0, tv1 = rng.uniform(0.40, 0.45), rng.uniform(0.70, 0.76)
    xv, lv = rng.uniform(-4, 4), rng.uniform(22, 30) * np.sqrt(vf)
    wv, kb = rng.uniform(3.5, 6.0) * vf, rng.uniform(0.003, 0.008)
    yv0 = 1.2 + 0.8 * wv
    bend = yv0 + kb * np.square(xh - xv)

    def lateral_ventricle(side: float) -> Callable:
        def shape(zs: slice, tz: np.ndarray) -> np.ndarray:
            pv = _dome((tz - (tv0 + tv1) / 2) / ((tv1 - tv0) / 2))
            return intr[:, :, zs] & (_ellipse(xh - xv, yh - side * bend, lv * pv + 1e-3, wv * np.maximum(pv, 0.4)) < 1)
        return shape

    lateral = {name: _within(h, tv0, tv1, lateral_ventricle(side)) for name, side in (("L", 1.0), ("R", -1.0))}
    x3, w3 = rng.uniform(-2, 4), max(rng.uniform(1.0, 2.0), 0.6 * s)
    t3 = (h.t_tent, tv0 + 0.04)
    third = _within(h, *t3, lambda zs, tz: intr[:, :, zs] & (np.abs(yh) < w3)
                    & (np.abs(xh - x3) < 11 * _dome((tz - sum(t3) / 2) / ((t3[1] - t3[0]) / 2))))
    xbs, rbs = rng.uniform(2, 8), rng.uniform(10, 13)
    t4 = (0.10, h.t_tent)
    x4 = xbs + rbs + 2

    def fourth_ventricle(zs: slice, tz: np.ndarray) -> np.ndarray:
        p4 = _dome((tz - sum(t4) / 2) / ((t4[1] - t4[0]) / 2))
        return intr[:, :, zs] & (_ellipse(xh - x4, yh, 3.5 * p4 + 1e-3, 6 * p4 + 1e-3) < 1)

    fourth = _within(h, *t4, fourth_ventricle)
    ventricles = lateral["L"] | lateral["R"] | third | fourth

    # brainstem with the basal cisterns around it; posterior fossa behind the petrous ridges
    rho_bs = np.hypot(xh - xbs, yh)
    cw = max(rng.uniform(2.0, 3.0), 1.5 * s)
    t_bs = h.t_tent + 0.12
    stem_r = rbs * np.maximum(_dome(t / t_bs), 0.6)
    brainstem = _within(h, 0.0, t_bs, lambda zs, tz: intr[:, :, zs] & (rho_bs < stem_r[:, :, zs]))
    cisterns = _within(h, 0.0, t_bs, lambda zs, tz: intr[:, :, zs] & (rho_bs >= stem_r[:, :, zs])
                       & (rho_bs < stem_r[:, :, zs] + cw)) & ~ventricles
    xa, kp = xbs - rbs - rng.uniform(3, 6), rng.uniform(0.25, 0.45)
    ridge_line = (xh - (xa + kp * np.abs(yh))) / np.sqrt(1 + kp * kp)  # signed distance to the V
    posterior_fossa = _within(h, 0.0, h.t_tent, lambda zs, tz: intr[:, :, zs] & (ridge_line > 0))
    t_pet = h.t_tent - rng.uniform(0.05, 0.09)
    ridge_gain = np.clip((t_pet + 0.05 - t) / 0.1, 0, 1)  # full bone low, partial volume above
    on_ridge = (np.abs(ridge_line) < rng.uniform(1.5, 2.5)) & (np.abs(yh) > 12)
    ridge = _within(h, 0.0, t_pet + 0.05, lambda zs, tz: intr[:, :, zs] & on_ridge)
    base_sector = (np.abs(h.theta) < 1.8) & (np.cos(5 * h.theta + rng.uniform(0, 6.3)) > 0.55)
    base_bits = _within(h, 0.0, 0.2, lambda zs, tz: intr[:, :, zs] & (h.depth[:, :, zs] < 6) & base_sector)
    skull_base = ridge | base_bits

    # interhemispheric fissure with the falx (supratentorial; interrupted over the corpus callosum)
    w_f = max(rng.uniform(1.0, 1.6), 1.2 * s)
    cc_half = 28.0 * ((t > tv0 - 0.06) & (t < tv1 + 0.02))
    fissure = intr & (t > h.t_tent + 0.02) & (np.abs(yh) < w_f) & (np.abs(xh - xv) >= cc_half)
    falx = fissure & (np.abs(yh) < 0.5 * s)

    # deep grey nuclei lateral to the ventricles (where deep IPH sits)
    tdg = (h.t_tent, tv0 + 0.12)
    xdg, ydg = rng.uniform(-2, 6), yv0 + wv + rng.uniform(6, 9)

    def deep_nuclei(zs: slice, tz: np.ndarray) -> np.ndarray:
        pdg = _dome((tz - sum(tdg) / 2) / ((tdg[1] - tdg[0]) / 2))
        return intr[:, :, zs] & (_ellipse(xh - xdg, np.abs(yh) - ydg, 14 * pdg + 1e-3, 7 * pdg + 1e-3) < 1)

    deep_grey = _within(h, *tdg, deep_nuclei)

    csf = (surface | sulci | fissure | cisterns) & ~ventricles
    # ---- HU
    wm = rng.uniform(25.0, 29.0) + 2.5 * lf3
    gm = rng.uniform(36.0, 40.0) + 2.0 * lf3
    csf_hu = rng.uniform(4.0, 11.0)
    hu = np.full(h.shape, -1000.0, np.float32)
    np.copyto(hu, rng.uniform(25.0, 45.0) + 8.0 * lf3, where=scalp)
    density = rng.uniform(0.95, 1.02)
    rel = h.d_out / h.thick
    np.copyto(hu, density * (780.0 + 620.0 * np.square(2 * rel - 1)), where=skull)
    np.copyto(hu, wm, where=intr)
    np.copyto(hu, gm, where=cortex | deep_grey)
    np.copyto(hu, wm + 3.0, where=brainstem)
    np.copyto(hu, np.float32(csf_hu), where=csf | ventricles)
    np.copyto(hu, 40.0 + ridge_gain * rng.uniform(700.0, 1100.0), where=ridge)
    np.copyto(hu, 40.0 + (0.2 - t) / 0.2 * rng.uniform(150.0, 450.0), where=base_bits)
    for axis in (0, 1):  # partial volume at edges: a small in-plane blur (3 taps, sigma ~0.6 px)
        hu = ndimage.correlate1d(hu, np.array([0.2, 0.6, 0.2], np.float32), axis=axis, mode="nearest")

    # mimics painted sharp after the blur: falx, calcifications; a beam-hardening rim at the inner table
    np.copyto(hu, np.float32(rng.uniform(60.0, 85.0)), where=falx)
    calcs = []
    if rng.random() < 0.5:  # choroid plexus in both atria
        for side in (1.0, -1.0):
            xc = xv + 0.6 * lv
            calcs.append((xc, side * (yv0 + kb * (0.6 * lv) ** 2), (tv0 + tv1) / 2 - 0.03, rng.uniform(1.5, 3.0)))
    if rng.random() < 0.35:  # pineal gland behind the third ventricle
        calcs.append((x3 + rng.uniform(12, 16), 0.0, tv0 - 0.02, rng.uniform(1.5, 2.5)))
    for xc, yc, tc, rad in calcs:
        rad, half_t = max(rad, 0.8 * s), (0.6 * h.sz + rad) / HEAD_HEIGHT_MM
        disc = (np.square(xh - xc) + np.square(yh - yc)) / rad**2
        blob = _within(h, tc - half_t, tc + half_t,
                       lambda zs, tz: intr[:, :, zs] & (disc + np.square((tz - tc) / half_t) < 1))
        np.copyto(hu, np.float32(rng.uniform(100.0, 300.0)), where=blob)
    rim_band = intr & (h.depth < 6.0)
    rim = np.exp(h.depth * np.float32(-1 / 1.2), where=rim_band, out=np.zeros(h.shape, np.float32))
    hu += np.float32(rng.uniform(6.0, 14.0)) * rim

    parenchyma = intr & ~csf & ~ventricles & ~skull_base
    h.parts = dict(intracranial=intr, skull=skull, skull_base=skull_base, ventricles=ventricles, csf=csf,
                   parenchyma=parenchyma, posterior_fossa=posterior_fossa, sulci=sulci, surface=surface,
                   fissure=fissure, cisterns=cisterns, vent_L=lateral["L"], vent_R=lateral["R"])
    h.deep = dict(xdg=xdg, ydg=ydg, t_lo=h.t_tent + 0.06, t_hi=tv0 + 0.08, xbs=xbs)
    return hu


# ----------------------------------------------------------------------------------------- bleeds
# A painter returns (slab, blood, location, halo): boolean masks over volume[:, :, slab].
def _slab_part(h: _Head, name: str, zs: slice) -> np.ndarray:
    return h.parts[name][:, :, zs]


def _convexity_site(h: _Head, rng, subtentorial: bool, half_arc: float = 0.0) -> tuple[int, float]:
    """Centre slice and direction of a lesion on the inner table."""
    if subtentorial:
        k = int(rng.choice(h.slices_between(0.08, h.t_tent - 0.02)))
        theta = rng.choice([-1, 1]) * rng.uniform(np.pi / 2 + 0.3, np.pi - half_arc - 0.05)
    else:
        k = int(rng.choice(h.slices_between(h.t_tent + 0.04, 0.85)))
        if half_arc:  # SDH stops at the falx: keep the arc off the midline
            theta = rng.choice([-1, 1]) * rng.uniform(half_arc + 0.05, np.pi - half_arc - 0.05)
        else:
            theta = rng.uniform(-np.pi, np.pi)
    return k, theta


def _edh(h: _Head, rng):
    """Biconvex lens: the cranial cavity cut by an ellipsoid centred outside the inner table."""
    sub = rng.random() < 0.25
    k, theta = _convexity_site(h, rng, sub)
    h0, rho, rz = rng.uniform(7.0, 16.0), rng.uniform(20.0, 36.0), rng.uniform(7.0, 16.0)
    cx, cy = h.point(h.r_in(theta, k) + rho - h0, theta)
    zs = h.slab(k, rz)
    inside = (np.square(h.xh - cx) + np.square(h.yh - cy)) / rho**2 + np.square(h.dz(zs, k) / rz) < 1
    return zs, inside & _slab_part(h, "intracranial", zs), ("subtentorial" if sub else "lobar"), None


def _sdh(h: _Head, rng):
    """Thin crescent along the inner table over a long arc, tapering at its ends and across slices."""
    sub = rng.random() < 0.2
    half = rng.uniform(0.45, 0.7) if sub else rng.uniform(0.75, 1.3)
    k, theta = _convexity_site(h, rng, sub, half)
    hs, zr = rng.uniform(3.0, 8.0), rng.uniform(12.0, 28.0)
    arc = _dome(_wrap(h.theta - theta) / half)
    zs = h.slab(k, zr)
    taper = arc * _dome(h.dz(zs, k) / zr)
    # at least 2 px thick: a band thinner than a pixel rasterises as a dotted line of specks
    thick = np.maximum(hs * taper, 2.0 * h.s)
    blood = _slab_part(h, "intracranial", zs) & (taper > 0.2) & (h.depth[:, :, zs] < thick)
    return zs, blood, ("subtentorial" if sub else "lobar"), None


def _sah(h: _Head, rng):
    """Blood in CSF spaces: convexity sulci, the interhemispheric fissure, or the basal cisterns."""
    mode = rng.choice(["sulcal", "fissure", "cisternal"], p=[0.5, 0.25, 0.25])
    if mode == "cisternal":
        k = int(rng.choice(h.slices_between(0.06, h.t_tent + 0.08)))
        zs = slice(max(0, k - int(rng.integers(0, 2))), k + int(rng.integers(1, 3)))
        angle = np.arctan2(h.yh, h.xh - h.deep["xbs"])
        sector = np.abs(_wrap(angle - rng.uniform(-np.pi, np.pi))) < rng.uniform(0.8, np.pi)
        return zs, _slab_part(h, "cisterns", zs) & sector, "subtentorial", None
    k = int(rng.choice(h.slices_between(h.t_tent + 0.04, 0.88)))
    zs = slice(max(0, k - int(rng.integers(0, 2))), k + int(rng.integers(1, 3)))
    if mode == "fissure":
        near = np.abs(h.xh - rng.uniform(-60, 60)) < rng.uniform(15, 40)
        return zs, _slab_part(h, "fissure", zs) & near, "lobar", None
    sector = np.abs(_wrap(h.theta - rng.uniform(-np.pi, np.pi))) < rng.uniform(0.25, 0.6)
    # blood fills the sulci and the surface CSF, distending them to >= 2 px: at ~1 px (their normal
    # width at 128 px) a band rasterises as dotted specks and one bleed as many 1-px-apart fragments
    sulci, surface = _sulcal_csf(h, zs, min_width=2.0 * h.s)
    blood = (sulci | surface) & sector
    return zs, blood, "lobar", None


def _iph(h: _Head, rng):
    """Irregular ellipsoid in parenchyma with a hypodense oedema halo (the halo is not labelled)."""
    loc = str(rng.choice(["lobar", "deep", "subtentorial"], p=[0.4, 0.4, 0.2]))
    halo_mm = rng.uniform(2.5, 6.0)
    if loc == "deep":
        k = int(rng.choice(h.slices_between(h.deep["t_lo"], h.deep["t_hi"])))
        a, b = rng.uniform(5.0, 11.0), rng.uniform(5.0, 11.0)
        cx = h.deep["xdg"] + rng.uniform(-4, 4)
        cy = rng.choice([-1, 1]) * (h.deep["ydg"] + rng.uniform(-2, 3))
    else:
        sub = loc == "subtentorial"
        if sub:
            k = int(rng.choice(h.slices_between(0.08, h.t_tent - 0.03)))
            theta, (a, b) = rng.choice([-1, 1]) * rng.uniform(2.3, 2.8), rng.uniform(4.0, 9.0, 2)
        else:
            k = int(rng.choice(h.slices_between(h.t_tent + 0.06, 0.82)))
            theta, (a, b) = rng.uniform(-np.pi, np.pi), rng.uniform(6.0, 15.0, 2)
        margin = 1.2 * max(a, b) + halo_mm + rng.uniform(3.0, 8.0)
        cx, cy = h.point(max(h.r_in(theta, k) - margin, 0.0), theta)
    c = rng.uniform(4.0, 10.0)
    beta = rng.uniform(0, np.pi)
    u = np.cos(beta) * (h.xh - cx) + np.sin(beta) * (h.yh - cy)
    v = -np.sin(beta) * (h.xh - cx) + np.cos(beta) * (h.yh - cy)
    phi = np.arctan2(v, u)
    wobble = 1 + 0.12 * np.cos(2 * phi + rng.uniform(0, 6.3)) + 0.07 * np.cos(3 * phi + rng.uniform(0, 6.3))
    grow = 1 + halo_mm / min(a, b, c)
    zs = h.slab(k, c * grow)
    ell = _ellipse(u, v, a, b) + np.square(h.dz(zs, k) / c)
    room = _slab_part(h, "intracranial", zs) & ~_slab_part(h, "ventricles", zs) & ~_slab_part(h, "skull_base", zs)
    blood = room & (ell < np.square(wobble)) & (h.depth[:, :, zs] > 3.0)
    halo = room & (ell < np.square(wobble * grow)) & ~blood & (h.depth[:, :, zs] > 1.5)
    return zs, blood, loc, halo


def _ivh(h: _Head, rng):
    """Blood inside a lateral ventricle: dependent layering (posterior horns, supine) or a cast."""
    side = rng.choice(["L", "R", "both"])
    vent = h.parts["vent_L"] | h.parts["vent_R"] if side == "both" else h.parts[f"vent_{side}"]
    ks = np.flatnonzero(vent.any(axis=(0, 1)))
    if ks.size == 0:
        return slice(0, 1), np.zeros(h.shape[:2] + (1,), bool), "deep", None
    n = int(rng.integers(1, ks.size + 1))
    start = int(rng.integers(0, ks.size - n + 1))
    zs = slice(int(ks[start]), int(ks[start + n - 1]) + 1)
    vent = vent[:, :, zs]
    if rng.random() < 0.6:  # fluid level perpendicular to gravity (scanner rows)
        rows = np.broadcast_to(h.dx, vent.shape)[vent]
        level = np.quantile(rows, 1 - rng.uniform(0.2, 0.6))
        return zs, vent & (h.dx >= level), "deep", None
    idx = np.argwhere(vent)[int(rng.random() * vent.sum())]
    cx, cy = float(h.xh[idx[0], idx[1], 0]), float(h.yh[idx[0], idx[1], 0])
    cast = _ellipse(h.xh - cx, h.yh - cy, rng.uniform(4, 12), rng.uniform(4, 12)) < 1
    return zs, vent & cast, "deep", None


PAINTERS: dict[str, Callable] = {"EDH": _edh, "SDH": _sdh, "SAH": _sah, "IPH": _iph, "IVH": _ivh}
_SUBTYPE_WEIGHTS = np.array([0.15, 0.25, 0.2, 0.25, 0.15])


def _lesion_plan(rng, normal: bool | None, subtypes: Sequence[str] | None) -> list[str]:
    if subtypes is not None:
        bad = [s for s in subtypes if s not in CATEGORY_IDS]
        if bad:
            raise ValueError(f"unknown subtype(s) {bad}: expected some of {', '.join(SUBTYPES)}")
        if normal and len(subtypes):
            raise ValueError("normal=True contradicts the explicit subtypes given")
        return list(subtypes)
    if normal is None:
        normal = bool(rng.random() < NORMAL_FRACTION)
    if normal:
        return []
    n = int(rng.choice([1, 2, 3], p=[0.45, 0.35, 0.2]))
    return [str(s) for s in rng.choice(SUBTYPES, size=n, replace=False, p=_SUBTYPE_WEIGHTS)]


# ----------------------------------------------------------------------------------------- public
def make_phantom_case(
    seed: int,
    size: int = 256,
    slices: int = 24,
    normal: bool | None = None,
    patient_id: str | None = None,
    subtypes: Sequence[str] | None = None,
) -> PhantomCase:
    """One seeded synthetic head CT in HU with its label mask.

    ``normal=None`` makes ~25% of patients normal; otherwise 1..3 bleeds of distinct random
    subtypes. ``subtypes`` (e.g. ``("EDH", "IVH")``) forces the bleeds, in painting order: later
    bleeds overwrite earlier ones in both image and mask. A bleed that ends up with no voxels (fully
    overwritten, or no room at a tiny ``size``) is left out of ``lesions``.
    """
    if size < MIN_SIZE or slices < MIN_SLICES:
        raise ValueError(f"phantom size {size}x{size}x{slices} too small: need size >= {MIN_SIZE}, "
                         f"slices >= {MIN_SLICES}")
    rng = np.random.default_rng(seed)
    h = _Head(rng, size, slices)
    lf = ndimage.zoom(rng.standard_normal((6, 6)), size / 6, order=3)[:size, :size]
    lf = np.clip(lf / (lf.std() + 1e-6), -2, 2).astype(np.float32) / 2  # smooth field in [-1, 1]
    hu = _paint_anatomy(h, rng, lf)
    mask = np.zeros(h.shape, np.uint8)
    inst = np.zeros(h.shape, np.uint8)
    min_area = min_component_area(size)
    painted: list[tuple[str, str]] = []
    before: list[tuple[slice, np.ndarray, np.ndarray, np.ndarray]] = []  # (slab, hu, mask, inst) pre-bleed
    for subtype in _lesion_plan(rng, normal, subtypes):
        for _ in range(_MAX_TRIES):
            zs, blood, location, halo = PAINTERS[subtype](h, rng)
            blood = blood & ~_specks(blood, min_area)
            if blood.any():
                break
        else:
            continue
        label = CATEGORY_IDS[subtype]
        before.append((zs, hu[:, :, zs].copy(), mask[:, :, zs].copy(), inst[:, :, zs].copy()))
        if halo is not None:  # oedema only where no earlier bleed is
            np.copyto(hu[:, :, zs], np.float32(rng.uniform(10.0, 20.0)), where=halo & (mask[:, :, zs] == 0))
        shift = tuple(int(v) for v in rng.random(2) * size)  # same draws at any size
        blood_hu = rng.uniform(55.0, 85.0) + 3.0 * np.roll(lf, shift, axis=(0, 1))[..., None]
        np.copyto(hu[:, :, zs], blood_hu, where=blood)
        np.copyto(mask[:, :, zs], np.uint8(label), where=blood)
        painted.append((subtype, location))
        np.copyto(inst[:, :, zs], np.uint8(len(painted)), where=blood)
        _unpaint_specks(hu, mask, inst, before, min_area)
    # scanner noise from its own stream: the same for a patient whatever bleeds were painted
    noise_rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(1,)))
    hu += noise_rng.standard_normal(h.shape, dtype=np.float32) * np.float32(noise_rng.uniform(3.0, 6.0))

    inst, lesions = _final_lesions(inst, painted)
    spacing = (h.s, h.s, h.sz)
    affine = np.diag([h.s, h.s, h.sz, 1.0])
    affine[:3, 3] = (-(size - 1) / 2 * h.s, -(size - 1) / 2 * h.s, -0.35 * HEAD_HEIGHT_MM)
    keep = ("intracranial", "skull", "skull_base", "ventricles", "csf", "parenchyma", "posterior_fossa")
    return PhantomCase(
        patient_id=patient_id or f"phantom_seed{seed}",
        volume=hu,
        mask=mask,
        affine=affine,
        spacing=spacing,
        lesions=lesions,
        anatomy={k: h.parts[k] for k in keep},
        instances=inst,
    )


def min_component_area(size: int) -> int:
    """Smallest per-slice 8-connected lesion component (pixels) in a ``size`` x ``size`` phantom.

    ``max(MIN_COMPONENT_PX, round(MIN_COMPONENT_FRACTION * size**2))``: about 11 mm^2 (a 3.3 mm
    square) at any size, floored at 6 px for small slices (6 px at 64..180, 13 at 256,
    52 at 512)."""
    return max(MIN_COMPONENT_PX, int(round(MIN_COMPONENT_FRACTION * size * size)))


def _specks(region: np.ndarray, min_area: int) -> np.ndarray:
    """The voxels of ``region`` (bool X, Y, Z) in per-slice 8-connected components under min_area."""
    out = np.zeros(region.shape, bool)
    box = ndimage.find_objects(region.view(np.uint8))  # labelling only the bounding box is ~5x faster
    if not box:
        return out
    labels, _ = ndimage.label(region[box[0]], structure=_IN_PLANE_8)
    small = np.bincount(labels.ravel()) < min_area
    small[0] = False
    out[box[0]] = small[labels]
    return out


def _unpaint_specks(hu, mask, inst, before, min_area: int) -> None:
    """Give every speck of an earlier bleed back to what it held before that bleed was painted.

    A later bleed can cut an earlier one into pieces. Undoing a speck of bleed i may uncover an even
    earlier bleed j < i there, so bleeds are visited latest first and each is fixed once. The pixels
    undone were never touched after bleed i (they still belong to it), so the restore is exact."""
    for i in range(len(before) - 1, 0, -1):  # the newest bleed was painted whole: nothing cut it
        zs, hu0, mask0, inst0 = before[i - 1]
        speck = _specks(inst[:, :, zs] == i, min_area)
        if speck.any():
            hu[:, :, zs][speck] = hu0[speck]
            mask[:, :, zs][speck] = mask0[speck]
            inst[:, :, zs][speck] = inst0[speck]


def _final_lesions(inst: np.ndarray, painted: list[tuple[str, str]]) -> tuple[np.ndarray, list[dict]]:
    """Lesion records from what is left in the instance map; renumbers if one was overwritten."""
    z = inst.shape[2]
    counts = np.stack([np.bincount(inst[:, :, k].ravel(), minlength=len(painted) + 1) for k in range(z)])
    lesions, remap = [], np.zeros(len(painted) + 1, np.uint8)
    for i, (subtype, location) in enumerate(painted, start=1):
        ks = np.flatnonzero(counts[:, i])
        if ks.size == 0:
            continue
        lesions.append({"subtype": subtype, "location": location, "slices": (int(ks[0]), int(ks[-1])),
                        "label": CATEGORY_IDS[subtype], "voxels": int(counts[:, i].sum())})
        remap[i] = len(lesions)
    if len(lesions) != len(painted):
        inst = remap[inst]
    return inst, lesions


def slice_labels(mask: np.ndarray) -> np.ndarray:
    """(slices, 6) uint8 [any, EDH, SDH, SAH, IPH, IVH] presence per axial slice of a 3D label mask."""
    mask = np.asarray(mask)
    if mask.ndim != 3:
        raise ValueError(f"slice_labels needs a 3D (X, Y, Z) label mask, got shape {mask.shape}")
    if not np.issubdtype(mask.dtype, np.integer):
        if not np.array_equal(mask, np.round(mask)):
            raise ValueError(f"label mask must hold integers 0..5, got non-integer {mask.dtype} values")
        mask = mask.astype(np.int64)
    if mask.size and (mask.min() < 0 or mask.max() > len(SUBTYPES)):
        raise ValueError(f"label mask values must be 0..{len(SUBTYPES)}, got {mask.min()}..{mask.max()}")
    out = np.zeros((mask.shape[2], len(LABELS)), np.uint8)
    for name in SUBTYPES:
        out[:, CATEGORY_IDS[name]] = (mask == CATEGORY_IDS[name]).any(axis=(0, 1))
    out[:, 0] = out[:, 1:].max(axis=1)
    return out


def patient_seed(seed: int, index: int) -> int:
    """The seed of patient ``index`` in a dataset drawn with ``seed``; independent of the dataset size."""
    if seed < 0 or index < 0:
        raise ValueError(f"seed and patient index must be >= 0, got seed={seed}, index={index}")
    return int(np.random.SeedSequence(seed, spawn_key=(index,)).generate_state(1, np.uint64)[0])


def write_phantom_dataset(out_dir, patients: int, seed: int, size: int = 256, slices: int = 24) -> list[str]:
    """Write a phantom dataset; returns the patient ids ("phantom_000", ...).

    Layout: volumes/<pid>.nii.gz (int16 HU), masks/<pid>.nii.gz (uint8, same shape and affine),
    slice_labels.csv (patient_id, slice_idx, any, EDH..IVH; slice_idx along the last axis),
    lesions.csv (patient_id, lesion, subtype, location, first_slice, last_slice) and PROVENANCE.md.
    Every file is written to a temp file in its folder, then renamed.
    """
    if patients < 1:
        raise ValueError(f"patients must be >= 1, got {patients}")
    out = Path(out_dir)
    for sub in ("volumes", "masks"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    label_rows, lesion_rows, ids = [], [], []
    for index in range(patients):
        pid = f"phantom_{index:03d}"
        case = make_phantom_case(patient_seed(seed, index), size=size, slices=slices, patient_id=pid)
        hu16 = np.clip(np.rint(case.volume), -1024, 3071).astype(np.int16)
        _save_nifti_atomic(hu16, case.affine, out / "volumes" / f"{pid}.nii.gz")
        _save_nifti_atomic(case.mask, case.affine, out / "masks" / f"{pid}.nii.gz")
        label_rows += [[pid, k, *map(int, row)] for k, row in enumerate(slice_labels(case.mask))]
        lesion_rows += [[pid, i, les["subtype"], les["location"], *les["slices"]] for i, les in enumerate(case.lesions)]
        ids.append(pid)
    atomic_write_csv(out / "slice_labels.csv", ["patient_id", "slice_idx", *LABELS], label_rows)
    atomic_write_csv(out / "lesions.csv",
                      ["patient_id", "lesion", "subtype", "location", "first_slice", "last_slice"], lesion_rows)
    atomic_write_text(out / "PROVENANCE.md", (
        "# Provenance\n\nSynthetic data: every volume and mask here was generated by "
        f"`hemo_mtl.data.phantom` (generator version {GENERATOR_VERSION}, hemo_mtl {__version__}) with "
        f"seed {seed}: {patients} patients of {size}x{size}x{slices} voxels. No patient data is involved; masks and labels are exact by "
        "construction, and patient k is the same for any dataset size drawn with the same seed.\n"))
    return ids


# ----------------------------------------------------------------------------------------- I/O
def _save_nifti_atomic(data: np.ndarray, affine: np.ndarray, path: Path) -> None:
    import nibabel as nib

    img = nib.Nifti1Image(data, affine)
    img.header.set_xyzt_units("mm")
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    with atomic_path(path) as tmp:
        nib.save(img, str(tmp))


