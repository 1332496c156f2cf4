"""Slice- and patient-level classification metrics for the six labels (any + five subtypes).

Conventions are listed in ``CONVENTIONS`` and written into every report. Inputs: ``y_true`` (N, 6)
0/1, ``y_prob`` (N, 6), ``valid`` (N, 6) bool, ``patient_ids`` (N,), columns ordered as LABELS.
"""
from __future__ import annotations

import math
import warnings
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
from scipy.stats import rankdata
from sklearn.metrics import roc_curve

from ..categories import LABELS
from .calibration import CONVENTIONS as CALIBRATION_CONVENTIONS
from .calibration import apply_temperature, calibration_metrics

THRESHOLD_METRICS = ("precision", "recall", "specificity", "f1", "accuracy")
RANKING_METRICS = ("auc", "ap")
COUNT_KEYS = ("tp", "fp", "tn", "fn", "n", "n_pos")
AGGREGATIONS = ("max", "mean", "topk")
THRESHOLD_METHODS = ("youden", "sensitivity")


CONVENTIONS = (
    "Classification: a prediction is positive when prob >= threshold (sklearn roc_curve rule); labels unknown for a sample are excluded from that label's metrics only.",
    'Precision, recall (= sensitivity), specificity, F1 and accuracy come from the 2x2 confusion counts; a ratio with a zero denominator is undefined (n/a), never 0 or 1 (sklearn zero_division=nan).',
    'ROC-AUC = sklearn roc_auc_score (trapezoidal; ties count one half); AP = sklearn average_precision_score (step sum, no interpolation). AUC is n/a when one class is present, AP when no positive is present.',
    'Patient level: a patient is positive for a label when any of its known slices is; its score is the max (or mean, or top-k mean, as configured) of the slice probabilities where the label is known.',
    '@tuned metrics use per-label thresholds chosen on the validation split (Youden J, or the highest threshold reaching a target sensitivity), chosen separately for slice and patient level.',
    '95% CIs: percentile bootstrap over patients resampled with replacement (seeded), threshold 0.5; resamples where a metric is undefined are skipped.',
) + CALIBRATION_CONVENTIONS

def _ratio(num: float, den: float) -> float:
    return float(num) / float(den) if den > 0 else math.nan


def confusion_counts(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, int]:
    """The 2x2 confusion counts of one binary label (sklearn layout [[tn, fp], [fn, tp]])."""
    y_true = np.asarray(y_true).astype(bool)
    y_pred = np.asarray(y_pred).astype(bool)
    tp = int(np.count_nonzero(y_true & y_pred))
    fp = int(np.count_nonzero(~y_true & y_pred))
    fn = int(np.count_nonzero(y_true & ~y_pred))
    tn = int(y_true.size - tp - fp - fn)
    return {"tp": tp, "fp": fp, "tn": tn, "fn": fn}


def _roc_auc(y: np.ndarray, p: np.ndarray) -> float:
    """ROC-AUC as the Mann-Whitney U with mid-ranks: identical to sklearn's trapezoidal
    ``roc_auc_score`` (ties count one half), without its per-call validation cost."""
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    ranks = rankdata(p)  # average ranks for ties
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def _average_precision(y: np.ndarray, p: np.ndarray) -> float:
    """sklearn's ``average_precision_score``: sum over distinct thresholds of
    (recall_k - recall_{k-1}) * precision_k, no interpolation."""
    order = np.argsort(-p, kind="mergesort")
    p_sorted, y_sorted = p[order], y[order]
    last = np.r_[p_sorted[1:] != p_sorted[:-1], True]  # last index of each distinct score
    tps = np.cumsum(y_sorted)[last]
    precision = tps / (np.flatnonzero(last) + 1.0)
    recall = tps / tps[-1]
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def ranking_metrics(y_true: np.ndarray, y_prob: np.ndarray) -> dict[str, float]:
    """ROC-AUC and average precision (sklearn definitions), NaN where undefined (one class only /
    no positive)."""
    y_true = np.asarray(y_true).astype(bool)
    y_prob = np.asarray(y_prob, dtype=np.float64)
    n_pos = int(y_true.sum())
    auc = _roc_auc(y_true, y_prob) if 0 < n_pos < y_true.size else math.nan
    ap = _average_precision(y_true, y_prob) if n_pos > 0 else math.nan
    return {"auc": auc, "ap": ap}


