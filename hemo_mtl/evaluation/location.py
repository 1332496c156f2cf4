"""Bleed location metrics (multi-class, e.g. deep / lobar / subtentorial) and their evaluator.

Keys: ``location/accuracy``; ``location/<class>/{precision,recall,specificity,f1}`` one-vs-rest;
``location/macro/{precision,recall,specificity,f1}`` their unweighted means; the confusion matrix as
``location/cm/<true>/<pred>`` counts (rows = truth). Only slices with a known location count; the
predicted class is the argmax of ``location_prob``. A class never predicted has precision NaN.
"""
from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np

CONVENTIONS = (
    "Location: argmax class vs. truth on slices with a known location; per-class precision/recall/"
    "specificity/F1 one-vs-rest, macro = unweighted mean over classes (NaN classes skipped); "
    "location/cm/<true>/<pred> are confusion-matrix counts.",
)


def _ratio(num: float, den: float) -> float:
    return float(num) / float(den) if den else math.nan


def location_metrics(y_true: Sequence[int], y_pred: Sequence[int], classes: Sequence[str]) -> dict[str, float]:
    """Flat metrics of integer class labels ``y_true`` / ``y_pred`` (0..K-1) named by ``classes``."""
    from sklearn.metrics import confusion_matrix

    k = len(classes)
    y_true, y_pred = np.asarray(y_true, np.int64), np.asarray(y_pred, np.int64)
    cm = confusion_matrix(y_true, y_pred, labels=list(range(k))) if len(y_true) else np.zeros((k, k), np.int64)
    total = cm.sum()
    out: dict[str, float] = {"location/accuracy": _ratio(np.trace(cm), total), "location/n": float(total)}
    per: dict[str, list[float]] = {"precision": [], "recall": [], "specificity": [], "f1": []}
    for i, name in enumerate(classes):
        tp = cm[i, i]
        fp, fn = cm[:, i].sum() - tp, cm[i, :].sum() - tp
        tn = total - tp - fp - fn
        values = {"precision": _ratio(tp, tp + fp), "recall": _ratio(tp, tp + fn),
                  "specificity": _ratio(tn, tn + fp), "f1": _ratio(2 * tp, 2 * tp + fp + fn)}
        for metric, v in values.items():
            out[f"location/{name}/{metric}"] = v
            per[metric].append(v)
        for j, other in enumerate(classes):
            out[f"location/cm/{name}/{other}"] = float(cm[i, j])
    for metric, vals in per.items():
        finite = [v for v in vals if math.isfinite(v)]
        out[f"location/macro/{metric}"] = float(np.mean(finite)) if finite else math.nan
    return out


class LocationEvaluator:
    """Collects ``location_prob`` vs ``batch["location"]`` where ``has["location"]``; same interface as
    ``MultiTaskEvaluator`` (reset / process / evaluate)."""

    def __init__(self, classes: Sequence[str]):
        self.classes = list(classes)
        self.reset()

    def reset(self) -> None:
        self._true: list[np.ndarray] = []
        self._pred: list[np.ndarray] = []

    def process(self, batch: Mapping, outputs: Mapping) -> None:
        if "location_prob" not in outputs or "location" not in batch["has"]:
            return
        keep = np.asarray(batch["has"]["location"].cpu(), bool)
        self._true.append(np.asarray(batch["location"].cpu())[keep])
        self._pred.append(np.asarray(outputs["location_prob"].argmax(1).cpu())[keep])

    def evaluate(self) -> dict[str, float]:
        if not self._true:
            return {}
        return location_metrics(np.concatenate(self._true), np.concatenate(self._pred), self.classes)


class CombinedEvaluator:
    """Several evaluators fed the same batches; their metric dicts merged (later keys win)."""

    def __init__(self, evaluators: Sequence):
        self.evaluators = list(evaluators)

    def reset(self) -> None:
        for e in self.evaluators:
            e.reset()

    def process(self, batch: Mapping, outputs: Mapping) -> None:
        for e in self.evaluators:
            e.process(batch, outputs)

    def evaluate(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for e in self.evaluators:
            out.update(e.evaluate())
        return out
