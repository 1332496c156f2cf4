"""Calibration of the six sigmoid outputs: expected calibration error, reliability bins, temperature scaling.

Each label is a binary problem, so calibration is measured on the positive-class probability: of the
slices given p ~ 0.8, about 80% should bleed. ``N_BINS`` equal-width bins over [0, 1], right-closed with
0 in the first bin (sklearn ``calibration_curve(strategy="uniform")``'s rule); ECE is the count-weighted
mean |fraction positive - mean p| over the non-empty bins.

Temperature scaling (Guo et al. 2017) divides each label's logit by its own temperature T, fitted on the
validation split by minimising the binary cross-entropy; ``logit = log(p / (1 - p))`` is recovered from
the model's probabilities (clipped to ``EPS``, the float32 sigmoid's resolution), so any backend that
returns probabilities can be calibrated. T > 1 softens an over-confident model. The sign of the logit
never changes, so every decision at p >= 0.5, the ranking (AUC, AP) and the cascade gate's own
comparison on the raw model output stay as they were: only the probabilities a reader sees move.
"""
from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np
from scipy.optimize import minimize_scalar

from ..categories import LABELS

N_BINS = 15  # Guo et al.'s choice; 15 bins of width 1/15
EPS = 1e-6
LOG_T_BOUNDS = (math.log(0.05), math.log(20.0))

CONVENTIONS = (
    f"Calibration: ECE = sum over {N_BINS} equal-width probability bins (right-closed, 0 in the first; sklearn "
    "calibration_curve's uniform bins) of (bin count / n) x |fraction positive - mean probability|, on each "
    "label's positive-class probability; NLL = mean binary cross-entropy (probabilities clipped to [1e-6, 1 - 1e-6]). "
    "Patient level uses the aggregated patient scores.",
    "@calibrated: the same after per-label temperature scaling (logit / T, T fitted on the validation split "
    "by minimising NLL); thresholds at 0.5 and AUC/AP are unchanged by it.",
)


def _clip(p) -> np.ndarray:
    return np.clip(np.asarray(p, dtype=np.float64), EPS, 1.0 - EPS)


def bin_index(y_prob, n_bins: int = N_BINS) -> np.ndarray:
    """Bin of each probability: equal-width, right-closed, 0 in bin 0 (sklearn's uniform rule)."""
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    return np.searchsorted(edges[1:-1], np.asarray(y_prob, dtype=np.float64))


def reliability_bins(y_true, y_prob, n_bins: int = N_BINS) -> dict[str, np.ndarray]:
    """Per bin: ``mean_prob``, ``frac_pos``, ``count`` (all n_bins long; empty bins NaN / 0) and ``edges``."""
    y = np.asarray(y_true, dtype=np.float64).ravel()
    p = np.asarray(y_prob, dtype=np.float64).ravel()
    if y.shape != p.shape:
        raise ValueError(f"y_true has {y.size} values, y_prob {p.size}")
    if p.size and (p.min() < 0 or p.max() > 1):
        raise ValueError("y_prob has values outside [0, 1]")
    ids = bin_index(p, n_bins)
    count = np.bincount(ids, minlength=n_bins).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_prob = np.bincount(ids, weights=p, minlength=n_bins) / count
        frac_pos = np.bincount(ids, weights=y, minlength=n_bins) / count
    return {"mean_prob": mean_prob, "frac_pos": frac_pos, "count": count, "edges": np.linspace(0, 1, n_bins + 1)}


def expected_calibration_error(y_true, y_prob, n_bins: int = N_BINS) -> float:
    """Count-weighted mean |fraction positive - mean probability| over the non-empty bins; NaN when empty."""
    b = reliability_bins(y_true, y_prob, n_bins)
    n = b["count"].sum()
    if n == 0:
        return math.nan
    full = b["count"] > 0
    return float(np.sum(b["count"][full] * np.abs(b["frac_pos"][full] - b["mean_prob"][full])) / n)


def binary_nll(y_true, y_prob) -> float:
    """Mean binary cross-entropy (natural log); NaN when empty."""
    y = np.asarray(y_true, dtype=np.float64).ravel()
    if y.size == 0:
        return math.nan
    p = _clip(y_prob).ravel()
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log1p(-p)))


def logit(p) -> np.ndarray:
    p = _clip(p)
    return np.log(p) - np.log1p(-p)


