"""The evaluation loop over a split (as detectron2's ``inference_on_dataset``): the model's eval
outputs -> an evaluator, with the cascade gate when the model is trained as a cascade.

A gate without a threshold is chosen on the split the caller passes (validation) by a cls-only pass
(``CascadeGate.choose``). Slices below it get empty seg/det predictions; the metrics then carry what
gating cost (``cascade/gate/*``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

import numpy as np
import torch
from torch import nn

from ..data.dataset import move_to_device
from ..models.gating import CascadeGate
from ..models.multitask import set_active_heads
from ..models.tta import eval_forward, lr_axis
from .panels import draw_panel


@dataclass
class InferenceResult:
    metrics: dict[str, float]
    p_any: np.ndarray
    y_any: np.ndarray  # -1 where `any` is unknown
    panels: list[torch.Tensor] = field(default_factory=list)
    gate: CascadeGate | None = None  # the gate applied (its threshold chosen on validation)


def _slice(batch: Mapping, i: int) -> dict:
    sample = {"image": batch["image"][i]}
    if bool(batch["has"]["mask"][i]):
        sample["mask"] = batch["mask"][i]
    if bool(batch["has"]["boxes"][i]):
        sample["boxes"], sample["labels"] = batch["targets"][i]["boxes"], batch["targets"][i]["labels"]
    return sample


def _pred(outputs: Mapping, i: int) -> dict:
    pred: dict[str, Any] = {}
    if "seg_prob" in outputs:
        pred["seg_prob"] = outputs["seg_prob"][i]
    if "instances" in outputs:
        pred["instances"] = outputs["instances"][i]
    return pred


@torch.no_grad()
def run_inference(model: nn.Module, loader: Iterable, evaluator, device: torch.device, *,
                  heads: Iterable[str] | None = None, gate: CascadeGate | None = None, amp: bool = False,
                  channels_last: bool = False, panels: int = 0, flip_tta: bool = False) -> InferenceResult:
    """One pass: ``model`` in eval mode on every batch, outputs (gated by ``gate``, whose threshold is
    set; with ``flip_tta`` combined with the mirrored batch's, ``hemo_mtl.models.tta``) fed to
    ``evaluator``; also returns per-slice ``any`` probabilities."""
    was_training = model.training
    model.eval()
    if heads is not None:
        set_active_heads(model, heads)
    if evaluator is not None:
        evaluator.reset()
    flip_axis = lr_axis(getattr(getattr(loader, "dataset", None), "kind", "hu"))  # HemorrhageDataset.kind
    p_all, y_all, lesions = [], [], []
    positives: list[torch.Tensor] = []
    others: list[torch.Tensor] = []
    try:
        for batch in loader:
            batch = move_to_device(batch, device, channels_last)
            with torch.autocast(device.type, dtype=torch.float16, enabled=amp and device.type == "cuda"):
                outputs = eval_forward(model, batch, gate, flip_tta, flip_axis)
            outputs = _to_float(outputs)
            if "cls_prob" in outputs:
                p = outputs["cls_prob"][:, 0].float().cpu()
                y = torch.where(batch["cls_valid"][:, 0].cpu() > 0, batch["cls"][:, 0].cpu(), torch.tensor(-1.0))
                p_all.append(p.numpy())
                y_all.append(y.numpy())
            lesions.extend(len(t["boxes"]) if bool(h) else 0 for t, h in zip(batch["targets"], batch["has"]["boxes"]))
            if evaluator is not None:
                evaluator.process(batch, outputs)
            for i in range(len(batch["image"])):
                if len(positives) >= panels:
                    break
                positive = bool(batch["has"]["mask"][i]) and bool(batch["mask"][i].any())
                if positive or len(others) < panels:
                    (positives if positive else others).append(draw_panel(_slice(batch, i), _pred(outputs, i)))
    finally:
        model.train(was_training)
    metrics = dict(evaluator.evaluate()) if evaluator is not None else {}
    p_any = np.concatenate(p_all) if p_all else np.zeros(0)
    y_any = np.concatenate(y_all) if y_all else np.zeros(0)
    if gate is not None:
        known = y_any >= 0
        metrics.update(gate.summary(y_any[known] > 0, p_any[known],
                                    np.asarray(lesions)[known] if len(lesions) == len(known) else None))
    return InferenceResult(metrics, p_any, y_any, (positives + others)[:panels], gate)


def _to_float(outputs: Mapping) -> dict:
    """AMP outputs back to float32 so evaluators see one dtype."""
    out = {}
    for k, v in outputs.items():
        if isinstance(v, torch.Tensor) and v.is_floating_point():
            out[k] = v.float()
        elif isinstance(v, list):
            out[k] = [{kk: (vv.float() if vv.is_floating_point() else vv) for kk, vv in d.items()} for d in v]
        else:
            out[k] = v
    return out


def evaluate(model: nn.Module, loader: Iterable, evaluator, device: torch.device, *,
             heads: Iterable[str], gate: CascadeGate | None = None, amp: bool = False,
             channels_last: bool = False, panels: int = 0, flip_tta: bool = False) -> InferenceResult:
    """Evaluate ``heads`` on a split; a cascade ``gate`` without a threshold is chosen on this split
    first (call it on validation, then pass ``result.gate`` for test)."""
    opts = {"amp": amp, "channels_last": channels_last, "flip_tta": flip_tta}
    heads = set(heads)
    gate = gate.restricted_to(heads) if gate is not None else None
    if gate is None:
        return run_inference(model, loader, evaluator, device, heads=heads, panels=panels, **opts)
    if gate.threshold is None:
        probe = run_inference(model, loader, None, device, heads={"cls"}, **opts)
        known = probe.y_any >= 0
        gate = gate.choose(probe.y_any[known] > 0, probe.p_any[known])
    return run_inference(model, loader, evaluator, device, heads=heads, gate=gate, panels=panels, **opts)
