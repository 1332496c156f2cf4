"""The evaluator the training engine calls during evaluation (detectron2's DatasetEvaluator shape).

``reset()`` before a pass, ``process(batch, outputs)`` per batch, ``evaluate()`` once at the end.
It keeps only small things per slice: six probabilities and labels, a (6, 3) segmentation count
array and voxel volume, and COCO records with RLE masks, never full-resolution probability maps.
With ``gather=True`` under torch.distributed, the per-rank records are gathered before metrics are
computed (for a loader sharded over ranks); by default each evaluator scores what it saw, since training
evaluates on the main rank alone and a gather there would wait for ranks that never evaluate.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from converters.rle import encode_masks
from pycocotools import mask as mask_utils

from ..categories import coco_categories
from ..inference.geometry import label_map
from .classification import classification_metrics, slice_context_max
from .detection import coco_metrics, froc_2d
from .segmentation import confusion_counts, segmentation_metrics, subtype_known, volume_table

TASKS = ("cls", "seg", "det")


def _np(x) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def _xyxy_to_xywh(b: np.ndarray) -> np.ndarray:
    b = np.asarray(b, np.float64).reshape(-1, 4)
    return np.c_[b[:, :2], b[:, 2:] - b[:, :2]]


@dataclass
class _State:
    cls_prob: list = field(default_factory=list)
    cls_true: list = field(default_factory=list)
    cls_valid: list = field(default_factory=list)
    cls_pid: list = field(default_factory=list)
    cls_scan: list = field(default_factory=list)  # patient/study: the scan a slice's neighbours share
    cls_slice: list = field(default_factory=list)
    seg_counts: list = field(default_factory=list)
    seg_known: list = field(default_factory=list)  # per slice: no truth pixel of unknown subtype
    seg_volume: list = field(default_factory=list)
    seg_voxel_ml: list = field(default_factory=list)
    det_images: list = field(default_factory=list)  # (image dict, gt anns, results) without ids


class MultiTaskEvaluator:
    """Accumulate predictions of a multi-task model and compute every metric with flat keys.

    ``tasks``: the subset of ("cls", "seg", "det") to evaluate (a task is skipped silently when the
    model has no such output). ``spacing_aware``: report lesion volumes in mL from ``meta.spacing``,
    scaled by the resize from ``meta.orig_size`` to the mask size. Remaining options are handed to
    the task functions (see classification.py, detection.py); ``temperature`` (per label, fitted on
    validation) adds the calibrated ECE/NLL beside the model's own. ``slice_context`` c > 0 scores the
    slice probabilities as the predictor reports them (``slice_context_max`` over each scan's slices);
    ``patient_window`` k > 1 scores a patient by the highest mean of k adjacent slices of one scan
    (``classification.adjacent_mean``), as the predictor's summary and the cross-validation do.
    """

    def __init__(self, tasks: Sequence[str] = TASKS, spacing_aware: bool = True, *, aggregation: str = "max",
                 top_k: int = 3, tuned_thresholds: Mapping[str, Mapping[str, float]] | None = None,
                 n_bootstrap: int = 0, seed: int = 0, engine: str = "faster", mask_threshold: float = 0.5,
                 froc_iou: float = 0.5, froc_criterion: str = "iou", temperature=None, gather: bool = False,
                 slice_context: int = 0, patient_window: int = 1):
        unknown = set(tasks) - set(TASKS)
        if unknown:
            raise ValueError(f"unknown evaluation task(s) {sorted(unknown)}; expected a subset of {TASKS}")
        self.tasks = tuple(tasks)
        self.gather = gather
        self.slice_context = int(slice_context)
        self.patient_window = int(patient_window)
        self.spacing_aware = spacing_aware
        self.cls_options = dict(aggregation=aggregation, top_k=top_k, tuned=tuned_thresholds,
                                n_bootstrap=n_bootstrap, seed=seed, temperature=temperature)
        self.engine = engine
        self.mask_threshold = mask_threshold
        self.froc_options = dict(iou_threshold=froc_iou, criterion=froc_criterion)
        self.details: dict[str, Any] = {}
        self.reset()

    def reset(self) -> None:
        self._state = _State()
        self.details = {}

    # ------------------------------------------------------------------------------ accumulate
    def process(self, batch: Mapping[str, Any], outputs: Mapping[str, Any]) -> None:
        has = batch["has"]
        meta = batch["meta"]
        if "cls" in self.tasks and "cls_prob" in outputs:
            self._process_cls(batch, outputs["cls_prob"], _np(has["cls"]).astype(bool), meta)
        if "seg" in self.tasks and "seg_prob" in outputs:
            self._process_seg(batch["mask"], outputs["seg_prob"], _np(has["mask"]).astype(bool), meta)
        if "det" in self.tasks and "instances" in outputs:
            self._process_det(batch, outputs["instances"], _np(has["boxes"]).astype(bool), meta)

    def _process_cls(self, batch, cls_prob, has_cls, meta) -> None:
        s = self._state
        valid = _np(batch["cls_valid"]).astype(bool) & has_cls[:, None]
        s.cls_prob.append(_np(cls_prob).astype(np.float64))
        s.cls_true.append(_np(batch["cls"]).astype(np.float64))
        s.cls_valid.append(valid)
        s.cls_pid += [str(m["patient_id"]) for m in meta]
        s.cls_scan += [f"{m['patient_id']}/{m.get('study_id', '')}" for m in meta]
        s.cls_slice += [int(m.get("slice_idx", -1)) for m in meta]

    def _process_seg(self, mask, seg_prob, has_mask, meta) -> None:
        sel = np.flatnonzero(has_mask)
        if not len(sel):
            return
        if tuple(seg_prob.shape[-2:]) != tuple(mask.shape[-2:]):
            raise ValueError(f"seg_prob size {tuple(seg_prob.shape[-2:])} != mask size {tuple(mask.shape[-2:])}")
        idx = torch.as_tensor(sel, device=seg_prob.device)
        pred = label_map(seg_prob.index_select(0, idx))  # a binary head's bleed is 6, not EDH
        gt = torch.as_tensor(mask).to(seg_prob.device).index_select(0, idx)
        s = self._state
        s.seg_counts.append(confusion_counts(gt, pred))
        s.seg_known.append(subtype_known(gt))
        h, w = mask.shape[-2:]
        for i in sel:
            m = meta[i]
            s.seg_volume.append(f"{m['patient_id']}/{m.get('study_id', '')}")
            s.seg_voxel_ml.append(self._voxel_ml(m, h, w))

    def _voxel_ml(self, m: Mapping, h: int, w: int) -> float:
        spacing = m.get("spacing")
        if not self.spacing_aware or spacing is None:
            return math.nan
        sx, sy, sz = (float(v) for v in _np(spacing).reshape(-1)[:3])
        oh, ow = (int(v) for v in _np(m.get("orig_size", (h, w))).reshape(-1)[:2])
        return sx * sy * sz / 1000.0 * (oh * ow) / (h * w)  # a resized pixel covers more (or less) tissue

    def _process_det(self, batch, instances, has_boxes, meta) -> None:
        h, w = (int(v) for v in batch["image"].shape[-2:])
        for i in np.flatnonzero(has_boxes):
            tgt, inst = batch["targets"][i], instances[i]
            gt_boxes = _xyxy_to_xywh(_np(tgt["boxes"]))
            gt_labels = _np(tgt["labels"]).astype(int)
            gt_masks = tgt.get("masks")
            gt_rles = encode_masks(gt_masks) if gt_masks is not None and len(gt_masks) == len(gt_boxes) else None
            anns = []
            for k, (box, lab) in enumerate(zip(gt_boxes, gt_labels)):
                ann = {"category_id": int(lab), "bbox": [float(v) for v in box], "iscrowd": 0,
                       "area": float(box[2] * box[3])}
                if gt_rles is not None:
                    ann["segmentation"] = gt_rles[k]
                    ann["area"] = float(mask_utils.area(gt_rles[k]))  # COCO area = mask area
                anns.append(ann)
            boxes = _xyxy_to_xywh(_np(inst["boxes"]))
            scores, labels = _np(inst["scores"]).astype(float), _np(inst["labels"]).astype(int)
            masks = inst.get("masks")
            rles = encode_masks(masks, self.mask_threshold) if masks is not None and len(masks) == len(boxes) else None
            dets = []
            for k, (box, sc, lab) in enumerate(zip(boxes, scores, labels)):
                d = {"category_id": int(lab), "bbox": [float(v) for v in box], "score": float(sc)}
                if rles is not None:
                    d["segmentation"] = rles[k]
                dets.append(d)
            m = meta[i]
            image = {"height": h, "width": w, "patient_id": str(m.get("patient_id", "")),
                     "slice_idx": int(m.get("slice_idx", -1))}
            self._state.det_images.append((image, anns, dets))

    # -------------------------------------------------------------------------------- evaluate
    def _gathered(self) -> _State:
        s = self._state
        if not (self.gather and torch.distributed.is_available() and torch.distributed.is_initialized()
                and torch.distributed.get_world_size() > 1):
            return s
        parts: list = [None] * torch.distributed.get_world_size()
        torch.distributed.all_gather_object(parts, s)
        merged = _State()
        for p in parts:
            for name in merged.__dataclass_fields__:
                getattr(merged, name).extend(getattr(p, name))
        return merged

    def evaluate(self) -> dict[str, float]:
        """Flat metric dict; ``self.details`` keeps curves/tables for report plots."""
        s = self._gathered()
        out: dict[str, float] = {}
        self.details = {}
        if s.cls_prob:
            y, p, v = np.concatenate(s.cls_true), np.concatenate(s.cls_prob), np.concatenate(s.cls_valid)
            if self.slice_context:
                p = slice_context_max(p, s.cls_scan, s.cls_slice, self.slice_context)
            patient_score = {"window": self.patient_window, "order": (s.cls_scan, s.cls_slice)}
            out.update(classification_metrics(y, p, v, s.cls_pid, **self.cls_options, **patient_score))
            o = self.cls_options
            self.details["cls"] = {"y_true": y, "y_prob": p, "valid": v, "patient_ids": np.asarray(s.cls_pid),
                                   "temperature": o["temperature"], "aggregation": o["aggregation"],
                                   "top_k": o["top_k"], **patient_score}
        if s.seg_counts:
            counts = np.concatenate(s.seg_counts)
            voxel_ml = np.asarray(s.seg_voxel_ml)
            with_ml = voxel_ml if np.isfinite(voxel_ml).all() else None
            known = np.concatenate(s.seg_known)
            out.update(segmentation_metrics(counts, s.seg_volume, with_ml, slice_subtype_known=known))
            if with_ml is not None:
                self.details["volumes"] = volume_table(counts, s.seg_volume, with_ml, known)
        if s.det_images:
            gt, results = self._coco(s.det_images)
            out.update(coco_metrics(gt, results, "bbox", engine=self.engine))
            with_masks = all("segmentation" in a for a in gt["annotations"]) and all(
                "segmentation" in r for r in results)
            if with_masks:
                out.update(coco_metrics(gt, results, "segm", engine=self.engine))
            froc, curves = froc_2d(gt, results, return_curves=True, **self.froc_options)
            out.update(froc)
            self.details["froc"] = {"2d": curves["all"]}
            out["det/all/n_images"] = float(len(gt["images"]))
        return out

    @staticmethod
    def _coco(records) -> tuple[dict, list]:
        """Records -> COCO ground truth dict and results list with ids from 1 (after gathering)."""
        images, anns, results = [], [], []
        for img_id, (image, gts, dets) in enumerate(records, start=1):
            images.append(dict(image, id=img_id))
            for a in gts:
                anns.append(dict(a, id=len(anns) + 1, image_id=img_id))
            results += [dict(d, image_id=img_id) for d in dets]
        return {"images": images, "annotations": anns, "categories": coco_categories()}, results
