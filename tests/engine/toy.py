"""A tiny model, dataset and evaluator that follow the shared contracts, so engine tests run in seconds."""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from hemo_mtl.models.gating import gate_outputs

SIZE = 16


class ToyDataset(Dataset):
    """``patients`` x ``slices`` 1x16x16 slices; positives hold a bright square of subtype 1..5.

    ``__getitem__`` adds noise from torch's global generator, so resume must restore RNG states.
    ``cls_only``: patient ids whose slices have no mask/boxes (only the slice label).
    """

    def __init__(self, patients: int = 6, slices: int = 4, seed: int = 0, cls_only=(), noise: float = 0.05):
        rng = np.random.default_rng(seed)
        self.items, self.noise = [], noise
        for p in range(patients):
            pid = f"p{p:02d}"
            for s in range(slices):
                mask = np.zeros((SIZE, SIZE), np.int64)
                if rng.random() < 0.5:
                    sub = int(rng.integers(1, 6))
                    y, x = rng.integers(2, SIZE - 6, size=2)
                    mask[y : y + 4, x : x + 4] = sub
                image = (mask > 0).astype(np.float32) * 0.8 + 0.1
                self.items.append((pid, s, image, mask, pid not in cls_only))
        self.patient_ids = [it[0] for it in self.items]
        self.has_table = pd.DataFrame({
            "has_cls": [True] * len(self.items),
            "has_mask": [it[4] for it in self.items],
            "has_boxes": [it[4] for it in self.items],
            "any": [int(it[3].any()) for it in self.items],
        })

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        pid, s, image, mask, has_mask = self.items[i]
        img = torch.from_numpy(image)[None] + self.noise * torch.randn(1, SIZE, SIZE)
        cls = torch.zeros(6)
        for c in np.unique(mask[mask > 0]):
            cls[int(c)] = 1
        cls[0] = float(mask.any())
        return {
            "image": img.float(), "cls": cls, "cls_valid": torch.ones(6),
            "mask": torch.from_numpy(mask if has_mask else np.zeros_like(mask)),
            "boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64),
            "masks": torch.zeros(0, SIZE, SIZE, dtype=torch.uint8),
            "has": {"cls": True, "mask": has_mask, "boxes": False},
            "meta": {"patient_id": pid, "slice_idx": s},
        }


class ToyModel(nn.Module):
    """Backbone (conv+BN+dropout) with a cls head and a seg head; named losses in train, probs in eval.

    ``nan_at``: make ``loss_seg`` NaN from that forward call on (to test the NaN guard).
    """

    def __init__(self, width: int = 8, nan_at: int | None = None):
        super().__init__()
        self.backbone = nn.Sequential(nn.Conv2d(1, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
                                      nn.Dropout2d(0.1), nn.Conv2d(width, width, 3, padding=1), nn.ReLU())
        self.heads = nn.ModuleDict({"cls": nn.Linear(width, 6), "seg": nn.Conv2d(width, 6, 1)})
        self.active = {"cls", "seg"}
        self.nan_at, self.calls = nan_at, 0

    def set_active_heads(self, names) -> None:
        self.active = set(names)

    def forward(self, batch: dict, gate=None) -> dict:
        """``gate`` (a CascadeGate) as MultiTaskModel takes it: outputs of the gated tasks blanked where it
        does not keep the slice."""
        out = self._forward(batch)
        if gate is None or self.training:
            return out
        keep = gate.keep(out["cls_prob"][:, 0])
        return {**gate_outputs(out, keep, gate.heads), "gate_passed": keep}

    def _forward(self, batch: dict) -> dict:
        f = self.backbone(batch["image"])
        out = {}
        if "cls" in self.active:
            logits = self.heads["cls"](f.mean((2, 3)))
            if self.training:
                bce = F.binary_cross_entropy_with_logits(logits, batch["cls"], reduction="none")
                out["loss_cls"] = (bce * batch["cls_valid"]).sum() / batch["cls_valid"].sum().clamp(min=1)
            else:
                out["cls_prob"] = torch.sigmoid(logits)
        if "seg" in self.active:
            logits = self.heads["seg"](f)
            if self.training:
                has = batch["has"]["mask"]
                out["loss_seg"] = (F.cross_entropy(logits[has], batch["mask"][has]) if has.any()
                                   else logits.sum() * 0.0)
                self.calls += 1
                if self.nan_at is not None and self.calls >= self.nan_at:
                    out["loss_seg"] = out["loss_seg"] * float("nan")
            else:
                out["seg_prob"] = torch.softmax(logits, 1)
        return out


class ToyEvaluator:
    """cls/any/accuracy at 0.5 and seg/any/dice (global), enough to see evaluation run."""

    def reset(self) -> None:
        self.correct = self.n = 0
        self.inter = self.total = 0.0

    def process(self, batch: dict, outputs: dict) -> None:
        if "cls_prob" in outputs:
            self.correct += int(((outputs["cls_prob"][:, 0] >= 0.5).float() == batch["cls"][:, 0]).sum())
            self.n += len(batch["cls"])
        if "seg_prob" in outputs:
            pred, gt = outputs["seg_prob"].argmax(1) > 0, batch["mask"] > 0
            self.inter += float((pred & gt).sum())
            self.total += float(pred.sum() + gt.sum())

    def evaluate(self) -> dict:
        out = {}
        if self.n:
            out["cls/any/accuracy"] = self.correct / self.n
        if self.total:
            out["seg/any/dice"] = 2 * self.inter / self.total
        return out
