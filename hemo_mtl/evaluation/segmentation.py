"""Overlap metrics (Dice, IoU, precision, recall), Hausdorff 95 and lesion volumes from label masks.

Everything is computed from per-slice confusion counts (tp, fp, fn per label), made with one
bincount per chunk of slices, so thousands of 512x512 slices need only a (N, 6, 3) count array.
Conventions are listed in ``CONVENTIONS`` and written into every report.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from scipy import ndimage

from ..categories import LABELS, SUBTYPES, UNKNOWN_SUBTYPE

NUM_CLASSES = len(SUBTYPES) + 1  # background + subtypes
COUNT_FIELDS = ("tp", "fp", "fn")
OVERLAP_METRICS = ("dice", "iou", "precision", "recall")


CONVENTIONS = (
    'Segmentation: `any` is the binary hemorrhage mask (label > 0 in truth vs. in prediction), whatever the subtype.',
    'seg/<label>/dice (iou, precision, recall) is global: counts pooled over all voxels of the split, then one ratio.',
    'dice_per_slice and seg3d/<label>/dice are means over slices / volumes (nnU-Net convention): a unit with empty truth and empty prediction is undefined, excluded from the mean and counted in n_empty_both; empty truth with a non-empty prediction scores 0 (n_empty_gt); non-empty truth with an empty prediction scores 0 (n_empty_pred). Precision (recall) of a unit with an empty prediction (truth) is excluded likewise.',
    'HD95 (mm): surfaces = mask XOR its erosion; the larger of the two directed 95th-percentile surface distances (as MONAI compute_hausdorff_distance); undefined (excluded) when either mask is empty.',
    'Volume (mL) = voxel count x sx x sy x sz / 1000 per volume; errors are prediction - truth; Bland-Altman limits = bias +/- 1.96 SD (ddof=1); mean_rel_err = |diff| / truth over volumes with non-empty truth.',
    'Truth pixels of unknown subtype (a binary mask on a slice with several subtypes) are bleed for `any` and left out of every subtype\'s counts; slices (volumes) holding them are left out of the subtype means over slices (volumes) and of the subtype volumes, and counted in n_subtype_unknown.',
    'Predicted pixels of unknown subtype (the bleed of a binary segmentation head) are bleed for `any` and, for each subtype, pixels not predicted as that subtype.',
)

def _as_array(x) -> np.ndarray:
    if hasattr(x, "detach"):  # a torch tensor, on any device; torch itself is not needed here
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def confusion_counts(gt, pred, chunk: int = 8) -> np.ndarray:
    """Per-slice counts (N, 6 labels [any + subtypes], 3 [tp, fp, fn]) of label masks (N, H, W).

    ``gt`` holds 0..5 or ``UNKNOWN_SUBTYPE`` (bleed of unknown subtype: counted for ``any``, left
    out of every subtype), ``pred`` 0..5 or ``UNKNOWN_SUBTYPE`` (a binary head's bleed: counted for
    ``any``, and for each subtype a pixel not predicted as it) (numpy or torch; a 2D pair is one slice). One bincount
    per chunk of slices (small chunks stay in cache: ~3 ms per 512x512 slice on one core).
    """
    gt, pred = _as_array(gt), _as_array(pred)
    if gt.shape != pred.shape:
        raise ValueError(f"mask shapes differ: truth {gt.shape} vs prediction {pred.shape}")
    if gt.ndim == 2:
        gt, pred = gt[None], pred[None]
    if gt.ndim != 3:
        raise ValueError(f"label masks must be (H, W) or (N, H, W), got {gt.shape}")
    for name, m in (("truth", gt), ("prediction", pred)):
        if m.size and (m.min() < 0 or m.max() > UNKNOWN_SUBTYPE):
            raise ValueError(f"{name} mask holds labels outside 0..{UNKNOWN_SUBTYPE}: min {m.min()}, max {m.max()}")
    kg = kp = UNKNOWN_SUBTYPE + 1  # rows (truth) and columns (prediction): background, subtypes, unknown
    cm = np.zeros((gt.shape[0], kg, kp), np.int64)  # cm[n, truth, pred]
    for s in range(0, gt.shape[0], chunk):
        g, p = gt[s:s + chunk].astype(np.intp), pred[s:s + chunk].astype(np.intp)
        n = g.shape[0]
        idx = (np.arange(n, dtype=np.intp) * (kg * kp))[:, None, None] + g * kp + p
        cm[s:s + n] = np.bincount(idx.ravel(), minlength=n * kg * kp).reshape(n, kg, kp)
    known = cm[:, :NUM_CLASSES]  # truth rows whose subtype is known
    counts = np.zeros((cm.shape[0], len(LABELS), 3), np.int64)
    diag = np.diagonal(known, axis1=1, axis2=2)
    counts[:, 1:, 0] = diag[:, 1:]
    counts[:, 1:, 1] = known.sum(1)[:, 1:NUM_CLASSES] - diag[:, 1:]  # predicted c, truth known and not c
    counts[:, 1:, 2] = known.sum(2)[:, 1:] - diag[:, 1:]  # truth c, predicted not c
    counts[:, 0, 0] = cm[:, 1:, 1:].sum((1, 2))
    counts[:, 0, 1] = cm[:, 0, 1:].sum(1)
    counts[:, 0, 2] = cm[:, 1:, 0].sum(1)
    return counts


def subtype_known(gt) -> np.ndarray:
    """bool (N,) per slice of label masks (N, H, W) (or one (H, W)): no pixel of unknown subtype."""
    gt = _as_array(gt)
    gt = gt[None] if gt.ndim == 2 else gt
    return ~(gt == UNKNOWN_SUBTYPE).reshape(len(gt), -1).any(axis=1)


def overlap_from_counts(counts: np.ndarray) -> dict[str, np.ndarray]:
    """Dice, IoU, precision, recall from counts (..., 3); NaN where the denominator is 0."""
    c = np.asarray(counts, dtype=np.float64)
    tp, fp, fn = c[..., 0], c[..., 1], c[..., 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        return {
            "dice": np.where(tp + fp + fn > 0, 2 * tp / (2 * tp + fp + fn), np.nan),
            "iou": np.where(tp + fp + fn > 0, tp / (tp + fp + fn), np.nan),
            "precision": np.where(tp + fp > 0, tp / (tp + fp), np.nan),
            "recall": np.where(tp + fn > 0, tp / (tp + fn), np.nan),
        }


def _nanmean(x: np.ndarray) -> float:
    x = x[np.isfinite(x)]
    return float(x.mean()) if x.size else math.nan


def _unit_metrics(counts: np.ndarray, prefix: str, suffix: str, known: np.ndarray | None = None) -> dict[str, float]:
    """Mean-over-units metrics and the empty-case counts, per label; ``known`` (units,) bool: units
    whose subtypes are known (the others count for ``any`` only)."""
    out: dict[str, float] = {}
    per = overlap_from_counts(counts)
    gt_empty = counts[..., 0] + counts[..., 2] == 0
    pred_empty = counts[..., 0] + counts[..., 1] == 0
    known = np.ones(len(counts), bool) if known is None else np.asarray(known, bool)
    for j, label in enumerate(LABELS):
        use = np.ones(len(counts), bool) if j == 0 else known
        for name, vals in per.items():
            out[f"{prefix}/{label}/{name}{suffix}"] = _nanmean(vals[use, j])
        out[f"{prefix}/{label}/n{suffix}"] = float(use.sum())
        out[f"{prefix}/{label}/n_empty_both{suffix}"] = float(np.sum(gt_empty[use, j] & pred_empty[use, j]))
        out[f"{prefix}/{label}/n_empty_gt{suffix}"] = float(np.sum(gt_empty[use, j] & ~pred_empty[use, j]))
        out[f"{prefix}/{label}/n_empty_pred{suffix}"] = float(np.sum(~gt_empty[use, j] & pred_empty[use, j]))
    return out


def group_counts(counts: np.ndarray, group_ids: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Sum per-slice counts per group (volume): (sorted unique ids, (G, ...) summed counts)."""
    ids = np.asarray([str(g) for g in group_ids])
    if len(ids) != len(counts):
        raise ValueError(f"{len(ids)} volume ids for {len(counts)} slices")
    uniq, inv = np.unique(ids, return_inverse=True)
    summed = np.zeros((len(uniq),) + counts.shape[1:], counts.dtype)
    np.add.at(summed, inv, counts)
    return uniq, summed


