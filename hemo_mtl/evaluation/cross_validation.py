"""Patient-wise k-fold cross-validation of one recipe, scored through the predictor users run.

Protocol (``tools/cross_validate.py``): the patients are dealt once into k folds, stratified by their
rarest subtype and seeded (``data.splits.make_splits``), and the folds are persisted. Run ``i`` trains
on k-2 folds, chooses its epoch-free settings (the cascade gate, thresholds) on fold ``i+1`` and is
scored on fold ``i`` (``data.split.held_out_as: test``), so every patient is tested exactly once by a
model that never saw it, and no threshold is tuned on the patients it is reported on.

Each fold's model predicts its validation and test patients with ``inference.Predictor`` (the
preprocessing, cascade gate and calibration of ``tools/predict.py``), slice by slice as the manifest
lists them. From those predictions:

- slice level (label ``any``): AUC, F1, sensitivity and specificity at 0.5 and at the threshold tuned
  on the fold's validation patients (Youden J), via ``evaluation.classification``;
- patient level (the recipe's patient score: the highest slice p(any), or with ``eval.patient_window`` k
  the highest mean of k adjacent slices): ICH patients found and normal patients flagged, at 0.5 and at the
  highest threshold that still finds every ICH patient of the validation fold (a fold holds three or
  four patients: Youden J over so few points is a coin toss, while "miss no bleeding patient" is the
  screening rule; with no ICH patient in the validation fold, the slice threshold);
- segmentation, on test patients with masks: Dice and IoU of the ``any`` bleed mask over their masked
  bleed slices (counts pooled, and the mean over slices), and the predicted bleed area on slices whose
  mask is empty (false-positive pixels per slice, and the share of such slices with any).

Fold figures are summarised as mean and sample standard deviation over folds where defined; the
out-of-fold predictions of all patients also give one pooled slice AUC, the pooled patient AUC and the
share of normal patients scored below every ICH patient (the patient ROC's specificity at sensitivity 1:
a ranking figure over five fold models, not a call at a threshold chosen in advance).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from ..categories import ANY, LABELS
from .classification import (aggregate_by_patient, binary_metrics, choose_threshold, classification_metrics,
                             tune_thresholds)
from .segmentation import confusion_counts, overlap_from_counts

SLICE_KEYS = ("auc", "f1", "recall", "specificity")
PREDICTION_COLUMNS = ("patient_id", "study_id", "slice_idx", "role", "any", "p_any", "has_mask", "gt_pixels",
                      "pred_pixels", "tp", "fp", "fn")


def fold_of(folds: Sequence[Sequence[str]]) -> dict[str, int]:
    """Patient -> fold index (a LeakageError is raised by ``check_leakage`` before this is reached)."""
    return {str(p): i for i, fold in enumerate(folds) for p in fold}


def scan_from_rows(rows: pd.DataFrame):
    """One patient's (study's) slices, in slice order, as the ``inference.Scan`` the predictor reads."""
    from ..data.io import read_slice
    from ..inference.predictor import Scan

    rows = rows.sort_values("slice_idx")
    kind = str(rows["kind"].iloc[0])
    slices = [read_slice(ref, kind) for ref in rows["image"]]
    if kind == "hu":
        return Scan(f"{rows['patient_id'].iloc[0]}", "hu", np.stack(slices, axis=2), np.eye(4))
    return Scan(f"{rows['patient_id'].iloc[0]}", "display", slices, None,
                [Path(str(ref)).name for ref in rows["image"]])


def predict_patients(predictor, frame: pd.DataFrame, roles: Mapping[str, str]) -> pd.DataFrame:
    """One row per slice of the patients in ``roles`` (patient -> "val" | "test"): truth, p(any) and,
    where the slice has a mask, the bleed confusion counts of the predicted mask (``any``)."""
    from ..data.io import read_slice

    out = []
    for pid, role in sorted(roles.items()):
        for _, rows in frame[frame["patient_id"] == pid].groupby("study_id", sort=True):
            rows = rows.sort_values("slice_idx")
            pred = predictor.predict(scan_from_rows(rows))
            masks = pred.mask if isinstance(pred.mask, list) else [pred.mask[:, :, k] for k in range(pred.mask.shape[2])]
            for k, (_, row) in enumerate(rows.iterrows()):
                rec = {"patient_id": pid, "study_id": str(row["study_id"]), "slice_idx": int(row["slice_idx"]),
                       "role": role,
                       "any": float(row["any"]) if pd.notna(row["any"]) else math.nan,
                       "p_any": float(pred.cls_prob[k, ANY]), "has_mask": bool(row["has_mask"]),
                       "pred_pixels": int((np.asarray(masks[k]) > 0).sum())}
                if row["has_mask"]:
                    gt = read_slice(row["mask"], "mask")
                    c = confusion_counts(gt[None], np.asarray(masks[k])[None])[0, ANY]
                    rec.update(gt_pixels=int((gt > 0).sum()), tp=int(c[0]), fp=int(c[1]), fn=int(c[2]))
                out.append(rec)
    table = pd.DataFrame(out, columns=list(PREDICTION_COLUMNS))
    for col in ("gt_pixels", "tp", "fp", "fn"):
        table[col] = table[col].astype("Int64")
    return table


def _arrays(rows: pd.DataFrame):
    """(y_true, y_prob, valid, patient_ids) in LABELS layout with only ``any`` known."""
    n = len(rows)
    y_true, y_prob = np.zeros((n, len(LABELS))), np.full((n, len(LABELS)), 0.5)
    valid = np.zeros((n, len(LABELS)), bool)
    y = rows["any"].to_numpy(float)
    y_true[:, ANY], y_prob[:, ANY], valid[:, ANY] = np.nan_to_num(y), rows["p_any"].to_numpy(float), np.isfinite(y)
    return y_true, y_prob, valid, rows["patient_id"].astype(str).to_numpy()


def patient_scores(rows: pd.DataFrame, window: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """(truth, score) of ``any`` per patient: the highest slice p(any), or the highest mean of ``window``
    adjacent slices of one scan (``classification.aggregate_by_patient``)."""
    scans = rows["patient_id"].astype(str)
    if "study_id" in rows:  # a table that lists studies: adjacency within each scan
        scans = scans + "/" + rows["study_id"].astype(str)
    order = (scans.to_numpy(), rows["slice_idx"].to_numpy())
    _, pt, pp, pv = aggregate_by_patient(*_arrays(rows), how="max", window=window, order=order)
    return pt[pv[:, ANY], ANY], pp[pv[:, ANY], ANY]


def patient_calls(rows: pd.DataFrame, threshold: float, window: int = 1) -> dict[str, float]:
    """ICH patients found and normal patients flagged (``patient_scores``)."""
    truth, score = patient_scores(rows, window)
    called = score >= threshold
    return {"ich_patients": float((truth == 1).sum()), "ich_found": float((called & (truth == 1)).sum()),
            "normal_patients": float((truth == 0).sum()), "normal_flagged": float((called & (truth == 0)).sum())}


def segmentation_figures(rows: pd.DataFrame) -> dict[str, float]:
    """Dice/IoU over masked bleed slices; false-positive area on slices whose mask is empty."""
    masked = rows[rows["has_mask"].astype(bool)]
    bleed = masked[masked["gt_pixels"].fillna(0) > 0]
    empty = masked[masked["gt_pixels"].fillna(0) == 0]
    out: dict[str, float] = {"seg/n_bleed_slices": float(len(bleed)), "seg/n_empty_slices": float(len(empty))}
    if len(bleed):
        counts = bleed[["tp", "fp", "fn"]].to_numpy(np.float64)  # (slices, 3), the evaluator's layout
        pooled, per_slice = overlap_from_counts(counts.sum(axis=0)), overlap_from_counts(counts)
        out.update({"seg/dice": float(pooled["dice"]), "seg/iou": float(pooled["iou"]),
                    "seg/dice_per_slice": float(per_slice["dice"].mean())})
    if len(empty):
        out.update({"seg/empty_fp_pixels_per_slice": float(empty["pred_pixels"].mean()),
                    "seg/empty_fp_slice_share": float((empty["pred_pixels"] > 0).mean())})
    return out


def fold_figures(predictions: pd.DataFrame, window: int = 1) -> dict[str, float]:
    """The figures of one fold from its prediction table (roles "val" and "test"); ``window``: the
    patient score's adjacent slices (``patient_scores``)."""
    val, test = predictions[predictions["role"] == "val"], predictions[predictions["role"] == "test"]
    val_arrays = _arrays(val)
    tuned = tune_thresholds(*val_arrays, method="youden") if len(val) else None
    m = classification_metrics(*_arrays(test), tuned=tuned)
    out = {}
    for key in SLICE_KEYS:
        out[f"slice/{key}"] = m[f"cls/any/{key}"]
        if key != "auc" and tuned:
            out[f"slice/{key}@tuned"] = m[f"cls/any/{key}@tuned"]
    if tuned:
        out["slice/threshold@tuned"] = float(tuned["cls"]["any"])
        t = choose_threshold(*patient_scores(val, window), "sensitivity", 1.0)
        out["patient/threshold@tuned"] = float(t if np.isfinite(t) else out["slice/threshold@tuned"])
    for name, thr in (("0.5", 0.5), ("tuned", out.get("patient/threshold@tuned"))):
        if thr is None:
            continue
        for k, v in patient_calls(test, thr, window).items():
            out[f"patient/{k}" + ("" if name == "0.5" else "@tuned")] = v
    out.update(segmentation_figures(test))
    return out


