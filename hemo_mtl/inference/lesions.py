"""lesions.csv: one row per predicted 3D lesion (``postprocess.label_lesions``) with its extent, volume,
mean probability of its class and mean uncertainty; image folders: 2D lesions per picture.

``subtype`` is the lesion's mask value by ``LABEL_NAMES``: EDH .. IVH, or ICH (intracranial hemorrhage,
subtype unknown) for the bleed of a binary segmentation head, whose probability is its P(bleed)."""
from __future__ import annotations

import numpy as np
import pandas as pd

from ..categories import CATEGORY_NAMES, LABEL_NAMES
from .postprocess import label_lesions

COLUMNS = ("lesion_id", "subtype", "slice_first", "slice_last", "voxels", "volume_ml", "mean_probability",
           "max_probability", "uncertainty")


def _means(ids: np.ndarray, n: int, values: np.ndarray, voxels: np.ndarray) -> np.ndarray:
    return np.bincount(ids.ravel(), weights=values.ravel().astype(np.float64), minlength=n + 1)[1:] / voxels


def lesion_rows(mask: np.ndarray, spacing=None, prob: np.ndarray | None = None,
                uncertainty: np.ndarray | None = None, labels=tuple(CATEGORY_NAMES)) -> list[dict]:
    """Rows for a (X, Y, Z) label volume; ``prob`` (X, Y, Z, C) class probabilities whose channel c is
    P(mask value ``labels[c]``) (``ScanPrediction.seg_labels``: the five subtypes, or P(bleed) alone
    for a binary head), ``uncertainty`` (X, Y, Z); either may be None (its columns then empty), as are
    the probability columns of a lesion whose label has no channel. Lesions numbered from 1, label by label."""
    ids, subtypes = label_lesions(mask)
    n = len(subtypes)
    if not n:
        return []
    vol = np.asarray(mask).reshape(ids.shape if ids.ndim == 3 else (*ids.shape, 1))
    ids3 = ids.reshape(vol.shape)
    voxels = np.bincount(ids3.ravel(), minlength=n + 1)[1:].astype(np.float64)
    z = np.broadcast_to(np.arange(ids3.shape[2])[None, None], ids3.shape)
    hit = ids3 > 0
    first = np.full(n + 1, np.iinfo(np.int64).max)
    last = np.full(n + 1, -1)
    np.minimum.at(first, ids3[hit], z[hit])
    np.maximum.at(last, ids3[hit], z[hit])
    voxel_ml = float(np.prod([float(s) for s in spacing])) / 1000.0 if spacing is not None else None
    subtype_of = np.asarray(subtypes)
    mean_p = max_p = None
    if prob is not None:
        channels = {int(v): c for c, v in enumerate(labels)}
        prob = np.asarray(prob)
        if prob.shape[-1] != len(channels):
            raise ValueError(f"probabilities have {prob.shape[-1]} channels, labels {tuple(labels)} "
                             f"name {len(channels)}")
        prob = prob.reshape(*ids3.shape, len(channels))
        mean_p, max_p = np.full(n, np.nan), np.full(n, np.nan)
        for s in np.unique(subtype_of):
            if int(s) not in channels:
                continue
            sel = np.flatnonzero(subtype_of == s)
            channel = prob[..., channels[int(s)]]
            mean_p[sel] = _means(ids3, n, channel, voxels)[sel]
            peak = np.zeros(n + 1)
            np.maximum.at(peak, ids3[hit], channel[hit])
            max_p[sel] = peak[1:][sel]
    mean_u = _means(ids3, n, np.asarray(uncertainty).reshape(ids3.shape), voxels) if uncertainty is not None else None
    rows = []
    for i in range(n):
        rows.append({
            "lesion_id": i + 1, "subtype": LABEL_NAMES[subtypes[i]],
            "slice_first": int(first[i + 1]), "slice_last": int(last[i + 1]), "voxels": int(voxels[i]),
            "volume_ml": None if voxel_ml is None else float(voxels[i]) * voxel_ml,
            "mean_probability": None if mean_p is None or np.isnan(mean_p[i]) else float(mean_p[i]),
            "max_probability": None if max_p is None or np.isnan(max_p[i]) else float(max_p[i]),
            "uncertainty": None if mean_u is None else float(mean_u[i]),
        })
    return rows


def lesion_table(mask, spacing=None, prob=None, uncertainty=None, names: list[str] | None = None,
                 labels=tuple(CATEGORY_NAMES)) -> pd.DataFrame:
    """lesions.csv as a DataFrame: a (X, Y, Z) volume, or a list of 2D masks (image folders: one picture
    per row group, ``file`` column, slice columns = the picture's index, no volume); ``labels`` as in
    ``lesion_rows``."""
    if isinstance(mask, np.ndarray):
        rows = lesion_rows(mask, spacing, prob, uncertainty, labels)
        return pd.DataFrame(rows, columns=list(COLUMNS))
    rows = []
    for k, m in enumerate(mask):
        part = lesion_rows(np.asarray(m)[..., None], None,
                           None if prob is None else np.asarray(prob[k])[:, :, None],
                           None if uncertainty is None else np.asarray(uncertainty[k])[..., None], labels)
        for r in part:
            r.update(lesion_id=len(rows) + 1, slice_first=k, slice_last=k)
            r["file"] = names[k] if names else str(k)
            rows.append(r)
    return pd.DataFrame(rows, columns=[*COLUMNS, "file"])
