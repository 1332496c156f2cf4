"""Flip test-time augmentation of a multi-task model's eval outputs, shared by evaluation and prediction.

The mirrored pass flips the patient's left-right axis of the input: array axis -2 of a volume slice
(the rows: nibabel's axis 0), axis -1 of a display image (the columns: a JPG/PNG is stored as viewed,
anterior up); ``lr_axis`` gives it per scan kind. Probabilities are averaged; detections are mapped back and merged with the plain
ones as detectron2's ``GeneralizedRCNNWithTTA`` and ultralytics' augmented inference do: the union, then
the detection head's own per-class NMS (``nms_iou``, ``max_det``), so a lesion found by both passes keeps
one box, the higher-scoring one. A cascade gate then applies to the averaged p(any).
"""
from __future__ import annotations

from typing import Mapping, Sequence

import torch
from torch import nn
from torchvision.ops import batched_nms

from .gating import CascadeGate, gate_outputs


def lr_axis(kind: str) -> int:
    """The image axis that is the patient's left-right: -2 for HU volume slices, -1 for display images."""
    return -1 if kind == "display" else -2


def mirror_instances(instances: dict, size: int, axis: int = -2) -> dict:
    """Detections of a slice flipped along ``axis`` (-2 rows, -1 columns) of extent ``size``, mapped
    back: box coordinates [a0, a1) on that axis -> [size - a1, size - a0), masks flipped."""
    out = dict(instances)
    lo, hi = (1, 3) if axis == -2 else (0, 2)
    boxes = instances["boxes"].clone()
    boxes[:, lo], boxes[:, hi] = size - instances["boxes"][:, hi], size - instances["boxes"][:, lo]
    out["boxes"] = boxes
    if "masks" in instances:
        out["masks"] = instances["masks"].flip(axis)
    return out


def merge_instances(parts: Sequence[dict], iou: float, max_det: int | None = None) -> dict:
    """One slice's detection sets (same keys) -> their union suppressed per class at ``iou``, best first."""
    cat = {k: torch.cat([p[k] for p in parts]) for k in parts[0]}
    keep = batched_nms(cat["boxes"].float(), cat["scores"].float(), cat["labels"].long(), iou)
    if max_det is not None:
        keep = keep[:max_det]
    return {k: v[keep] for k, v in cat.items()}


def detection_head(model: nn.Module) -> nn.Module:
    """The ``det`` head of a MultiTaskModel, also through wrappers: DDP (``.module``) and the evaluation's
    ``SlidingWindowModel`` (``.model``)."""
    inner = model
    while not hasattr(inner, "heads"):
        inner = getattr(inner, "module", None) or getattr(inner, "model", None)
        if inner is None:
            raise TypeError(f"{type(model).__name__} holds no multi-task model with heads")
    return inner.heads["det"]


def merge_detections(model: nn.Module, parts: Sequence[dict]) -> dict:
    """``merge_instances`` by the NMS rule of ``model``'s detection head."""
    det = detection_head(model)
    return merge_instances(parts, det.nms_iou, getattr(det, "max_det", None))


def flip_tta_forward(model: nn.Module, batch: Mapping, gate: CascadeGate | None = None, axis: int = -2) -> dict:
    """Eval outputs of ``model`` on ``batch`` combined with those of the batch mirrored along ``axis``;
    with ``gate`` the gated heads' outputs are emptied where the averaged p(any) does not pass it
    (``gate_passed`` added). Both passes run every head on every slice."""
    out = dict(model(batch))
    flipped = model({**batch, "image": batch["image"].flip(axis)})
    for key in ("cls_prob", "seg_prob"):
        if key in out:
            other = flipped[key].flip(axis) if key == "seg_prob" else flipped[key]
            out[key] = (out[key] + other) / 2
    if "instances" in out:
        size = batch["image"].shape[axis]
        out["instances"] = [merge_detections(model, [a, mirror_instances(b, size, axis)])
                            for a, b in zip(out["instances"], flipped["instances"])]
    if gate is not None and "cls_prob" in out:
        keep = gate.keep(out["cls_prob"][:, 0])
        out = gate_outputs(out, keep, gate.heads)
        out["gate_passed"] = keep
    return out


def eval_forward(model: nn.Module, batch: Mapping, gate: CascadeGate | None = None, flip_tta: bool = False,
                 flip_axis: int = -2) -> dict:
    """The eval outputs that evaluation and prediction score: plain (with ``gate``, the gated heads run only
    on the slices that pass) or ``flip_tta_forward`` along ``flip_axis`` (``lr_axis`` of the scan kind)."""
    if flip_tta:
        return flip_tta_forward(model, batch, gate, flip_axis)
    return dict(model(batch) if gate is None else model(batch, gate=gate))