def volumes_ml(counts: np.ndarray, voxel_ml: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(truth mL, predicted mL), each (N, 6), from per-slice counts and per-slice voxel volume (mL)."""
    v = np.asarray(voxel_ml, dtype=np.float64).reshape(-1, 1)
    gt = (counts[..., 0] + counts[..., 2]) * v
    pred = (counts[..., 0] + counts[..., 1]) * v
    return gt, pred


def volume_agreement(gt_ml: np.ndarray, pred_ml: np.ndarray) -> dict[str, float]:
    """Absolute/relative error and Bland-Altman summary of one label's per-volume volumes (mL)."""
    gt_ml, pred_ml = np.asarray(gt_ml, np.float64), np.asarray(pred_ml, np.float64)
    diff = pred_ml - gt_ml
    n = diff.size
    sd = float(np.std(diff, ddof=1)) if n > 1 else math.nan
    bias = float(diff.mean()) if n else math.nan
    pos = gt_ml > 0
    return {
        "mae_ml": float(np.abs(diff).mean()) if n else math.nan,
        "bias_ml": bias,
        "sd_diff_ml": sd,
        "loa_low_ml": bias - 1.96 * sd,
        "loa_high_ml": bias + 1.96 * sd,
        "mean_rel_err": float((np.abs(diff[pos]) / gt_ml[pos]).mean()) if pos.any() else math.nan,
        "gt_mean_ml": float(gt_ml.mean()) if n else math.nan,
        "pred_mean_ml": float(pred_ml.mean()) if n else math.nan,
        "n": float(n),
    }


def segmentation_metrics(slice_counts: np.ndarray, volume_ids: Sequence[str] | None = None,
                         voxel_ml: Sequence[float] | np.ndarray | None = None,
                         hd95: dict[str, Sequence[float]] | None = None,
                         slice_subtype_known: Sequence[bool] | np.ndarray | None = None) -> dict[str, float]:
    """Flat metric dict from per-slice counts (N, 6, 3) (see module docstring for conventions).

    ``volume_ids`` (one per slice) adds per-volume ``seg3d/...`` keys; with ``voxel_ml`` (one per
    slice, mL per voxel) also ``volume/<label>/...``. ``hd95`` maps label -> per-volume distances.
    ``slice_subtype_known`` (one bool per slice, ``subtype_known``; default all True): slices with
    truth of unknown subtype, and the volumes holding one, count for ``any`` only.
    """
    counts = np.asarray(slice_counts, dtype=np.int64)
    if counts.ndim != 3 or counts.shape[1:] != (len(LABELS), 3):
        raise ValueError(f"slice counts must be (N, {len(LABELS)}, 3), got {counts.shape}")
    known = np.ones(len(counts), bool) if slice_subtype_known is None else np.asarray(slice_subtype_known, bool)
    if known.shape != (len(counts),):
        raise ValueError(f"slice_subtype_known must hold one value per slice ({len(counts)}), got {known.shape}")
    out: dict[str, float] = {}
    pooled = overlap_from_counts(counts.sum(0))
    for j, label in enumerate(LABELS):
        for name, vals in pooled.items():
            out[f"seg/{label}/{name}"] = float(vals[j])
    out.update(_unit_metrics(counts, "seg", "_per_slice", known))
    out["seg/any/n_subtype_unknown"] = float((~known).sum())
    if volume_ids is not None:
        _, vol_counts = group_counts(counts, volume_ids)
        vol_known = _volume_known(known, volume_ids)
        out.update(_unit_metrics(vol_counts, "seg3d", "", vol_known))
        out["seg3d/any/n_subtype_unknown"] = float((~vol_known).sum())
        if voxel_ml is not None:
            voxel_ml = np.asarray(voxel_ml, np.float64)
            if voxel_ml.shape != (len(counts),):
                raise ValueError(f"voxel_ml must hold one value per slice ({len(counts)}), got {voxel_ml.shape}")
            gt_ml, pred_ml = volumes_ml(counts, voxel_ml)
            _, gt_vol = group_counts(gt_ml, volume_ids)
            _, pred_vol = group_counts(pred_ml, volume_ids)
            for j, label in enumerate(LABELS):
                use = np.ones(len(gt_vol), bool) if j == 0 else vol_known
                for k, v in volume_agreement(gt_vol[use, j], pred_vol[use, j]).items():
                    out[f"volume/{label}/{k}"] = v
    for label, vals in (hd95 or {}).items():
        arr = np.asarray(vals, np.float64)
        out[f"seg3d/{label}/hd95"] = _nanmean(arr)
        out[f"seg3d/{label}/n_hd95"] = float(np.isfinite(arr).sum())
    return out


def _volume_known(slice_known: np.ndarray, volume_ids: Sequence[str]) -> np.ndarray:
    """Per volume (sorted ids, as ``group_counts``): do all its slices know their subtypes?"""
    _, unknown = group_counts((~np.asarray(slice_known, bool)).astype(np.int64), volume_ids)
    return unknown == 0


def volume_table(slice_counts: np.ndarray, volume_ids: Sequence[str], voxel_ml,
                 slice_subtype_known: Sequence[bool] | np.ndarray | None = None) -> dict[str, object]:
    """Per-volume truth/predicted mL per label, for Bland-Altman plots and CSV export; subtype
    columns are NaN for volumes holding truth of unknown subtype."""
    counts = np.asarray(slice_counts, dtype=np.int64)
    gt_ml, pred_ml = volumes_ml(counts, voxel_ml)
    ids, gt_vol = group_counts(gt_ml, volume_ids)
    _, pred_vol = group_counts(pred_ml, volume_ids)
    if slice_subtype_known is not None:
        unknown = ~_volume_known(slice_subtype_known, volume_ids)
        gt_vol[unknown, 1:] = np.nan
        pred_vol[unknown, 1:] = np.nan
    return {"volume_ids": ids, "gt_ml": gt_vol, "pred_ml": pred_vol, "labels": LABELS}


def _surface(mask: np.ndarray) -> np.ndarray:
    return mask & ~ndimage.binary_erosion(mask)


def hausdorff_distance(gt: np.ndarray, pred: np.ndarray, spacing: Sequence[float] | None = None,
                       percentile: float = 95.0) -> float:
    """Symmetric percentile Hausdorff distance (mm with ``spacing``) of two binary masks (any dim).

    max(directed percentile truth->prediction, prediction->truth) over surface voxels; NaN when
    either mask is empty.
    """
    gt, pred = np.asarray(gt).astype(bool), np.asarray(pred).astype(bool)
    if gt.shape != pred.shape:
        raise ValueError(f"mask shapes differ: truth {gt.shape} vs prediction {pred.shape}")
    if not gt.any() or not pred.any():
        return math.nan
    sg, sp = _surface(gt), _surface(pred)
    d_to_p = ndimage.distance_transform_edt(~sp, sampling=spacing)
    d_to_g = ndimage.distance_transform_edt(~sg, sampling=spacing)
    return float(max(np.percentile(d_to_p[sg], percentile), np.percentile(d_to_g[sp], percentile)))


def hd95_per_label(gt: np.ndarray, pred: np.ndarray, spacing: Sequence[float] | None = None) -> dict[str, float]:
    """HD95 of every label (``any`` and each subtype) of one label-mask volume; NaN for the subtypes
    when the truth holds pixels of unknown subtype."""
    gt, pred = np.asarray(gt), np.asarray(pred)
    out = {"any": hausdorff_distance(gt > 0, pred > 0, spacing)}
    unknown = bool((gt == UNKNOWN_SUBTYPE).any())
    for c, label in enumerate(SUBTYPES, start=1):
        out[label] = math.nan if unknown else hausdorff_distance(gt == c, pred == c, spacing)
    return out
