"""Per-task evaluation: classification, COCO detection + FROC, segmentation + volumes, reports.

Every metric is a flat key ``task/subset/metric`` (``cls/any/auc``, ``det/bbox/AP50/IVH``,
``seg3d/any/dice``); each module's ``CONVENTIONS`` states the definitions and goes into reports.
"""
from __future__ import annotations

from . import classification, detection, segmentation
from .classification import (aggregate_by_patient, binary_metrics, bootstrap_ci, choose_threshold,
                             classification_metrics, hemorica_summary, tune_thresholds)
from .epoch_selection import select_epochs
from .location import location_metrics
from .detection import (STAT_NAMES, coco_metrics, froc_2d, froc_3d, froc_curve, lesions_3d_from_mask,
                        sensitivity_at)
from .report import render_markdown, write_metrics_json, write_report
from .segmentation import (confusion_counts, hausdorff_distance, hd95_per_label, segmentation_metrics,
                           subtype_known, volume_table)

CONVENTIONS = {
    "cls": classification.CONVENTIONS,
    "det": detection.CONVENTIONS,
    "seg": segmentation.CONVENTIONS,
}



def __getattr__(name: str):
    """``MultiTaskEvaluator`` imports torch: load it on first use so file-based tools start fast."""
    if name in ("MultiTaskEvaluator", "encode_masks"):
        from . import evaluator

        return getattr(evaluator, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "CONVENTIONS", "MultiTaskEvaluator", "STAT_NAMES", "aggregate_by_patient", "binary_metrics",
    "bootstrap_ci", "choose_threshold", "classification_metrics", "coco_metrics", "confusion_counts",
    "encode_masks", "froc_2d", "froc_3d", "froc_curve", "hausdorff_distance", "hd95_per_label",
    "hemorica_summary", "lesions_3d_from_mask", "location_metrics", "select_epochs", "render_markdown", "segmentation_metrics",
    "sensitivity_at", "subtype_known", "tune_thresholds", "volume_table", "write_metrics_json",
    "write_report",
]
