"""Dataset analysis in the manner of the Hemorica paper, for any converted dataset.

Counts per subtype (slices and patients), conditional co-occurrence P(subtype m | subtype n) at slice
and patient level, HU histograms of each subtype against normal brain, where lesions sit (a
normalised heatmap per subtype), and lesion areas (mm^2, per 2D component) and volumes (mL, per
patient and subtype). Only labels that are known count: unknown is not negative. Mask pixels of
unknown subtype (a binary mask on a slice with several subtypes) are counted under ``UNKNOWN_NAME``
(their HU histogram, location, component areas and volumes), never in a subtype's.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from ..categories import SUBTYPES, UNKNOWN_SUBTYPE
from .instances import mask_to_instances
from .io import VolumeCache, read_slice
from .manifest import parse_spacing

HU_BINS = np.arange(-20, 121, 2)  # HU; blood 50..90, brain 20..45
BRAIN_HU = (15.0, 45.0)
UNKNOWN_NAME = "subtype unknown"


def label_counts(frame: pd.DataFrame) -> dict:
    out = {"patients": int(frame["patient_id"].nunique()), "slices": int(len(frame))}
    for name in ("any",) + SUBTYPES:
        known = frame[name].notna()
        out[f"slices/{name}"] = int(frame.loc[known, name].sum())
        out[f"patients/{name}"] = int(frame.loc[known & (frame[name] == 1), "patient_id"].nunique())
    return out


def conditional_table(labels: pd.DataFrame) -> pd.DataFrame:
    """P(row subtype m | column subtype n) = #(m and n) / #n over the rows whose labels are known."""
    known = labels[list(SUBTYPES)].dropna().astype(int)
    co = known.T @ known
    n = np.diag(co).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        table = co.to_numpy() / n[None, :]
    return pd.DataFrame(table, index=SUBTYPES, columns=SUBTYPES)


def image_statistics(frame: pd.DataFrame, heatmap_size: int = 64, max_slices: int | None = None) -> dict:
    """HU histograms, location heatmaps and lesion sizes from the masks (slices with masks only).

    Keys per subtype plus ``UNKNOWN_NAME``; ``slices_with_mask`` counts the masks read (empty ones
    included), ``slices_with_empty_mask`` and ``slices_with_unknown_subtype_mask`` those kinds.
    """
    cache = VolumeCache(1e9)
    rows = frame[frame["has_mask"]]
    if max_slices is not None:
        rows = rows.iloc[:max_slices]
    names = SUBTYPES + (UNKNOWN_NAME,)
    values = {**{name: i for i, name in enumerate(SUBTYPES, start=1)}, UNKNOWN_NAME: UNKNOWN_SUBTYPE}
    hist = {name: np.zeros(len(HU_BINS) - 1, np.int64) for name in ("normal brain",) + names}
    heat = {name: np.zeros((heatmap_size, heatmap_size), np.float64) for name in names}
    areas = {name: [] for name in names}
    volumes = {name: {} for name in names}
    n_empty = n_unknown = 0
    for r in rows.itertuples(index=False):
        mask = read_slice(r.mask, "mask", cache)
        spacing = parse_spacing(r.spacing)
        if r.kind == "hu":
            hu = read_slice(r.image, "hu", cache)
            brain = (mask == 0) & (hu >= BRAIN_HU[0]) & (hu <= BRAIN_HU[1])
            hist["normal brain"] += np.histogram(hu[brain], HU_BINS)[0]
            for name, value in values.items():
                if (mask == value).any():
                    hist[name] += np.histogram(hu[mask == value], HU_BINS)[0]
        if not mask.any():
            n_empty += 1
            continue
        n_unknown += bool((mask == UNKNOWN_SUBTYPE).any())
        h, w = mask.shape
        ys = (np.arange(h) * heatmap_size // h)[:, None]
        xs = (np.arange(w) * heatmap_size // w)[None, :]
        _, labels, inst = mask_to_instances(mask)
        components = [(SUBTYPES[label - 1], m) for label, m in zip(labels, inst)] + \
            [(UNKNOWN_NAME, m) for m in mask_to_instances((mask == UNKNOWN_SUBTYPE).astype(np.uint8))[2]]
        pixel_mm2 = spacing[0] * spacing[1] if spacing else None
        voxel_ml = spacing[0] * spacing[1] * spacing[2] / 1000.0 if spacing else None
        for name, m in components:
            np.add.at(heat[name], (np.broadcast_to(ys, m.shape)[m > 0], np.broadcast_to(xs, m.shape)[m > 0]), 1.0)
            if pixel_mm2:
                areas[name].append(float(m.sum() * pixel_mm2))
            if voxel_ml:
                volumes[name][r.patient_id] = volumes[name].get(r.patient_id, 0.0) + float(m.sum() * voxel_ml)
    return {"hu_bins": HU_BINS.tolist(), "hu_hist": {k: v.tolist() for k, v in hist.items()},
            "heatmaps": heat, "areas_mm2": areas, "volumes_ml": {k: list(v.values()) for k, v in volumes.items()},
            "slices_with_mask": int(len(rows)), "slices_with_empty_mask": n_empty,
            "slices_with_unknown_subtype_mask": n_unknown}


def summarise(values: list[float]) -> dict:
    if not values:
        return {"n": 0}
    a = np.asarray(values)
    return {"n": int(a.size), "mean": float(a.mean()), "median": float(np.median(a)),
            "p5": float(np.percentile(a, 5)), "p95": float(np.percentile(a, 95)), "max": float(a.max())}