def summarise(per_fold: Sequence[Mapping[str, float]]) -> dict[str, dict[str, float]]:
    """key -> {mean, sd, n} over folds where the key is defined (sd: ddof=1; NaN with one fold);
    patient counts are summed as well (``total``)."""
    keys = sorted({k for f in per_fold for k in f})
    out = {}
    for key in keys:
        vals = np.asarray([f[key] for f in per_fold if key in f and np.isfinite(f[key])], float)
        entry = {"mean": float(vals.mean()) if len(vals) else math.nan,
                 "sd": float(vals.std(ddof=1)) if len(vals) > 1 else math.nan, "n": float(len(vals))}
        if key.startswith("patient/") and "threshold" not in key:
            entry["total"] = float(vals.sum())
        out[key] = entry
    return out


def pooled_figures(predictions: pd.DataFrame, window: int = 1) -> dict[str, float]:
    """Slice AUC and 0.5-threshold figures over every patient's out-of-fold (test-role) prediction, and
    the patient AUC of their patient scores (``patient_scores``): a fold holds too few patients for an
    AUC of its own, and a classifier that only ranks the slices within each patient has a high slice AUC
    but not this one. With both classes present, also the share of normal patients scored below the
    lowest-scored ICH patient (the pooled patient ROC's specificity at sensitivity 1)."""
    test = predictions[predictions["role"] == "test"]
    arrays = _arrays(test)
    y_true, y_prob, valid, _ = arrays
    m = binary_metrics(y_true[valid[:, ANY], ANY], y_prob[valid[:, ANY], ANY], 0.5)
    out = {f"pooled/slice/{k}": float(m[k]) for k in SLICE_KEYS}
    truth, score = patient_scores(test, window)
    out["pooled/patient/auc"] = float(binary_metrics(truth, score, 0.5)["auc"])
    if (truth == 1).any() and (truth == 0).any():
        out["pooled/patient/specificity@all_found"] = float((score[truth == 0] < score[truth == 1].min()).mean())
    return out


