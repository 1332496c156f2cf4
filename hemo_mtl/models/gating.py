"""The cascade gate at inference: the classifier decides which slices the localizers look at.

A gated-off slice gets each gated task's empty prediction: segmentation probability 1 for background,
no detections. ``MultiTaskModel.forward(batch, gate=...)`` runs the gated heads only on the slices that
pass, so on a scan of mostly normal slices seg/det cost a fraction of their ungated time (most of a
Mask R-CNN forward is per-image work that batching does not amortise). ``gate_outputs`` blanks outputs
that were computed for every slice (flip TTA gates on the mirrored-and-averaged probability).
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Mapping, Sequence

import torch

from .backbones import Features

GATED_OUTPUTS = {"seg_prob": "seg", "instances": "det"}  # eval output -> task


def select_features(feats: Features, index: torch.Tensor) -> Features:
    """The trunk's outputs for the slices ``index`` of the batch."""
    return Features(fpn=None if feats.fpn is None else OrderedDict((k, v[index]) for k, v in feats.fpn.items()),
                    top=feats.top[index], levels=None if feats.levels is None else [v[index] for v in feats.levels])


def empty_instances(image_size: Sequence[int], like: torch.Tensor) -> dict:
    return {"boxes": like.new_zeros((0, 4)), "labels": torch.zeros(0, dtype=torch.long, device=like.device),
            "scores": like.new_zeros(0), "masks": like.new_zeros((0, *image_size))}


def scatter_outputs(part: Mapping, keep: torch.Tensor, blank_instances: dict | None = None) -> dict:
    """Eval outputs of gated heads computed on the slices where ``keep`` is True -> outputs for the whole
    batch, the others holding the empty prediction: segmentation probability 1 for background, no
    detections (an instance dict with the kept ones' keys, else ``blank_instances``)."""
    n = len(keep)
    index = keep.nonzero().flatten().tolist()
    out: dict = {}
    for key, value in part.items():
        if key == "seg_prob":
            full = value.new_zeros((n, *value.shape[1:]))
            full[:, 0] = 1
            full[keep.to(value.device)] = value
        elif key == "instances":
            blank = {k: v[:0] for k, v in value[0].items()} if value else blank_instances
            full = [blank] * n
            for i, inst in zip(index, value):
                full[i] = inst
        else:
            raise ValueError(f"gated head output {key!r} has no empty prediction defined "
                             f"(gate only heads whose outputs are {sorted(GATED_OUTPUTS)})")
        out[key] = full
    return out


def gate_outputs(outputs: dict, keep: torch.Tensor, heads: Sequence[str]) -> dict:
    """``outputs`` computed for every slice, with the slices where ``keep`` is False given the empty
    predictions of the gated tasks ``heads`` (those ``scatter_outputs`` writes)."""
    keep = keep.to(torch.bool)
    part = {}
    for key, task in GATED_OUTPUTS.items():
        if task in heads and key in outputs:
            value = outputs[key]
            part[key] = (value[keep.to(value.device)] if torch.is_tensor(value)
                         else [v for v, k in zip(value, keep.tolist()) if k])
    instances = outputs.get("instances")
    blank = {k: v[:0] for k, v in instances[0].items()} if instances else None
    return {**outputs, **scatter_outputs(part, keep, blank)}