def binary_metrics(y_true: np.ndarray, y_prob: np.ndarray, threshold: float = 0.5,
                   ranking: bool = True) -> dict[str, float]:
    """All metrics of one binary label at one threshold (see module docstring for conventions)."""
    y_true = np.asarray(y_true).astype(bool)
    y_prob = np.asarray(y_prob, dtype=np.float64)
    c = confusion_counts(y_true, y_prob >= threshold)
    tp, fp, tn, fn = c["tp"], c["fp"], c["tn"], c["fn"]
    out: dict[str, float] = {
        "precision": _ratio(tp, tp + fp),
        "recall": _ratio(tp, tp + fn),
        "specificity": _ratio(tn, tn + fp),
        "f1": _ratio(2 * tp, 2 * tp + fp + fn),
        "accuracy": _ratio(tp + tn, tp + tn + fp + fn),
    }
    if ranking:
        out.update(ranking_metrics(y_true, y_prob))
    out.update({k: float(v) for k, v in c.items()})
    out["n"] = float(y_true.size)
    out["n_pos"] = float(y_true.sum())
    return out


def choose_threshold(y_true: np.ndarray, y_prob: np.ndarray, method: str = "youden",
                     target: float | None = None) -> float:
    """A decision threshold chosen on validation data (apply it to the test split).

    ``youden``: maximises sensitivity + specificity - 1 over the ROC points (ties -> the highest
    threshold). ``sensitivity``: the highest threshold whose sensitivity is >= ``target`` (the most
    specific operating point reaching the target). Returns NaN when the validation labels hold one
    class only.
    """
    if method not in THRESHOLD_METHODS:
        raise ValueError(f"unknown threshold method {method!r}; expected one of {THRESHOLD_METHODS}")
    y_true = np.asarray(y_true).astype(int)
    y_prob = np.asarray(y_prob, dtype=np.float64)
    n_pos = int(y_true.sum())
    if not 0 < n_pos < y_true.size:
        return math.nan
    fpr, tpr, thr = roc_curve(y_true, y_prob, drop_intermediate=False)
    finite = np.isfinite(thr)  # the first point (inf) predicts nothing positive
    fpr, tpr, thr = fpr[finite], tpr[finite], thr[finite]
    if method == "youden":
        j = tpr - fpr
        return float(thr[int(np.argmax(j))])  # thr is decreasing: argmax picks the highest on ties
    if target is None or not 0.0 < target <= 1.0:
        raise ValueError(f"method 'sensitivity' needs a target in (0, 1], got {target!r}")
    reach = np.flatnonzero(tpr >= target - 1e-12)
    return float(thr[reach[0]])


def _check_inputs(y_true, y_prob, valid, patient_ids):
    y_true = np.asarray(y_true, dtype=np.float64)
    y_prob = np.asarray(y_prob, dtype=np.float64)
    if y_true.ndim != 2 or y_true.shape[1] != len(LABELS):
        raise ValueError(f"y_true must have shape (N, {len(LABELS)}) ordered {LABELS}, got {y_true.shape}")
    if y_prob.shape != y_true.shape:
        raise ValueError(f"y_prob shape {y_prob.shape} != y_true shape {y_true.shape}")
    valid = np.ones(y_true.shape, bool) if valid is None else np.asarray(valid).astype(bool)
    if valid.shape != y_true.shape:
        raise ValueError(f"valid shape {valid.shape} != y_true shape {y_true.shape}")
    bad = valid & ~np.isin(y_true, (0.0, 1.0))
    if bad.any():
        r, c = np.argwhere(bad)[0]
        raise ValueError(f"y_true row {r} label {LABELS[c]}: expected 0 or 1, got {y_true[r, c]!r}")
    bad = valid & ~np.isfinite(y_prob)
    if bad.any():
        r, c = np.argwhere(bad)[0]
        raise ValueError(f"y_prob row {r} label {LABELS[c]}: probability is {y_prob[r, c]!r}")
    if patient_ids is None:
        patient_ids = np.arange(len(y_true)).astype(str)  # each slice its own unit
    patient_ids = np.asarray([str(p) for p in patient_ids])
    if len(patient_ids) != len(y_true):
        raise ValueError(f"{len(patient_ids)} patient ids for {len(y_true)} rows")
    return y_true, y_prob, valid, patient_ids