def seg_by_patient(predictions: pd.DataFrame) -> dict[str, dict[str, float]]:
    """Segmentation figures of each tested patient that has masks, from the fold that held it out."""
    test = predictions[(predictions["role"] == "test") & predictions["has_mask"].astype(bool)]
    return {str(pid): segmentation_figures(rows) for pid, rows in test.groupby("patient_id", sort=True)}


def mean_sd_cell(entry: Mapping[str, float], digits: int = 3) -> str:
    """``mean ± sd`` of a summary entry, ``-`` when undefined (tables of the report and of the docs)."""
    if not entry or not np.isfinite(entry.get("mean", math.nan)):
        return "-"
    sd = entry.get("sd", math.nan)
    return f"{entry['mean']:.{digits}f}" + (f" ± {sd:.{digits}f}" if np.isfinite(sd) else "")


ROWS = (
    ("slice AUC", "slice/auc", None), ("slice F1 @0.5", "slice/f1", None),
    ("slice sensitivity @0.5", "slice/recall", None), ("slice specificity @0.5", "slice/specificity", None),
    ("slice F1 @tuned", "slice/f1@tuned", None), ("slice sensitivity @tuned", "slice/recall@tuned", None),
    ("slice specificity @tuned", "slice/specificity@tuned", None),
    ("ICH patients found @0.5", "patient/ich_found", "patient/ich_patients"),
    ("normal patients flagged @0.5", "patient/normal_flagged", "patient/normal_patients"),
    ("ICH patients found @tuned", "patient/ich_found@tuned", "patient/ich_patients"),
    ("normal patients flagged @tuned", "patient/normal_flagged@tuned", "patient/normal_patients"),
)