def apply_temperature(y_prob, temperature: Sequence[float] | float | None) -> np.ndarray:
    """sigmoid(logit(p) / T) per column (``temperature`` one value per column, or one for all); None: p."""
    p = np.asarray(y_prob, dtype=np.float64)
    if temperature is None:
        return p
    t = np.asarray(temperature, dtype=np.float64)
    if np.any(~np.isfinite(t) | (t <= 0)):
        raise ValueError(f"temperatures must be positive and finite, got {t.tolist()}")
    out = 1.0 / (1.0 + np.exp(-logit(p) / t))
    return np.where(np.isfinite(p), out, p)  # a missing output (NaN) stays missing


def fit_temperature_1d(y_true, y_prob) -> float:
    """The T > 0 minimising the NLL of sigmoid(logit(p) / T); 1.0 when both classes are not present
    (with one class the NLL falls without bound as T shrinks or grows: nothing to fit)."""
    y = np.asarray(y_true, dtype=np.float64).ravel()
    if not 0 < y.sum() < y.size:
        return 1.0
    z = logit(y_prob).ravel()

    def nll(log_t: float) -> float:
        s = z / math.exp(log_t)
        return float(np.mean(np.logaddexp(0.0, s) - y * s))  # -[y log sig(s) + (1-y) log(1 - sig(s))]

    res = minimize_scalar(nll, bounds=LOG_T_BOUNDS, method="bounded", options={"xatol": 1e-6})
    return float(math.exp(res.x))


def fit_temperature(y_true, y_prob, valid=None) -> list[float]:
    """One temperature per label column (LABELS order), each fitted on that label's known rows."""
    y = np.asarray(y_true, dtype=np.float64)
    p = np.asarray(y_prob, dtype=np.float64)
    valid = np.ones(y.shape, bool) if valid is None else np.asarray(valid, bool)
    return [fit_temperature_1d(y[valid[:, j], j], p[valid[:, j], j]) for j in range(y.shape[1])]


def calibration_metrics(y_true, y_prob, valid, prefix: str, temperature: Sequence[float] | None = None,
                        n_bins: int = N_BINS, calibrated=None) -> dict[str, float]:
    """``<prefix>/<label>/ece`` and ``/nll``; with ``temperature`` also ``ece@calibrated``,
    ``nll@calibrated`` and ``temperature``. Inputs (N, 6) as ``classification_metrics``'s;
    ``calibrated``: the calibrated probabilities when they are not ``y_prob`` scaled row by row (patient
    scores aggregated from calibrated slices)."""
    y = np.asarray(y_true, dtype=np.float64)
    p = np.asarray(y_prob, dtype=np.float64)
    valid = np.asarray(valid, bool)
    cal = None
    if temperature is not None:
        cal = apply_temperature(p, temperature) if calibrated is None else np.asarray(calibrated, np.float64)
    out: dict[str, float] = {}
    for j, label in enumerate(LABELS):
        m = valid[:, j]
        out[f"{prefix}/{label}/ece"] = expected_calibration_error(y[m, j], p[m, j], n_bins)
        out[f"{prefix}/{label}/nll"] = binary_nll(y[m, j], p[m, j])
        if cal is not None:
            out[f"{prefix}/{label}/ece@calibrated"] = expected_calibration_error(y[m, j], cal[m, j], n_bins)
            out[f"{prefix}/{label}/nll@calibrated"] = binary_nll(y[m, j], cal[m, j])
            t = np.asarray(temperature, np.float64).reshape(-1)
            out[f"{prefix}/{label}/temperature"] = float(t[j] if t.size > 1 else t[0])
    return out


def temperature_record(temperature: Sequence[float], split: str = "val") -> dict:
    """What a checkpoint carries (``state["calibration"]``): per-label temperatures and where they came from."""
    t = [float(v) for v in temperature]
    if len(t) != len(LABELS):
        raise ValueError(f"expected {len(LABELS)} temperatures ({', '.join(LABELS)}), got {len(t)}")
    return {"method": "temperature", "temperature": t, "labels": list(LABELS), "split": split}


def checkpoint_temperature(state: Mapping) -> list[float] | None:
    """The per-label temperatures a checkpoint carries, or None when it was not calibrated."""
    rec = state.get("calibration") or {}
    t = rec.get("temperature")
    if t is None:
        return None
    t = [float(v) for v in t]
    if len(t) != len(LABELS) or any(not math.isfinite(v) or v <= 0 for v in t):
        raise ValueError(f"checkpoint calibration: expected {len(LABELS)} positive temperatures, got {t}")
    return t