def slice_context_max(y_prob, scan_ids, slice_idx, context: int) -> np.ndarray:
    """(N, L) slice probabilities -> each slice's max of its own and the mean over its scan's slices
    z-c..z+c (``context`` = c; ends replicate the edge slice, as the 2.5D input does).

    A bleed spans neighbouring slices, so their scores are evidence about this one: the mean lifts a
    slice its neighbours are sure of. Never below the slice's own probability, so a scan's maximum - the
    patient score - is unchanged and a bleed seen on one slice is not averaged away. Rows may come in any
    order; ``slice_idx`` must be unique within a scan. NaN (a label the model has no output for) stays NaN.
    """
    from ..data.dataset import context_index

    prob = np.asarray(y_prob, dtype=np.float64)
    if context <= 0:
        return prob.copy()
    scans = pd.Series(np.asarray(scan_ids).astype(str))
    z = np.asarray(slice_idx, dtype=np.int64)
    out = prob.copy()
    for _, rows in scans.groupby(scans, sort=False).indices.items():
        rows = rows[np.argsort(z[rows], kind="stable")]
        neighbours = rows[context_index(z[rows], context)]  # (n, 2c+1) row numbers
        out[rows] = np.maximum(prob[rows], prob[neighbours].mean(axis=1))
    return out


def adjacent_mean(y_prob, scan_ids, slice_idx, window: int) -> np.ndarray:
    """(N, L) slice probabilities -> each slice's mean over a run of ``window`` adjacent slices of its scan
    (the run starting at the slice, moved back to end at the scan's last slice; a scan shorter than the
    window is one run). NaN entries are skipped; a run of NaN stays NaN.

    The maximum over a scan's slices is then the highest mean of ``window`` adjacent slices: a bleed spans
    neighbouring slices, while a lone sure slice (the skull base, the sinus along the falx) is one slice.
    ``window`` 1 returns the probabilities. Rows may come in any order; ``slice_idx`` orders a scan.
    """
    prob = np.asarray(y_prob, dtype=np.float64)
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    if window == 1:
        return prob.copy()
    scans = pd.Series(np.asarray(scan_ids).astype(str))
    z = np.asarray(slice_idx, dtype=np.int64)
    out = np.full_like(prob, np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # nanmean of an all-NaN run: NaN, as documented
        for _, rows in scans.groupby(scans, sort=False).indices.items():
            rows = rows[np.argsort(z[rows], kind="stable")]
            if len(rows) <= window:
                out[rows] = np.nanmean(prob[rows], axis=0)
                continue
            start = np.minimum(np.arange(len(rows)), len(rows) - window)
            out[rows] = np.nanmean(prob[rows[start[:, None] + np.arange(window)]], axis=1)  # (n, window, L)
    return out


def aggregate_by_patient(y_true, y_prob, valid, patient_ids, how: str = "max", top_k: int = 3, *,
                         window: int = 1, order=None):
    """Slice rows -> one row per patient: (patient_ids, y_true, y_prob, valid), ids sorted.

    Truth = max over the known slices; score = max | mean | mean of the ``top_k`` highest over the
    known slices; a label is valid for a patient when at least one of its slices knows it. ``window``
    k > 1 scores each slice first by its run of k adjacent slices (``adjacent_mean``; ``order`` =
    (scan_ids, slice_idx) of the rows), so "max" becomes the highest mean of k adjacent slices.
    """
    if how not in AGGREGATIONS:
        raise ValueError(f"unknown patient aggregation {how!r}; expected one of {AGGREGATIONS}")
    y_true, y_prob, valid, patient_ids = _check_inputs(y_true, y_prob, valid, patient_ids)
    if window != 1:
        if order is None:
            raise ValueError(f"a patient window of {window} slices needs the rows' order (scan_ids, slice_idx)")
        y_prob = adjacent_mean(np.where(valid, y_prob, np.nan), *order, window)
    cols = list(LABELS)
    truth = pd.DataFrame(np.where(valid, y_true, np.nan), columns=cols)
    prob = pd.DataFrame(np.where(valid, y_prob, np.nan), columns=cols)
    truth["pid"] = prob["pid"] = patient_ids
    t = truth.groupby("pid", sort=True)[cols].max()  # NaN-skipping
    g = prob.groupby("pid", sort=True)[cols]
    if how == "max":
        p = g.max()
    elif how == "mean":
        p = g.mean()
    else:
        if top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k}")
        p = g.agg(lambda s: s.dropna().nlargest(top_k).mean())
    pv = t.notna().to_numpy()
    return (t.index.to_numpy(), np.nan_to_num(t.to_numpy()), np.nan_to_num(p.to_numpy()), pv)