def report_markdown(results: Mapping) -> str:
    """The cross-validation table: mean ± sd over folds; patient calls as totals over folds."""
    s = results["summary"]
    window = int(results.get("patient_window") or 1)
    score = "its highest slice p(any)" if window == 1 else f"its highest mean p(any) of {window} adjacent slices"
    lines = [f"# Cross-validation: {results['config']}", "",
             f"{len(results['folds'])} patient folds; each patient tested once by the model that did not "
             f"see it. A patient's score: {score}. @tuned: the slice threshold by Youden J on the fold's "
             "validation patients; the patient threshold the highest that finds all of their ICH patients.", "",
             "| figure | mean ± sd over folds |", "|---|---|"]
    for name, key, total in ROWS:
        if key not in s:
            continue
        if total:
            lines.append(f"| {name} | {s[key]['total']:.0f} of {s[total]['total']:.0f} |")
        else:
            lines.append(f"| {name} | {mean_sd_cell(s[key])} |")
    pooled = results.get("pooled") or {}
    if "pooled/slice/auc" in pooled:
        lines.append(f"| slice AUC, all out-of-fold predictions pooled | {pooled['pooled/slice/auc']:.3f} |")
    if "pooled/patient/auc" in pooled:
        lines.append(f"| patient AUC, all out-of-fold patients pooled | {pooled['pooled/patient/auc']:.3f} |")
    if "pooled/patient/specificity@all_found" in pooled:
        lines.append("| normal patients below every ICH patient, all out-of-fold patients pooled | "
                     f"{pooled['pooled/patient/specificity@all_found']:.3f} |")
    seg = results.get("seg_by_patient") or {}
    if seg:
        lines += ["", "| patient held out | bleed slices | Dice | IoU | Dice per slice | empty slices | "
                  "FP pixels per empty slice | empty slices with FP |", "|---|---|---|---|---|---|---|---|"]
        for pid, f in seg.items():
            def v(key, fmt="{:.3f}"):
                return fmt.format(f[key]) if key in f and np.isfinite(f[key]) else "-"
            lines.append(f"| {pid} | {v('seg/n_bleed_slices', '{:.0f}')} | {v('seg/dice')} | {v('seg/iou')} | "
                         f"{v('seg/dice_per_slice')} | {v('seg/n_empty_slices', '{:.0f}')} | "
                         f"{v('seg/empty_fp_pixels_per_slice', '{:.1f}')} | {v('seg/empty_fp_slice_share', '{:.2f}')} |")
    return "\n".join(lines) + "\n"
