"""Inference on whole scans: load, window + resize in batches, predict, map back, clean, write outputs."""
from .outputs import coco_results, overlay, scan_summary, slice_table, write_scan_outputs
from .postprocess import clean_mask, contours, lesion_counts, volumes_ml
from .predictor import (Fit, PredictOptions, Predictor, Scan, ScanPrediction, find_scans, fit_to_square,
                        load_model, load_scan, sha256_config, sha256_file, unfit, with_context)

__all__ = [
    "Fit", "PredictOptions", "Predictor", "Scan", "ScanPrediction", "clean_mask", "coco_results", "contours",
    "find_scans", "fit_to_square", "lesion_counts", "load_model", "load_scan", "overlay", "scan_summary",
    "sha256_config", "sha256_file", "slice_table", "unfit", "volumes_ml", "with_context", "write_scan_outputs",
]