def _label_metrics(y_true, y_prob, valid, thresholds: Mapping[str, float] | None, prefix: str,
                   ranking: bool = True, suffix: str = "") -> dict[str, float]:
    out: dict[str, float] = {}
    for j, label in enumerate(LABELS):
        thr = 0.5 if thresholds is None else thresholds.get(label, math.nan)
        m = valid[:, j]
        if thresholds is not None and not np.isfinite(thr):
            continue  # no tuned threshold for this label (single-class validation)
        res = binary_metrics(y_true[m, j], y_prob[m, j], thr, ranking=ranking)
        for k, v in res.items():
            out[f"{prefix}/{label}/{k}{suffix}"] = v
        if thresholds is not None:
            out[f"{prefix}/{label}/threshold{suffix}"] = float(thr)
    return out


def classification_metrics(y_true, y_prob, valid=None, patient_ids=None, *, aggregation: str = "max",
                           top_k: int = 3, window: int = 1, order=None, tuned: Mapping[str, Mapping[str, float]] | None = None,
                           n_bootstrap: int = 0, seed: int = 0,
                           temperature: Sequence[float] | None = None) -> dict[str, float]:
    """Flat metric dict: ``cls/<label>/<metric>`` and ``cls_patient/<label>/<metric>`` at 0.5, with
    calibration (``ece``, ``nll``; ``hemo_mtl.evaluation.calibration``).

    ``tuned`` (from :func:`tune_thresholds` on the validation split) adds the same threshold metrics
    at those thresholds as ``.../<metric>@tuned``; ``temperature`` (per label, fitted on validation) adds
    ``.../ece@calibrated`` and ``.../nll@calibrated``; ``n_bootstrap > 0`` adds
    ``.../<metric>_ci95_low|high`` (patient-resampled). Patient keys need ``patient_ids``; ``window`` and
    ``order`` set the patient score as in :func:`aggregate_by_patient`.
    """
    y_true, y_prob, valid, pids = _check_inputs(y_true, y_prob, valid, patient_ids)
    out = _label_metrics(y_true, y_prob, valid, None, "cls")
    out.update(calibration_metrics(y_true, y_prob, valid, "cls", temperature))
    if tuned and tuned.get("cls"):
        out.update(_label_metrics(y_true, y_prob, valid, tuned["cls"], "cls", ranking=False, suffix="@tuned"))
    if patient_ids is not None:
        _, pt, pp, pv = aggregate_by_patient(y_true, y_prob, valid, pids, aggregation, top_k, window=window,
                                             order=order)
        out.update(_label_metrics(pt, pp, pv, None, "cls_patient"))
        if temperature is None:
            out.update(calibration_metrics(pt, pp, pv, "cls_patient"))
        else:  # patient scores of the calibrated slices (max/mean/top-k of sigmoid(logit / T))
            _, _, pc, _ = aggregate_by_patient(y_true, apply_temperature(y_prob, temperature), valid, pids,
                                               aggregation, top_k, window=window, order=order)
            out.update(calibration_metrics(pt, pp, pv, "cls_patient", temperature, calibrated=pc))
        if tuned and tuned.get("cls_patient"):
            out.update(_label_metrics(pt, pp, pv, tuned["cls_patient"], "cls_patient", ranking=False,
                                      suffix="@tuned"))
    undefined = [k for k, v in out.items() if k.endswith("/auc") and math.isnan(v)]
    out["cls/all/n_auc_undefined"] = float(len(undefined))
    if n_bootstrap > 0:
        out.update(bootstrap_ci(y_true, y_prob, valid, pids, n_bootstrap=n_bootstrap, seed=seed,
                                aggregation=aggregation, top_k=top_k, window=window, order=order,
                                patient_level=patient_ids is not None))
    return out


def tune_thresholds(y_true, y_prob, valid=None, patient_ids=None, *, method: str = "youden",
                    target: float | None = None, aggregation: str = "max",
                    top_k: int = 3, window: int = 1, order=None) -> dict[str, dict[str, float]]:
    """Per-label thresholds chosen on a validation split: {"cls": {label: t}, "cls_patient": {...}}."""
    y_true, y_prob, valid, pids = _check_inputs(y_true, y_prob, valid, patient_ids)
    out = {"cls": {l: choose_threshold(y_true[valid[:, j], j], y_prob[valid[:, j], j], method, target)
                   for j, l in enumerate(LABELS)}}
    if patient_ids is not None:
        _, pt, pp, pv = aggregate_by_patient(y_true, y_prob, valid, pids, aggregation, top_k, window=window,
                                             order=order)
        out["cls_patient"] = {l: choose_threshold(pt[pv[:, j], j], pp[pv[:, j], j], method, target)
                              for j, l in enumerate(LABELS)}
    return out


