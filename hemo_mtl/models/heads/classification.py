"""Slice classifier: multi-label logits for ``any`` + the 5 subtypes.

Reads the pooled (avg+max) top encoder map (or, with ``features: fpn``, the pooled FPN levels concatenated).
The loss is a masked BCE: ``cls_valid`` zeroes the terms of unknown labels (Kaggle knows ``any`` only),
so slice-label-only datasets train next to fully annotated ones without inventing negatives.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from hemo_mtl.categories import LABELS
from hemo_mtl.config_schema import K, defaults_of
from hemo_mtl.registry import HEADS

from ..losses import masked_bce_with_logits


# A bleed can cover <1% of a slice: an average alone dilutes it to noise, the max keeps it (the
# avg+max concatenation of fastai's AdaptiveConcatPool2d and many RSNA-ICH solutions).
POOLS = {"avg": 1, "max": 1, "avgmax": 2}


@HEADS.register("classification")
class ClassificationHead(nn.Module):
    task = "cls"
    uses_fpn = False
    SCHEMA = {
        "type": K("classification"),
        "features": K("top", "top: pooled stride-32 encoder map; fpn: pooled p2..p5 concatenated"),
        "pool": K("avgmax", "avg, max, or avgmax (both, concatenated)"),
        "hidden": K(0, ">0 adds a hidden layer of that width"),
        "dropout": K(0.0),
        "pos_weight": K(None, "6 positive-class weights (any, EDH..IVH); null = 1", "list", items="float"),
        "label_smoothing": K(0.0, "in [0, 1)"),
    }
    DEFAULTS = defaults_of(SCHEMA)

    def __init__(self, backbone, features: str = "top", pool: str = "avgmax", hidden: int = 0, dropout: float = 0.0,
                 pos_weight=None, label_smoothing: float = 0.0, type: str = "classification"):
        super().__init__()
        if features not in ("top", "fpn"):
            raise ValueError(f"heads.cls.features must be 'top' or 'fpn', got {features!r}")
        if pool not in POOLS:
            raise ValueError(f"heads.cls.pool must be one of {sorted(POOLS)}, got {pool!r}")
        self.pool = pool
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"heads.cls.label_smoothing must be in [0, 1), got {label_smoothing!r}")
        self.features = features
        self.uses_fpn = features == "fpn"
        self.label_smoothing = float(label_smoothing)
        in_dim = backbone.out_channels * (len(backbone.strides) - 1) if self.uses_fpn else backbone.top_channels
        in_dim *= POOLS[pool]
        layers: list[nn.Module] = [nn.Dropout(dropout)] if dropout else []
        if hidden:
            layers += [nn.Linear(in_dim, hidden), nn.ReLU(inplace=True)]
            in_dim = hidden
        layers.append(nn.Linear(in_dim, len(LABELS)))
        self.mlp = nn.Sequential(*layers)
        if pos_weight is not None:
            if len(pos_weight) != len(LABELS):
                raise ValueError(f"heads.cls.pos_weight needs {len(LABELS)} values ({', '.join(LABELS)})")
            self.register_buffer("pos_weight", torch.as_tensor(pos_weight, dtype=torch.float32))
        else:
            self.pos_weight = None

    def logits(self, feats) -> torch.Tensor:
        if self.uses_fpn:
            x = torch.cat([self._pool(v) for k, v in feats.fpn.items() if k != "pool"], dim=1)
        else:
            x = self._pool(feats.top)
        return self.mlp(x)

    def _pool(self, x: torch.Tensor) -> torch.Tensor:
        parts = []
        if self.pool in ("avg", "avgmax"):
            parts.append(F.adaptive_avg_pool2d(x, 1).flatten(1))
        if self.pool in ("max", "avgmax"):
            parts.append(F.adaptive_max_pool2d(x, 1).flatten(1))
        return torch.cat(parts, dim=1)

    def loss(self, logits: torch.Tensor, batch: dict) -> dict[str, torch.Tensor]:
        target = batch["cls"].to(logits.dtype)
        if self.label_smoothing:
            target = target * (1.0 - self.label_smoothing) + 0.5 * self.label_smoothing
        valid = batch["cls_valid"].to(logits.dtype) * batch["has"]["cls"].to(logits.dtype)[:, None]
        if "weight" in batch:  # importance weights of a stage's thinned/repeated slice selection
            valid = valid * batch["weight"].to(logits.device, logits.dtype)[:, None]
        return {"loss_cls": masked_bce_with_logits(logits, target, valid, self.pos_weight)}

    def forward(self, feats, batch: dict) -> dict[str, torch.Tensor]:
        """Train: ``loss_cls`` (+ ``cls_logits`` for cross-head terms); eval: ``cls_prob`` (B, 6)."""
        logits = self.logits(feats)
        if self.training:
            return {**self.loss(logits, batch), "cls_logits": logits}
        return {"cls_prob": logits.sigmoid()}