def bootstrap_ci(y_true, y_prob, valid, patient_ids, *, n_bootstrap: int = 1000, seed: int = 0,
                 alpha: float = 0.05, metrics: Sequence[str] = ("recall", "specificity", "f1", "auc", "ap"),
                 aggregation: str = "max", top_k: int = 3, window: int = 1, order=None,
                 patient_level: bool = True) -> dict[str, float]:
    """Percentile CIs at threshold 0.5, resampling patients with replacement (seeded).

    Keys ``cls/<label>/<metric>_ci95_low|high`` (and ``cls_patient/...``); ``alpha`` sets the
    level, the key name keeps "ci95" only for the default.
    """
    y_true, y_prob, valid, pids = _check_inputs(y_true, y_prob, valid, patient_ids)
    uniq, inverse = np.unique(pids, return_inverse=True)
    rows_of = [np.flatnonzero(inverse == i) for i in range(len(uniq))]
    if patient_level:
        _, pt, pp, pv = aggregate_by_patient(y_true, y_prob, valid, pids, aggregation, top_k, window=window,
                                             order=order)
    rng = np.random.default_rng(seed)
    want_rank = any(m in RANKING_METRICS for m in metrics)
    samples: dict[str, list[float]] = {}
    for _ in range(n_bootstrap):
        pick = rng.integers(0, len(uniq), len(uniq))
        rows = np.concatenate([rows_of[i] for i in pick])
        levels = [("cls", y_true[rows], y_prob[rows], valid[rows])]
        if patient_level:
            levels.append(("cls_patient", pt[pick], pp[pick], pv[pick]))
        for prefix, t, p, v in levels:
            for j, label in enumerate(LABELS):
                m = v[:, j]
                res = binary_metrics(t[m, j], p[m, j], 0.5, ranking=want_rank)
                for name in metrics:
                    samples.setdefault(f"{prefix}/{label}/{name}", []).append(res[name])
    tag = "ci95" if abs(alpha - 0.05) < 1e-12 else f"ci{round(100 * (1 - alpha))}"
    out: dict[str, float] = {}
    for key, vals in samples.items():
        arr = np.asarray(vals, dtype=np.float64)
        arr = arr[np.isfinite(arr)]
        lo, hi = (np.percentile(arr, [100 * alpha / 2, 100 * (1 - alpha / 2)]) if arr.size
                  else (math.nan, math.nan))
        out[f"{key}_{tag}_low"], out[f"{key}_{tag}_high"] = float(lo), float(hi)
    return out


def hemorica_summary(val_losses: Sequence[float], epoch_metrics: Sequence[Mapping[str, float]] |
                     Mapping[str, Sequence[float]], *, skip_epochs: int = 10,
                     top: int = 10) -> dict[str, float]:
    """The Hemorica reporting rule: mean of each metric over the ``top`` epochs with the lowest
    validation loss among the epochs after epoch ``skip_epochs`` (epochs numbered from 1).

    ``epoch_metrics`` is one dict per epoch or one list per metric. Returns the mean of each metric
    (same keys) plus ``hemorica/epoch_<rank>`` = the chosen epoch number, rank 1 = lowest loss.
    """
    losses = np.asarray(val_losses, dtype=np.float64)
    if isinstance(epoch_metrics, Mapping):
        per_key = {k: np.asarray(v, dtype=np.float64) for k, v in epoch_metrics.items()}
    else:
        keys: list[str] = []
        for d in epoch_metrics:
            keys += [k for k in d if k not in keys]
        per_key = {k: np.asarray([d.get(k, math.nan) for d in epoch_metrics], np.float64) for k in keys}
    for k, v in per_key.items():
        if len(v) != len(losses):
            raise ValueError(f"metric {k!r} has {len(v)} epochs but there are {len(losses)} val losses")
    eligible = np.arange(skip_epochs, len(losses))  # 0-based indices of epochs skip_epochs+1 ..
    eligible = eligible[np.isfinite(losses[eligible])]
    if len(eligible) < top:
        raise ValueError(f"the Hemorica rule needs {top} epochs after epoch {skip_epochs} with a finite "
                         f"validation loss; got {len(eligible)} of {len(losses)} epochs")
    chosen = eligible[np.argsort(losses[eligible], kind="stable")[:top]]
    out = {k: float(np.nanmean(v[chosen])) for k, v in per_key.items()}
    for rank, idx in enumerate(chosen, start=1):
        out[f"hemorica/epoch_{rank}"] = float(idx + 1)
    return out

